"""TMSGD: the torch.optim.Optimizer front end. It validates, keeps the per-param state of
docs/DESIGN.md section 3, and hands each run of tensors to one `functional.tmsgd` call; the
math lives in the implementations behind it."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable

import torch
from torch.optim import Optimizer

from . import sgd_flags, step_plan
from .checkpoint_state_init import is_checkpoint_state_init
from .coefficients import PAPER_COEFFICIENTS
from .functional import tmsgd
from .implementations import choose
from .local_tensors import local, locals_of
from .overlap import check_no_overlap
from .plan_checks import first_mismatched_grad
from .state_format import prepare_load
from .torch_step import Parity
from .validation import DTYPE_KEYS, dtype_name, validate_gradient, validate_hyperparameters


class TMSGD(Optimizer):
    r"""Taylor multi-step SGD (Ma, Sun and Gao, "Enhancing Deep Learning with Optimized Gradient
    Descent", eq. 8): a drop-in for torch.optim.SGD whose update uses the last three iterates,

        W[k+1] = a0 W[k] + a1 W[k-1] + a2 W[k-2] - lr * u[k],

    computed in delta form (docs/DESIGN.md section 1), where `u` is the direction torch.optim.SGD
    would step along (gradient, weight decay, momentum, nesterov, maximize, as SGD defines them).

    Stability: with the paper's coefficients the largest stable step on a quadratic of curvature
    L is lr * L < 1, half of plain SGD's lr * L < 2 (with momentum 0.9: 0.50 against SGD-M's
    3.8). A learning rate tuned for SGD near its limit can diverge under TMSGD: start from about
    half of it.

    Args:
        params: params to optimize, or dicts defining param groups (any argument below may be
            set per group).
        lr: learning rate, a float or a one-element tensor (default 1e-3).
        momentum: momentum factor of the direction, as torch.optim.SGD's (default 0). TM-SGD-M
            uses it together with the multi-step history.
        dampening: dampening for momentum, as SGD's (default 0).
        weight_decay: L2 penalty added to the gradient, as SGD's (default 0).
        nesterov: Nesterov momentum, as SGD's (needs momentum > 0 and dampening 0).
        maximize: maximize the objective instead of minimizing it.
        coefficients: the paper-form coefficients (a0, a1, a2), default (1.5, -1.0, 0.5). They
            must sum to 1 and be zero-stable (both roots of z^2 - (a0 - 1) z - (a0 + a1 - 1)
            in the unit disk; checked, ValueError otherwise). (1, 0, 0) is plain SGD and
            (1 + m, -m, 0) is SGD with heavy-ball momentum m.
        switch_step: warm-up length: a param whose own step count is below it takes plain SGD
            steps (d = -lr * u, the history written but not read). A param's count is the number
            of steps it was actually stepped: steps where its gradient was None, and steps
            skipped by GradScaler for an inf/nan, do not count (default 0: no warm-up).
        backend: which implementation steps the params: "auto" (default: cuda, then triton on
            CUDA devices, cpu, then the pure-PyTorch "torch" step), or one of "cuda", "triton",
            "cpu", "torch"; a named backend that cannot run raises with the reason.
            `tmsgd_kernels.available_backends(device)` lists what runs.
        history_dtype: dtype of the two history slots: None (the param's dtype), torch.float32,
            torch.float64, torch.bfloat16, torch.float16, or torch.int8: 8-bit codes with one
            fp32 scale per block of 256 elements of a dim-0 slice (about 2.03 bytes per element
            for both slots, against 8 for fp32). Params with fewer than 4096 elements, one
            dimension, fp64 params and params whose dim 0 is not outermost in memory keep a
            history in their own dtype (tmsgd_kernels.int8_history.eligible). Coefficients
            whose stored errors add up (heavy ball: factor 9) warn with an 8-bit history.
        momentum_dtype: None (default: each momentum buffer in its param's dtype, as
            torch.optim.SGD) or torch.int8, only with history_dtype=torch.int8: the buffer of
            each param with an 8-bit history is stored as 8-bit codes and block scales too
            (about 1.02 bytes per element instead of 4 for fp32). The step uses the buffer in
            fp32 and stores it rounded; an error in the buffer enters the step directly, so see
            the README's evidence before turning it on.
        capturable: keep step counts on the params' device so a step can be captured in a CUDA
            graph; the kernels then also unscale gradients and skip inf/nan steps themselves
            when GradScaler drives the step. With the default False, GradScaler unscales and
            skips as it does for torch.optim.SGD (clipping after `scaler.unscale_` works).
        foreach: as torch.optim.SGD's flag: True selects the torch backend (its eager step is
            torch._foreach_* ops); False is refused (no per-tensor loop exists); None: unset.
        fused: as torch.optim.SGD's flag: True requires a fused kernel (auto never falls back
            to the torch step; an error where none runs); False selects the torch backend.
        differentiable: only False is accepted: the step runs in place outside autograd.

    State per param (saved by `state_dict()`): `step`, `delta_even`, `delta_odd` and, once
    momentum was on, `momentum_buffer`; 8-bit codes come with their block scales under
    `delta_even_scales`, `delta_odd_scales`, `momentum_buffer_scales` (docs/DESIGN.md section 3).
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
        *,
        foreach: bool | None = None,
        fused: bool | None = None,
        differentiable: bool = False,
        momentum_dtype: torch.dtype | None = None,
    ) -> None:
        backend = sgd_flags.backend_for(backend, foreach, fused, differentiable)
        self._fused_required = bool(fused)
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
            momentum_dtype=momentum_dtype,
            capturable=capturable,
        )
        validate_hyperparameters(defaults)
        defaults["coefficients"] = tuple(float(c) for c in coefficients)
        self._plans: dict[int, step_plan.GroupPlan] = {}
        self._group_numbers: dict[int, int] = {}
        self._parities: dict[tuple[int, tuple[int, ...]], Parity] = {}
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
                chosen = choose(group["backend"], device)
                if self._fused_required:
                    sgd_flags.check_fused(chosen, device)
        except Exception:
            self.param_groups.pop()
            raise
        group["coefficients"] = tuple(float(c) for c in group["coefficients"])

    def __setstate__(self, state: dict) -> None:
        super().__setstate__(state)
        self.__dict__.setdefault("_fused_required", False)  # pickles from before the flag
        self._plans = {}
        self._group_numbers = {}
        self._parities = {}
        for group in self.param_groups:  # checkpoints from before a group key existed
            for key, value in self.defaults.items():
                group.setdefault(key, value)

    def __getstate__(self) -> dict:
        state = super().__getstate__()
        state.pop("_plans", None)
        state.pop("_group_numbers", None)
        state.pop("_parities", None)
        return state

    def _init_group(
        self,
        group: dict,
        params: list[torch.Tensor],
        grads: list[torch.Tensor],
        delta_even: list[torch.Tensor],
        delta_odd: list[torch.Tensor],
        delta_even_scales: list[torch.Tensor | None],
        delta_odd_scales: list[torch.Tensor | None],
        momentum_buffers: list[torch.Tensor],
        momentum_scales: list[torch.Tensor | None],
        steps: list[torch.Tensor],
    ) -> tuple[step_plan.Run, ...]:
        """torch.optim's hook: fill the lists with the group's params that have gradients, their
        gradients and state, in the order of the returned runs, after checking every gradient
        (the scale lists hold None for params whose history or buffer is not 8-bit).
        torch.compile runs this eagerly while tracing, so the checks never enter a graph."""
        grads_all = [*map(step_plan.grad_of, group["params"])]
        plan = self._plan(group, grads_all)
        grads_picked = list(plan.pick(grads_all))
        # A new gradient object may arrive at every step: each is checked against its param
        # (layout, dtype, shape, device; a C loop) before any run of any group is stepped.
        mismatched = first_mismatched_grad(plan.params, grads_picked)
        if mismatched >= 0:
            number = self._group_numbers[id(group)]
            validate_gradient(plan.params[mismatched], grads_picked[mismatched],
                              f"group {number}, parameter {plan.order[mismatched]}")
        if plan.sharded:
            params.extend(locals_of(plan.params))
            grads.extend(locals_of(grads_picked))
        else:
            params.extend(plan.params)
            grads.extend(grads_picked)
        delta_even.extend(plan.state_tensors["delta_even"])
        delta_odd.extend(plan.state_tensors["delta_odd"])
        delta_even_scales.extend(plan.state_tensors["delta_even_scales"])
        delta_odd_scales.extend(plan.state_tensors["delta_odd_scales"])
        momentum_buffers.extend(plan.state_tensors.get("momentum_buffer", ()))
        momentum_scales.extend(plan.state_tensors.get("momentum_buffer_scales", ()))
        steps.extend(plan.state_tensors["step"])
        return plan.runs

    def _plan(self, group: dict, grads_all: list) -> step_plan.GroupPlan:
        """The group's plan, rebuilt (for every group, checks first) when anything changed."""
        plan = self._plans.get(id(group))
        if plan is not None and plan.still_valid(group, grads_all, self.state):
            return plan
        self._rebuild_plans()
        return self._plans[id(group)]

    def _rebuild_plans(self) -> None:
        # Everything is checked, for every group, before any state is created or converted.
        selections = []
        for number, group in enumerate(self.param_groups):
            validate_hyperparameters(group)
            selections.append(step_plan.select(group, number))
        check_no_overlap([local(group["params"][i]) for group, selection in
                          zip(self.param_groups, selections)
                          for indices in selection.values() for i in indices])
        self._plans = {
            id(group): step_plan.build(group, selection, self.state)
            for group, selection in zip(self.param_groups, selections)
        }
        self._group_numbers = {id(group): n for n, group in enumerate(self.param_groups)}
        self._parities = {(n, indices): parity for n, group in enumerate(self.param_groups)
                          for indices, parity in self._plans[id(group)].parities.items()}

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:
        """One TM-SGD step of every param with a gradient; `closure` (optional) re-evaluates the
        model and returns the loss, as for torch.optim.SGD."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        if is_checkpoint_state_init(self):
            self._rebuild_plans()  # creates every param's state, counts at 0; nothing else
            return loss
        grad_scale = getattr(self, "grad_scale", None)
        found_inf = getattr(self, "found_inf", None)
        calls = []
        for group in self.param_groups:  # every group checked before any is stepped
            lists: tuple[list[torch.Tensor], ...] = ([], [], [], [], [], [], [], [], [])
            calls.append((group, self._init_group(group, *lists), lists))
        compiling = torch.compiler.is_compiling()
        for group_number, (group, runs, lists) in enumerate(calls):
            for number, (implementation, start, end, fresh, indices, quantized) in enumerate(
                    runs):
                run_lists = (list(lists) if len(runs) == 1
                             else [values[start:end] for values in lists])
                if not compiling:  # a traced step keeps per-tensor lists
                    run_lists = step_plan.one_range_lists(self._plans[id(group)], number,
                                                          run_lists)
                (params, grads, delta_even, delta_odd, even_scales, odd_scales, buffers,
                 buffer_scales, steps) = run_lists
                int8_buffers = quantized and group["momentum_dtype"] is torch.int8
                tmsgd(params, grads, delta_even, delta_odd, buffers, steps, lr=group["lr"],
                      momentum=group["momentum"],
                      # A zero buffer and no dampening give torch's first step buf = g.
                      dampening=0.0 if fresh else group["dampening"],
                      weight_decay=group["weight_decay"], nesterov=group["nesterov"],
                      maximize=group["maximize"], coefficients=group["coefficients"],
                      switch_step=group["switch_step"], grad_scale=grad_scale,
                      found_inf=found_inf, backend=implementation,
                      delta_even_scales=even_scales if quantized else None,
                      delta_odd_scales=odd_scales if quantized else None,
                      momentum_scales=buffer_scales if int8_buffers and buffers else None,
                      # Keyed by the run's params: a compiled step whose runs differ from the
                      # current plan's finds no record (a guard fails) and retraces.
                      parity=self._parities.get((group_number, indices)))
                if len(steps) < end - start:  # stepped as one range: copy its count
                    others = lists[8][start + 1:end]
                    torch._foreach_copy_(others, [steps[0]] * len(others))
                if fresh:
                    # The plan's entries: DTensors where the kernels got their shards.
                    plan = self._plans[id(group)]
                    self._keep_fresh_buffers(group, fresh, [plan.fresh_buffers[i] for i in fresh],
                                             found_inf)
        return loss

    def _keep_fresh_buffers(self, group: dict, fresh: tuple[int, ...], buffers: list[dict],
                            found_inf) -> None:
        """Momentum buffers that started this step enter the state now. A step the kernels
        skipped (found_inf; read on the host, on this rare step only, and not under
        torch.compile) leaves them out, so the next step starts them again. Adding the key
        changes the state dicts, which makes a compiled step retrace with a new plan."""
        if (found_inf is not None and not torch.compiler.is_compiling()
                and found_inf.item() != 0):
            return
        for index, entries in zip(fresh, buffers):
            self.state[group["params"][index]].update(entries)

    @torch._disable_dynamo
    def state_dict(self) -> dict:
        """As torch.optim's, with the groups' dtypes (history_dtype, momentum_dtype) saved by
        name ("int8"): torch.distributed.checkpoint's gathering refuses torch.dtype values.
        load_state_dict takes names and dtypes."""
        state_dict = super().state_dict()
        for group in state_dict["param_groups"]:  # new dicts, not the optimizer's groups
            for key in DTYPE_KEYS:
                if key in group:
                    group[key] = dtype_name(group[key])
        return state_dict

    @torch._disable_dynamo
    def load_state_dict(self, state_dict: dict) -> None:
        """As torch.optim's (pre-hooks first, post-hooks last), except that everything is checked
        before anything changes, torch.optim.SGD and version-1 TMSGD checkpoints are accepted,
        and each state tensor keeps its dtype (see tmsgd_kernels/state_format.py)."""
        if not isinstance(state_dict, dict):
            raise ValueError(f"state_dict must be a dict (from TMSGD.state_dict() or "
                             f"torch.optim.SGD.state_dict()), got {type(state_dict).__name__}")
        state_dict = state_dict.copy()
        for pre_hook in self._optimizer_load_state_dict_pre_hooks.values():
            result = pre_hook(self, state_dict)
            if result is not None:
                state_dict = result
        state, param_groups = prepare_load(self, state_dict)
        self.__setstate__({"state": defaultdict(dict, state), "param_groups": param_groups})
        for post_hook in self._optimizer_load_state_dict_post_hooks.values():
            post_hook(self)
