"""8-bit history (history_dtype=torch.int8): the reference encoder's rules, which params take it,
and the optimizer's state life cycle with it (creation, conversion both ways, checkpoints,
bit-exact resume, the coefficient guard). The kernels' agreement with the encoder is the kernel
contract's test (tests/test_kernel_contract.py)."""

from __future__ import annotations

import copy
import warnings

import pytest
import torch
from int8_training import small_model, train

from tmsgd_kernels import TMSGD, int8_history
from tmsgd_kernels.int8_history import BLOCK, CODE_MAX


def _codes_for(values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    codes, scales = int8_history.zeros_for(values)
    int8_history.encode_into(values, codes, scales)
    return codes, scales


def test_encoder_rules_block_by_block():
    """Per block of 256 elements of a row: scale = absmax / 127, codes round x / scale to the
    nearest integer (ties to even), the largest element is +-127 exactly, the error is at most
    half a step, and a row's short last block is a block of its own."""
    generator = torch.Generator().manual_seed(0)
    values = torch.randn(16, 600, generator=generator) * torch.logspace(-3, 2, 600)
    codes, scales = _codes_for(values)
    assert scales.shape == (16, 3)  # 600 = 256 + 256 + 88
    for row in range(16):
        for block in range(3):
            piece = values[row, block * BLOCK:(block + 1) * BLOCK]
            piece_codes = codes[row, block * BLOCK:(block + 1) * BLOCK]
            scale = scales[row, block]
            assert scale == piece.abs().max() / CODE_MAX
            assert piece_codes.abs().max() == CODE_MAX
            expected = torch.round(piece / scale).clamp(-CODE_MAX, CODE_MAX)
            assert torch.equal(piece_codes.float(), expected)
            assert (piece_codes.float() * scale - piece).abs().max() <= 0.5 * scale * (1 + 1e-6)
    decoded = int8_history.decode(codes, scales)
    assert torch.equal(decoded, codes.float() * scales.repeat_interleave(BLOCK, 1)[:, :600])


def test_zero_blocks_and_ties_are_exact():
    values = torch.zeros(8, 512)
    values[1, :3] = torch.tensor([127.0, 0.5, 1.5])  # scale 1: ties round to even
    codes, scales = _codes_for(values)
    assert scales[0].eq(0).all() and codes[0].eq(0).all()
    assert not int8_history.decode(codes, scales).isnan().any()
    assert codes[1, :3].tolist() == [127, 0, 2]
    expected = values.clone()
    expected[1, 1:3] = torch.tensor([0.0, 2.0])
    assert torch.equal(int8_history.decode(codes, scales), expected)


def test_channels_last_blocks_follow_memory_order():
    generator = torch.Generator().manual_seed(1)
    param = torch.randn(8, 16, 8, 8, generator=generator).to(memory_format=torch.channels_last)
    codes, scales = _codes_for(param)
    assert codes.stride() == param.stride()
    memory = param.permute(0, 2, 3, 1).reshape(8, -1)  # each row in memory order
    flat_codes, flat_scales = _codes_for(memory.contiguous())
    assert torch.equal(scales, flat_scales)
    assert torch.equal(codes.permute(0, 2, 3, 1).reshape(8, -1), flat_codes)


@pytest.mark.parametrize("shape, dtype, layout, eligible", [
    ((64, 64), torch.float32, "contiguous", True),
    ((4096,), torch.float32, "contiguous", False),  # one dimension
    ((63, 64), torch.float32, "contiguous", False),  # 4032 < 4096 elements
    ((64, 64), torch.float64, "contiguous", False),  # the update runs in fp64
    ((64, 64), torch.bfloat16, "contiguous", True),
    ((64, 64), torch.float32, "transposed", False),  # dim 0 not outermost
    ((8, 16, 8, 8), torch.float32, "channels_last", True),
])
def test_which_params_take_an_8_bit_history(shape, dtype, layout, eligible):
    param = torch.zeros(shape, dtype=dtype)
    if layout == "transposed":
        param = param.t()
    elif layout == "channels_last":
        param = param.to(memory_format=torch.channels_last)
    param = torch.nn.Parameter(param)
    optimizer = TMSGD([param], lr=0.1, history_dtype=torch.int8, backend="torch")
    param.grad = torch.ones_like(param)
    optimizer.step()
    state = optimizer.state[param]
    assert int8_history.eligible(param) is eligible
    assert (state["delta_even"].dtype == torch.int8) is eligible
    assert ("delta_even_scales" in state) is eligible
    if not eligible:
        assert state["delta_even"].dtype == param.dtype


def test_resume_is_bit_exact_and_the_checkpoint_holds_codes_and_scales():
    model = small_model()
    optimizer = TMSGD(model.parameters(), lr=0.05, momentum=0.5, history_dtype=torch.int8,
                      backend="torch")
    train(model, optimizer, 3)
    saved = copy.deepcopy(optimizer.state_dict())
    weight_state = saved["state"][0]
    assert weight_state["delta_even"].dtype == torch.int8
    assert weight_state["delta_even_scales"].shape == (96, 1)
    assert saved["state"][1]["delta_even"].dtype == torch.float32  # a bias keeps fp32
    twin = copy.deepcopy(model)
    twin_optimizer = TMSGD(twin.parameters(), lr=0.05, momentum=0.5,
                           history_dtype=torch.int8, backend="torch")
    twin_optimizer.load_state_dict(saved)
    train(model, optimizer, 3, seed=1)
    train(twin, twin_optimizer, 3, seed=1)
    for a, b in zip(model.parameters(), twin.parameters()):
        assert torch.equal(a, b)


def test_conversion_both_ways_keeps_the_history_within_half_a_step():
    """Setting a group's history_dtype (after loading an fp32-history checkpoint, say) converts
    each eligible param's history when the plan is next built: encoded within half a
    quantization step per element, and decoded exactly back."""
    model = small_model()
    optimizer = TMSGD(model.parameters(), lr=0.05, backend="torch")
    train(model, optimizer, 3)
    weight = next(model.parameters())
    history = optimizer.state[weight]["delta_odd"].clone()
    optimizer.param_groups[0]["history_dtype"] = torch.int8
    optimizer._rebuild_plans()
    state = optimizer.state[weight]
    assert state["delta_odd"].dtype == torch.int8
    decoded = int8_history.decode(state["delta_odd"], state["delta_odd_scales"])
    step = state["delta_odd_scales"].repeat_interleave(BLOCK, 1)[:, :weight.shape[1]]
    assert ((decoded - history).abs() <= 0.5 * step * (1 + 1e-6)).all()
    saved = copy.deepcopy(optimizer.state_dict())
    back = TMSGD(model.parameters(), lr=0.05, backend="torch")
    back.load_state_dict(saved)
    back.param_groups[0]["history_dtype"] = None
    back._rebuild_plans()
    assert back.state[weight]["delta_odd"].dtype == torch.float32
    assert "delta_odd_scales" not in back.state[weight]
    assert torch.equal(back.state[weight]["delta_odd"], decoded)


@pytest.mark.parametrize("corrupt, key", [
    (lambda s: s.__setitem__("delta_even_scales", torch.zeros(96, 2)), "delta_even_scales"),
    (lambda s: s.__setitem__("delta_odd", s["delta_odd"].float()), "delta_odd"),
    (lambda s: s.pop("delta_odd_scales"), "delta_odd_scales"),
])
def test_a_corrupt_8_bit_checkpoint_is_refused_naming_the_key(corrupt, key):
    model = small_model()
    optimizer = TMSGD(model.parameters(), lr=0.05, history_dtype=torch.int8, backend="torch")
    train(model, optimizer, 2)
    saved = copy.deepcopy(optimizer.state_dict())
    corrupt(saved["state"][0])
    before = copy.deepcopy(optimizer.state_dict())
    with pytest.raises(ValueError, match=key):
        optimizer.load_state_dict(saved)
    after = optimizer.state_dict()
    for index, state in before["state"].items():
        for name, value in state.items():
            assert torch.equal(value, after["state"][index][name])


def test_coefficients_whose_storage_errors_add_up_warn_with_their_factor():
    param = torch.nn.Parameter(torch.zeros(64, 64))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        TMSGD([param], lr=0.1, coefficients=(1.8, -0.8, 0.0), history_dtype=torch.int8)
        TMSGD([param], lr=0.1, history_dtype=torch.int8)
    messages = [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)]
    assert len(messages) == 1 and "4 times" in messages[0]
    assert int8_history.error_factor(0.5, -0.5) == 0.0
    assert int8_history.error_factor(0.8, 0.0) == pytest.approx(4.0)


