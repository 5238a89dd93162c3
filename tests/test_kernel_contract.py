"""The kernel contract (tmsgd_kernels/step_contract.py), once, for every implementation that runs
here (tests/kernel_contract.py): the float64 oracle per step for every dtype pair and option,
lr and AMP scalar forms, skipped steps, slot parity and different counts in one call, odd shapes,
unaligned views, layouts, many tensors; bad arguments; version counters and opcheck for the ops;
and bit-for-bit agreement where the design promises it."""

from __future__ import annotations

import pytest
import torch
from kernel_contract import (
    BY_NAME,
    CPU,
    DEVICE,
    DTYPES,
    INT8_HISTORY,
    INT8_KERNELS,
    INT8_MOMENTUM,
    INT8_MOMENTUM_ORACLE,
    KERNEL_ORDER,
    LIST_NAMES,
    ODD_SHAPES,
    Run,
    assert_bitwise_equal,
    crossed,
    implementations,
    random,
    random_params,
)

ALL = implementations()
THROUGH_AN_OP = implementations(lambda i: i.op is not None)
F32 = torch.float32

# A block of 8192 elements besides the odd shapes: under the Triton interpreter a tensor's block
# is the next power of two of the largest numel, so this one fills its block and takes the
# unmasked path a GPU takes for nearly every block.
SHAPES = (*ODD_SHAPES, (64, 128))
STEPS = 8
DTYPE_PAIRS = {f"{d}-{h}".replace("torch.", ""): (d, h) for d in DTYPES for h in DTYPES}

OPTIONS = {
    "plain": {},
    "momentum-decay-nesterov-warmup": dict(momentum=0.9, weight_decay=1e-2, nesterov=True,
                                           switch_step=2),
    "dampening-maximize-coefficients": dict(momentum=0.8, dampening=0.3, maximize=True,
                                            coefficients=(1.25, -0.5, 0.25)),
    "warmup-decay": dict(switch_step=3, weight_decay=1e-3),
    "warmup-momentum": dict(switch_step=2, momentum=0.5),
}


@pytest.fixture
def four_threads():
    """More threads than this machine's cores: the CPU kernel splits element ranges mid-tensor."""
    before = torch.get_num_threads()
    torch.set_num_threads(4)
    yield
    torch.set_num_threads(before)


def scalar(value: float, device=DEVICE, shape=()) -> torch.Tensor:
    return torch.full(shape, value, dtype=F32, device=device)


# ------------------------------------------------------------------------ against the oracle


@pytest.mark.parametrize("implementation, dtype, history_dtype, options",
                         crossed(DTYPE_PAIRS, {k: (v,) for k, v in OPTIONS.items()},
                                 anchor=("float32-float32", "momentum-decay-nesterov-warmup")))
def test_every_dtype_pair_and_option_set(implementation, dtype, history_dtype, options):
    run = Run(implementation, random_params(SHAPES, dtype, implementation.device),
              history_dtype, **options)
    for _ in range(STEPS):
        run.step()


# Coefficients and warm-ups beyond OPTIONS, in fp32.
MORE_OPTIONS = {
    "sgd-coefficients": dict(coefficients=(1.0, 0.0, 0.0), momentum=0.9),
    "heavy-ball-coefficients": dict(coefficients=(1.6, -0.6, 0.0)),
    "warmup-past-every-step": dict(switch_step=100, momentum=0.9),
    "warmup-one-step-nesterov-decay-maximize": dict(switch_step=1, momentum=0.9, nesterov=True,
                                                    weight_decay=0.1, maximize=True),
}


@pytest.mark.parametrize("options", MORE_OPTIONS.values(), ids=MORE_OPTIONS.keys())
@pytest.mark.parametrize("implementation", ALL)
def test_more_coefficients_and_warmups(implementation, options):
    run = Run(implementation, random_params(SHAPES, F32, implementation.device), **options)
    for _ in range(STEPS):
        run.step()


def scalar_forms() -> dict:
    """lr (a float or a one-element tensor of any real dtype), grad_scale and found_inf (0-dim or
    shape (1,), as GradScaler makes them): (lr maker, grad_scale, scalars' shape, on the CPU)."""
    forms = {
        "lr-float": (lambda device: 0.05, 1024.0, (), False),
        "lr-0-dim-fp64": (lambda device: torch.tensor(0.05, dtype=torch.float64, device=device),
                          1024.0, (1,), False),
        "lr-shape-1-fp32": (lambda device: torch.tensor([0.03], device=device), 1024.0, (),
                            False),
        "lr-bf16": (lambda device: torch.tensor(0.05, dtype=torch.bfloat16, device=device),
                    1024.0, (1,), False),
        # lr 1 with grad_scale 20: an effective rate of 0.05.
        "lr-int64": (lambda device: torch.tensor([1], device=device), 20.0, (), False),
    }
    if DEVICE.type != "cpu":  # params on a GPU, lr, grad_scale and found_inf on the CPU
        forms["scalars-on-cpu"] = (lambda device: torch.tensor([0.03], dtype=torch.float64),
                                   1024.0, (), True)
    return forms


