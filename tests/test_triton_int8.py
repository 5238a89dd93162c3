"""The Triton step with an 8-bit history (triton_kernels/quantized_update.py) against the torch
implementation (tmsgd_kernels/torch_step.py), bit for bit: the new slot's codes and scales are
the reference encoder's (int8_history.encode_into, which the torch step applies to its d_new), and
params, momentum buffers and counts the torch step's. Host and device counts, the flat range and
the pointer table (whole-block rows and rows with a short last block, rows of one block, rows
shorter than a block, channels_last, many tensors), found_inf, the warm-up and mixed counts;
bad arguments refused before anything changes. 8-bit momentum buffers (momentum_dtype=torch.int8:
codes and block scales like the history's) against kernel_order_step, bit for bit.

Why power-of-two scalars: torch's CPU add with an alpha runs as one fused multiply-add (ATen's
vectorized add is vec::fmadd), while the kernels round every product (no contraction, as the C++
kernels). With lr, weight decay, momentum, 1 - dampening and the coefficients' b1, b2 powers of
two every such product is exact and both round the same sums, so any difference is the kernel's.
With other scalars the reference is tests/kernel_order_step.py (the native kernels' arithmetic
in unfused torch ops, and the reference encoder), which the Triton kernel equals bit for bit too.

Under TRITON_INTERPRET=1 (tests/conftest.py sets it without a GPU) the kernels run on CPU tensors;
the device path is then called below the op, as the contract harness does. bf16 params are held
to the torch step bit for bit only compiled: the interpreter truncates bf16 stores.
"""

from __future__ import annotations

import kernel_order_step
import pytest
import torch

from tmsgd_kernels import int8_history, torch_step
from tmsgd_kernels.implementations import choose, unavailable_reason
from tmsgd_kernels.step_contract import StepScalars

DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")
REASON = unavailable_reason("triton", DEVICE)
pytestmark = pytest.mark.skipif(REASON is not None, reason=f"triton on {DEVICE}: {REASON}")
INTERPRETED = DEVICE.type == "cpu"

LR = 2.0 ** -4
# b1 = 0.25, b2 = -0.25 (the paper's are 0.5, -0.5: the default).
COEFFICIENTS = {"paper": (1.5, -1.0, 0.5), "quarter": (1.25, -0.5, 0.25)}
OPTIONS = {
    "plain": {},
    "momentum-nesterov-decay-maximize": dict(momentum=0.5, nesterov=True,
                                             weight_decay=2.0 ** -5, maximize=True),
    "dampening-warmup": dict(momentum=0.5, dampening=0.5, switch_step=2),
    "warmup-quarter-coefficients": dict(switch_step=3, coefficients="quarter"),
}
# Rows with a short last block (300 = 256 + 44, 1000), of exactly one block, shorter than one
# block (a 3x7x7 kernel), of whole blocks (the aligned table path), and one above int8_history's
# size threshold.
SHAPES = [(6, 300), (5, 256), (4, 3, 7, 7), (3, 512), (2, 1000), (16, 300)]
MODES = ["host", "device"]


def _modules():
    from tmsgd_kernels.triton_kernels import layout, op
    from tmsgd_kernels.triton_kernels.tensor_lists import TensorLists

    return layout, op, TensorLists