def test_quadratic_drift_is_small_and_heavy_ball_drifts_far_more():
    """experiments/int8_drift.py's noise-free quadratic (1500 steps): the paper's coefficients
    with an 8-bit history stay within 5e-4 of the fp32-history run, relative; heavy-ball
    coefficients at the same long-run speed drift at least 10 times as far (their stored errors
    add up). With gradient noise the paper's drift is larger (docs/DESIGN.md, README)."""
    from experiments.int8_drift import HEAVY_BALL, PAPER, quadratic_drift

    paper = quadratic_drift(PAPER, torch.int8, seed=0, noise=0.0, lr=0.5)
    heavy_ball = quadratic_drift(HEAVY_BALL, torch.int8, seed=0, noise=0.0, lr=0.05)
    assert paper <= 5e-4
    assert heavy_ball >= 10 * paper


def test_values_in_another_layout_are_encoded_by_their_params_memory_order():
    """d_new may take its gradient's layout (contiguous for a channels_last param): encoding
    must follow the codes' layout, not the values' memory."""
    generator = torch.Generator().manual_seed(2)
    param = torch.randn(8, 16, 8, 8, generator=generator).to(memory_format=torch.channels_last)
    codes, scales = _codes_for(param)
    other_codes, other_scales = int8_history.zeros_for(param)
    int8_history.encode_into(param.contiguous(), other_codes, other_scales)
    assert torch.equal(codes, other_codes) and torch.equal(scales, other_scales)