SCALAR_FORMS = scalar_forms()


@pytest.mark.parametrize("implementation, dtype, make_lr, grad_scale, shape, on_cpu",
                         crossed({str(d): (d,) for d in DTYPES}, SCALAR_FORMS,
                                 anchor=(str(F32), "lr-0-dim-fp64")))
def test_lr_grad_scale_and_skipped_steps(implementation, dtype, make_lr, grad_scale, shape,
                                         on_cpu):
    """Scaled grads are divided by grad_scale; steps with found_inf set (the first one included)
    are skipped whole, and the next one is the first momentum step."""
    device = torch.device("cpu") if on_cpu else implementation.device
    run = Run(implementation, random_params([(), (3,), (4097,)], dtype, implementation.device), F32,
              lr=make_lr(device), momentum=0.8, dampening=0.3, maximize=True, switch_step=2)
    for k in range(6):
        run.step(grad_scale=scalar(grad_scale, device, shape),
                 found_inf=scalar(float(k in (0, 3)), device, shape))


FOUND_INF = {"0-dim-one": (1.0, ()), "shape-1-inf": (float("inf"), (1,))}


@pytest.mark.parametrize("momentum", [0.0, 0.9])
@pytest.mark.parametrize("value, shape", FOUND_INF.values(), ids=FOUND_INF.keys())
@pytest.mark.parametrize("scalars_on_cpu", [False, True] if DEVICE.type != "cpu" else [False],
                         ids=lambda on_cpu: "scalars-on-cpu" if on_cpu else "scalars-on-device")
@pytest.mark.parametrize("implementation", ALL)
def test_found_inf_changes_nothing(implementation, scalars_on_cpu, value, shape, momentum):
    """A skipped step changes no param, no state and no count: on the first step, later, and
    with counts that differ between tensors."""
    device = torch.device("cpu") if scalars_on_cpu else implementation.device
    run = Run(implementation, random_params(ODD_SHAPES, torch.float16, implementation.device),
              momentum=momentum, weight_decay=1e-2, nesterov=momentum != 0)
    scale = scalar(8.0, device)

    def skipped(indices=None):
        before = run.snapshot()
        run.step(indices, grad_scale=scale, found_inf=scalar(value, device, shape))
        run.assert_unchanged(before, "a skipped step")

    skipped()
    run.step(grad_scale=scale, found_inf=scalar(0.0, device, shape))
    run.step([0, 2, 4], grad_scale=scale, found_inf=scalar(0.0, device, shape))
    skipped()
    skipped([1, 2])
    run.step(grad_scale=scale, found_inf=scalar(0.0, device, shape))


@pytest.mark.parametrize("history_dtype", DTYPES, ids=str)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("implementation", ALL)
def test_first_momentum_step_ignores_a_nan_buffer(implementation, dtype, history_dtype):
    """A fresh buffer is garbage (NaN here) until the first step sets buf = g exactly, not
    0 * buf + (1 - dampening) * g."""
    run = Run(implementation, random_params(ODD_SHAPES, dtype, implementation.device),
              history_dtype, momentum=0.9, dampening=0.5)
    assert all(b.isnan().all() for b in run.momentum_buffers)
    grads = run.step()
    for b, g in zip(run.momentum_buffers, grads):
        assert torch.equal(b, g)


POISON = {"inf": (float("inf"), float("-inf")), "nan": (float("nan"), float("nan"))}


@pytest.mark.parametrize("even, odd", POISON.values(), ids=POISON.keys())
@pytest.mark.parametrize("implementation", ALL)
def test_warmup_never_reads_the_history(implementation, even, odd):
    """Warm-up steps are SGD's whatever the history holds; the two of them write both slots
    before the first multistep step reads them."""
    run = Run(implementation, random_params(ODD_SHAPES, F32, implementation.device),
              momentum=0.9, dampening=0.5, switch_step=2)
    run.poison_history(even, odd)
    for _ in range(5):
        run.step()


# Which params get a grad at each call: params without one keep their count, so later calls mix
# counts (slot parity, first momentum step and warm-up all differ within one call).
SCHEDULE = [[0], [0, 1], [0, 1, 2], [1, 2, 3], [0, 1, 2, 3], [3], [0, 1, 2, 3], [0, 2, 3]]