def scales_for(param: torch.Tensor) -> torch.Tensor:
    rows = param.shape[0]
    return torch.zeros(int8_history.scales_shape(rows, param.numel() // rows),
                       device=param.device)


class Pair:
    """The same params and 8-bit history stepped by the torch step (its host or device path, as
    `mode`; or, `kernel_order`, by kernel_order_step) and by the Triton op, each on its own copy;
    `step` steps both with the same grads and compares every tensor."""

    def __init__(self, params: list[torch.Tensor], mode: str, counts: list[int] | None = None,
                 seed: int = 0, lr: float = LR, lr_tensor: bool = False,
                 coefficients: str = "paper", kernel_order: bool = False,
                 momentum_codes: bool = False, **options) -> None:
        self.mode, self.options, self.kernel_order = mode, options, kernel_order
        self.generator = torch.Generator().manual_seed(seed)
        self.lr = torch.tensor(lr, device=DEVICE) if lr_tensor else lr
        a0, a1, _ = COEFFICIENTS[coefficients]
        self.b1, self.b2 = a0 - 1.0, a0 + a1 - 1.0
        counts = counts or [0] * len(params)
        # Both slots hold codes of random values (decoding is checked from the first step); a
        # buffer at count 0 is NaN, which its first step must not read.
        even, odd, even_scales, odd_scales = [], [], [], []
        for p in params:
            for codes, scales in ((even, even_scales), (odd, odd_scales)):
                codes.append(torch.empty_like(p, dtype=torch.int8))
                scales.append(scales_for(p))
                int8_history.encode_into(self.random(p) * 0.01, codes[-1], scales[-1])
        buffers = [self.random(p) if c else torch.full_like(p, float("nan"))
                   for p, c in zip(params, counts)] if options.get("momentum") else []
        buffer_scales = []
        if momentum_codes:  # 8-bit buffers (momentum_dtype=torch.int8)
            buffers, buffer_scales = self.buffer_codes(params, counts)
        counts_device = DEVICE if mode == "device" else torch.device("cpu")
        steps = [torch.tensor(c, dtype=torch.int64, device=counts_device) for c in counts]
        self.torch_lists = [params, even, odd, even_scales, odd_scales, buffers, buffer_scales,
                            steps]
        self.triton_lists = [[t.clone() for t in tensors] for tensors in self.torch_lists]

    def buffer_codes(self, params: list[torch.Tensor], counts: list[int]
                     ) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """8-bit buffers: codes of random values, or, at count 0, random codes with NaN scales,
        which a first step must not read."""
        codes, scales = [], []
        for p, c in zip(params, counts):
            codes.append(torch.randint(-127, 128, p.shape, generator=self.generator,
                                       dtype=torch.int8).to(DEVICE))
            codes[-1] = torch.empty_like(p, dtype=torch.int8).copy_(codes[-1])
            scales.append(scales_for(p).fill_(float("nan")))
            if c:
                int8_history.encode_into(self.random(p), codes[-1], scales[-1])
        return codes, scales

    def random(self, like: torch.Tensor) -> torch.Tensor:
        """Random values laid out like `like` (the encoder reads values in their memory order)."""
        values = torch.randn(like.shape, generator=self.generator, dtype=torch.float64)
        return torch.empty_like(like).copy_(values)

    def scalars(self) -> StepScalars:
        return StepScalars.make(self.lr, self.b1, self.b2, **self.options)

    def step(self, grads: list[torch.Tensor] | None = None,
             grad_scale: torch.Tensor | None = None,
             found_inf: torch.Tensor | None = None) -> None:
        params, *state = self.torch_lists
        if grads is None:
            scale = 1.0 if grad_scale is None else grad_scale.item()
            grads = [self.random(p) * scale for p in params]
        if self.kernel_order:
            reference = kernel_order_step.step
        else:
            reference = torch_step.device_step if self.mode == "device" else torch_step.host_step
        reference(params, grads, *state, self.scalars(), grad_scale, found_inf)
        self.triton_step(grads, grad_scale, found_inf)
        self.assert_equal()

    def triton_step(self, grads, grad_scale=None, found_inf=None) -> None:
        params, *state = self.triton_lists
        lists = [params, grads, *state]
        if self.mode == "device" and DEVICE.type == "cpu":
            _, op, TensorLists = _modules()
            op.run(TensorLists(*lists), self.scalars(), grad_scale, found_inf,
                   counts_on_device=True)
        else:
            choose("triton", DEVICE)  # registers the op's kernels
            torch.ops.tmsgd_kernels.tmsgd_step_triton(*lists, *self.scalars().arguments(),
                                                      grad_scale, found_inf)

    def assert_equal(self) -> None:
        names = ["params", "delta_even", "delta_odd", "delta_even_scales", "delta_odd_scales",
                 "momentum_buffers", "momentum_scales", "steps"]
        for name, ours, theirs in zip(names, self.triton_lists, self.torch_lists):
            for i, (a, b) in enumerate(zip(ours, theirs, strict=True)):
                where = f"{name}[{i}] {tuple(a.shape)}"
                torch.testing.assert_close(a.cpu(), b.cpu(), rtol=0, atol=0, equal_nan=True,
                                           msg=lambda m, where=where: f"{where}: {m}")


def params_of(shapes, dtype=torch.float32, seed: int = 1) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return [torch.randn(s, generator=generator).to(dtype).to(DEVICE) for s in shapes]


def test_scale_block_is_the_reference_encoders():
    from tmsgd_kernels.triton_kernels import int8_blocks

    assert int8_blocks.SCALE_BLOCK == int8_history.BLOCK


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("options", OPTIONS.values(), ids=OPTIONS.keys())
def test_every_option_matches_the_torch_step_bit_for_bit(mode, options):
    pair = Pair(params_of(SHAPES), mode, **options)
    for _ in range(5):
        pair.step()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=str)
