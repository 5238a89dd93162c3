"""Optimizer-state bytes per parameter element, measured from tensor storage: each optimizer
takes one step on a list of fp32 params and the bytes of every tensor in its state are summed
(counts included) and divided by the number of parameter elements. The report uses one
1024 x 1024 param; `python bench/state_memory.py` measures GPT-2 small's list (bench/cases.py:
148 tensors, 124M elements, 1-D biases and norms included, which keep a full history under
history_dtype=torch.int8) and writes bench/results/state_bytes_gpt2.json."""

from __future__ import annotations

import torch
from cases import gpt2_small_shapes

from tmsgd_kernels import TMSGD


def _tmsgd(params, **options) -> TMSGD:
    # The state is the same whichever implementation steps it; the torch one runs everywhere.
    return TMSGD(params, lr=1e-3, backend="torch", **options)


OPTIMIZERS = {
    "TMSGD, fp32 history": lambda p: _tmsgd(p),
    "TMSGD, bf16 history": lambda p: _tmsgd(p, history_dtype=torch.bfloat16),
    "TMSGD + momentum, fp32 history": lambda p: _tmsgd(p, momentum=0.9),
    "TMSGD + momentum, bf16 history": lambda p: _tmsgd(p, momentum=0.9,
                                                      history_dtype=torch.bfloat16),
    "TMSGD, int8 history": lambda p: _tmsgd(p, history_dtype=torch.int8),
    "TMSGD + momentum, int8 history": lambda p: _tmsgd(p, momentum=0.9,
                                                      history_dtype=torch.int8),
    "TMSGD + momentum, int8 history and buffer": lambda p: _tmsgd(
        p, momentum=0.9, history_dtype=torch.int8, momentum_dtype=torch.int8),
    "SGD + momentum": lambda p: torch.optim.SGD(p, lr=1e-3, momentum=0.9),
    "Adam": lambda p: torch.optim.Adam(p, lr=1e-3),
}


def state_bytes_per_element(shapes: list[tuple[int, ...]] = ((1024, 1024),)
                            ) -> dict[str, float]:
    """Bytes of optimizer state per parameter element, per optimizer. One optimizer at a time:
    its params and state are freed before the next is made."""
    elements = sum(torch.Size(shape).numel() for shape in shapes)
    result = {}
    for name, make in OPTIMIZERS.items():
        params = [torch.nn.Parameter(torch.zeros(shape)) for shape in shapes]
        for param in params:
            param.grad = torch.zeros_like(param)
        optimizer = make(params)
        optimizer.step()
        total = sum(value.untyped_storage().nbytes()
                    for state in optimizer.state.values() for value in state.values()
                    if isinstance(value, torch.Tensor))
        result[name] = total / elements
        del optimizer, params
    return result


def main() -> None:
    import json
    import sys
    from pathlib import Path

    from machine import machine

    result = {"machine": machine(), "model": "gpt2-small",
              "state_bytes_per_element": state_bytes_per_element(gpt2_small_shapes())}
    for name, value in result["state_bytes_per_element"].items():
        print(f"{name}: {value:.3f} B/elem")
    out = Path(sys.argv[1] if len(sys.argv) > 1 else
               Path(__file__).parent / "results" / "state_bytes_gpt2.json")
    out.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