@pytest.mark.parametrize("dtype, momentum", [(d, 0.9) for d in DTYPES] + [(F32, 0.0)],
                         ids=[f"{d}-momentum" for d in DTYPES] + [f"{F32}-no-momentum"])
@pytest.mark.parametrize("implementation", ALL)
def test_different_counts_in_one_call(implementation, dtype, momentum):
    """One call over params with different counts: the oracle's result, and bit for bit what
    stepping each param alone gives. Odd params' counts have shape (1,), the others none."""
    shapes = [(4097,), (33,), (7, 5), (1,)]
    options = dict(momentum=momentum, switch_step=3, weight_decay=1e-2)
    together, alone = (Run(implementation, random_params(shapes, dtype, implementation.device),
                           **options) for _ in range(2))
    for run in (together, alone):
        run.steps[1::2] = [s.reshape(1) for s in run.steps[1::2]]
    for indices in SCHEDULE:
        grads = together.step(indices)
        for i, g in zip(indices, grads):
            alone.call([g], [i])
    assert [together.count(i) for i in range(4)] == [6, 5, 5, 5]
    assert_bitwise_equal(together, alone, "stepping together and alone")


SHAPE_SETS = {
    "only-empty": [(0,), (2, 0)],  # nothing to update, every count advances
    # Several of the interpreter's largest blocks (2**16) and a tail; the CPU kernel splits it
    # across threads.
    "large": [(2 * 65536 + 3,), (7,)],
}


@pytest.mark.usefixtures("four_threads")
@pytest.mark.parametrize("shapes", SHAPE_SETS.values(), ids=SHAPE_SETS.keys())
@pytest.mark.parametrize("implementation", ALL)
def test_shapes(implementation, shapes):
    run = Run(implementation, random_params(shapes, F32, implementation.device), momentum=0.5,
              switch_step=2)
    for _ in range(4):
        run.step()


@pytest.mark.usefixtures("four_threads")
@pytest.mark.parametrize("dtype", [F32, torch.bfloat16], ids=str)
@pytest.mark.parametrize("implementation", ALL)
def test_many_tensors(implementation, dtype):
    """600 tensors, some empty: more than one pointer table of 60 tensors and more than one
    launch of 480 counts on a GPU; element ranges split mid-tensor across CPU threads."""
    if implementation.interpreted:
        pytest.skip("600 tensors take about 10 s a step under the Triton interpreter; a GPU "
                    "runs this for the compiled kernels")
    generator = torch.Generator().manual_seed(3)
    sizes = torch.randint(0, 1500, (600,), generator=generator).tolist()
    sizes[::41] = [0] * len(sizes[::41])
    sizes[5] = 100_000  # several chunks of the CUDA kernel's grid
    run = Run(implementation, random_params([(n,) for n in sizes], dtype, implementation.device),
              momentum=0.9, weight_decay=1e-2, nesterov=True, switch_step=1)
    for _ in range(4):
        run.step()


def unaligned_cases() -> dict:
    """(lists carved one element off alignment, dtype, history dtype): all lists at once in every
    dtype, and each list alone."""
    cases = {}
    for dtype in DTYPES:
        for history in dict.fromkeys((dtype, F32)):
            cases[f"all-{dtype}-{history}"] = (LIST_NAMES[:-1], dtype, history)
    for name in LIST_NAMES[:-1]:  # not the counts, which are one element each
        cases[f"{name}-only"] = ((name,), F32, F32)
    return cases


UNALIGNED = unaligned_cases()


@pytest.mark.parametrize("lists, dtype, history_dtype", UNALIGNED.values(), ids=UNALIGNED.keys())
@pytest.mark.parametrize("implementation", ALL)
def test_unaligned_views(implementation, lists, dtype, history_dtype):
    """No 16-byte alignment in the carved lists, and the elements around every carved tensor
    unwritten (Run.check)."""
    run = Run(implementation, random_params(ODD_SHAPES, dtype, implementation.device),
              history_dtype, unaligned=lists, momentum=0.9, weight_decay=1e-2, nesterov=True,
              switch_step=1)
    for _ in range(4):
        run.step()


