"""The input rules of the auxiliary-variable losses (tmsgd_kernels/auxvar/inputs.py, network.py):
data must be non-empty, floating point and finite; weights finite and positive; activations of an
exact allowed type or declaring a Lipschitz constant <= 1. Each refusal is a ValueError naming
the argument; the near misses are accepted and keep the bound."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from auxvar_helpers import mlp, one_thread  # noqa: F401  (one_thread: autouse fixture)
from torch import nn

from tmsgd_kernels.auxvar import AuxVarLoss, FirstOrderPINNLoss, UnsupportedModelError

DT = torch.float64
NAN, INF = float("nan"), float("inf")


def _fnn_data(n: int = 6) -> dict:
    g = torch.Generator().manual_seed(0)
    return {"inputs": torch.randn(n, 2, generator=g, dtype=DT),
            "targets": torch.randn(n, 1, generator=g, dtype=DT)}


def _pinn_data(n: int = 6, m: int = 4) -> dict:
    g = torch.Generator().manual_seed(0)
    return {"interior": torch.rand(n, 2, generator=g, dtype=DT),
            "velocity": torch.randn(n, 2, generator=g, dtype=DT),
            "source": torch.randn(n, 1, generator=g, dtype=DT),
            "boundary": torch.rand(m, 2, generator=g, dtype=DT),
            "boundary_values": torch.randn(m, 1, generator=g, dtype=DT)}


def _fnn(act=nn.Tanh, **options) -> AuxVarLoss:
    torch.manual_seed(0)
    return AuxVarLoss(mlp([2, 5, 5, 1], act), **{**_fnn_data(), **options})


def _pinn(act=nn.Tanh, **options) -> FirstOrderPINNLoss:
    torch.manual_seed(0)
    return FirstOrderPINNLoss(mlp([2, 5, 5, 1], act), **{**_pinn_data(), **options})


def _with(tensor: torch.Tensor, value: float) -> torch.Tensor:
    changed = tensor.clone()
    changed.view(-1)[changed.numel() // 2] = value
    return changed


BAD_VALUES = {
    "nan": lambda t: _with(t, NAN),
    "inf": lambda t: _with(t, INF),
    "-inf": lambda t: _with(t, -INF),
    "empty": lambda t: t[:0],
    "integer": lambda t: t.round().long(),
}
MESSAGES = {"nan": "NaN or infinite", "inf": "NaN or infinite", "-inf": "NaN or infinite",
            "empty": "empty", "integer": "floating-point"}


@pytest.mark.parametrize("bad", list(BAD_VALUES))
@pytest.mark.parametrize("name", ["inputs", "targets"])
def test_fnn_data_must_be_finite_non_empty_floats(name, bad):
    data = _fnn_data()
    data[name] = BAD_VALUES[bad](data[name])
    with pytest.raises(ValueError, match=f"{name}.*{MESSAGES[bad]}"):
        AuxVarLoss(mlp([2, 5, 5, 1]), **data)


@pytest.mark.parametrize("bad", list(BAD_VALUES))
@pytest.mark.parametrize("name", ["interior", "velocity", "source", "boundary",
                                  "boundary_values"])
def test_pinn_data_must_be_finite_non_empty_floats(name, bad):
    data = _pinn_data()
    data[name] = BAD_VALUES[bad](data[name])
    with pytest.raises(ValueError, match=f"{name}.*{MESSAGES[bad]}"):
        FirstOrderPINNLoss(mlp([2, 5, 5, 1]), **data)


BAD_WEIGHTS = [INF, -INF, NAN, 0.0, -1.0, True, "fixed", None, torch.tensor(1.0)]


@pytest.mark.parametrize("weights", BAD_WEIGHTS, ids=repr)
@pytest.mark.parametrize("build", [_fnn, _pinn], ids=["fnn", "pinn"])
def test_weights_must_be_adaptive_or_finite_positive(build, weights):
    """Refused when the loss is built and when J is evaluated with other weights (there None
    means the loss's own weights)."""
    with pytest.raises(ValueError, match="weights"):
        build(weights=weights)
    if weights is not None:
        with pytest.raises(ValueError, match="weights"):
            build()(weights)


@pytest.mark.parametrize("boundary_weight", [NAN, -1.0, 0.0, INF, True, "1"], ids=repr)
def test_boundary_weight_must_be_finite_positive(boundary_weight):
    with pytest.raises(ValueError, match="boundary_weight"):
        _pinn(boundary_weight=boundary_weight)


@pytest.mark.parametrize("build", [_fnn, _pinn], ids=["fnn", "pinn"])
def test_finite_positive_weights_of_any_real_type_are_accepted(build):
    """A fixed weight given as an int, a float or a numpy float is the same J."""
    values = [float(build(weights=w)()) for w in (2, 2.0, np.float64(2.0))]
    assert values[0] == values[1] == values[2] and math.isfinite(values[0])
    assert float(_pinn(boundary_weight=np.float32(0.5))()) < float(_pinn()())


class SteepTanh(nn.Tanh):
    """3 tanh: a subclass of an allowed activation that is 3-Lipschitz."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return 3.0 * torch.tanh(x)


class HalfTanh(nn.Module):
    """0.5 tanh, declaring its Lipschitz constant."""

    lipschitz_constant = 0.5

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return 0.5 * torch.tanh(x)


class ShiftedTanh(nn.Tanh):
    """tanh(x) + 0.1, a subclass of nn.Tanh declaring the constant 1 it keeps."""

    lipschitz_constant = 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tanh(x) + 0.1


def _declaring(value):
    return type("Declaring", (nn.Tanh,), {"lipschitz_constant": value})


@pytest.mark.parametrize("build", [_fnn, _pinn], ids=["fnn", "pinn"])
def test_subclass_of_an_allowed_activation_is_refused(build):
    with pytest.raises(UnsupportedModelError, match="SteepTanh"):
        build(SteepTanh)


@pytest.mark.parametrize("value, message", [
    (3.0, "Lipschitz constant 3.0 > 1"), (NAN, "finite number"), (-1.0, "finite number"),
    (True, "finite number"), ("1", "finite number")], ids=repr)
def test_declared_lipschitz_constant_must_be_a_number_at_most_one(value, message):
    with pytest.raises(UnsupportedModelError, match=message):
        _fnn(_declaring(value))


def test_declared_lipschitz_constant_is_accepted_and_the_bound_holds():
    """A module declaring a constant <= 1 (of any type, a subclass of nn.Tanh included) is
    accepted by the FNN loss; the bound holds at random auxiliaries. The PINN loss needs s' and
    its Lipschitz constant, which a declaration does not give: exact types only."""
    g = torch.Generator().manual_seed(3)
    for act in (HalfTanh, ShiftedTanh):
        loss = _fnn(act)
        with torch.no_grad():
            for z in loss.aux:
                z.add_(torch.randn(z.shape, generator=g, dtype=DT))
        mse, bound = loss.bound()
        assert 0 < mse <= bound * (1 + 1e-12)
        with pytest.raises(UnsupportedModelError, match="exactly"):
            _pinn(act)
