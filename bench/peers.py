"""Every step the benchmarks time, built on its own tensors for a case and a configuration.

    tmsgd[B]         TMSGD(backend=B) for each backend that runs on the device (not Triton's CPU
                     interpreter); tmsgd[B]+flat the same after flatten_parameters (list cases)
    compile[fallback]  torch.compile(TMSGD(backend="torch").step, fullgraph=True)
    compile[fair]    a hand-written per-tensor TM-SGD step compiled with fullgraph: what a user
                     who writes TM-SGD for torch.compile gets (history written in place, the two
                     slots swapped on the host; the least traffic a step can have)
    sgd[fused], sgd[foreach]   torch.optim.SGD with the same momentum
    ceiling          in-place streaming a.add_(b) over the same elements (12 bytes per fp32
                     element): the memory bandwidth a step can use

Bytes per stepped element, for the floor (bytes / ceiling bandwidth): TM-SGD reads W, g and both
history slots and writes W and one slot, 3 P + 3 H (P param, H history bytes: 24 fp32, 18 with
bf16 history), plus 2 P with momentum (read and write the buffer); SGD 3 P (+2 P).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from cases import Case

from tmsgd_kernels import TMSGD, flatten_parameters
from tmsgd_kernels.implementations import unavailable_reason

LR = 1e-3
MOMENTUM = 0.9
B1, B2 = 0.5, -0.5  # the paper's coefficients (1.5, -1, 0.5) in delta form


@dataclass(frozen=True)
class Config:
    momentum: bool = False
    history: str = "fp32"  # or "bf16", "int8"

    @property
    def label(self) -> str:
        return f"{'momentum' if self.momentum else 'plain'}, {self.history} history"


# Bytes per element of one history slot: an 8-bit slot is a code and 1/256 of an fp32 scale.
HISTORY_BYTES = {"fp32": 4, "bf16": 2, "int8": 1 + 4 / 256}


def bytes_per_element(peer: str, config: Config) -> float:
    param = 4
    if peer == "ceiling":
        return 3 * param
    extra = 2 * param if config.momentum else 0
    if peer.startswith("sgd"):
        return 3 * param + extra
    return 3 * param + 3 * HISTORY_BYTES[config.history] + extra


def _tensors(case: Case, device: torch.device, config: Config | None = None
             ) -> list[torch.nn.Parameter]:
    """The case's params (with gradients, but for its idle ones). With an 8-bit history a flat
    buffer of n elements is an (n / 4096, 4096) matrix: a 1-D param keeps a full history."""
    generator = torch.Generator(device=device).manual_seed(0)
    params = []
    for index, shape in enumerate(case.shapes):
        if config is not None and config.history == "int8" and len(shape) == 1:
            shape = (shape[0] // 4096, 4096) if shape[0] % 4096 == 0 else shape
        param = torch.nn.Parameter(torch.randn(shape, generator=generator, device=device))
        if index not in case.idle:
            param.grad = torch.randn(shape, generator=generator, device=device) * 1e-3
        params.append(param)
    return params


def _flattened(case: Case, device: torch.device) -> list[torch.nn.Parameter]:
    module = torch.nn.ParameterList(_tensors(case, device))
    grads = [p.grad for p in module]
    flatten_parameters(module)
    for param, grad in zip(module, grads):
        if grad is None:  # flatten_parameters gives every param a gradient view
            param.grad = None
    return list(module)


def _tmsgd(backend: str, flat: bool = False, compiled: bool = False):
    def build(case: Case, device: torch.device, config: Config) -> Callable[[], object]:
        params = _flattened(case, device) if flat else _tensors(case, device, config)
        history = {"bf16": torch.bfloat16, "int8": torch.int8}.get(config.history)
        optimizer = TMSGD(params, lr=torch.tensor(LR) if compiled else LR, backend=backend,
                          momentum=MOMENTUM if config.momentum else 0.0, history_dtype=history)
        return torch.compile(optimizer.step, fullgraph=True) if compiled else optimizer.step
    return build


def _sgd(**options):
    def build(case: Case, device: torch.device, config: Config) -> Callable[[], object]:
        optimizer = torch.optim.SGD(_tensors(case, device), lr=LR,
                                    momentum=MOMENTUM if config.momentum else 0.0, **options)
        return optimizer.step
    return build


def fair_step(params, grads, d1s, d2s, buffers, lr, momentum: float) -> None:
    """TM-SGD per tensor as a user would write it for torch.compile: d2 is overwritten with the
    new step (the caller swaps the slots), momentum as torch.optim.SGD's after its first step."""
    for index, (p, g, d1, d2) in enumerate(zip(params, grads, d1s, d2s)):
        if buffers:
            g = buffers[index].mul_(momentum).add_(g)
        d2.mul_(B2).add_(d1, alpha=B1).sub_(lr * g.to(d2.dtype))
        p.add_(d2)


def _fair(case: Case, device: torch.device, config: Config) -> Callable[[], object]:
    params = [p for p in _tensors(case, device) if p.grad is not None]
    grads = [p.grad for p in params]
    history = torch.bfloat16 if config.history == "bf16" else torch.float32
    slots = [[torch.zeros_like(p, dtype=history) for p in params] for _ in range(2)]
    buffers = [torch.zeros_like(p) for p in params] if config.momentum else []
    lr = torch.tensor(LR, device=device)
    compiled = torch.compile(fair_step, fullgraph=True)
    momentum = MOMENTUM if config.momentum else 0.0

    def step() -> None:
        with torch.no_grad():
            compiled(params, grads, slots[0], slots[1], buffers, lr, momentum)
        slots.reverse()
    return step


def _ceiling(case: Case, device: torch.device, config: Config) -> Callable[[], object]:
    a = [p.detach() for p in _tensors(case, device) if p.grad is not None]
    b = [t.clone() for t in a]
    if len(a) == 1:
        return lambda: a[0].add_(b[0])
    return lambda: torch._foreach_add_(a, b)


COMPILED_PEERS = ("compile[fallback]", "compile[fair]")


def peers_for(case: Case, device: torch.device, compiled: tuple[str, ...] = COMPILED_PEERS
              ) -> dict[str, Callable]:
    """name -> builder for the peers that apply: every TM-SGD backend, flattened for list
    cases, the `compiled` ones of the torch.compile peers (a cold compile takes 10-20 s on a
    CPU), SGD and the ceiling."""
    names = {}
    for backend in ("cuda", "triton", "cpu", "torch"):
        if backend == "triton" and device.type != "cuda":
            continue  # the interpreter is a test tool, not a benchmark
        if unavailable_reason(backend, device) is None:
            names[f"tmsgd[{backend}]"] = _tmsgd(backend)
            if len(case.shapes) > 1 and backend != "torch":
                names[f"tmsgd[{backend}]+flat"] = _tmsgd(backend, flat=True)
    if "compile[fallback]" in compiled:
        names["compile[fallback]"] = _tmsgd("torch", compiled=True)
    if "compile[fair]" in compiled:
        names["compile[fair]"] = _fair
    names["sgd[fused]"] = _sgd(fused=True)
    names["sgd[foreach]"] = _sgd(foreach=True)
    names["ceiling"] = _ceiling
    return names
