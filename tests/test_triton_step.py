"""The Triton step against the torch backend, one step at a time from the same state.

Both backends get identical inputs every step (the Triton side starts each step from a copy of
the torch side's state), so a difference can only come from that one step's arithmetic and
rounding. Under TRITON_INTERPRET=1 (CPU tensors) the kernels are interpreted with numpy; on a GPU
the same tests run the compiled kernels on CUDA tensors.
"""

from __future__ import annotations

import pytest
import torch

from tmsgd_kernels.backends import torch_backend, triton_backend, unavailable_reason
from tmsgd_kernels.step_options import StepOptions


def _devices() -> list:
    devices = []
    for name in ("cpu", "cuda"):
        if name == "cuda" and not torch.cuda.is_available():
            continue
        reason = unavailable_reason("triton", torch.device(name))
        marks = [pytest.mark.skip(reason=f"triton on {name}: {reason}")] if reason else []
        devices.append(pytest.param(torch.device(name), marks=marks, id=name))
    return devices


DEVICES = _devices()
SIZES = [0, 1, 3, 4097]


def tolerance(storage: torch.dtype, compute: torch.dtype) -> dict:
    """One ulp of the storage dtype, relative: the torch backend rounds to nearest, while the
    Triton interpreter stores bf16 by truncating (round toward zero), which differs from it by
    up to one bf16 ulp, twice what round-to-nearest alone would allow. Plus a few ulps of the
    compute dtype for the differently ordered fp32 arithmetic (values here are O(1))."""
    eps_c = torch.finfo(compute).eps
    return dict(rtol=torch.finfo(storage).eps + 4 * eps_c, atol=4 * eps_c)


class Bucket:
    """One bucket's tensors and state, as the optimizer hands them to a backend."""

    def __init__(self, sizes, dtype, history_dtype, momentum, device, seed=0):
        generator = torch.Generator().manual_seed(seed)
        self.params = [torch.randn(n, generator=generator, dtype=torch.float64).to(dtype).to(device)
                       for n in sizes]
        total = sum(sizes)
        self.history = torch.zeros(2, total, dtype=history_dtype, device=device)
        self.momentum_buffer = (
            torch.zeros(total, dtype=dtype, device=device) if momentum else None
        )
        self.step = torch.zeros((), dtype=torch.int64, device=device)

    def copy(self) -> Bucket:
        other = object.__new__(Bucket)
        other.params = [p.clone() for p in self.params]
        other.history = self.history.clone()
        buffer = self.momentum_buffer
        other.momentum_buffer = None if buffer is None else buffer.clone()
        other.step = self.step.clone()
        return other

    def run(self, backend, grads, options) -> None:
        scalars = {k: v for k, v in options.items() if k not in ("grad_scale", "found_inf")}
        backend.step_bucket(self.params, grads, self.history, self.momentum_buffer, self.step,
                            StepOptions(**scalars), options["grad_scale"], options["found_inf"])


def defaults(**overrides) -> dict:
    options = dict(lr=0.05, b1=0.5, b2=-0.5, momentum=0.0, dampening=0.0, weight_decay=0.0,
                   nesterov=False, maximize=False, switch_step=0, grad_scale=None, found_inf=None)
    options.update(overrides)
    return options


def assert_same_step(triton: Bucket, reference: Bucket, dtype, history_dtype, where) -> None:
    compute = torch.float64 if dtype == torch.float64 else torch.float32
    assert int(triton.step) == int(reference.step), f"{where}: step count"
    for i, (a, b) in enumerate(zip(triton.params, reference.params)):
        torch.testing.assert_close(a, b, **tolerance(dtype, compute), msg=f"{where}: param {i}")
    torch.testing.assert_close(triton.history, reference.history,
                               **tolerance(history_dtype, compute), msg=f"{where}: history")
    if reference.momentum_buffer is not None:
        torch.testing.assert_close(triton.momentum_buffer, reference.momentum_buffer,
                                   **tolerance(dtype, compute), msg=f"{where}: momentum")


def compare(device, dtype, options, *, sizes=SIZES, history_dtype=None, steps=5, grad_scale=None,
            skip_steps=()) -> Bucket:
    """Step both backends `steps` times; return the reference bucket at the end."""
    history_dtype = history_dtype or dtype
    reference = Bucket(sizes, dtype, history_dtype, options.get("momentum", 0.0), device)
    generator = torch.Generator().manual_seed(1)
    for k in range(steps):
        scale = 1.0 if grad_scale is None else grad_scale
        grads = [(torch.randn(n, generator=generator, dtype=torch.float64) * scale)
                 .to(dtype).to(device) for n in sizes]
        step_options = dict(options)
        if grad_scale is not None:
            step_options["grad_scale"] = torch.tensor(grad_scale, device=device)
        if skip_steps:
            step_options["found_inf"] = torch.tensor(float(k in skip_steps), device=device)
        triton = reference.copy()
        triton.run(triton_backend, grads, defaults(**step_options))
        reference.run(torch_backend, grads, defaults(**step_options))
        assert_same_step(triton, reference, dtype, history_dtype, f"step {k}")
    return reference


DTYPES = [torch.float32, torch.float64, torch.float16, torch.bfloat16]

