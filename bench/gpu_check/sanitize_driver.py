"""The workload compute-sanitizer runs (bench/gpu_check/run.py, stage `sanitize`): both GPU
kernels, the `cuda` and `triton` backends, through every case they have code for, a few steps
each, every result compared with the `torch` backend's.

Covered: all 16 dtype pairs (param x history), momentum with Nesterov and without, the warm-up
(switch_step 2) and the switch to the multi-step update, AMP (grad_scale and found_inf on the
device, a skipped step included), weight decay and maximize, counts on the host and on the
device, views one element off 16-byte alignment, and a run of 130 tensors (more than one CUDA
table of 60) with one of several CUDA chunks and Triton blocks; tensors of 0 and 1 elements.

On a machine without a GPU it runs the same cases with the `cpu` backend and, under
TRITON_INTERPRET=1, the `triton` backend on CPU tensors (CI does this, to keep the driver
working); compute-sanitizer is then not involved.

    python bench/gpu_check/sanitize_driver.py [--backends cuda,triton] [--quick]

--quick keeps two dtype pairs and leaves out the 130 tensors (the interpreter takes about two
seconds a case on the 2-core CI machine: 100 s for everything, 10 s quick).
"""

from __future__ import annotations

import argparse
import sys
import time

import torch

from tmsgd_kernels import functional
from tmsgd_kernels.implementations import unavailable_reason

DTYPES = [torch.float32, torch.float64, torch.float16, torch.bfloat16]
SHAPES = [(1,), (3, 5), (0,), (4097,), (33_000,), (7, 1, 3)]
STEPS = 4


def _views(shapes, dtype, device, offset: int, generator) -> list[torch.Tensor]:
    """Tensors of `shapes`, each a view `offset` elements into its own storage."""
    out = []
    for shape in shapes:
        numel = torch.Size(shape).numel()
        storage = torch.randn(numel + offset, generator=generator, dtype=torch.float64)
        out.append(storage.to(dtype).to(device)[offset:].view(shape))
    return out


def _tolerance(param: torch.dtype, history: torch.dtype) -> float:
    """Two correct backends differ by roundings of the stored dtypes: a few ulps of the param,
    and history ulps scaled by the size of a step (lr 0.05, gradients of 0.1)."""
    return 16 * torch.finfo(param).eps + 0.02 * torch.finfo(history).eps


def run_case(backend: str, device: torch.device, param: torch.dtype, history: torch.dtype,
             shapes, *, offset: int = 0, capturable: bool = False, amp: bool = False,
             **options) -> float:
    """STEPS steps with `backend` and with the torch backend from the same start; returns the
    largest difference between them, relative to the tolerance (must stay <= 1)."""
    generator = torch.Generator().manual_seed(len(shapes) * 97 + offset)
    start = _views(shapes, param, device, offset, generator)
    grads = [[g * 0.1 for g in _views(shapes, param, device, offset, generator)]
             for _ in range(STEPS)]
    results = []
    for name in (backend, "torch"):
        params = [p.clone() for p in start]
        if offset:  # clones are aligned: put them back off alignment
            params = [_views([p.shape], param, device, offset, generator)[0].copy_(p)
                      for p in params]
        state = functional.init_state(params, options.get("momentum", 0.0), history,
                                      capturable=capturable)
        for k in range(STEPS):
            scale, found_inf = None, None
            if amp:
                scale = torch.tensor(8.0, device=device)
                found_inf = torch.tensor(float(k == 2), device=device)
            step_grads = [g * 8.0 for g in grads[k]] if amp else grads[k]
            functional.tmsgd(params, step_grads, state["delta_even"], state["delta_odd"],
                             state["momentum_buffers"], state["steps"], lr=0.05,
                             grad_scale=scale, found_inf=found_inf, backend=name, **options)
        results.append(params)
    if device.type == "cuda":
        torch.cuda.synchronize()
    worst = 0.0
    for a, b in zip(*results):
        if a.numel():
            assert a.isfinite().all(), f"{backend}: non-finite result"
            worst = max(worst, float((a.double() - b.double()).abs().max()))
    return worst / _tolerance(param, history)


def cases(quick: bool) -> list[tuple[str, torch.dtype, torch.dtype, list, dict]]:
    out = []
    pairs = ([(torch.float32, torch.float32), (torch.bfloat16, torch.float16)] if quick
             else [(param, history) for param in DTYPES for history in DTYPES])
    for param, history in pairs:
        out.append(("momentum warm-up amp device-counts", param, history, SHAPES,
                    dict(momentum=0.9, nesterov=True, switch_step=2, amp=True,
                         capturable=True)))
        out.append(("decay maximize unaligned host-counts", param, history, SHAPES,
                    dict(weight_decay=0.01, maximize=True, offset=1)))
    if quick:
        return out
    many = [(n,) for n in torch.randint(0, 3000, (130,),
                                        generator=torch.Generator().manual_seed(5)).tolist()]
    many[7] = (40_000,)
    out.append(("130 tensors momentum device-counts", torch.float32, torch.float32, many,
                dict(momentum=0.9, capturable=True)))
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backends", default=None,
                        help="comma-separated; default: cuda,triton on a GPU, cpu,triton else")
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    wanted = args.backends.split(",") if args.backends else (
        ["cuda", "triton"] if device.type == "cuda" else ["cpu", "triton"])
    backends = [b for b in wanted if unavailable_reason(b, device) is None]
    for b in wanted:
        if b not in backends:
            print(f"skipped {b}: {unavailable_reason(b, device)}")
    if not backends:
        print("no backend to drive")
        return 1
    failed = 0
    for backend in backends:
        for name, param, history, shapes, options in cases(args.quick):
            started = time.perf_counter()
            ratio = run_case(backend, device, param, history, shapes, **options)
            ok = ratio <= 1.0
            failed += not ok
            pair = f"{str(param)[6:]:>8}/{str(history)[6:]:<8}"
            print(f"{'ok ' if ok else 'BAD'} {backend:>6} {pair} {name:<40} diff/tolerance "
                  f"{ratio:8.3f} {time.perf_counter() - started:6.2f} s", flush=True)
    print(f"sanitize_driver: {len(backends)} backends, {failed} cases off the torch backend")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
