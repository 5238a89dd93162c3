"""TMSGD: the torch.optim.Optimizer front end. It validates, keeps the per-param state of
docs/DESIGN.md section 3, and hands each run of tensors to one backend call; the math lives in
the backends."""

from __future__ import annotations

import dataclasses
from collections import defaultdict
from collections.abc import Callable, Iterable

import torch
from torch.optim import Optimizer

from . import backends, step_plan
from .coefficients import PAPER_COEFFICIENTS
from .local_tensors import local, locals_of
from .overlap import check_no_overlap
from .param_state import real_view
from .state_creation import is_state_creation_step
from .state_format import prepare_load
from .step_scalars import StepScalars
from .validation import validate_hyperparameters


class TMSGD(Optimizer):
    """Taylor multi-step SGD (Ma et al.): W[k+1] = a0 W[k] + a1 W[k-1] + a2 W[k-2] - lr u[k],
    computed in delta form, with SGD's momentum, dampening, weight decay, nesterov and maximize
    defining the direction u, and `switch_step` plain-SGD warm-up steps first.

    With `capturable=True` the step counts live on the params' device, the kernels read them
    there (a step can be captured in a CUDA graph), and the kernels also unscale gradients and
    skip a step with an inf/nan themselves when GradScaler drives the step
    (`_step_supports_amp_scaling`); with the default `capturable=False` GradScaler unscales and
    skips as it does for torch.optim.SGD, so clipping after `scaler.unscale_` works as usual.
    """

    def __init__(
        self,
        params: Iterable[torch.Tensor] | Iterable[dict],
        lr: float | torch.Tensor = 1e-3,
        momentum: float = 0.0,
        dampening: float = 0.0,
        weight_decay: float = 0.0,
        nesterov: bool = False,
        maximize: bool = False,
        coefficients: tuple[float, float, float] = PAPER_COEFFICIENTS,
        switch_step: int = 0,
        backend: str = "auto",
        history_dtype: torch.dtype | None = None,
        capturable: bool = False,
    ) -> None:
        defaults = dict(
            lr=lr,
            momentum=momentum,
            dampening=dampening,
            weight_decay=weight_decay,
            nesterov=nesterov,
            maximize=maximize,
            coefficients=coefficients,
            switch_step=switch_step,
            backend=backend,
            history_dtype=history_dtype,
            capturable=capturable,
        )
        validate_hyperparameters(defaults)
        defaults["coefficients"] = tuple(float(c) for c in coefficients)
        self._plans: dict[int, step_plan.GroupPlan] = {}
        self._odd_counts: dict[tuple[int, int], bool | None] = {}
        super().__init__(params, defaults)
        # As torch's fused optimizers: GradScaler hands over grad_scale and found_inf instead of
        # unscaling the grads itself (saves a read and a write of every gradient) only where
        # the kernels do it; see the class docstring.
        self._step_supports_amp_scaling = bool(capturable)

    def add_param_group(self, param_group: dict) -> None:
        super().add_param_group(param_group)
        group = self.param_groups[-1]
        try:
            validate_hyperparameters(group)
            for device in {p.device for p in group["params"]}:
                backends.resolve(group["backend"], device)
        except Exception:
            self.param_groups.pop()
            raise
        group["coefficients"] = tuple(float(c) for c in group["coefficients"])

    def __setstate__(self, state: dict) -> None:
        super().__setstate__(state)
        self._plans = {}
        self._odd_counts = {}
        for group in self.param_groups:  # checkpoints from before a group key existed
            for key, value in self.defaults.items():
                group.setdefault(key, value)

    def __getstate__(self) -> dict:
        state = super().__getstate__()
        state.pop("_plans", None)
        state.pop("_odd_counts", None)
        return state

    def _init_group(
        self,
        group: dict,
        params: list[torch.Tensor],
        grads: list[torch.Tensor],
        delta_even: list[torch.Tensor],
        delta_odd: list[torch.Tensor],
        momentum_buffers: list[torch.Tensor],
        steps: list[torch.Tensor],
    ) -> tuple[step_plan.Run, ...]:
        """torch.optim's hook: fill the lists with the group's params that have gradients (real
        views), their gradients and state, in the order of the returned runs. torch.compile runs
        this eagerly while tracing, so the plan's checks never enter a graph."""
        grads_all = [*map(step_plan.grad_of, group["params"])]
        plan = self._plan(group, grads_all)
        grads_picked = plan.pick(grads_all)
        # A new gradient object may arrive every step: a sparse one is refused before any change.
        if not step_plan.all_strided(grads_picked):
            self._rebuild_plans()  # raises the clear error for the sparse gradient
        for tensors, source in ((params, plan.params), (grads, grads_picked)):
            if plan.sharded:
                source = locals_of(source)
            tensors.extend(map(real_view, source) if plan.complex else source)
        delta_even.extend(plan.state_tensors["delta_even"])
        delta_odd.extend(plan.state_tensors["delta_odd"])
        momentum_buffers.extend(plan.state_tensors.get("momentum_buffer", ()))
        steps.extend(plan.state_tensors["step"])
        return plan.runs

    def _plan(self, group: dict, grads_all: list) -> step_plan.GroupPlan:
        """The group's plan, rebuilt (for every group, checks first) when anything changed."""
        plan = self._plans.get(id(group))
        if plan is not None and plan.still_valid(group, grads_all, self.state):
            return plan
        self._rebuild_plans()
        return self._plans[id(group)]

    def _set_odd_counts(self) -> None:
        """For the torch backend under torch.compile: whether each param's count is odd, kept
        on the host for params whose counts live on the CPU. Set from the counts when the plans
        are built, then flipped for every param a step advanced (TMSGD.step). A traced step reads
        it, so torch.compile guards on it and keeps one graph per history slot to write, where a
        graph that serves both must write both (28 instead of 24 bytes per fp32 element)."""
        self._odd_counts = {}
        for number, group in enumerate(self.param_groups):
            plan = self._plans[id(group)]
            for backend, start, _, fresh, indices in plan.runs:
                if backend != "torch" or fresh or group["capturable"]:
                    continue
                counts = plan.state_tensors["step"][start:]
                for index, count in zip(indices, counts):
                    self._odd_counts[(number, index)] = int(count) % 2 == 1

    def _rebuild_plans(self) -> None:
        # Everything is checked, for every group, before any state is created or converted.
        selections = []
        for group in self.param_groups:
            validate_hyperparameters(group)
            selections.append(step_plan.select(group))
        check_no_overlap([local(group["params"][i]) for group, selection in
                          zip(self.param_groups, selections)
                          for indices in selection.values() for i in indices])
        self._plans = {
            id(group): step_plan.build(group, selection, self.state, backends.resolve)
            for group, selection in zip(self.param_groups, selections)
        }
        self._set_odd_counts()

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        if is_state_creation_step(self):
            self._rebuild_plans()  # creates every param's state, counts at 0; nothing else
            return loss
        grad_scale = getattr(self, "grad_scale", None)
        found_inf = getattr(self, "found_inf", None)
        calls = []
        for group in self.param_groups:
            lists: tuple[list[torch.Tensor], ...] = ([], [], [], [], [], [])
            runs = self._init_group(group, *lists)
            calls.append((group, runs, lists))
        for group_number, (group, runs, lists) in enumerate(calls):
            for number, (backend, start, end, fresh, indices) in enumerate(runs):
                run_lists = (list(lists) if len(runs) == 1
                             else [values[start:end] for values in lists])
                if not torch.compiler.is_compiling():
                    run_lists = self._flat_lists(group, number, run_lists)
                # Only a traced step uses the record; the eager torch backend reads the counts.
                odd_slot = (self._odd_slot(group_number, indices)
                            if backend == "torch" and torch.compiler.is_compiling() else None)
                self._step_run(group, backend, run_lists, bool(fresh), grad_scale, found_inf,
                               odd_slot)
                if backend == "torch":
                    self._advance_odd_counts(group_number, indices, found_inf)
                if len(run_lists[5]) < end - start:  # stepped as one range: copy its count
                    steps = lists[5][start + 1:end]
                    torch._foreach_copy_(steps, [lists[5][start]] * len(steps))
                if fresh:
                    plan = self._plans[id(group)]
                    buffers = ([plan.fresh_buffers[i] for i in fresh] if plan.sharded
                               else lists[4][start:end])  # the DTensors, not their shards
                    self._keep_fresh_buffers(group, fresh, buffers, found_inf)
        return loss

    def _odd_slot(self, group_number: int, indices: tuple[int, ...]) -> bool | None:
        """The slot every count of a run agrees on (True: odd), or None (unknown or mixed)."""
        odd = self._odd_counts.get((group_number, indices[0]))
        if odd is None:
            return None
        for index in indices[1:]:
            if self._odd_counts.get((group_number, index)) is not odd:
                return None
        return odd

    def _advance_odd_counts(self, group_number: int, indices: tuple[int, ...],
                            found_inf) -> None:
        # Every count of the run advanced by one, unless found_inf may have stopped them.
        for index in indices:
            key = (group_number, index)
            odd = self._odd_counts.get(key)
            if odd is not None:
                self._odd_counts[key] = None if found_inf is not None else not odd

    def _keep_fresh_buffers(self, group: dict, fresh: tuple[int, ...], buffers: list,
                            found_inf) -> None:
        """Momentum buffers that started this step enter the state now. A step the kernels
        skipped (found_inf; read on the host, on this rare step only, and not under
        torch.compile) leaves them out, so the next step starts them again. Adding the key
        changes the state dicts, which makes a compiled step retrace with a new plan."""
        if (found_inf is not None and not torch.compiler.is_compiling()
                and found_inf.item() != 0):
            return
        for index, buffer in zip(fresh, buffers):
            self.state[group["params"][index]]["momentum_buffer"] = buffer

    def _flat_lists(self, group: dict, number: int, run_lists: list) -> list:
        """The run as one range (flatten_parameters), when it has one and its gradients are
        still where they were when the plan was made; else the run as given."""
        flat = self._plans[id(group)].flat.get(number)
        grads = run_lists[1]
        if flat is None or tuple(map(torch.Tensor.data_ptr, grads)) != flat.grad_addresses:
            return run_lists
        buffers = [] if flat.momentum_buffer is None else [flat.momentum_buffer]
        return [[flat.param], [flat.grad], [flat.delta_even], [flat.delta_odd], buffers,
                run_lists[5][:1]]

    @staticmethod
    def _step_run(group: dict, backend: str, lists: list, fresh_momentum: bool, grad_scale,
                  found_inf, odd_slot: bool | None) -> None:
        params, grads, delta_even, delta_odd, momentum_buffers, steps = lists
        device = params[0].device
        lr = group["lr"]
        if isinstance(lr, torch.Tensor) and lr.device != device and lr.device.type != "cpu":
            lr = lr.to(device)
        scalars = StepScalars.from_group(group, lr)
        if fresh_momentum:  # a zero buffer and no dampening give buf = g (torch's rule)
            scalars = dataclasses.replace(scalars, dampening=0.0)
        if grad_scale is not None and grad_scale.device != device:
            grad_scale = grad_scale.to(device)
        if found_inf is not None and found_inf.device != device:
            found_inf = found_inf.to(device)
        extra = {} if odd_slot is None else {"odd_slot": odd_slot}  # torch backend only
        backends.MODULES[backend].step(params, grads, delta_even, delta_odd,
                                       momentum_buffers, steps, scalars, grad_scale, found_inf,
                                       **extra)

    @torch._disable_dynamo
    def load_state_dict(self, state_dict: dict) -> None:
        """As torch.optim's (pre-hooks first, post-hooks last), except that everything is checked
        before anything changes, torch.optim.SGD and version-1 TMSGD checkpoints are accepted,
        and each state tensor keeps its dtype (see tmsgd_kernels/state_format.py)."""
        state_dict = state_dict.copy()
        for pre_hook in self._optimizer_load_state_dict_pre_hooks.values():
            result = pre_hook(self, state_dict)
            if result is not None:
                state_dict = result
        state, param_groups = prepare_load(self, state_dict)
        self.__setstate__({"state": defaultdict(dict, state), "param_groups": param_groups})
        for post_hook in self._optimizer_load_state_dict_post_hooks.values():
            post_hook(self)