@pytest.mark.parametrize("mode", MODES)
def test_any_scalars_match_the_kernels_order_bit_for_bit(mode, dtype):
    """Scalars whose products round (lr 0.05, momentum 0.9, ...) against kernel_order_step."""
    pair = Pair(params_of(SHAPES, dtype), mode, counts=[0, 1, 2, 3, 4, 5], lr=0.05,
                kernel_order=True, momentum=0.9, dampening=0.1, nesterov=True,
                weight_decay=1e-2, switch_step=2)
    for _ in range(3):
        pair.step(grad_scale=torch.tensor(3.0, device=DEVICE))


@pytest.mark.parametrize("mode", MODES)
def test_fp16_params_lr_tensor_and_grad_scale(mode):
    pair = Pair(params_of(SHAPES[:3], torch.float16), mode, lr_tensor=True, momentum=0.5)
    for _ in range(3):
        pair.step(grad_scale=torch.tensor(4.0, device=DEVICE))


@pytest.mark.parametrize("mode", MODES)
def test_mixed_counts_in_one_call(mode):
    """Counts 0 to 5 around a warm-up of 2: every class of slot, first momentum step and warm-up
    in one call (host: one launch per class; device: each program reads its count)."""
    shapes = [(6, 300), (5, 256), (3, 512), (2, 1000), (4, 3, 7, 7), (3, 260)]
    pair = Pair(params_of(shapes), mode, counts=list(range(6)), momentum=0.5, switch_step=2)
    for _ in range(3):
        pair.step()


@pytest.mark.parametrize("mode", MODES)
def test_found_inf_changes_nothing(mode):
    pair = Pair(params_of(SHAPES), mode, momentum=0.5, switch_step=1)
    pair.step()
    before = [[t.clone() for t in tensors] for tensors in pair.triton_lists]
    pair.step(found_inf=torch.tensor(1.0, device=DEVICE))
    for now, then in zip(pair.triton_lists, before):
        for a, b in zip(now, then):
            torch.testing.assert_close(a, b, rtol=0, atol=0, equal_nan=True)
    pair.step(found_inf=torch.tensor(0.0, device=DEVICE))


def test_many_tensors_and_channels_last():
    """Forty tensors of a ResNet-like mix in one call, half the 4-D ones channels_last (a row is
    then one output channel's elements in memory order)."""
    shapes = [(64, 3, 7, 7), (16, 64, 3, 3), (32, 64, 1, 1), (10, 512), (32, 300)] * 8
    params = [p.to(memory_format=torch.channels_last) if p.dim() == 4 and i % 2 else p
              for i, p in enumerate(params_of(shapes))]
    pair = Pair(params, "device", counts=[i % 3 for i in range(len(shapes))], momentum=0.5)
    for _ in range(2):
        pair.step()


