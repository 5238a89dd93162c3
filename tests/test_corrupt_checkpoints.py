"""Corrupt checkpoints, one defect each: load_state_dict raises a ValueError whose message names
the key at fault, and the optimizer is left as it was (state dicts, tensors, counts and groups,
by identity and value). Loading runs no kernel, so one backend serves."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from lifecycle_helpers import Snapshot, assign, fixed_grads
from trajectory import make_params

from tmsgd_kernels import TMSGD

SHAPES = [(3,), (2, 4), (5,)]
OPTIONS = {"lr": 0.05, "momentum": 0.9, "dampening": 0.1, "switch_step": 2}


def _trained(steps: int, lr: float) -> tuple[list, TMSGD]:
    """Two groups (params 0-1, param 2) with momentum, `steps` steps taken."""
    params = make_params(SHAPES, torch.float32, "cpu")
    optimizer = TMSGD([{"params": params[:2]}, {"params": params[2:], "lr": lr}],
                      backend="torch", **{**OPTIONS, "lr": lr})
    for grads in fixed_grads(SHAPES, steps):
        assign(params, grads)
        optimizer.step()
    return params, optimizer


def _checkpoint() -> dict:
    """A checkpoint of another run (loading it would change every tensor and group)."""
    return copy.deepcopy(_trained(steps=6, lr=0.02)[1].state_dict())


def _set(*path, value):
    """Set the entry at `path` (keys into the checkpoint) to `value` (or value(old entry))."""
    def corrupt(checkpoint: dict) -> dict:
        *parents, last = path
        target = checkpoint
        for key in parents:
            target = target[key]
        target[last] = value(target[last]) if callable(value) else value
        return checkpoint
    return corrupt


def _delete(*path):
    def corrupt(checkpoint: dict) -> dict:
        *parents, last = path
        target = checkpoint
        for key in parents:
            target = target[key]
        del target[last]
        return checkpoint
    return corrupt


def _replace(value):
    return lambda checkpoint: value(checkpoint) if callable(value) else value


def _history(key: str, value):
    return _set("state", 1, key, value=value)


def _step(value):
    return _set("state", 2, "step", value=value)


META = torch.empty(2, 4, device="meta")
# (corruption, what the message must name)
CORRUPT = {
    # structure
    "not a dict": (_replace(lambda c: list(c.items())), "state_dict"),
    "None": (_replace(None), "state_dict"),
    "extra top-level key": (_set("extra", value={}), "extra"),
    "state missing": (_delete("state"), "'state'"),
    "state None": (_set("state", value=None), "'state'"),
    "state a list": (_set("state", value=lambda s: list(s.values())), "'state'"),
    "param_groups missing": (_delete("param_groups"), "'param_groups'"),
    "param_groups None": (_set("param_groups", value=None), "'param_groups'"),
    "param_groups a dict": (_set("param_groups", value=lambda g: dict(enumerate(g))),
                            "'param_groups'"),
    "param_groups a string": (_set("param_groups", value="ab"), "'param_groups'"),
    "too few groups": (_delete("param_groups", 1), "'param_groups'"),
    "extra group": (_set("param_groups", value=lambda g: [*g, {**g[1], "params": []}]),
                    "'param_groups'"),
    "group None": (_set("param_groups", 1, value=None), "'param_groups'"),
    "group a list": (_set("param_groups", 0, value=lambda g: list(g.items())),
                     "'param_groups'"),
    "group without params": (_delete("param_groups", 1, "params"), "'params'"),
    "group params None": (_set("param_groups", 0, "params", value=None), "'params'"),
    "group params an int": (_set("param_groups", 0, "params", value=0), "'params'"),
    "group ids renamed, state ids not": (_set("param_groups", 0, "params", value=["a", "b"]),
                                         "'params'"),
    "group params of floats": (_set("param_groups", 0, "params", value=[0.0, 1.0]),
                               "'params'"),
    "group params too few": (_set("param_groups", 0, "params", value=lambda p: p[:1]),
                             "'params'"),
    "group params too many": (_set("param_groups", 1, "params", value=lambda p: [*p, 9]),
                              "'params'"),
    "one id for two params": (_set("param_groups", 1, "params", value=[0]), "'params'"),
    "id unknown": (_set("state", 7, value={}), "'state'"),
    "id a string": (lambda c: {**c, "state": {str(k): v for k, v in c["state"].items()}},
                    "'state'"),
    "param state None": (_set("state", 0, value=None), "parameter 0"),
    "param state a list": (_set("state", 0, value=lambda s: list(s.values())), "parameter 0"),
    "unknown state key": (_set("state", 0, "exp_avg", value=torch.zeros(3)), "exp_avg"),
    "missing state key": (_delete("state", 2, "delta_odd"), "delta_odd"),
    "v1 and v2 keys mixed": (_set("state", 2, "d1", value=torch.zeros(5)), "d1"),
    # counts
    "step negative": (_step(torch.tensor(-1)), "'step'"),
    "step a fraction": (_step(2.5), "'step'"),
    "step a float tensor fraction": (_step(torch.tensor(2.5)), "'step'"),
    "step nan": (_step(float("nan")), "'step'"),
    "step inf": (_step(float("inf")), "'step'"),
    "step 2**63": (_step(2**63), "'step'"),
    "step 2**63 as float": (_step(2.0**63), "'step'"),
    "step 2**63 as uint64 tensor": (_step(torch.tensor(2**63, dtype=torch.uint64)), "'step'"),
    "step huge float tensor": (_step(torch.tensor(1e30)), "'step'"),
    "step bool": (_step(True), "'step'"),
    "step bool tensor": (_step(torch.tensor(True)), "'step'"),
    "step string": (_step("3"), "'step'"),
    "step None": (_step(None), "'step'"),
    "step complex tensor": (_step(torch.tensor(3 + 0j)), "'step'"),
    "step multi-element": (_step(torch.tensor([3, 3])), "'step'"),
    "step empty tensor": (_step(torch.tensor([], dtype=torch.int64)), "'step'"),
    "step meta tensor": (_step(torch.tensor(3, device="meta")), "'step'"),
    "step sparse tensor": (_step(torch.tensor([3]).to_sparse()), "'step'"),
    # history and momentum buffer
    "history wrong shape": (_history("delta_even", torch.zeros(4, 2)), "'delta_even'"),
    "history too few dims": (_history("delta_even", torch.zeros(8)), "'delta_even'"),
    "history int dtype": (_history("delta_odd", torch.zeros(2, 4, dtype=torch.int32)),
                          "'delta_odd'"),
    "history bool": (_history("delta_odd", torch.zeros(2, 4, dtype=torch.bool)), "'delta_odd'"),
    "history meta": (_history("delta_odd", META), "'delta_odd'"),
    "history complex": (_history("delta_even", torch.zeros(2, 4, dtype=torch.complex64)),
                        "'delta_even'"),
    "history None": (_history("delta_even", None), "'delta_even'"),
    "history a list": (_history("delta_even", [[0.0] * 4] * 2), "'delta_even'"),
    "history a numpy array": (_history("delta_even", np.zeros((2, 4))), "'delta_even'"),
    "history sparse": (_history("delta_even", torch.zeros(2, 4).to_sparse()), "'delta_even'"),
    "buffer wrong shape": (_set("state", 2, "momentum_buffer", value=torch.zeros(6)),
                           "'momentum_buffer'"),
    "buffer meta": (_set("state", 1, "momentum_buffer", value=META), "'momentum_buffer'"),
    "buffer int dtype": (_set("state", 0, "momentum_buffer",
                              value=torch.zeros(3, dtype=torch.int64)), "'momentum_buffer'"),
    "buffer a float": (_set("state", 0, "momentum_buffer", value=0.0), "'momentum_buffer'"),
    "sgd buffer wrong shape": (_set("state", 2, value={"momentum_buffer": torch.zeros(2)}),
                               "'momentum_buffer'"),
    "v1 d1 wrong shape": (_set("state", 1, value=lambda s: {
        "step": s["step"], "d1": torch.zeros(8), "d2": s["delta_odd"]}), "'d1'"),
    # hyperparameters
    "lr nan": (_set("param_groups", 0, "lr", value=float("nan")), "lr"),
    "lr negative": (_set("param_groups", 1, "lr", value=-0.1), "learning rate"),
    "lr a string": (_set("param_groups", 1, "lr", value="0.1"), "lr"),
    "lr meta tensor": (_set("param_groups", 1, "lr", value=torch.tensor(0.1, device="meta")),
                       "'lr'"),
    "lr two-element tensor": (_set("param_groups", 1, "lr", value=torch.ones(2)), "lr"),
    "momentum negative": (_set("param_groups", 1, "momentum", value=-0.5), "momentum"),
    "dampening above 1": (_set("param_groups", 0, "dampening", value=1.5), "dampening"),
    "weight_decay inf": (_set("param_groups", 1, "weight_decay", value=float("inf")),
                         "weight_decay"),
    "nesterov a string": (_set("param_groups", 0, "nesterov", value="yes"), "nesterov"),
    "nesterov with dampening": (_set("param_groups", 0, "nesterov", value=True), "Nesterov"),
    "capturable None": (_set("param_groups", 1, "capturable", value=None), "capturable"),
    "coefficients inconsistent": (_set("param_groups", 1, "coefficients",
                                       value=(2.0, 0.0, 0.0)), "coefficients"),
    "coefficients None": (_set("param_groups", 1, "coefficients", value=None), "coefficients"),
    "coefficients two": (_set("param_groups", 1, "coefficients", value=(1.0, 0.0)),
                         "coefficients"),
    "switch_step beyond int64": (_set("param_groups", 1, "switch_step", value=2**63),
                                 "switch_step"),
    "switch_step a float": (_set("param_groups", 1, "switch_step", value=2.0), "switch_step"),
    # Saved names ("float32") are accepted; another string is not a dtype.
    "history_dtype an unknown name": (_set("param_groups", 0, "history_dtype", value="fp8"),
                                      "history_dtype"),
    "history_dtype int": (_set("param_groups", 0, "history_dtype", value=torch.int32),
                          "history_dtype"),
}


@pytest.mark.parametrize("name", list(CORRUPT))
def test_corrupt_checkpoint_is_refused_naming_the_key_and_changes_nothing(name):
    corrupt, key = CORRUPT[name]
    params, optimizer = _trained(steps=3, lr=0.05)
    checkpoint = corrupt(_checkpoint())
    before = Snapshot(optimizer, params)
    with pytest.raises(ValueError, match=key):
        optimizer.load_state_dict(checkpoint)
    before.assert_unchanged(f"after refusing a checkpoint with {name}")


ACCEPTED = {
    "unchanged": lambda c: c,
    "extra group key (a scheduler's initial_lr)": _set("param_groups", 0, "initial_lr",
                                                       value=0.1),
    "step a python int": _step(6),
    "step a whole float": _step(6.0),
    "step a float32 tensor (torch.optim's capturable counts)": _step(torch.tensor(6.0)),
    "step a numpy int": _step(np.int64(6)),
    "step 2**63 - 1": _step(2**63 - 1),
    "ids as parameter names (torch.distributed.checkpoint)": lambda c: {
        "state": {str(k): v for k, v in c["state"].items()},
        "param_groups": [{**g, "params": [str(i) for i in g["params"]]}
                         for g in c["param_groups"]]},
    "a tensor listed twice keeps its repeated id": None,  # built in the test
}


@pytest.mark.parametrize("name", list(ACCEPTED))
def test_near_misses_load(name):
    """The checks refuse only what is wrong: checkpoints that look odd but are valid load, with
    the values they hold."""
    params, optimizer = _trained(steps=3, lr=0.05)
    if ACCEPTED[name] is None:
        tie = torch.nn.Parameter(torch.ones(4))
        optimizer = TMSGD([tie, tie], lr=0.1, backend="torch")
        saved = TMSGD([tie, tie], lr=0.2, backend="torch").state_dict()
        first, second = saved["param_groups"][0]["params"]
        assert first == second  # torch.optim numbers one tensor once
        optimizer.load_state_dict(saved)
        assert optimizer.param_groups[0]["lr"] == 0.2
        return
    optimizer.load_state_dict(ACCEPTED[name](_checkpoint()))
    assert optimizer.param_groups[1]["lr"] == 0.02
    expected = {"step 2**63 - 1": 2**63 - 1}.get(name, 6)
    assert int(optimizer.state[params[2]]["step"]) == expected