OPTIONS = {
    "plain": {},
    "momentum": {"momentum": 0.9},
    "dampening": {"momentum": 0.8, "dampening": 0.3},
    "nesterov": {"momentum": 0.9, "nesterov": True},
    "weight_decay_maximize": {"weight_decay": 0.1, "maximize": True},
    "warm_up": {"switch_step": 3, "momentum": 0.5},
    "other_coefficients": {"b1": 0.25, "b2": -0.25},
}


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_every_dtype_matches_torch_backend(device, dtype):
    compare(device, dtype, {"momentum": 0.9, "weight_decay": 0.01})


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("options", OPTIONS.values(), ids=OPTIONS.keys())
def test_every_option_matches_torch_backend(device, options):
    compare(device, torch.float32, options)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16], ids=str)
def test_bf16_history_matches_torch_backend(device, dtype):
    compare(device, dtype, {"momentum": 0.5}, history_dtype=torch.bfloat16)


@pytest.mark.parametrize("device", DEVICES)
def test_tensor_lr_matches_torch_backend(device):
    compare(device, torch.float32, {"lr": torch.tensor(0.05, device=device), "momentum": 0.9})


@pytest.mark.parametrize("device", DEVICES)
def test_grad_scale_and_found_inf_match_torch_backend(device):
    compare(device, torch.float16, {"momentum": 0.9}, grad_scale=64.0, skip_steps=(0, 2))


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("momentum", [0.0, 0.9])
def test_found_inf_changes_nothing_first_step_included(device, momentum):
    bucket = Bucket(SIZES, torch.float32, torch.float32, momentum, device)
    grads = [torch.full((n,), 3.0, device=device) for n in SIZES]
    inf = torch.tensor(1.0, device=device)

    def skipped_step_changes_nothing(when: str) -> None:
        before = bucket.copy()
        bucket.run(triton_backend, grads, defaults(momentum=momentum, found_inf=inf))
        assert torch.equal(bucket.step, before.step), f"step advanced on the skipped {when} step"
        for a, b in zip(bucket.params, before.params):
            assert torch.equal(a, b), when
        assert torch.equal(bucket.history, before.history), when
        if momentum:
            assert torch.equal(bucket.momentum_buffer, before.momentum_buffer), when

    skipped_step_changes_nothing("first")
    bucket.run(triton_backend, grads, defaults(momentum=momentum))
    skipped_step_changes_nothing("second")
    assert int(bucket.step) == 1
    if momentum:
        # The real step after a skipped first step was still the first one: buf = g.
        assert torch.equal(bucket.momentum_buffer, torch.full_like(bucket.momentum_buffer, 3.0))


@pytest.mark.parametrize("device", DEVICES)
def test_grad_scale_power_of_two_is_exact(device):
    """Dividing by 2**k is exact, so scaled grads with grad_scale give bit-identical results."""
    scaled = Bucket(SIZES, torch.float32, torch.float32, 0.9, device)
    plain = scaled.copy()
    generator = torch.Generator().manual_seed(3)
    for _ in range(3):
        grads = [torch.randn(n, generator=generator).to(device) for n in SIZES]
        scaled.run(triton_backend, [g * 1024 for g in grads],
                   defaults(momentum=0.9, grad_scale=torch.tensor(1024.0, device=device)))
        plain.run(triton_backend, grads, defaults(momentum=0.9))
    for a, b in zip(scaled.params, plain.params):
        assert torch.equal(a, b)
    assert torch.equal(scaled.history, plain.history)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("size", SIZES + [4096])
def test_single_tensor_odd_sizes(device, size):
    """A single tensor takes the flat kernel; sizes 0, 1, 3 and 4097 cover the masked tails,
    4096 a block with no tail (the unmasked, vectorizable path) under the interpreter's rule."""
    reference = compare(device, torch.float32, {"momentum": 0.9, "switch_step": 1}, sizes=[size])
    assert int(reference.step) == 5  # an empty bucket still counts its steps


@pytest.mark.parametrize("device", DEVICES)
def test_many_tensors(device):
    generator = torch.Generator().manual_seed(7)
    sizes = torch.randint(0, 300, (40,), generator=generator).tolist()
    compare(device, torch.float32, {"momentum": 0.9, "nesterov": True}, sizes=sizes, steps=3)


@pytest.mark.parametrize("device", DEVICES)
def test_many_programs_per_launch_see_the_same_step(device, monkeypatch):
    """With tiny blocks a launch has hundreds of programs. They all must read the step count
    before it advances (the interpreter runs them in order, so an in-kernel increment by an
    early program would show up here as wrong history slots in later blocks)."""
    from tmsgd_kernels.triton_kernels import flat_kernel, table_kernel

    monkeypatch.setattr(flat_kernel, "flat_config", lambda numel, device: (16, 1))
    monkeypatch.setattr(table_kernel, "table_config", lambda numels, device: (16, 1))
    # Full blocks and a tail, flat and through the table (aligned sizes and not).
    compare(device, torch.float32, {"momentum": 0.9}, sizes=[1000], steps=3)
    compare(device, torch.float32, {"momentum": 0.9}, sizes=[3, 500, 17], steps=3)
    compare(device, torch.bfloat16, {"momentum": 0.9}, sizes=[64, 256, 8], steps=3)