@pytest.mark.parametrize("mode", MODES)
def test_zero_blocks_stay_exact(mode):
    """Blocks whose d_new is all zero store scale 0 and codes 0 (no 0 / 0), next to a short
    block that is not zero."""
    params = params_of([(4, 300), (2, 512)])
    pair = Pair(params, mode)
    for tensors in (pair.torch_lists, pair.triton_lists):
        for slots in tensors[1:5]:
            for t in slots:
                t.zero_()
    grads = [torch.zeros_like(p) for p in params]
    grads[0][1, 256:] = 1.0
    pair.step(grads=grads)
    even, scales = pair.triton_lists[1][0], pair.triton_lists[3][0]  # count 0: the even slot
    assert scales.count_nonzero() == 1 and scales[1, 1] > 0
    assert even.count_nonzero() == 44 and not pair.triton_lists[0][0].isnan().any()


@pytest.mark.parametrize("mode", MODES)
def test_a_nan_gives_its_block_a_nan_scale(mode):
    """A NaN in d_new (a NaN grad, no found_inf) gives its block a NaN scale, as torch's amax
    does, so the block decodes to NaN, and codes 0; the other blocks are unaffected."""
    params = params_of([(4, 300), (2, 512)])
    pair = Pair(params, mode)
    grads = [pair.random(p) for p in params]
    grads[0][2, 260] = float("nan")
    pair.step(grads=grads)
    scales, codes = pair.triton_lists[3][0], pair.triton_lists[1][0]
    assert scales.isnan().nonzero().tolist() == [[2, 1]]
    assert codes[2, 256:].eq(0).all() and codes[2, :256].ne(0).any()


def _flat(shapes, dtype, make) -> list[torch.Tensor]:
    sizes = [torch.Size(s).numel() for s in shapes]
    buffer = make(sum(sizes), dtype)
    return [view.view(s) for view, s in zip(buffer.split(sizes), shapes)]


def _flat_pair(shapes, mode: str, momentum: float, momentum_codes: bool = False) -> Pair:
    """A Pair whose every list lies back to back in one buffer per list, as flattened params
    give (scales too)."""
    pair = Pair(params_of(shapes), mode, momentum=momentum, momentum_codes=momentum_codes)
    for tensors in (pair.torch_lists, pair.triton_lists):
        for index in range(7 if momentum_codes else 6 if momentum else 5):
            old = tensors[index]
            new = _flat([t.shape for t in old], old[0].dtype,
                        lambda n, dtype: torch.empty(n, dtype=dtype, device=DEVICE))
            for a, b in zip(new, old):
                a.copy_(b)
            tensors[index] = new
    return pair


@pytest.mark.parametrize("momentum_codes", [False, True], ids=["buffers", "8-bit-buffers"])
@pytest.mark.parametrize("mode", MODES)
def test_flattened_buffers(mode, momentum_codes):
    """Rows of whole blocks, back to back: host counts step them as one range (no table); a
    row with a short block among them needs the table. Both match the torch step."""
    layout, _, _ = _modules()
    for shapes, flat in (([(3, 512), (4, 256), (1, 1024)], mode == "host"),
                         ([(3, 512), (4, 300)], False)):
        pair = _flat_pair(shapes, mode, momentum=0.5, momentum_codes=momentum_codes)
        before = layout.cache_stats()["tables"]
        for _ in range(3):
            grads = _flat(shapes, torch.float32,
                          lambda n, dtype: torch.empty(n, dtype=dtype, device=DEVICE))
            for g in grads:
                g.copy_(pair.random(g))
            pair.step(grads=grads)
        assert (layout.cache_stats()["tables"] == before) == flat, shapes


