"""The per-group plan of a step: which params have gradients, in which order they are stepped (one
run of tensors per device and dtype, one `functional.tmsgd` call each), the implementation each
run uses, and the state tensors that go with them.

The plan is rebuilt, with every check that cannot change between steps (hyperparameters,
overlapping params, gradients against params, state against params), only when something it
depends on changed: the set of params with gradients, a param's data (address, dtype, sizes,
strides), the group's planning options, or a state entry (a new dict, as ZeroRedundancyOptimizer
writes, or a replaced tensor). Otherwise a step costs a few C-level passes over the group's lists
(tmsgd_kernels/plan_checks.py) before the kernels run.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import repeat
from operator import attrgetter, is_not, itemgetter

import torch

from . import flatten
from .implementations import choose
from .local_tensors import is_dtensor, local, locals_of
from .param_state import BUFFER_SCALES_KEY, SCALE_KEYS, history_dtype, prepare
from .plan_checks import layout_fingerprint, same_state_objects
from .torch_step import Parity
from .validation import validate_gradient

grad_of = attrgetter("grad")
_STATE_KEYS = ("step", "delta_even", "delta_odd")


def _picker(indices: list[int]):
    """A C-level function taking a list to the elements at `indices`, as a tuple."""
    if len(indices) == 1:
        index = indices[0]
        return lambda values: (values[index],)
    return itemgetter(*indices) if indices else (lambda values: ())


def options(group: dict) -> tuple:
    """The group settings a plan depends on (lr and the momentum value may change freely)."""
    return (group["momentum"] != 0, group["history_dtype"], group["momentum_dtype"],
            group["capturable"], group["backend"], group["coefficients"], group["nesterov"],
            group["switch_step"])


# A run: entries [start, end) of a plan's lists, stepped by one `functional.tmsgd` call, as a
# plain tuple (implementation, start, end, fresh, indices, quantized), which torch.compile takes
# as a constant. `indices` are the group indices of the run's params; `quantized`: their history
# is 8-bit (int8_history.py), with scales in the plan's scale lists (None for other params), and
# so are their momentum buffers under momentum_dtype=torch.int8.
# `fresh` repeats `indices` for a run of params whose momentum buffer was just created after they
# had taken steps (param_state.prepare): such a run is stepped with dampening 0 and its buffers
# enter the state afterwards; it is () for every other run.
Run = tuple[str, int, int, tuple[int, ...], tuple[int, ...], bool]


@dataclass
class GroupPlan:
    group_params: list
    options: tuple
    has_grad: tuple
    pick: object
    order: list[int]  # the group index of each planned param, in run order
    params: list  # with grads, in run order (real views are taken by functional.tmsgd)
    sharded: bool  # some params are DTensors: the kernels get local shards (local_tensors.py)
    fingerprint: int  # the (local) params' addresses, dtypes, devices, sizes and strides
    state_tensors: dict  # key -> list, in run order; local shards when sharded
    fresh_buffers: dict  # index -> the entries of a momentum buffer that enter the state after
    # this step (the buffer, and its scales when it is 8-bit)
    state_ids: tuple  # the ids of every value of the params' state dicts, in order
    runs: tuple[Run, ...]
    # a run's indices -> the torch implementation's record of the due history slot, for its
    # runs whose counts live on the CPU (torch_step.Parity)
    parities: dict[tuple[int, ...], Parity]
    flat: dict[int, flatten.FlatRun]  # run number -> its one-range form, for runs that have one

    def still_valid(self, group: dict, grads_all: list, state) -> bool:
        if any(run[3] for run in self.runs):
            return False  # a plan that starts momentum buffers serves one step
        if group["params"] is not self.group_params or options(group) != self.options:
            return False
        if tuple(map(is_not, grads_all, repeat(None))) != self.has_grad:
            return False
        params = locals_of(self.params) if self.sharded else self.params
        if layout_fingerprint(params) != self.fingerprint:
            return False
        # The state each param has now, entry by entry, is the state the plan steps: a dict
        # replaced (ZeroRedundancyOptimizer writes new ones) or a tensor replaced in it changes an
        # identity. The plan holds the old objects, so no new object can reuse their ids.
        return same_state_objects(state, params, self.state_ids)


def select(group: dict, group_number: int) -> dict[tuple, list[int]]:
    """Check the gradients of the group's params (before anything changes) and return the
    indices of the params to step, one list per (device, dtype) run. An exact tie (one tensor
    listed twice) is stepped once."""
    seen, indices_by_run = set(), {}
    for index, param in enumerate(group["params"]):
        if param.grad is None or id(param) in seen:
            continue
        seen.add(id(param))
        validate_gradient(param, param.grad, f"group {group_number}, parameter {index}")
        # Complex params run apart from real ones of the same precision (a call takes real
        # views of all its params or of none), 8-bit histories apart from others (one history
        # dtype per call).
        quantized = history_dtype(group, param) is torch.int8
        indices_by_run.setdefault((param.device, param.dtype, quantized), []).append(index)
    return indices_by_run


def build(group: dict, indices_by_run: dict[tuple, list[int]], state) -> GroupPlan:
    """Make the selected params' state fit them and order them in runs (changes state only)."""
    params_by_index = group["params"]
    implementations = {device: choose(group["backend"], device)
                       for device, _, _ in indices_by_run}
    fresh = {}
    for indices in indices_by_run.values():
        for index in indices:
            param = params_by_index[index]
            buffer = prepare(state[param], param, group)
            if buffer is not None:
                fresh[index] = buffer
    runs, order, parities = [], [], {}
    for (device, _, quantized), indices in indices_by_run.items():
        implementation = implementations[device]
        # Params whose momentum starts now get a call of their own (see Run).
        for fresh_run in (False, True):
            members = [i for i in indices if (i in fresh) == fresh_run]
            if not members:
                continue
            if implementation == "torch" and not fresh_run and not group["capturable"]:
                parities[tuple(members)] = Parity([state[params_by_index[i]]["step"]
                                              for i in members])
            runs.append((implementation, len(order), len(order) + len(members),
                         tuple(members) if fresh_run else (), tuple(members), quantized))
            order.extend(members)
    params = [params_by_index[i] for i in order]
    sharded = any(map(is_dtensor, params))
    flat = {}
    for number, (_, start, end, fresh_run, _, quantized) in enumerate(runs):
        members = params[start:end]
        if not fresh_run and not sharded and not quantized and len(members) > 1:
            flat_run = flatten.flat_run(members, [state[p] for p in members],
                                        group["momentum"] != 0)
            if flat_run is not None:
                flat[number] = flat_run
    state_dicts = [state[p] for p in params]
    tensors = {key: [s[key] for s in state_dicts] for key in _STATE_KEYS}
    for key in SCALE_KEYS.values():
        tensors[key] = [s.get(key) for s in state_dicts]
    if group["momentum"] != 0:
        buffers = [fresh.get(i) or state[params_by_index[i]] for i in order]
        tensors["momentum_buffer"] = [entries["momentum_buffer"] for entries in buffers]
        tensors[BUFFER_SCALES_KEY] = [entries.get(BUFFER_SCALES_KEY) for entries in buffers]
    if sharded:
        tensors = {key: [None if v is None else local(v) for v in values]
                   for key, values in tensors.items()}
    return GroupPlan(
        group_params=group["params"],
        options=options(group),
        has_grad=tuple(p.grad is not None for p in group["params"]),
        pick=_picker(order),
        order=order,
        params=params,
        sharded=sharded,
        fingerprint=layout_fingerprint(locals_of(params) if sharded else params),
        state_tensors=tensors,
        fresh_buffers=fresh,
        state_ids=tuple(id(value) for s in state_dicts for value in s.values()),
        runs=tuple(runs),
        parities=parities,
        flat=flat,
    )


def one_range_lists(plan: GroupPlan, number: int, sliced: list) -> list:
    """The lists of run `number` as one range each when the run has a one-range form and its
    gradients still lie where, and as, that form expects (flatten.FlatRun), else as given."""
    flat = plan.flat.get(number)
    if flat is None or not flat.still_matches(sliced[1]):
        return sliced
    buffers = [] if flat.momentum_buffer is None else [flat.momentum_buffer]
    return [[flat.param], [flat.grad], [flat.delta_even], [flat.delta_odd], [], [], buffers, [],
            sliced[8][:1]]