@pytest.mark.parametrize("implementation", ALL)
def test_layouts_of_params_and_grads(implementation):
    """Params channels_last, transposed and row-major with their state in the same layout, and
    grads whose strides differ from their param's (contiguous, column-major, not dense): stepped
    in each param's layout, grads unwritten."""
    generator = torch.Generator().manual_seed(0)
    device = implementation.device
    params = [random((2, 3, 4, 5), F32, generator, device).to(memory_format=torch.channels_last),
              random((5, 6), F32, generator, device).t(),
              random((6, 4), F32, generator, device),
              random((7, 5), F32, generator, device)]
    run = Run(implementation, params, momentum=0.9, weight_decay=1e-2)
    assert run.delta_even[0].is_contiguous(memory_format=torch.channels_last)
    assert run.delta_odd[1].stride() == params[1].stride()
    for _ in range(4):
        grads = [random((2, 3, 4, 5), F32, generator, device),
                 random((6, 5), F32, generator, device),
                 random((4, 6), F32, generator, device).t(),
                 random((7, 10), F32, generator, device)[:, ::2]]
        kept = [g.clone() for g in grads]
        run.step(grads=grads)
        assert all(torch.equal(g, k) for g, k in zip(grads, kept)), "a grad was written"
    assert run.params[0].is_contiguous(memory_format=torch.channels_last)


# ----------------------------------------------------------------------------- bad arguments


def _replace(name: str, index: int, make):
    def spoil(arguments: dict) -> None:
        arguments[name][index] = make(arguments[name][index])
    return spoil


def _pop(name: str):
    return lambda arguments: arguments[name].pop()


def _set(name: str, value):
    return lambda arguments: arguments.update({name: value})


def _integer_params(arguments: dict) -> None:
    for name in ("params", "grads"):
        arguments[name][0] = arguments[name][0].to(torch.int32)


# name: (what to spoil in a valid call of two params (5,) and (3, 4) with momentum, the pattern
# the error must match, whether a grads check). Every message names the offending argument.
BAD = {
    "fewer-grads": (_pop("grads"), r"grads", True),
    "grad-shape": (_replace("grads", 1, lambda g: torch.zeros(6, device=g.device)),
                   r"grads\[1\]", True),
    "grad-dtype": (_replace("grads", 0, lambda g: g.double()), r"grads\[0\]", True),
    "fewer-counts": (_pop("steps"), r"steps", False),
    "count-dtype": (_replace("steps", 1, lambda s: s.float()), r"steps", False),
    "count-shape": (_replace("steps", 1, lambda s: torch.zeros(2, dtype=torch.int64,
                                                               device=s.device)),
                    r"steps", False),
    "history-shape": (_replace("delta_even", 1, lambda d: torch.zeros(2, 2, device=d.device)),
                      r"delta_even\[1\]", False),
    "history-dtypes-differ": (_replace("delta_odd", 1, lambda d: d.bfloat16()),
                              r"delta_odd\[1\]", False),
    "history-strides": (_replace("delta_odd", 1, lambda d: d.t().contiguous().t()),
                        r"delta_odd\[1\]", False),
    "fewer-momentum-buffers": (_pop("momentum_buffers"), r"momentum_buffers", False),
    "buffers-without-momentum": (_set("momentum", 0.0), r"momentum_buffers", False),
    "buffer-dtype": (_replace("momentum_buffers", 1, lambda b: b.double()),
                     r"momentum_buffers\[1\]", False),
    "params-dtypes-differ": (_replace("params", 1, lambda p: p.double()), r"params\[1\]", False),
    "param-not-dense": (_replace("params", 1, lambda p: torch.zeros(3, 8, device=p.device)[:, ::2]),
                        r"params\[1\]", False),
    "integer-params": (_integer_params, r"params", False),
    "lr-two-elements": (_set("lr", torch.ones(2)), r"lr", False),
    "grad-scale-two-elements": (_set("grad_scale", torch.ones(2)), r"grad_scale", False),
    "grad-scale-integer": (_set("grad_scale", torch.tensor(2)), r"grad_scale", False),
    "found-inf-two-elements": (_set("found_inf", torch.zeros(2)), r"found_inf", False),
}


def bad_cases() -> list:
    """(implementation, case) pairs: every case for implementations that check every list, the
    grads cases for the others."""
    return [pytest.param(*p.values, name, marks=p.marks, id=f"{p.id}-{name}")
            for p in ALL for name, (_, _, grads_case) in BAD.items()
            if grads_case or p.values[0].checks_every_list]


@pytest.mark.parametrize("implementation, case", bad_cases())
def test_bad_arguments_raise_before_any_change(implementation, case):
    spoil, pattern, _ = BAD[case]
    run = Run(implementation, random_params([(5,), (3, 4)], F32, implementation.device),
              momentum=0.9)
    run.step()  # counts 1: a bad call must not advance them
    before = run.snapshot()
    arguments = dict(zip(LIST_NAMES, run.lists(run.grads())), lr=0.05, momentum=0.9,
                     grad_scale=None, found_inf=None)
    spoil(arguments)
    scalars = run.scalars(lr=arguments["lr"], momentum=arguments["momentum"])
    with pytest.raises(implementation.errors, match=pattern):
        implementation.call(*(arguments[name] for name in LIST_NAMES), scalars,
                            arguments["grad_scale"], arguments["found_inf"])
    run.assert_unchanged(before, "after a refused call")


