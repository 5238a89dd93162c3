"""The kernel contract (tmsgd_kernels/step_contract.py) as one test harness: every implementation
of the step, called on the contract's tensor lists, stepped beside the float64 oracle of every
param (tests/oracle.py) and checked after every call with one `Tolerance`.

An `Implementation` says how to call one implementation and where its tensors and counts live;
`IMPLEMENTATIONS` lists them all (adding one is one entry), and `implementations()` gives them as
pytest params, skipped with the reason when they cannot run here. A `Run` holds one call's lists
(params, grads made per step, both history slots, momentum buffers, counts) and the oracles.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import pytest
import torch
from int8_tolerance import Int8Tolerance
from oracle import OracleParam, Tolerance, assert_close, oracle_step

from tmsgd_kernels import int8_history
from tmsgd_kernels.coefficients import PAPER_COEFFICIENTS, delta_coefficients
from tmsgd_kernels.step_contract import TENSOR_LISTS, StepScalars

DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")
CPU = torch.device("cpu")
LIST_NAMES = tuple(name for name, _ in TENSOR_LISTS)

# ------------------------------------------------------------------ the entry points, in one place
# Every function of the package the harness calls, imported here (when first called).


def _unavailable_reason(backend: str, device: torch.device) -> str | None:
    if backend == "cuda-emulated":
        from cuda_emulation import unavailable_reason as emulation_unavailable_reason

        return emulation_unavailable_reason()
    from tmsgd_kernels.implementations import unavailable_reason

    return unavailable_reason(backend, device)


def _torch_host(*arguments) -> None:
    from tmsgd_kernels.torch_step import host_step

    host_step(*arguments)


def _torch_device(*arguments) -> None:
    from tmsgd_kernels.torch_step import device_step

    device_step(*arguments)


def _op(name: str):
    """The op's overload; the Triton op's kernels are registered first."""
    if name == "tmsgd_step_triton":
        from tmsgd_kernels.implementations import choose

        choose("triton", DEVICE)
    return getattr(torch.ops.tmsgd_kernels, name).default


def _split(arguments: tuple) -> tuple[list, StepScalars, torch.Tensor | None,
                                       torch.Tensor | None]:
    """(the contract's lists, scalars, grad_scale, found_inf) of an implementation's call."""
    lists, (scalars, *optional) = list(arguments[:len(LIST_NAMES)]), arguments[len(LIST_NAMES):]
    grad_scale, found_inf = [*optional, None, None][:2]
    return lists, scalars, grad_scale, found_inf


def _through_op(name: str) -> Callable[..., None]:
    def call(*arguments) -> None:
        lists, scalars, grad_scale, found_inf = _split(arguments)
        _op(name)(*lists, *scalars.arguments(), grad_scale, found_inf)

    return call


def _cuda_emulated(counts_on_device: bool) -> Callable[..., None]:
    """The op's CUDA implementation run on the CPU by the host emulation (tests/cuda_emulation.py):
    every tensor passed as a fake CUDA view of the CPU tensor, the counts only in device mode."""
    def call(*arguments) -> None:
        from cuda_emulation import contract_call

        contract_call(counts_on_device)(*arguments)

    return call


def _triton_counts_on_device(*arguments) -> None:
    """The Triton device path on CPU tensors (interpreter), where counts on the params' device
    are on the CPU too and the op would take the host path: called below the op."""
    from tmsgd_kernels.triton_kernels import op
    from tmsgd_kernels.triton_kernels.tensor_lists import TensorLists

    lists, scalars, grad_scale, found_inf = _split(arguments)
    op.run(TensorLists(*lists), scalars, grad_scale, found_inf, counts_on_device=True)


# ------------------------------------------------------------------------------ implementations


@dataclass(frozen=True)
class Implementation:
    """One way to run the step: `call(*lists, scalars, grad_scale, found_inf)`, the lists in the
    contract's order (step_contract.TENSOR_LISTS), on params on `device`, with the counts on the CPU
    (the host reads them and decides) or, `counts_on_device`, on the params' device (the step
    reads them there: the capturable path)."""

    name: str
    backend: str  # the backend name whose availability decides whether it runs
    device: torch.device
    counts_on_device: bool
    call: Callable[..., None]
    op: str | None  # the op it is called through (None: below any op)
    errors: tuple[type[Exception], ...]  # what bad arguments raise
    checks_every_list: bool  # False: only the grads are checked (the rest is the caller's job)

    @property
    def counts_device(self) -> torch.device:
        return self.device if self.counts_on_device else CPU

    def reason(self) -> str | None:
        return _unavailable_reason(self.backend, self.device)

    @property
    def interpreted(self) -> bool:
        """Triton on CPU tensors runs under its interpreter: about 10-20 ms per tensor and call
        on this machine, a hundred times the compiled implementations' cost."""
        return self.backend == "triton" and self.device.type == "cpu"

    def overload(self):
        return _op(self.op)