def test_bf16_params_first_step():
    """bf16 params: the first step's codes and scales (which depend on no stored bf16 value) bit
    for bit, and the params too where compiled; interpreted, within one bf16 rounding."""
    pair = Pair(params_of(SHAPES, torch.bfloat16), "host")
    if not INTERPRETED:
        pair.step()
        return
    grads = [pair.random(p) for p in pair.torch_lists[0]]
    params, *state = pair.torch_lists
    torch_step.host_step(params, grads, *state, pair.scalars())
    pair.triton_step(grads)
    for ours, theirs in zip(pair.triton_lists[1:], pair.torch_lists[1:]):
        for a, b in zip(ours, theirs):
            torch.testing.assert_close(a, b, rtol=0, atol=0)
    for a, b in zip(pair.triton_lists[0], pair.torch_lists[0]):
        torch.testing.assert_close(a.float(), b.float(), rtol=2.0 ** -7, atol=0)


# ------------------------------------------------------------------ 8-bit momentum buffers

INT8_MOMENTUM_OPTIONS = {
    "nesterov-decay-maximize": dict(momentum=0.9, nesterov=True, weight_decay=1e-2,
                                    maximize=True, switch_step=1),
    "dampening-warmup": dict(momentum=0.8, dampening=0.3, switch_step=2),
}


@pytest.mark.parametrize("options", INT8_MOMENTUM_OPTIONS.values(),
                         ids=INT8_MOMENTUM_OPTIONS.keys())
@pytest.mark.parametrize("mode", MODES)
def test_int8_momentum_matches_the_kernels_order_bit_for_bit(mode, options):
    """8-bit buffers, scalars whose products round: buffer codes and scales, history, params and
    counts are kernel_order_step's, with counts 0 to 5 in one call (a first step reads neither
    the random codes nor the NaN scales of its unset buffer), a grad scale and a skipped
    step."""
    pair = Pair(params_of(SHAPES), mode, counts=[0, 1, 2, 3, 4, 5], lr=0.05, kernel_order=True,
                momentum_codes=True, **options)
    for k in range(3):
        pair.step(grad_scale=torch.tensor(3.0, device=DEVICE),
                  found_inf=torch.tensor(float(k == 1), device=DEVICE))
    assert all(scales.isfinite().all() for scales in pair.triton_lists[6])


def test_int8_momentum_fp16_params_and_lr_tensor():
    pair = Pair(params_of(SHAPES[:4], torch.float16), "host", counts=[0, 1, 0, 3], lr=0.05,
                lr_tensor=True, kernel_order=True, momentum_codes=True, momentum=0.9,
                weight_decay=1e-2)
    for _ in range(3):
        pair.step()


def test_int8_momentum_bf16_params():
    """bf16 params without weight decay (so nothing else depends on them): buffer codes and
    scales, history and counts bit for bit every step; the params too where compiled, and
    within one bf16 rounding interpreted (which truncates bf16 stores), each step from the
    reference's params."""
    pair = Pair(params_of(SHAPES[:4], torch.bfloat16), "device", counts=[0, 1, 2, 3], lr=0.05,
                kernel_order=True, momentum_codes=True, momentum=0.9, nesterov=True)
    for _ in range(3):
        if not INTERPRETED:
            pair.step()
            continue
        params, *state = pair.torch_lists
        grads = [pair.random(p) for p in params]
        kernel_order_step.step(params, grads, *state, pair.scalars())
        pair.triton_step(grads)
        for ours, theirs in zip(pair.triton_lists[1:], pair.torch_lists[1:]):
            for a, b in zip(ours, theirs):
                torch.testing.assert_close(a, b, rtol=0, atol=0)
        for a, b in zip(pair.triton_lists[0], params):
            torch.testing.assert_close(a.float(), b.float(), rtol=2.0 ** -7, atol=0)
            a.copy_(b)