# ------------------------------------------------------------------------------------ the ops


@pytest.mark.parametrize("implementation", THROUGH_AN_OP)
def test_mutated_tensors_get_new_versions(implementation):
    """Like torch's in-place ops: every tensor the schema marks written gets a new version, and
    autograd notices a param stepped after it was saved."""
    w = torch.randn(5, device=implementation.device, requires_grad=True)
    loss = (w * w).sum()  # saves w for backward
    run = Run(implementation, [w.detach()], momentum=0.9)
    run.params = [w]
    versions = [t._version for t in run.tensors()]
    with torch.no_grad():
        run.call(run.grads())
    after = [t._version for t in run.tensors()]
    assert all(a > b for a, b in zip(after, versions)), (versions, after)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        loss.backward()


@pytest.mark.parametrize("momentum", [0.0, 0.9])
@pytest.mark.parametrize("implementation", THROUGH_AN_OP)
def test_opcheck(implementation, momentum):
    """Schema (what it mutates), fake kernel and AOT dispatch of the op."""
    device = implementation.device
    run = Run(implementation, random_params([(5,), (3, 4)], F32, device),
              lr=torch.tensor(0.05, device=device), momentum=momentum, weight_decay=1e-3,
              switch_step=2)
    for b in run.momentum_buffers:
        b.zero_()  # opcheck compares runs of the op, and NaN never equals NaN
    run.steps[1].fill_(3)
    torch.library.opcheck(implementation.overload(),
                          (*run.lists(run.grads()), *run.scalars().arguments(),
                           scalar(2.0, device), scalar(0.0, device)))


@pytest.mark.parametrize("implementation", THROUGH_AN_OP)
def test_compiled_call_matches_eager(implementation):
    """torch.compile traces the op through its fake kernel (fullgraph: no graph break) and runs
    the same kernel: bit-identical results."""
    def make() -> Run:
        return Run(implementation, random_params(ODD_SHAPES, F32, implementation.device),
                   lr=torch.tensor(0.05, device=implementation.device), momentum=0.9,
                   weight_decay=1e-2, nesterov=True, switch_step=2)

    eager, compiled = make(), make()
    overload = implementation.overload()

    def call(lists: list, scalars: tuple) -> None:
        overload(*lists, *scalars, None, None)

    compiled_call = torch.compile(call, fullgraph=True, backend="aot_eager")
    scalars = compiled.scalars().arguments()
    for _ in range(4):
        grads = eager.step()
        compiled_call(compiled.lists([g.clone() for g in grads]), scalars)
    assert_bitwise_equal(compiled, eager, "compiled and eager")
    assert compiled.count(0) == 4


# ---------------------------------------------------------------------------- bit for bit

_PAIRS = list(DTYPE_PAIRS.values())
# (first, second, dtype pairs, why not here): implementations the design says compute the same
# bits. torch's two paths run the same elementwise ops with a float lr; the C++ CPU kernel and
# the Triton interpreter (numpy, which rounds every operation as the compiled kernels do) have no
# contraction and the same order of operations (not bf16: the interpreter truncates bf16
# stores); the CUDA kernel's two count modes are one kernel, and run on the host (emulated) it is
# the CPU kernel's arithmetic (tmsgd_update.h, no contraction in either build).
AGREEMENTS = [
    ("torch-host", "torch-device", _PAIRS, None),
    ("cpu", "triton-host", [(d, h) for d, h in _PAIRS if torch.bfloat16 not in (d, h)],
     None if DEVICE.type == "cpu" else "the interpreter's arithmetic (tests/test_gpu_agreement.py "
                                       "compares cuda and triton on a GPU)"),
    ("cuda-host", "cuda-device", _PAIRS, None),
    ("cpu", "cuda-emulated-host", _PAIRS, None),
    ("cuda-emulated-host", "cuda-emulated-device", _PAIRS, None),
]


def agreement_cases() -> list:
    cases = []
    for first, second, pairs, why_not in AGREEMENTS:
        reasons = [why_not, *(BY_NAME[n].reason() for n in (first, second))]
        reason = next((r for r in reasons if r is not None), None)
        marks = [] if reason is None else [pytest.mark.skip(reason=reason)]
        cases += [pytest.param(BY_NAME[first], BY_NAME[second], d, h, marks=marks,
                               id=f"{first}={second}-{d}-{h}") for d, h in pairs]
    return cases


