"""TMSGD: the torch.optim.Optimizer front end. It validates, buckets params, and hands each
bucket to one backend call; the math lives in the backends."""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
from torch.optim import Optimizer

from . import backends, flat_params
from .buckets import build_buckets, real_view
from .coefficients import PAPER_COEFFICIENTS
from .state_format import canonical_state, check_state_dict_fits, internal_state
from .step_options import StepOptions
from .validation import validate_gradient, validate_hyperparameters


class TMSGD(Optimizer):
    """Taylor multi-step SGD (Ma et al.): W[k+1] = a0 W[k] + a1 W[k-1] + a2 W[k-2] - lr u[k],
    computed in delta form, with SGD's momentum, dampening, weight decay, nesterov and maximize
    defining the direction u, and `switch_step` plain-SGD warm-up steps first."""

    # GradScaler passes grad_scale and found_inf instead of unscaling and skipping itself.
    _step_supports_amp_scaling = True

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
        flat_params: bool = False,
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
            flat_params=flat_params,
            history_dtype=history_dtype,
            capturable=capturable,
        )
        validate_hyperparameters(defaults)
        self._layouts: dict[int, tuple[list[torch.Tensor], list]] = {}
        # Backends resolved ahead of the step, so a compiled step never traces the registry.
        self._backends: dict[tuple[str, torch.device], object] = {}
        super().__init__(params, defaults)

    def add_param_group(self, param_group: dict) -> None:
        super().add_param_group(param_group)
        group = self.param_groups[-1]
        try:
            validate_hyperparameters(group)
            for device in {p.device for p in group["params"]}:
                self._backend(group["backend"], device)
        except Exception:
            self.param_groups.pop()
            raise
        group["coefficients"] = tuple(float(c) for c in group["coefficients"])

    def __setstate__(self, state: dict) -> None:
        super().__setstate__(state)
        self._layouts = {}
        self._backends = {}

    def _backend(self, name: str, device: torch.device):
        key = (name, device)
        if key not in self._backends:
            self._backends[key] = backends.resolve(name, device)
        return self._backends[key]

    def _layout(self, index: int, group: dict, params: list[torch.Tensor]) -> list:
        """The buckets of group `index` for this set of params, rebuilt when the set changes."""
        cached = self._layouts.get(index)
        if cached is not None:
            cached_params, buckets = cached
            if len(cached_params) == len(params) and all(
                a is b for a, b in zip(cached_params, params)
            ):
                return buckets
        resolved = {d: self._backend(group["backend"], d) for d in {p.device for p in params}}
        buckets = build_buckets(params, self.state, group, resolved)
        if group["flat_params"]:
            flat_params.attach(buckets)
        self._layouts[index] = (params, buckets)
        return buckets

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()

        # Everything is checked before anything is changed.
        stepped = []
        for group in self.param_groups:
            with_grad = []
            for index, param in enumerate(group["params"]):
                if param.grad is not None:
                    validate_gradient(param, index)
                    with_grad.append(param)
            stepped.append(with_grad)
        layouts = [
            self._layout(index, group, params)
            for index, (group, params) in enumerate(zip(self.param_groups, stepped))
        ]

        grad_scale = getattr(self, "grad_scale", None)
        found_inf = getattr(self, "found_inf", None)
        for group, buckets in zip(self.param_groups, layouts):
            for bucket in buckets:
                self._step_bucket(group, bucket, grad_scale, found_inf)
        return loss

    def _step_bucket(self, group: dict, bucket, grad_scale, found_inf) -> None:
        device = bucket.step.device
        if bucket.flat is not None:  # flat_params: one range, views repaired
            params, grads = bucket.flat.kernel_tensors()
            copied, originals = [], []
        else:
            params = [real_view(p) for p in bucket.params]
            grads = [real_view(p.grad).contiguous() for p in bucket.params]
            # Kernels need contiguous params: step a contiguous copy and write it back.
            copied = [i for i, p in enumerate(params) if not p.is_contiguous()]
            originals = [params[i] for i in copied]
            for i in copied:
                params[i] = params[i].contiguous()
        lr = group["lr"]
        if isinstance(lr, torch.Tensor):
            lr = lr.to(device)
        bucket.backend.step_bucket(
            params,
            grads,
            bucket.history,
            bucket.momentum_buffer,
            bucket.step,
            StepOptions.from_group(group, lr),
            None if grad_scale is None else grad_scale.to(device),
            None if found_inf is None else found_inf.to(device),
        )
        for i, original in zip(copied, originals):
            original.copy_(params[i])

    def zero_grad(self, set_to_none: bool = True) -> None:
        """As torch.optim's; with flat_params, set_to_none=False keeps the grads as views into
        the flat grad buffer (set_to_none=True costs a copy of the new grads at the next step)."""
        flat_params.zero_grad(self, set_to_none, super().zero_grad)

    def state_dict(self) -> dict:
        """Per-parameter state in canonical form: step, d1 (newest step), d2, momentum_buffer;
        independent of backend, device, bucket layout and history slot order."""
        packed = super().state_dict()
        saved = {index: canonical_state(s) for index, s in packed["state"].items()}
        packed["state"] = {index: s for index, s in saved.items() if s is not None}
        return packed

    def load_state_dict(self, state_dict: dict) -> None:
        check_state_dict_fits(self, state_dict)
        super().load_state_dict(state_dict)
        for group in self.param_groups:
            group["coefficients"] = tuple(float(c) for c in group["coefficients"])
            for param in group["params"]:
                if param in self.state:
                    self.state[param] = internal_state(self.state[param], param)
        self._layouts = {}
