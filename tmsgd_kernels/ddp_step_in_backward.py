"""step_in_backward under DistributedDataParallel (`step_in_backward(optimizer, ddp=model)`).

DDP runs post-accumulate-grad hooks before its bucketed all-reduce, so hooks on the params would
step each rank's own gradient. Instead the step runs in DDP's communication hook, after each
bucket's all-reduce (the "comm-hook route" of DDP's optimizer overlap): the bucket's averaged
gradients step the bucket's params while backward() goes on with the next buckets. DDP keeps
its buckets allocated whatever the optimizer does, so this saves no gradient memory; it moves
the step into the backward pass, and it gives DDP gradient accumulation without no_sync().

A DDP model takes one comm hook, for good: the hook registered here serves every handle that
steps the model's params, and with none left it only all-reduces, as DDP does without a hook.
"""

# No `from __future__ import annotations`: DDP checks the comm hook's return annotation as an
# object (torch.futures.Future[torch.Tensor]), not a string.
import weakref

import torch
from torch.distributed.algorithms.ddp_comm_hooks.default_hooks import allreduce_hook
from torch.nn.parallel import DistributedDataParallel


class _Handles:
    """The comm hook's state: the DDP model's process group and the handles stepping it."""

    def __init__(self, process_group) -> None:
        self.process_group = process_group
        self.handles: dict[int, object] = {}
        self.steps: list[torch.futures.Future] = []  # this backward pass's bucket steps

    def wait(self) -> None:
        """Wait for the bucket steps of the backward pass that is ending. DDP queues its own
        wait when the last bucket is ready, after the handles' end-of-backward callbacks, which
        must not count a micro-batch (and apply a step) while folds are still running."""
        steps, self.steps = self.steps, []
        torch.futures.wait_all(steps)


# DDP model -> its _Handles, once our comm hook is registered on it.
_registered: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _comm_hook(state: _Handles, bucket) -> torch.futures.Future[torch.Tensor]:
    reduced = allreduce_hook(state.process_group, bucket)  # DDP's own averaging all-reduce
    handles = list(state.handles.values())
    if not handles:
        return reduced
    for handle in handles:  # on the autograd thread: the micro-batch ends with this backward
        handle.queue_end_of_backward()

    def step(done: torch.futures.Future) -> torch.Tensor:
        buffer = done.value()
        params, grads = bucket.parameters(), bucket.gradients()  # views of the reduced buffer
        for handle in handles:
            handle.step_reduced(params, grads)
        # DDP copies the bucket into each .grad, and the next backward() adds to .grad: a
        # stepped gradient is zeroed here, as zero_grad(set_to_none=False) would.
        stepped = [g for p, g in zip(params, grads) if any(h.owns(p) for h in handles)]
        if stepped:
            torch._foreach_zero_(stepped)
        return buffer

    stepped = reduced.then(step)
    state.steps.append(stepped)
    return stepped


class _Detach:
    def __init__(self, handles: _Handles, key: int) -> None:
        self._handles, self._key = handles, key

    def remove(self) -> None:
        self._handles.handles.pop(self._key, None)


def attach(ddp: DistributedDataParallel, handle, params: list[torch.Tensor]) -> _Detach:
    """Make `ddp`'s comm hook step `handle`'s params (all of which must be `ddp`'s)."""
    if not isinstance(ddp, DistributedDataParallel):
        raise TypeError(f"ddp must be the DistributedDataParallel model whose params the "
                        f"optimizer steps, got {type(ddp).__name__}")
    ddp_params = {id(p) for p in ddp.parameters()}
    outside = [i for i, p in enumerate(params) if id(p) not in ddp_params]
    if outside:
        raise ValueError(f"{len(outside)} of the optimizer's params are not params of the DDP "
                         f"model (the first: number {outside[0]} in param-group order); they "
                         f"would never be stepped")
    handles = _registered.get(ddp)
    if handles is None:
        handles = _Handles(ddp.process_group)
        try:
            ddp.register_comm_hook(handles, _comm_hook)
        except RuntimeError as error:
            raise RuntimeError("this DDP model has a communication hook already (DDP takes one); "
                               "step_in_backward steps in its own hook after the all-reduce"
                               ) from error
        _registered[ddp] = handles
    handles.handles[id(handle)] = handle
    handle.wait_for_steps = handles.wait
    return _Detach(handles, id(handle))