_TRITON_ERRORS = (ValueError, TypeError)

CUDA = torch.device("cuda")

IMPLEMENTATIONS: tuple[Implementation, ...] = (
    Implementation("torch-host", "torch", DEVICE, False, _torch_host, None, (RuntimeError,),
                   False),
    Implementation("torch-device", "torch", DEVICE, True, _torch_device, None, (RuntimeError,),
                   False),
    Implementation("cpu", "cpu", CPU, False, _through_op("tmsgd_step"), "tmsgd_step",
                   (RuntimeError,), True),
    Implementation("cuda-host", "cuda", CUDA, False, _through_op("tmsgd_step"), "tmsgd_step",
                   (RuntimeError,), True),
    Implementation("cuda-device", "cuda", CUDA, True, _through_op("tmsgd_step"), "tmsgd_step",
                   (RuntimeError,), True),
    # The CUDA implementation run on CPU memory (tests/cuda_emulation.py; not on a CUDA torch).
    Implementation("cuda-emulated-host", "cuda-emulated", CPU, False, _cuda_emulated(False),
                   None, (RuntimeError,), True),
    Implementation("cuda-emulated-device", "cuda-emulated", CPU, True, _cuda_emulated(True),
                   None, (RuntimeError,), True),
    Implementation("triton-host", "triton", DEVICE, False, _through_op("tmsgd_step_triton"),
                   "tmsgd_step_triton", _TRITON_ERRORS, True),
    # On a GPU counts on the params' device take the device path through the op; on the CPU
    # (interpreter) the path is chosen below the op.
    Implementation("triton-device", "triton", DEVICE, True,
                   _through_op("tmsgd_step_triton") if DEVICE.type != "cpu"
                   else _triton_counts_on_device,
                   "tmsgd_step_triton" if DEVICE.type != "cpu" else None, _TRITON_ERRORS, True),
)

BY_NAME = {implementation.name: implementation for implementation in IMPLEMENTATIONS}

# The implementations with an 8-bit history kernel (history_dtype=torch.int8).
INT8_HISTORY = frozenset({"torch-host", "torch-device", "cpu", "cuda-host", "cuda-device",
                          "cuda-emulated-host", "cuda-emulated-device"})
# Of those, the ones that must equal kernel_order_step bit for bit (the torch implementation
# contracts multiply-adds, see tests/kernel_order_step.py).
INT8_KERNELS = INT8_HISTORY - {"torch-host", "torch-device"}
# The implementations with an 8-bit momentum buffer too (momentum_dtype=torch.int8).
INT8_MOMENTUM = frozenset({"torch-host", "torch-device", "cpu", "cuda-host", "cuda-device",
                           "cuda-emulated-host", "cuda-emulated-device"})
# The emulated kernel is held bit for bit to kernel_order_step; against the oracle too it would
# cost about two minutes of CI on the 2-core machine for nothing more.
INT8_MOMENTUM_ORACLE = INT8_MOMENTUM - {"cuda-emulated-host", "cuda-emulated-device"}


def _kernel_order(*arguments) -> None:
    import kernel_order_step

    lists, scalars, grad_scale, found_inf = _split(arguments)
    kernel_order_step.step(*lists, scalars, grad_scale, found_inf)


# The kernels' arithmetic in torch ops with the reference encoder, on the CPU: what the kernels
# with an 8-bit history equal bit for bit.
KERNEL_ORDER = Implementation("kernel-order", "torch", CPU, False, _kernel_order, None,
                              (RuntimeError,), False)


def implementations(where: Callable[[Implementation], bool] = lambda i: True) -> list:
    """The implementations for which `where` holds, as pytest params (id: the name), each skipped
    with its reason when it cannot run here."""
    return [pytest.param(i, id=i.name, marks=_skip(i)) for i in IMPLEMENTATIONS if where(i)]


def _skip(implementation: Implementation) -> list:
    reason = implementation.reason()
    return [] if reason is None else [pytest.mark.skip(reason=f"{implementation.name}: {reason}")]