@pytest.mark.parametrize("first, second, dtype, history_dtype", agreement_cases())
def test_bit_for_bit_agreement(first, second, dtype, history_dtype):
    """Every option, counts 0 to 3 in one call, grad_scale 3 (division is rounded), a skipped
    step: the two implementations' tensors equal bit for bit after every step."""
    options = dict(momentum=0.8, dampening=0.3, nesterov=True, weight_decay=1e-2,
                   maximize=True, switch_step=3)
    shapes = [(), (1,), (4097,), (3, 7)]
    runs = [Run(i, random_params(shapes, dtype, i.device), history_dtype,
                counts=range(len(shapes)), **options) for i in (first, second)]
    for k in range(5):
        grads = runs[0].step(grad_scale=scalar(3.0, first.device),
                             found_inf=scalar(float(k == 2), first.device))
        runs[1].step(grads=[g.to(second.device) for g in grads],
                     grad_scale=scalar(3.0, second.device),
                     found_inf=scalar(float(k == 2), second.device))
        assert_bitwise_equal(*runs, f"step {k}")


# ----------------------------------------------------------------------------- 8-bit history

INT8 = implementations(lambda i: i.name in INT8_HISTORY)
INT8_BIT_EXACT = implementations(lambda i: i.name in INT8_KERNELS)
INT8_DTYPES = (F32, torch.bfloat16, torch.float16)
# Rows with a short last block (300 = 256 + 44), rows of exactly one block, rows shorter than a
# block, one row, rows of one element, no rows, several blocks per row, and 4-D.
INT8_SHAPES = [(3, 300), (5, 256), (64, 128), (1, 4097), (7, 1), (0, 300), (4, 1000),
               (2, 3, 17, 19)]


def int8_pair(implementation, shapes, dtype=F32, **options) -> tuple[Run, Run]:
    """A run of `implementation` with an 8-bit history and the kernel-order reference run of
    the same params on the CPU."""
    params = random_params(shapes, dtype, implementation.device)
    return (Run(implementation, params, torch.int8, **options),
            Run(KERNEL_ORDER, [p.to(CPU, copy=True) for p in params], torch.int8, **options))


def step_both(runs: tuple[Run, Run], indices=None, grad_scale: float | None = None,
              skip: bool = False, what: str = "") -> None:
    """One call of each run with the same grads (no oracle check: see int8_tolerance.py for
    which runs have a bound), then every tensor of both equal bit for bit."""
    run, reference = runs
    found_inf = None if grad_scale is None else float(skip)

    def scalars(device):
        if grad_scale is None:
            return None, None
        return scalar(grad_scale, device), scalar(found_inf, device)

    grads = run.step(indices, grad_scale=scalars(run.implementation.device)[0],
                     found_inf=scalars(run.implementation.device)[1], check=False)
    reference.step(indices, grads=[g.cpu() for g in grads],
                   grad_scale=scalars(CPU)[0], found_inf=scalars(CPU)[1], check=False)
    assert_bitwise_equal(run, reference, what)


INT8_OPTIONS = {k: OPTIONS[k] for k in ("plain", "momentum-decay-nesterov-warmup",
                                        "dampening-maximize-coefficients", "warmup-momentum")}


@pytest.mark.parametrize("options", INT8_OPTIONS.values(), ids=INT8_OPTIONS.keys())
@pytest.mark.parametrize("dtype", INT8_DTYPES, ids=str)
@pytest.mark.parametrize("implementation", INT8_BIT_EXACT)
def test_int8_codes_scales_and_params_bit_for_bit(implementation, dtype, options):
    """The kernels' codes, scales, params, buffers and counts after every step are the
    reference encoder's on the kernels' own arithmetic (tests/kernel_order_step.py): counts 0
    to 7 in one call (slots, first momentum step and warm-up differ within it), a grad scale, a
    skipped step."""
    runs = int8_pair(implementation, INT8_SHAPES, dtype, counts=range(len(INT8_SHAPES)),
                     **options)
    for k in range(6):
        step_both(runs, grad_scale=4.0, skip=k == 2, what=f"step {k}")


@pytest.mark.usefixtures("four_threads")
@pytest.mark.parametrize("implementation", INT8_BIT_EXACT)
def test_int8_many_tensors_and_split_work(implementation):
    """200 params, some without rows or elements, 4 threads over whole blocks; a subset of them
    stepped at times, so counts differ within calls."""
    generator = torch.Generator().manual_seed(5)
    rows = torch.randint(0, 9, (200,), generator=generator).tolist()
    per_row = torch.randint(1, 1200, (200,), generator=generator).tolist()
    per_row[::37] = [0] * len(per_row[::37])
    shapes = [(r, n) for r, n in zip(rows, per_row)] + [(300, 4096)]
    runs = int8_pair(implementation, shapes, momentum=0.9, switch_step=1)
    for indices in (None, list(range(0, 201, 3)), None, list(range(1, 201, 2)), None):
        step_both(runs, indices)