def test_int8_momentum_channels_last_and_zero_blocks():
    """channels_last params (a block is 256 consecutive elements of memory within a row) beside
    row-major ones, device counts; an all-zero param and grad: its buffer's blocks are scale 0
    and codes 0 from the first step on."""
    shapes = [(16, 64, 3, 3), (8, 3, 7, 7), (4, 300), (3, 512)]
    params = [p.to(memory_format=torch.channels_last) if p.dim() == 4 else p
              for p in params_of(shapes)]
    params[2].zero_()
    pair = Pair(params, "device", counts=[0, 2, 0, 1], lr=0.05, kernel_order=True,
                momentum_codes=True, momentum=0.9, dampening=0.1)
    for _ in range(3):
        grads = [pair.random(p) for p in params]
        grads[2].zero_()
        pair.step(grads=grads)
    codes, scales = pair.triton_lists[5][2], pair.triton_lists[6][2]
    assert scales.eq(0).all() and codes.eq(0).all()
    assert pair.triton_lists[5][0].is_contiguous(memory_format=torch.channels_last)


# ----------------------------------------------------------------------------- bad arguments


def _lists(params):
    even = [torch.zeros_like(p, dtype=torch.int8) for p in params]
    odd = [torch.zeros_like(p, dtype=torch.int8) for p in params]
    return [params, [torch.ones_like(p) for p in params], even, odd,
            [scales_for(p) for p in params], [scales_for(p) for p in params], [], [],
            [torch.zeros((), dtype=torch.int64) for _ in params]]


def _bad(change):
    params = params_of([(4, 300), (3, 512)])
    lists = _lists(params)
    change(lists)
    return lists


BAD = {
    "scales of another shape": (lambda ls: ls[4].__setitem__(0, torch.zeros(4, 1)),
                                "delta_even_scales[0]"),
    "scales in fp16": (lambda ls: ls[5].__setitem__(1, torch.zeros(3, 2, dtype=torch.float16)),
                       "delta_odd_scales[1]"),
    "scales not contiguous": (lambda ls: ls[4].__setitem__(1, torch.zeros(2, 3).t()),
                              "delta_even_scales[1]"),
    "no scales": (lambda ls: (ls[4].clear(), ls[5].clear()), "scales"),
    "scales for a float history": (
        lambda ls: (ls.__setitem__(2, [torch.zeros_like(p) for p in ls[0]]),
                    ls.__setitem__(3, [torch.zeros_like(p) for p in ls[0]])), "scales"),
    "rows not contiguous": (
        lambda ls: [lst.__setitem__(0, t) for lst, t in zip(
            ls[:4], [torch.zeros(300, 4).t(), torch.ones(300, 4).t(),
                     torch.zeros(300, 4, dtype=torch.int8).t(),
                     torch.zeros(300, 4, dtype=torch.int8).t()])], "params[0]"),
    "0-dim param": (
        lambda ls: [lst.__setitem__(0, t) for lst, t in zip(
            ls[:6], [torch.zeros(()), torch.ones(()), torch.zeros((), dtype=torch.int8),
                     torch.zeros((), dtype=torch.int8), torch.zeros(1, 1),
                     torch.zeros(1, 1)])], "params[0]"),
}


def _with_8_bit_buffers(lists: list, scales=scales_for, dtype=torch.int8) -> None:
    lists[6] = [torch.zeros_like(p, dtype=dtype) for p in lists[0]]
    lists[7] = [scales(p) for p in lists[0]]


BAD_8_BIT_BUFFERS = {
    "buffer scales of another shape": (
        lambda ls: _with_8_bit_buffers(ls, scales=lambda p: torch.zeros(p.shape[0], 1)),
        "momentum_scales[0]"),
    "buffer scales in fp64": (
        lambda ls: _with_8_bit_buffers(ls, scales=lambda p: scales_for(p).double()),
        "momentum_scales[0]"),
    "float buffers with scales": (
        lambda ls: _with_8_bit_buffers(ls, dtype=torch.float32), "momentum_buffers[0]"),
    "buffer scales for a float history": (
        lambda ls: (_with_8_bit_buffers(ls),
                    ls.__setitem__(2, [torch.zeros_like(p) for p in ls[0]]),
                    ls.__setitem__(3, [torch.zeros_like(p) for p in ls[0]]),
                    ls[4].clear(), ls[5].clear()), "momentum_scales"),
    "one buffer scales tensor missing": (
        lambda ls: (_with_8_bit_buffers(ls), ls[7].pop()), "momentum_scales"),
}


