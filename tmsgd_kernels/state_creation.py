"""torch.distributed.checkpoint creates an optimizer's state by calling `step()` once, before
any training, with zero gradients and lr 0 (`_init_optim_state`, behind
get_optimizer_state_dict and set_optimizer_state_dict). For TM-SGD that step would still count:
each param's step count would reach 1, which moves the plain-SGD warm-up (switch_step) by one
step and makes the next step blend the momentum buffer (buf = momentum * 0 + (1 - dampening) * g
instead of torch.optim.SGD's first-step buf = g). Such a step therefore only creates the state,
with every count at 0: it is recognised by all three of its marks, so that a real first step at
lr 0 (a warm-up schedule starting at 0) still counts as torch.optim.SGD's would."""

from __future__ import annotations

import torch


def is_state_creation_step(optimizer: torch.optim.Optimizer) -> bool:
    """Whether this step has no state yet, lr 0 in every group and only all-zero gradients."""
    if torch.compiler.is_compiling() or optimizer.state:
        return False
    groups = optimizer.param_groups
    if any(float(group["lr"]) != 0.0 for group in groups):
        return False
    grads = [p.grad for group in groups for p in group["params"] if p.grad is not None]
    if not grads or any(grad.layout != torch.strided for grad in grads):
        return False  # nothing to create, or a gradient the step refuses with its own error
    # A DTensor gradient's answer is global (a reduction over its mesh), so every rank decides
    # alike and stops at the same gradient. Runs once, on a step without state.
    return not any(bool(grad.ne(0).any()) for grad in grads)