@pytest.mark.parametrize("implementation", INT8_BIT_EXACT)
def test_int8_layouts(implementation):
    """channels_last params with grads in other layouts (contiguous, not dense): blocks are 256
    consecutive elements of memory within a dim-0 slice, as the reference encoder lays them."""
    generator = torch.Generator().manual_seed(0)
    device = implementation.device
    params = [random((2, 5, 13, 11), F32, generator, device).to(memory_format=torch.channels_last),
              random((3, 64, 3, 3), F32, generator, device).to(memory_format=torch.channels_last)]
    runs = (Run(implementation, params, torch.int8, momentum=0.9, weight_decay=1e-2),
            Run(KERNEL_ORDER, [p.to(CPU, copy=True) for p in params], torch.int8, momentum=0.9,
                weight_decay=1e-2))
    assert runs[0].delta_even[0].is_contiguous(memory_format=torch.channels_last)
    for _ in range(4):
        grads = [random((2, 5, 13, 11), F32, generator, device),
                 random((3, 64, 3, 6), F32, generator, device)[..., ::2]]
        for run in runs:
            run.step(grads=[g.to(run.implementation.device) for g in grads], check=False)
        assert_bitwise_equal(*runs, "channels_last params")


@pytest.mark.parametrize("momentum", [0.0, 0.9])
@pytest.mark.parametrize("implementation", INT8)
def test_int8_found_inf_changes_nothing(implementation, momentum):
    """A skipped step writes no code, scale, param, buffer or count, on the first step and
    later, with counts that differ between params."""
    device = implementation.device
    run = Run(implementation, random_params(INT8_SHAPES, torch.bfloat16, device), torch.int8,
              momentum=momentum, nesterov=momentum != 0)

    def skipped(indices=None):
        before = run.snapshot()
        run.step(indices, grad_scale=scalar(8.0, device), found_inf=scalar(1.0, device),
                 check=False)
        run.assert_unchanged(before, "a skipped step")

    skipped()
    run.step(check=False)
    run.step([0, 2, 4], check=False)
    skipped()
    skipped([1, 2])


@pytest.mark.parametrize("even, odd", POISON.values(), ids=POISON.keys())
@pytest.mark.parametrize("implementation", INT8)
def test_int8_warmup_never_reads_the_history(implementation, even, odd):
    """Warm-up steps write both slots without reading them (poisoned scales would make every
    decoded value inf or NaN); the oracle then holds for the steps that read them."""
    run = Run(implementation, random_params(INT8_SHAPES[:5], F32, implementation.device),
              torch.int8, momentum=0.9, dampening=0.5, switch_step=2)
    run.poison_history(even, odd)
    for _ in range(6):
        run.step()


INT8_ORACLE_OPTIONS = {
    "plain": {},
    "momentum-nesterov-warmup": dict(momentum=0.9, nesterov=True, switch_step=2),
    "dampening-maximize-coefficients": dict(momentum=0.8, dampening=0.3, maximize=True,
                                            coefficients=(1.25, -0.5, 0.25)),
}


@pytest.mark.parametrize("options", INT8_ORACLE_OPTIONS.values(),
                         ids=INT8_ORACLE_OPTIONS.keys())
@pytest.mark.parametrize("dtype", INT8_DTYPES, ids=str)
@pytest.mark.parametrize("implementation", INT8)
def test_int8_against_the_oracle(implementation, dtype, options):
    """12 steps against the float64 oracle within the bound derived from the quantization
    error (tests/int8_tolerance.py), which grads independent of the weights need: no weight
    decay here (the bit-for-bit tests cover it)."""
    run = Run(implementation, random_params(INT8_SHAPES[:7], dtype, implementation.device),
              torch.int8, **options)
    for _ in range(12):
        run.step()


# ------------------------------------------------------- 8-bit momentum buffers (momentum_dtype)

INT8_MOMENTUM_RUNS = implementations(lambda i: i.name in INT8_MOMENTUM)
INT8_MOMENTUM_ORACLE_RUNS = implementations(lambda i: i.name in INT8_MOMENTUM_ORACLE)
INT8_MOMENTUM_BIT_EXACT = implementations(lambda i: i.name in INT8_MOMENTUM & INT8_KERNELS)
INT8_MOMENTUM_OPTIONS = {
    "momentum": dict(momentum=0.9),
    "nesterov-warmup": dict(momentum=0.9, nesterov=True, switch_step=2),
    "dampening-maximize-coefficients": dict(momentum=0.8, dampening=0.3, maximize=True,
                                            coefficients=(1.25, -0.5, 0.25)),
}