@pytest.mark.parametrize("change, names", BAD.values(), ids=BAD.keys())
def test_bad_arguments_raise_before_anything_changes(change, names):
    lists = _bad(change)
    before = [t.clone() for tensors in lists for t in tensors]
    choose("triton", DEVICE)
    with pytest.raises(ValueError, match=names.replace("[", r"\[")):
        torch.ops.tmsgd_kernels.tmsgd_step_triton(*lists, *StepScalars.make(LR, 0.5, -0.5)
                                                  .arguments(), None, None)
    after = [t for tensors in lists for t in tensors]
    for a, b in zip(after, before):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


@pytest.mark.parametrize("change, names", BAD_8_BIT_BUFFERS.values(),
                         ids=BAD_8_BIT_BUFFERS.keys())
def test_bad_8_bit_buffers_raise_before_anything_changes(change, names):
    lists = _bad(change)
    before = [t.clone() for tensors in lists for t in tensors]
    choose("triton", DEVICE)
    with pytest.raises(ValueError, match=names.replace("[", r"\[")):
        torch.ops.tmsgd_kernels.tmsgd_step_triton(*lists, *StepScalars.make(LR, 0.5, -0.5,
                                                                            momentum=0.5)
                                                  .arguments(), None, None)
    for a, b in zip([t for tensors in lists for t in tensors], before):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_fp64_params_have_no_8_bit_history():
    lists = _bad(lambda ls: None)
    lists[0] = [p.double() for p in lists[0]]
    lists[1] = [g.double() for g in lists[1]]
    choose("triton", DEVICE)
    with pytest.raises(TypeError, match="int8"):
        torch.ops.tmsgd_kernels.tmsgd_step_triton(*lists, *StepScalars.make(LR, 0.5, -0.5)
                                                  .arguments(), None, None)


@pytest.mark.parametrize("capturable, momentum_dtype",
                         [(False, None), (True, None), (True, torch.int8)],
                         ids=["host", "device", "device-8-bit-buffers"])
def test_optimizer_steps_an_8_bit_history_with_triton(capturable, momentum_dtype):
    """TMSGD(history_dtype=torch.int8, backend="triton") against backend="torch": weights take
    the 8-bit history (and with momentum_dtype=torch.int8 8-bit buffers), the bias (one
    dimension) a float one; params and every state tensor bit for bit."""
    from tmsgd_kernels import TMSGD

    shapes = [(16, 300), (8, 512), (300,)]
    models = [[torch.nn.Parameter(p) for p in params_of(shapes)] for _ in range(2)]
    optimizers = [TMSGD(model, lr=LR, momentum=0.5, nesterov=True, history_dtype=torch.int8,
                        momentum_dtype=momentum_dtype, capturable=capturable, backend=backend)
                  for model, backend in zip(models, ("triton", "torch"))]
    generator = torch.Generator().manual_seed(2)
    for _ in range(4):
        for a, b in zip(*models):
            a.grad = torch.randn(a.shape, generator=generator).to(DEVICE)
            b.grad = a.grad.clone()
        for optimizer in optimizers:
            optimizer.step()
    for a, b in zip(*models):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
        ours, theirs = optimizers[0].state[a], optimizers[1].state[b]
        assert ours.keys() == theirs.keys()
        for key in ours:
            torch.testing.assert_close(ours[key], theirs[key], rtol=0, atol=0, msg=key)
    assert optimizers[0].state[models[0][0]]["delta_even"].dtype == torch.int8
    assert optimizers[0].state[models[0][2]]["delta_even"].dtype == torch.float32
    assert (optimizers[0].state[models[0][0]]["momentum_buffer"].dtype
            == (momentum_dtype or torch.float32))