def crossed(first: dict[str, tuple], second: dict[str, tuple], anchor: tuple[str, str]) -> list:
    """pytest params (implementation, *first's values, *second's values): the whole cross of the
    two dimensions (id -> tuple of values) for every implementation, except interpreted ones,
    whose cost is per tensor and call: they get every value of each dimension with the other's
    `anchor` value."""
    params = []
    for implementation in IMPLEMENTATIONS:
        for a, a_values in first.items():
            for b, b_values in second.items():
                if implementation.interpreted and a != anchor[0] and b != anchor[1]:
                    continue
                params.append(pytest.param(implementation, *a_values, *b_values,
                                           marks=_skip(implementation),
                                           id=f"{implementation.name}-{a}-{b}"))
    return params


# ------------------------------------------------------------------------------------- tensors

DTYPES = (torch.float64, torch.float32, torch.float16, torch.bfloat16)
# 0-dim, empty, one element, fewer than a vector, not a multiple of any vector width, 2-D.
ODD_SHAPES = ((), (0,), (1,), (3,), (4097,), (7, 5))
GUARD = 3.0  # the value around a carved tensor, exact in every dtype


def random(shape, dtype: torch.dtype, generator: torch.Generator, device=DEVICE,
           scale: float = 1.0) -> torch.Tensor:
    return (torch.randn(shape, generator=generator, dtype=torch.float64) * scale).to(dtype).to(
        device)


def random_params(shapes, dtype: torch.dtype, device=DEVICE, seed: int = 0) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return [random(s, dtype, generator, device) for s in shapes]


def carve(values: torch.Tensor, guarded: list[torch.Tensor]) -> torch.Tensor:
    """`values` copied one element into a fresh buffer (so no address of it is 16-byte aligned),
    with a GUARD element on each side that nothing may write; the buffer is added to
    `guarded`."""
    buffer = torch.full((values.numel() + 2,), GUARD, dtype=values.dtype, device=values.device)
    view = buffer[1:1 + values.numel()].view(values.shape)
    view.copy_(values)
    guarded.append(buffer)
    return view


def zero_scales(param: torch.Tensor) -> torch.Tensor:
    """An all-zero slot's block scales for an 8-bit history of `param` (any param of one or more
    dimensions whose rows lie in memory one after another, as the op accepts)."""
    rows, per_row = param.shape[0], math.prod(param.shape[1:])
    return torch.zeros(int8_history.scales_shape(rows, per_row), device=param.device)


# ----------------------------------------------------------------------------------------- run


