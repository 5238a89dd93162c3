"""torch.optim.SGD's implementation flags (`foreach`, `fused`, `differentiable`) as TMSGD reads
them, so that code written for SGD runs unchanged or gets a message saying what to use instead:

    foreach=None, fused=None   nothing to decide (the defaults): `backend` as given
    foreach=True               the torch backend (its eager step is torch._foreach_* ops)
    fused=True                 a fused kernel: `backend="auto"` may pick cuda, triton or cpu but
                               never the torch fallback (an error where none can run)
    fused=False                the torch backend (SGD's meaning: not the fused kernel)
    foreach=False              refused: TMSGD has no per-tensor loop to fall back to
    differentiable=True        refused: the step runs in place, outside autograd
"""

from __future__ import annotations

_FUSED = ("cuda", "triton", "cpu")


def backend_for(backend: str, foreach: bool | None, fused: bool | None,
                differentiable: bool) -> str:
    """The backend TMSGD uses for these flags, or a ValueError that says what to use."""
    if differentiable:
        raise ValueError("TMSGD does not support differentiable=True: its step updates params "
                         "and state in place outside autograd (torch.optim.SGD's differentiable "
                         "step is the tool for differentiating through an update)")
    if foreach is False:
        raise ValueError("TMSGD has no per-tensor for-loop step for foreach=False; leave foreach "
                         "unset, or choose an implementation with backend= (auto, cuda, triton, "
                         "cpu, torch)")
    if foreach and fused:
        raise ValueError("`foreach` and `fused` cannot both be True")
    if foreach or fused is False:
        wanted = "foreach=True" if foreach else "fused=False"
        if backend not in ("auto", "torch"):
            raise ValueError(f"{wanted} selects the torch backend, but backend={backend!r} was "
                             f"given; pass one or the other")
        return "torch"
    if fused and backend not in ("auto", *_FUSED):
        raise ValueError(f"fused=True needs a fused backend ({', '.join(_FUSED)} or auto), but "
                         f"backend={backend!r} was given")
    return backend


def check_fused(chosen: str, device) -> None:
    """With fused=True, `backend="auto"` must not have fallen back to the torch step."""
    if chosen not in _FUSED:
        raise RuntimeError(f"fused=True, but no fused TM-SGD kernel can run on {device}; "
                           f"tmsgd_kernels.available_backends({str(device)!r}) says why. Leave "
                           f"fused unset to use the pure-PyTorch step")
