"""The per-group plan of a step: which params have gradients, in which order the backends get
them (one run of tensors per device and dtype), and the state tensors that go with them.

The plan is rebuilt, with every check that cannot change between steps (hyperparameters,
overlapping params, gradients against params, state against params), only when something it
depends on changed: the set of params with gradients, a param's data (address or dtype), the
group's momentum / history dtype / capturable / backend, or a state entry (a new dict, as
ZeroRedundancyOptimizer writes, or a replaced tensor). Otherwise a step costs a few C-level
passes over the group's lists (no Python code per param) before the kernels run.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import chain, repeat
from operator import attrgetter, is_, is_not, itemgetter

import torch

from . import flatten, native_extension
from .local_tensors import is_dtensor, locals_of
from .param_state import prepare, real_view
from .validation import validate_gradient

grad_of = attrgetter("grad")
_layout = attrgetter("layout")
_STATE_KEYS = ("step", "delta_even", "delta_odd")


def _picker(indices: list[int]):
    """A C-level function taking a list to the elements at `indices`, as a tuple."""
    if len(indices) == 1:
        index = indices[0]
        return lambda values: (values[index],)
    return itemgetter(*indices) if indices else (lambda values: ())


def options(group: dict) -> tuple:
    """The group settings a plan depends on (lr and the momentum value may change freely)."""
    return (group["momentum"] != 0, group["history_dtype"], group["capturable"],
            group["backend"], group["coefficients"], group["nesterov"], group["switch_step"])


# A run: consecutive entries [start, end) of a plan's lists that one backend call steps, as a
# plain tuple (backend name, start, end, fresh, indices), which torch.compile takes as a
# constant. `indices` are the group indices of the run's params. `fresh` repeats them for a run
# of params whose momentum buffer was just created after they had taken steps
# (param_state.prepare): such a run is stepped with dampening 0 and its buffers enter the state
# afterwards; it is () for every other run.
Run = tuple[str, int, int, tuple[int, ...], tuple[int, ...]]


@dataclass(frozen=True)
class FlatRun:
    """A run whose params, gradients and state each lie back to back in one storage
    (flatten_parameters): stepped as one range, while the gradients stay where they were."""

    param: torch.Tensor
    grad: torch.Tensor
    grad_addresses: tuple
    delta_even: torch.Tensor
    delta_odd: torch.Tensor
    momentum_buffer: torch.Tensor | None


@dataclass
class GroupPlan:
    group_params: list
    options: tuple
    has_grad: tuple
    pick: object
    params: list  # with grads, in run order (real views are taken at call time)
    sharded: bool  # some params are DTensors: the kernels get local shards (local_tensors.py)
    fingerprint: object  # the (local) params' addresses, dtypes, devices, sizes and strides
    state_tensors: dict  # key -> list, in run order; local shards when sharded
    fresh_buffers: dict  # index -> a momentum buffer that enters the state after this step
    state_ids: tuple  # the ids of every value of the params' state dicts, in order
    runs: tuple[Run, ...]
    complex: bool  # some params are complex: the backends get real views
    flat: dict[int, FlatRun]  # run index -> its one-range form, for runs that have one

    def still_valid(self, group: dict, grads_all: list, state) -> bool:
        if any(run[3] for run in self.runs):
            return False  # a plan that starts momentum buffers serves one step
        if group["params"] is not self.group_params or options(group) != self.options:
            return False
        if tuple(map(is_not, grads_all, repeat(None))) != self.has_grad:
            return False
        params = locals_of(self.params) if self.sharded else self.params
        if _layout_fingerprint(params) != self.fingerprint:
            return False
        # The state each param has now, entry by entry, is the state the plan steps: a dict
        # replaced (ZeroRedundancyOptimizer writes new ones) or a tensor replaced in it changes an
        # identity. The plan holds the old objects, so no new object can reuse their ids.
        return _same_state_objects(state, params, self.state_ids)


# The checks every step makes. The extension has them as C loops (csrc/plan_checks.cpp); these
# Python versions compute the same for builds without it.


def _same_state_objects_in_python(state: dict, params: list, ids: tuple) -> bool:
    return tuple(map(id, chain.from_iterable(
        map(dict.values, map(state.__getitem__, params))))) == ids


def _layout_fingerprint_in_python(params: list) -> tuple:
    return tuple((p.data_ptr(), p.dtype, p.device, p.shape, p.stride()) for p in params)


def _all_strided_in_python(tensors: tuple) -> bool:
    return all(map(is_, map(_layout, tensors), repeat(torch.strided)))


_C = native_extension._C
_same_state_objects = _same_state_objects_in_python if _C is None else _C.same_state_objects
_layout_fingerprint = _layout_fingerprint_in_python if _C is None else _C.layout_fingerprint
all_strided = _all_strided_in_python if _C is None else _C.all_strided


def select(group: dict) -> dict[tuple, list[int]]:
    """Check the gradients of the group's params (before anything changes) and return the
    indices of the params to step, one list per (device, dtype) run. An exact tie (one tensor
    listed twice) is stepped once."""
    seen, indices_by_run = set(), {}
    for index, param in enumerate(group["params"]):
        if param.grad is None or id(param) in seen:
            continue
        seen.add(id(param))
        validate_gradient(param, index)
        indices_by_run.setdefault((param.device, real_view(param).dtype), []).append(index)
    return indices_by_run


def build(group: dict, indices_by_run: dict[tuple, list[int]], state, resolve_backend
          ) -> GroupPlan:
    """Make the selected params' state fit them and order them in runs (changes state only)."""
    params_by_index = group["params"]
    fresh = {}
    for indices in indices_by_run.values():
        for index in indices:
            param = params_by_index[index]
            buffer = prepare(state[param], param, group)
            if buffer is not None:
                fresh[index] = buffer
    runs, order = [], []
    for (device, _), indices in indices_by_run.items():
        backend = resolve_backend(group["backend"], device)
        # Params whose momentum starts now get a call of their own (see Run).
        for fresh_run in (False, True):
            members = [i for i in indices if (i in fresh) == fresh_run]
            if members:
                runs.append((backend.name, len(order), len(order) + len(members),
                             tuple(members) if fresh_run else (), tuple(members)))
                order.extend(members)
    params = [params_by_index[i] for i in order]
    sharded = any(map(is_dtensor, params))
    flat = {}
    for number, (_, start, end, fresh_run, _) in enumerate(runs):
        members = params[start:end]
        if not fresh_run and not sharded and len(members) > 1:  # fresh_run: () or indices
            flat_run = _flat_run(members, [state[p] for p in members], group["momentum"] != 0)
            if flat_run is not None:
                flat[number] = flat_run
    state_dicts = [state[p] for p in params]
    tensors = {key: [s[key] for s in state_dicts] for key in _STATE_KEYS}
    if group["momentum"] != 0:
        tensors["momentum_buffer"] = [fresh[i] if i in fresh else state[params_by_index[i]][
            "momentum_buffer"] for i in order]
    if sharded:
        tensors = {key: locals_of(values) for key, values in tensors.items()}
    return GroupPlan(
        group_params=group["params"],
        options=options(group),
        has_grad=tuple(p.grad is not None for p in group["params"]),
        pick=_picker(order),
        params=params,
        sharded=sharded,
        fingerprint=_layout_fingerprint(locals_of(params) if sharded else params),
        state_tensors=tensors,
        fresh_buffers=fresh,
        state_ids=tuple(id(value) for s in state_dicts for value in s.values()),
        runs=tuple(runs),
        complex=any(p.is_complex() for p in params),
        flat=flat,
    )


