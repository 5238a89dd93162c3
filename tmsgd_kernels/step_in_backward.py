"""The step inside backward (docs/STEP_IN_BACKWARD.md): each param of a TMSGD is stepped by a
post-accumulate-grad hook as soon as its gradient is complete, and the gradient is freed, so a
training step never holds every gradient at once. With accumulation_steps=k, each of k backward
passes folds its gradients into the state (tmsgd_kernels/backward_fold.py) and frees them; the
k-th applies the step.

The optimizer object stays the one the user made: its param groups are read at every step (lr
schedulers work), its state is the state the hooks step (state_dict, load_state_dict and
torch.distributed.checkpoint see it), and removing the handle returns to optimizer.step() with
that state. While the hooks are on, optimizer.step() is refused (it would find no gradients).
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from . import backward_fold, step_plan
from .checkpoint_state_init import is_checkpoint_state_init
from .functional import tmsgd
from .local_tensors import local
from .optimizer import TMSGD
from .overlap import check_no_overlap
from .param_state import BUFFER_SCALES_KEY, SCALE_KEYS, history_dtype, prepare, real_view
from .plan_checks import first_mismatched_grad
from .validation import validate_gradient, validate_hyperparameters

if TYPE_CHECKING:
    from torch.nn.parallel import DistributedDataParallel

# Params with fewer elements wait for others of their group, device and dtype and are stepped
# with them in one call, at most this many elements at a time, or at the end of the backward
# pass: one call per small bias would cost more host time than its kernel takes. The wait holds
# at most about this many elements of gradient per group, device and dtype.
BUCKET_ELEMENTS = 1 << 20

# Optimizers with hooks on, so that a second call cannot step every param twice.
_active: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


@dataclass
class _Prepared:
    """A param's state as the kernels take it, valid while the state dict, its entries, the
    param's layout and the group's planning options are the ones it was made from."""

    state: dict
    ids: tuple
    layout: tuple
    options: tuple
    slots: backward_fold.Slots
    even_scales: torch.Tensor | None
    odd_scales: torch.Tensor | None
    buffer_scales: torch.Tensor | None  # with an 8-bit momentum buffer
    # A momentum buffer just started (param_state.prepare) for a param that has taken steps: its
    # entries enter the state once its first step or fold is done.
    fresh_entries: dict | None

    @property
    def fresh(self) -> bool:
        return self.fresh_entries is not None


def _accumulator_problem(group: dict, params) -> tuple[torch.Tensor, str] | None:
    """The first of `params` (of `group`) that cannot accumulate over micro-batches, and why
    (backward_fold.accumulator_problem), or None."""
    for param in params:
        problem = backward_fold.accumulator_problem(
            history_dtype(group, param), real_view(param).dtype, group)
        if problem is not None:
            return param, problem
    return None


def _layout(tensor: torch.Tensor) -> tuple:
    return tensor.data_ptr(), tensor.dtype, tensor.shape, tensor.stride()


class StepInBackward:
    """The handle `step_in_backward` returns: `remove()` takes the hooks off."""

    def __init__(self, optimizer: TMSGD, accumulation_steps: int) -> None:
        self.optimizer = optimizer
        self.accumulation_steps = accumulation_steps
        self._where: dict[int, tuple[int, int]] = {}  # id(param) -> (group, index in group)
        self._prepared: dict[int, _Prepared] = {}
        self._pending: dict[tuple, list[torch.Tensor]] = {}
        self._pending_elements: dict[tuple, int] = {}
        # id(param) -> (its group, its fold record), for params folded in the current cycle
        self._partial: dict[int, tuple[dict, backward_fold.Partial]] = {}
        self._micro_batch = 0  # backward passes completed in the current cycle
        self._callback_queued = False
        self._handles: list = []
        # Under DDP: waits for the steps its comm hook runs outside the autograd thread.
        self.wait_for_steps = None

    @property
    def micro_batch(self) -> int:
        """Micro-batches folded in the current cycle (0 at a cycle's boundary)."""
        return self._micro_batch

    def _attach(self, ddp) -> None:
        optimizer = self.optimizer
        params = []
        for number, group in enumerate(optimizer.param_groups):
            for index, param in enumerate(group["params"]):
                if id(param) in self._where or not param.requires_grad:
                    continue
                self._where[id(param)] = (number, index)
                params.append(param)
        if ddp is None:
            for param in params:
                self._handles.append(param.register_post_accumulate_grad_hook(self._hook))
        else:  # imported here: torch.distributed is optional
            from .ddp_step_in_backward import attach
            self._handles.append(attach(ddp, self, params))
        self._handles += [
            optimizer.register_step_pre_hook(self._refuse_step),
            optimizer.register_state_dict_pre_hook(self._refuse_mid_cycle),
            optimizer.register_load_state_dict_pre_hook(self._refuse_mid_cycle),
        ]

    def remove(self) -> None:
        """Take the hooks off; optimizer.step() steps again, from the same state. Refused in the
        middle of an accumulation cycle (the state then holds a partial step)."""
        self._refuse_mid_cycle(self.optimizer)
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        _active.pop(self.optimizer, None)
        # The optimizer's cached plans record which history slot each run is due to write
        # (torch_step.Parity, for compiled steps), and the hooks advanced the counts.
        self.optimizer._plans.clear()

    # ------------------------------------------------------------------ refusals

    def _refuse_step(self, optimizer, args, kwargs) -> None:
        if is_checkpoint_state_init(optimizer):
            return  # torch.distributed.checkpoint creating the state (counts stay 0)
        self._refuse_scaler()  # GradScaler(capturable=True) sets these, then calls step()
        raise RuntimeError(
            "optimizer.step() while tmsgd_kernels.step_in_backward is on: the params are "
            "stepped inside backward() and their gradients are already freed, and a closure "
            "cannot be re-evaluated there; call handle.remove() to step with optimizer.step()")

    def _refuse_mid_cycle(self, optimizer, *args) -> None:
        if self._partial or self._micro_batch:
            raise RuntimeError(
                f"step_in_backward is {self._micro_batch} of {self.accumulation_steps} "
                f"micro-batches into an accumulation cycle: the state holds a partial step; "
                f"save, load or remove only after the cycle's last backward()")

    def _refuse_scaler(self) -> None:
        optimizer = self.optimizer
        if (getattr(optimizer, "grad_scale", None) is not None
                or getattr(optimizer, "found_inf", None) is not None):
            raise RuntimeError(
                "step_in_backward cannot run under a GradScaler (fp16): a step skipped for an "
                "inf/nan gradient would have to undo the params already stepped; use bf16 "
                "autocast, which needs no scaler")

    # --------------------------------------------------------------------- hooks

    def _hook(self, param: torch.Tensor) -> None:
        if param.grad is None:
            return
        try:
            self.queue_end_of_backward()
            self._take(param)
        except BaseException:
            self._abandon()
            raise

    def _take(self, param: torch.Tensor) -> None:
        number, _ = self._group_position(param)
        elements = local(param).numel()
        if elements >= BUCKET_ELEMENTS:
            self._run(number, [param])
            return
        key = (number, local(param).device, param.dtype, param.is_complex(),
               history_dtype(self.optimizer.param_groups[number], param))
        self._pending.setdefault(key, []).append(param)
        self._pending_elements[key] = self._pending_elements.get(key, 0) + elements
        if self._pending_elements[key] >= BUCKET_ELEMENTS:
            self._flush(key)

    def _end_of_backward(self) -> None:
        self._callback_queued = False
        try:
            if self.wait_for_steps is not None:
                self.wait_for_steps()
            for key in list(self._pending):
                self._flush(key)
        except BaseException:
            self._abandon()
            raise
        if self.accumulation_steps == 1:
            return
        self._micro_batch += 1
        if self._micro_batch == self.accumulation_steps:
            self._apply_cycle()
            self._micro_batch = 0

    def _abandon(self) -> None:
        """After an error inside backward(): the engine runs no final callback, so the next
        backward() starts from nothing pending (params not yet stepped keep their gradients)."""
        self._callback_queued = False
        self._pending.clear()
        self._pending_elements.clear()

    def _flush(self, key: tuple) -> None:
        params = self._pending.pop(key)
        self._pending_elements.pop(key)
        self._run(key[0], params)

    def _group_position(self, param: torch.Tensor) -> tuple[int, int]:
        """The param's group number and index, found again if the groups were replaced (as
        load_state_dict does)."""
        number, index = self._where[id(param)]
        groups = self.optimizer.param_groups
        if number < len(groups) and index < len(groups[number]["params"]) and (
                groups[number]["params"][index] is param):
            return number, index
        for number, group in enumerate(groups):
            for index, other in enumerate(group["params"]):
                if other is param:
                    self._where[id(param)] = (number, index)
                    return number, index
        raise RuntimeError("a param stepped in backward is no longer in the optimizer's param "
                           "groups; remove the step_in_backward handle before changing them")

    # ---------------------------------------------------------------------- steps

    # Under no_grad: the autograd thread runs hooks with grad mode off, but DDP's bucket steps
    # run where the all-reduce completes, with the thread's own grad mode.
    @torch.no_grad()
    def _run(self, number: int, params: list[torch.Tensor],
             grads: list[torch.Tensor] | None = None) -> None:
        """Step (or fold) `params` of group `number` with their gradients (`.grad`, then freed;
        or `grads`, which the caller owns). Everything is checked before any state is created
        or changed."""
        self._refuse_scaler()
        group = self.optimizer.param_groups[number]
        free = grads is None
        if free:
            grads = [param.grad for param in params]
        local_params, local_grads = [local(p) for p in params], [local(g) for g in grads]
        mismatched = first_mismatched_grad(local_params, local_grads)
        if mismatched >= 0:
            position = self._group_position(params[mismatched])[1]
            validate_gradient(params[mismatched], grads[mismatched],
                              f"group {number}, parameter {position}")
        if self.accumulation_steps > 1:
            validate_hyperparameters(group)
            found = _accumulator_problem(group, params)
            if found is not None:
                param, problem = found
                raise RuntimeError(
                    f"step_in_backward(accumulation_steps={self.accumulation_steps}) cannot "
                    f"accumulate group {number}, parameter "
                    f"{self._group_position(param)[1]}: {problem}")
        prepared = [self._prepare(param, group) for param in params]
        grads = [real_view(g) for g in local_grads]
        if self.accumulation_steps == 1:
            self._step(params, prepared, grads, group)
        else:
            self._fold(params, prepared, grads, group)
        if free:
            for param in params:
                param.grad = None

    def owns(self, param: torch.Tensor) -> bool:
        return id(param) in self._where

    def step_reduced(self, params: list[torch.Tensor], grads: list[torch.Tensor]) -> None:
        """Step (or fold) those of `params` this handle owns with `grads`, gradients reduced
        outside autograd's hooks (a DDP bucket's, ddp_step_in_backward.py), by group."""
        by_group: dict[int, tuple[list, list]] = {}
        for param, grad in zip(params, grads):
            if self.owns(param):
                entry = by_group.setdefault(self._group_position(param)[0], ([], []))
                entry[0].append(param)
                entry[1].append(grad)
        for number, (owned, owned_grads) in by_group.items():
            self._run(number, owned, owned_grads)

    def queue_end_of_backward(self) -> None:
        """Make the end of the running backward pass end this handle's micro-batch (called on
        the autograd thread: from a hook, or from DDP's comm hook)."""
        if not self._callback_queued:
            torch.autograd.Variable._execution_engine.queue_callback(self._end_of_backward)
            self._callback_queued = True

    def _prepare(self, param: torch.Tensor, group: dict) -> _Prepared:
        state = self.optimizer.state[param]
        known = self._prepared.get(id(param))
        layout, options = _layout(local(param)), step_plan.options(group)
        if (known is not None and known.state is state and known.layout == layout
                and known.options == options and known.ids == tuple(map(id, state.values()))):
            return known
        validate_hyperparameters(group)
        fresh = prepare(state, param, group)
        entries = state if fresh is None else fresh
        buffer = entries.get("momentum_buffer") if group["momentum"] != 0 else None
        buffer_scales = entries.get(BUFFER_SCALES_KEY) if buffer is not None else None
        slots = backward_fold.Slots(
            real_view(local(param)), local(state["delta_even"]), local(state["delta_odd"]),
            None if buffer is None else local(buffer), state["step"])
        scales = [state.get(key) for key in SCALE_KEYS.values()] + [buffer_scales]
        made = _Prepared(state, tuple(map(id, state.values())), layout, options, slots,
                         *[None if s is None else local(s) for s in scales], fresh)
        if fresh is None:  # a fresh buffer changes the state: prepared again next time
            self._prepared[id(param)] = made
        return made

    def _step(self, params, prepared: list[_Prepared], grads, group: dict) -> None:
        """One normal TM-SGD step of the params: functional.tmsgd, as TMSGD.step calls it."""
        for fresh in (False, True):  # a buffer started now steps with dampening 0 (optimizer.py)
            picked = [i for i, p in enumerate(prepared) if p.fresh == fresh]
            if not picked:
                continue
            slots = [prepared[i].slots for i in picked]
            quantized = prepared[picked[0]].even_scales is not None
            int8_buffers = prepared[picked[0]].buffer_scales is not None
            tmsgd([s.param for s in slots], [grads[i] for i in picked],
                  [s.delta_even for s in slots], [s.delta_odd for s in slots],
                  [s.buffer for s in slots] if group["momentum"] != 0 else [],
                  [s.step for s in slots], lr=group["lr"], momentum=group["momentum"],
                  dampening=0.0 if fresh else group["dampening"],
                  weight_decay=group["weight_decay"], nesterov=group["nesterov"],
                  maximize=group["maximize"], coefficients=group["coefficients"],
                  switch_step=group["switch_step"], backend=group["backend"],
                  delta_even_scales=([prepared[i].even_scales for i in picked] if quantized
                                     else None),
                  delta_odd_scales=([prepared[i].odd_scales for i in picked] if quantized
                                    else None),
                  momentum_scales=([prepared[i].buffer_scales for i in picked] if int8_buffers
                                   else None))
            if fresh:
                for i in picked:
                    prepared[i].state.update(prepared[i].fresh_entries)
        self._stepped()

    def _stepped(self) -> None:
        # What torch.optim.lr_scheduler's wrapper of optimizer.step() records: without it a
        # scheduler warns that it was stepped before the optimizer.
        self.optimizer._opt_called = True

    def _fold(self, params, prepared: list[_Prepared], grads, group: dict) -> None:
        mode = (group["momentum"] != 0, group["nesterov"])
        known = [self._partial.get(id(param)) for param in params]
        if any(k is not None and (k[1].momentum, k[1].nesterov) != mode for k in known):
            raise RuntimeError("momentum was turned on or off, or nesterov changed, in the middle "
                               "of an accumulation cycle; change them between cycles")
        firsts: dict[tuple, list] = {}
        mores: dict[bool, list] = {}
        for param, made, grad, old in zip(params, prepared, grads, known):
            if old is not None:
                mores.setdefault(old[1].first_momentum, []).append((old[1], grad))
                continue
            count = int(made.slots.step)
            partial = backward_fold.Partial(
                made.slots, odd=count % 2 == 1,
                first_momentum=mode[0] and (count == 0 or made.fresh),
                multistep=count >= group["switch_step"], momentum=mode[0], nesterov=mode[1])
            if made.fresh:  # fold 1 writes the buffer whole (first_momentum)
                made.state.update(made.fresh_entries)
            self._partial[id(param)] = (group, partial)
            key = (partial.odd, partial.first_momentum, partial.multistep)
            firsts.setdefault(key, []).append((partial, grad))
        for pairs in firsts.values():
            backward_fold.fold_first(*map(list, zip(*pairs)), group)
        for pairs in mores.values():
            backward_fold.fold_more(*map(list, zip(*pairs)), group)

    @torch.no_grad()
    def _apply_cycle(self) -> None:
        classes: dict[tuple, list] = {}
        for group, partial in self._partial.values():
            key = (id(group), partial.slots.param.dtype, partial.slots.param.device,
                   partial.odd, partial.multistep, partial.momentum, partial.nesterov)
            classes.setdefault(key, [group]).append(partial)
        self._partial.clear()
        for group, *partials in classes.values():
            backward_fold.apply(partials, group)
        self._stepped()


def step_in_backward(optimizer: TMSGD, accumulation_steps: int = 1, *,
                     ddp: DistributedDataParallel | None = None) -> StepInBackward:
    """Step every param of `optimizer` inside backward(), as soon as its gradient is complete,
    and free the gradient (docs/STEP_IN_BACKWARD.md).

    With `accumulation_steps` k > 1, each backward() is one micro-batch: its gradients are folded
    into the state and freed, and the k-th backward() applies the step, equal (up to fp32
    rounding, bounded in the docs) to k accumulated backward passes and one optimizer.step().
    The accumulating state must hold fp32: a history narrower than fp32 (bf16, fp16, 8-bit), or
    momentum with fp16/bf16 params, is refused for k > 1.

    Under DistributedDataParallel pass the DDP model as `ddp`: the params are then stepped in
    its communication hook after each bucket's all-reduce (ddp_step_in_backward.py), since
    hooks on the params would run before it. FSDP2 needs nothing: it runs the params' hooks
    after its reduce-scatter.

    Returns a handle whose `remove()` returns to optimizer.step(). While it is on,
    optimizer.step() raises; a GradScaler cannot be used (bf16 autocast can), nor global-norm
    gradient clipping (no backward pass ever holds every gradient)."""
    if not isinstance(optimizer, TMSGD):
        raise TypeError(f"step_in_backward takes a tmsgd_kernels.TMSGD, got "
                        f"{type(optimizer).__name__}")
    if (isinstance(accumulation_steps, bool) or not isinstance(accumulation_steps, int)
            or accumulation_steps < 1):
        raise ValueError(f"accumulation_steps must be an int >= 1, got {accumulation_steps!r}")
    if optimizer in _active:
        raise RuntimeError("step_in_backward is already on for this optimizer; remove() its "
                           "handle first")
    handle = StepInBackward(optimizer, accumulation_steps)
    handle._refuse_scaler()
    params = [p for group in optimizer.param_groups for p in group["params"]]
    with_grads = [i for i, p in enumerate(params) if p.grad is not None]
    if with_grads:
        raise RuntimeError(
            f"{len(with_grads)} params already have gradients, which the first backward() "
            f"would add to; call optimizer.zero_grad() (set_to_none=True) first")
    for group in optimizer.param_groups:
        validate_hyperparameters(group)
        found = _accumulator_problem(group, group["params"]) if accumulation_steps > 1 else None
        if found is not None:
            param, problem = found
            index = next(i for i, p in enumerate(group["params"]) if p is param)
            raise ValueError(
                f"step_in_backward(accumulation_steps={accumulation_steps}) cannot "
                f"accumulate parameter {index} of group "
                f"{optimizer.param_groups.index(group)}: {problem}")
    check_no_overlap([local(p) for p in params])
    handle._attach(ddp)
    _active[optimizer] = handle
    return handle
