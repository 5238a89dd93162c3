"""torch.distributed.checkpoint creates an optimizer's state by calling `step()` once, before any
training, with zero gradients and lr 0 (`_init_optim_state`, behind get_optimizer_state_dict and
set_optimizer_state_dict). A TM-SGD step there would still count: each count would reach 1,
which moves the plain-SGD warm-up (switch_step) by one step and makes the next step blend the
momentum buffer instead of taking torch.optim.SGD's first-step buf = g. That call therefore only
creates the state, with every count at 0.

It is recognised by its call site, not by what the step looks like: a training step (a warm-up
from lr 0 whose first gradients happen to be zero, say) is never mistaken for it, and eager and
compiled steps count alike."""

from __future__ import annotations

import sys

import torch

_DCP_MODULE = "torch.distributed.checkpoint.state_dict"
_INIT_FUNCTION = "_init_optim_state"
# TMSGD.step is called by _init_optim_state through torch.optim's step wrappers (profiling and
# hooks: two frames in torch 2.11 to 2.14); a few more allow for other wrappers.
_FRAMES_TO_SEARCH = 6


def is_checkpoint_state_init(optimizer: torch.optim.Optimizer) -> bool:
    """Whether this `step()` is torch.distributed.checkpoint's state-creating call."""
    if optimizer.state or torch.compiler.is_compiling():
        return False  # it only ever calls a stateless optimizer, and eagerly
    module = sys.modules.get(_DCP_MODULE)
    function = getattr(module, _INIT_FUNCTION, None)
    code = getattr(function, "__code__", None)
    if code is None:
        return False
    frame = sys._getframe(1)
    for _ in range(_FRAMES_TO_SEARCH):
        frame = frame.f_back
        if frame is None:
            return False
        if frame.f_code is code:
            return True
    return False