def _flat_run(params: list, states: list[dict], momentum: bool) -> FlatRun | None:
    """The one-range form of a run, if its params and gradients lie back to back in one storage
    and its params have all taken the same number of steps; the run's state is moved into one
    buffer per key (each param's state becomes a view of it) unless it already is."""
    if any(p.is_complex() for p in params):
        return None
    param = flatten.one_range(params)
    grad = flatten.one_range([p.grad for p in params]) if param is not None else None
    if grad is None or len({int(s["step"]) for s in states}) != 1:
        return None
    flat_state = {}
    for key in ("delta_even", "delta_odd") + (("momentum_buffer",) if momentum else ()):
        values = [s[key] for s in states]
        flat_state[key] = flatten.one_range(values)
        if flat_state[key] is None:
            buffer = torch.empty(param.numel(), dtype=values[0].dtype, device=param.device)
            offset = 0
            for state, value, p in zip(states, values, params):
                view = buffer.as_strided(p.shape, p.stride(), offset)
                view.copy_(value)
                state[key] = view
                offset += p.numel()
            flat_state[key] = buffer
    return FlatRun(param, grad, tuple(p.grad.data_ptr() for p in params),
                   flat_state["delta_even"], flat_state["delta_odd"],
                   flat_state.get("momentum_buffer"))