class Run:
    """The lists of one implementation's calls, kept across steps as an optimizer keeps them,
    beside one oracle per param; `step` calls the implementation on all params or a subset and
    then checks everything against the oracles.

    History starts at zero (the oracle's W[-1] = W[-2] = W[0]). Params start at count
    `counts[i]` (default 0); a param at count 0 gets a NaN momentum buffer, which its first step
    must not read, one further on a zero buffer. Lists named in `unaligned` hold carved tensors.
    `options` are the step's (momentum, dampening, weight_decay, nesterov, maximize,
    coefficients in paper form, switch_step); lr may be a float or a tensor. With an 8-bit
    history, `momentum_dtype=torch.int8` keeps the buffers as 8-bit codes too (a param at count
    0 then gets NaN scales, which its first step must not read).
    """

    def __init__(self, implementation: Implementation, params: list[torch.Tensor],
                 history_dtype: torch.dtype | None = None, *, counts: Sequence[int] | None = None,
                 unaligned: Sequence[str] = (), seed: int = 1, lr: float | torch.Tensor = 0.05,
                 momentum_dtype: torch.dtype | None = None, **options) -> None:
        unknown = set(unaligned) - set(LIST_NAMES)
        assert not unknown, f"no such lists: {unknown}"
        self.implementation = implementation
        self.lr = lr
        self.options = options
        self.momentum = options.get("momentum", 0.0)
        self.unaligned = frozenset(unaligned)
        self.guarded: list[torch.Tensor] = []
        self.generator = torch.Generator().manual_seed(seed)
        dtype = params[0].dtype
        self.history_dtype = history_dtype or dtype
        counts = list(counts) if counts is not None else [0] * len(params)
        self.params = [self._placed("params", p) for p in params]
        self.delta_even = [self._state(p, "delta_even", self.history_dtype, 0.0)
                           for p in self.params]
        self.delta_odd = [self._state(p, "delta_odd", self.history_dtype, 0.0)
                          for p in self.params]
        # The block scales of an 8-bit history: none for a float history.
        self.int8 = self.history_dtype == torch.int8
        self.delta_even_scales = [zero_scales(p) for p in self.params] if self.int8 else []
        self.delta_odd_scales = [zero_scales(p) for p in self.params] if self.int8 else []
        self.int8_buffers = momentum_dtype == torch.int8
        assert not self.int8_buffers or (self.int8 and self.momentum), \
            "8-bit buffers need an 8-bit history and momentum"
        self.momentum_buffers = [
            self._state(p, "momentum_buffers", torch.int8 if self.int8_buffers else dtype,
                        0.0 if c or self.int8_buffers else float("nan"))
            for p, c in zip(self.params, counts)] if self.momentum else []
        # An 8-bit buffer's codes are integers: its scales take the NaN of an unset buffer.
        self.momentum_scales = [zero_scales(p).fill_(0.0 if c else float("nan"))
                                for p, c in zip(self.params, counts)] if self.int8_buffers else []
        self.steps = [torch.tensor(c, dtype=torch.int64, device=implementation.counts_device)
                      for c in counts]
        self.oracles = [OracleParam(p) for p in self.params]
        for o, c in zip(self.oracles, counts):
            o.step = c
            if self.momentum and c:
                o.momentum_buffer = torch.zeros_like(o.weight)
        self.taken = [0] * len(params)  # steps each param took here: each adds its rounding
        self.history_from = list(counts)  # the count from which a param's slots are the oracle's
        self.tolerance = self._tolerance(dtype)

    def _tolerance(self, dtype: torch.dtype) -> Tolerance | Int8Tolerance | None:
        """The bound against the oracle; None for an 8-bit history with weight decay, which has
        no derived bound (such runs are compared bit for bit with kernel_order_step)."""
        decay = self.options.get("weight_decay", 0.0)
        if not self.int8:
            return Tolerance(dtype, self.history_dtype, self.momentum, decay)
        if decay != 0:
            return None
        b1, b2 = delta_coefficients(self.options.get("coefficients", PAPER_COEFFICIENTS))
        return Int8Tolerance(dtype, b1, b2, self.momentum, buffer_codes=self.int8_buffers,
                             nesterov=self.options.get("nesterov", False), lr=float(self.lr),
                             switch_step=self.options.get("switch_step", 0))

    def _placed(self, name: str, tensor: torch.Tensor) -> torch.Tensor:
        return carve(tensor, self.guarded) if name in self.unaligned else tensor

    def _state(self, p: torch.Tensor, name: str, dtype: torch.dtype, fill: float) -> torch.Tensor:
        # empty_like keeps the param's layout (channels_last, transposed).
        return self._placed(name, torch.empty_like(p, dtype=dtype).fill_(fill))

    # ----------------------------------------------------------------------------- stepping

    def scalars(self, **changes) -> StepScalars:
        """The run's step scalars, with `changes` (lr, momentum, ...) made."""
        o = {**self.options, "lr": self.lr, "momentum": self.momentum, **changes}
        b1, b2 = delta_coefficients(o.get("coefficients", PAPER_COEFFICIENTS))
        return StepScalars.make(o["lr"], b1, b2, o["momentum"], o.get("dampening", 0.0),
                                o.get("weight_decay", 0.0), o.get("nesterov", False),
                                o.get("maximize", False), o.get("switch_step", 0))

    def grads(self, indices: Sequence[int] | None = None, scale: float = 1.0) -> list:
        """Fresh random grads for the params at `indices` (default all), times `scale`."""
        indices = range(len(self.params)) if indices is None else indices
        return [self._placed("grads", random(self.params[i].shape, self.params[i].dtype,
                                             self.generator, self.params[i].device, scale))
                for i in indices]

    def lists(self, grads: list[torch.Tensor], indices: Sequence[int] | None = None
              ) -> list[list[torch.Tensor]]:
        """The contract's lists in its order (new lists of the run's tensors, each list the
        attribute of its name) for the params at `indices` (default all), with `grads` for
        them."""
        indices = range(len(self.params)) if indices is None else indices

        def picked(name: str) -> list[torch.Tensor]:
            if name == "grads":
                return list(grads)
            tensors = getattr(self, name)
            return [tensors[i] for i in indices] if tensors else []

        return [picked(name) for name in LIST_NAMES]

    def call(self, grads: list[torch.Tensor], indices: Sequence[int] | None = None,
             grad_scale: torch.Tensor | None = None, found_inf: torch.Tensor | None = None
             ) -> None:
        """One call of the implementation, without the oracle (for comparisons of runs)."""
        self.implementation.call(*self.lists(grads, indices), self.scalars(), grad_scale,
                                 found_inf)

    def step(self, indices: Sequence[int] | None = None, *, grads=None,
             grad_scale: torch.Tensor | None = None, found_inf: torch.Tensor | None = None,
             check: bool = True) -> list[torch.Tensor]:
        """One call on the params at `indices` (default all) with `grads` (default: fresh ones,
        scaled up by grad_scale), the oracles stepped alike; then `check` unless told not to.
        Returns the grads."""
        indices = list(range(len(self.params)) if indices is None else indices)
        scale = None if grad_scale is None else grad_scale.item()
        if grads is None:
            grads = self.grads(indices, scale or 1.0)
        self.call(grads, indices, grad_scale, found_inf)
        skipped = found_inf is not None and found_inf.item() != 0
        lr = float(self.lr)
        for i, g in zip(indices, grads):
            oracle_step(self.oracles[i], g, lr=lr, grad_scale=scale, found_inf=skipped,
                        **self.options)
            self.taken[i] += not skipped
        if check:
            self.check()
        return grads

    def poison_history(self, even: float, odd: float) -> None:
        """Fill both slots with values no step may read (inf, NaN): they hold the oracle's
        history again only once two steps have written both."""
        # An 8-bit history's codes are integers: its scales take the poison.
        slots = ((self.delta_even_scales, self.delta_odd_scales) if self.int8
                 else (self.delta_even, self.delta_odd))
        for i, (a, b) in enumerate(zip(*slots)):
            a.fill_(even)
            b.fill_(odd)
            self.history_from[i] = int(self.steps[i]) + 2

    # ------------------------------------------------------------------------------ checking

    def count(self, i: int) -> int:
        return int(self.steps[i])

    def newest(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(d1, d2) of param i: after count k, slot (k - 1) % 2 holds the newest step d1 and
        slot k % 2 the one before, d2. An 8-bit history's slots decoded."""
        even, odd = self.delta_even[i], self.delta_odd[i]
        if self.int8:
            even = int8_history.decode(even.cpu(), self.delta_even_scales[i].cpu())
            odd = int8_history.decode(odd.cpu(), self.delta_odd_scales[i].cpu())
        return (even, odd) if self.count(i) % 2 == 1 else (odd, even)

    def check(self) -> None:
        """Every count, param, history slot and momentum buffer against the oracles, and every
        guard element untouched."""
        assert self.tolerance is not None, "no oracle bound for an 8-bit history with decay"
        self.tolerance.observe(self.oracles)
        if self.int8:
            self.tolerance.observe_scales(self.delta_even_scales + self.delta_odd_scales)
            self.tolerance.observe_buffer_scales(self.momentum_scales)
        for i, o in enumerate(self.oracles):
            count = self.count(i)
            where = (f"{self.implementation.name}, param {i} {tuple(self.params[i].shape)} at "
                     f"count {count}")
            assert count == o.step, f"{where}: the oracle's count is {o.step}"
            assert_close(self.params[i], o.weight, self.tolerance.weight(self.taken[i]),
                         f"{where}: weight")
            if count >= self.history_from[i]:
                d1, d2 = self.newest(i)
                assert_close(d1, o.d1, self.tolerance.history(), f"{where}: d1")
                assert_close(d2, o.d2, self.tolerance.history(), f"{where}: d2")
            if self.momentum_buffers and o.momentum_buffer is not None:
                buffer = (int8_history.decode(self.momentum_buffers[i].cpu(),
                                              self.momentum_scales[i].cpu())
                          if self.int8_buffers else self.momentum_buffers[i])
                assert_close(buffer, o.momentum_buffer,
                             self.tolerance.buffer(self.taken[i]), f"{where}: momentum buffer")
        for buffer in self.guarded:
            assert buffer[0].item() == GUARD and buffer[-1].item() == GUARD, \
                f"{self.implementation.name}: an element next to a tensor was written"

    def tensors(self) -> list[torch.Tensor]:
        """Everything a step may write."""
        return [*self.params, *self.delta_even, *self.delta_odd, *self.delta_even_scales,
                *self.delta_odd_scales, *self.momentum_buffers, *self.momentum_scales,
                *self.steps]

    def snapshot(self) -> list[torch.Tensor]:
        return [t.clone() for t in self.tensors()]

    def assert_unchanged(self, snapshot: list[torch.Tensor], what: str = "") -> None:
        for t, s in zip(self.tensors(), snapshot, strict=True):
            torch.testing.assert_close(t, s, rtol=0, atol=0, equal_nan=True,
                                       msg=lambda m: f"{what}: {m}")


def assert_bitwise_equal(a: Run, b: Run, what: str = "") -> None:
    """Every tensor of two runs equal bit for bit (NaN where the other has NaN)."""
    for x, y in zip(a.tensors(), b.tensors(), strict=True):
        torch.testing.assert_close(x.cpu(), y.cpu(), rtol=0, atol=0, equal_nan=True,
                                   msg=lambda m: f"{a.implementation.name} and "
                                                 f"{b.implementation.name} {what}: {m}")