@pytest.mark.parametrize("options", INT8_MOMENTUM_OPTIONS.values(),
                         ids=INT8_MOMENTUM_OPTIONS.keys())
@pytest.mark.parametrize("dtype", INT8_DTYPES, ids=str)
@pytest.mark.parametrize("implementation", INT8_MOMENTUM_ORACLE_RUNS)
def test_int8_momentum_against_the_oracle(implementation, dtype, options):
    """12 steps with 8-bit history and buffers against the float64 oracle within the bound
    derived from both quantization errors (tests/int8_tolerance.py); half the params start at
    count 0 with NaN buffer scales, which the first step must not read."""
    shapes = INT8_SHAPES[:7]
    run = Run(implementation, random_params(shapes, dtype, implementation.device), torch.int8,
              momentum_dtype=torch.int8, counts=[i % 2 for i in range(len(shapes))], **options)
    for _ in range(12):
        run.step()


@pytest.mark.parametrize("options", INT8_OPTIONS.values(), ids=INT8_OPTIONS.keys())
@pytest.mark.parametrize("dtype", INT8_DTYPES, ids=str)
@pytest.mark.parametrize("implementation", INT8_MOMENTUM_BIT_EXACT)
def test_int8_momentum_codes_bit_for_bit(implementation, dtype, options):
    """As test_int8_codes_scales_and_params_bit_for_bit, with 8-bit buffers: the buffers' codes
    and scales are the reference encoder's too."""
    options = {**options, "momentum": options.get("momentum") or 0.5}
    runs = int8_pair(implementation, INT8_SHAPES, dtype, counts=range(len(INT8_SHAPES)),
                     momentum_dtype=torch.int8, **options)
    for k in range(6):
        step_both(runs, grad_scale=4.0, skip=k == 2, what=f"step {k}")


@pytest.mark.parametrize("implementation", INT8_MOMENTUM_RUNS)
def test_int8_momentum_found_inf_changes_nothing(implementation):
    device = implementation.device
    run = Run(implementation, random_params(INT8_SHAPES, torch.bfloat16, device), torch.int8,
              momentum=0.9, nesterov=True, momentum_dtype=torch.int8)
    for _ in range(2):
        before = run.snapshot()
        run.step(grad_scale=scalar(8.0, device), found_inf=scalar(1.0, device), check=False)
        run.assert_unchanged(before, "a skipped step")
        run.step(check=False)


def _spoil_scales(name: str, make):
    def spoil(arguments: dict) -> None:
        arguments[name][1] = make(arguments[name][1])
    return spoil


INT8_BAD = {
    "scales-missing": (lambda a: a["delta_odd_scales"].pop(), r"delta_odd_scales"),
    "scales-for-float-history": (None, r"delta_even_scales"),
    "scales-shape": (_spoil_scales("delta_even_scales", lambda s: s[:, :1].contiguous()),
                     r"delta_even_scales\[1\]"),
    "scales-dtype": (_spoil_scales("delta_odd_scales", lambda s: s.double()),
                     r"delta_odd_scales\[1\]"),
    "scales-not-contiguous": (_spoil_scales("delta_even_scales", lambda s: s.t().contiguous().t()),
                              r"delta_even_scales\[1\]"),
    "rows-not-outermost": (None, r"params\[1\]"),
    "fp64-params": (None, r"params\[0\]"),
}


@pytest.mark.parametrize("case", INT8_BAD.keys())
@pytest.mark.parametrize("implementation", INT8_BIT_EXACT)
def test_int8_bad_arguments_raise_before_any_change(implementation, case):
    spoil, pattern = INT8_BAD[case]
    device = implementation.device
    params = random_params([(4, 300), (3, 600)], F32, device)
    if case == "rows-not-outermost":
        params[1] = params[1].t().contiguous().t()
    if case == "fp64-params":
        params = [p.double() for p in params]
    run = Run(implementation, params, torch.int8, momentum=0.9)
    if case == "scales-for-float-history":
        run.delta_even = [torch.zeros_like(p) for p in run.params]
        run.delta_odd = [torch.zeros_like(p) for p in run.params]
    before = run.snapshot()
    arguments = dict(zip(LIST_NAMES, run.lists(run.grads())))
    if spoil is not None:
        spoil(arguments)
    with pytest.raises(implementation.errors, match=pattern):
        implementation.call(*(arguments[name] for name in LIST_NAMES), run.scalars(), None, None)
    run.assert_unchanged(before, "after a refused call")
