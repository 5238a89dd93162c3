"""8-bit history (history_dtype=torch.int8, and with momentum_dtype=torch.int8 8-bit momentum
buffers) under FSDP2 (`fully_shard`: DTensor codes and scales), torch.distributed.checkpoint
(resume, 2 ranks -> 1 process, 1 process -> 2 ranks) and ZeroRedundancyOptimizer, on two local
CPU ranks (gloo).

Peer: the same training in one process with the gradient the two ranks' engines form,
(g0 + g1) / 2 of the two half batches, compared bit for bit: params, counts, codes, scales and
fp32 state. Against the one-process run on the full batch (whose gradients differ by rounding),
codes are compared within one step (tests/distributed_int8_workers.py says why).
Each run is bounded by distributed_harness.DEADLINE_S.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.distributed as dist
from distributed_harness import run_on_ranks
from distributed_int8_workers import (
    CONFIGS,
    batches,
    fsdp2_runs,
    make_model,
    make_optimizer,
    one_thread,
    restore,
    save_one_process_checkpoint,
    single_process,
    train,
    zero_train_and_resume,
)
from distributed_workers import HALF, snapshot
from torch.distributed.tensor import DTensor

from tmsgd_kernels import int8_history
from tmsgd_kernels.implementations import unavailable_reason

pytestmark = [
    pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(),
                       reason="needs torch.distributed with gloo"),
    pytest.mark.skipif(unavailable_reason("cpu", torch.device("cpu")) is not None,
                       reason="the int8_history configuration runs the native CPU kernel"),
]

# The params that take an 8-bit history, with (rows, blocks per row) of their scales.
EIGHT_BIT = {"0.weight": (15, 2), "2.weight": (4100, 1), "4.weight": (1, 17)}
SCALED = {"delta_even": "delta_even_scales", "delta_odd": "delta_odd_scales"}


def assert_same(actual: dict, expected: dict) -> None:
    """Two snapshots (distributed_workers.snapshot) equal bit for bit, key for key."""
    assert actual.keys() == expected.keys()
    for name in expected:
        assert actual[name].keys() == expected[name].keys(), name
        for key, value in expected[name].items():
            assert torch.equal(torch.as_tensor(actual[name][key]), torch.as_tensor(value)), \
                (name, key)


def assert_within_one_code(actual: dict, expected: dict) -> None:
    """Two snapshots of runs whose gradients differ by rounding: counts equal, codes at most one
    apart, everything else within torch.testing's default fp32 tolerance."""
    assert actual.keys() == expected.keys()
    for name in expected:
        assert actual[name].keys() == expected[name].keys(), name
        for key, value in expected[name].items():
            if key == "step":
                assert actual[name][key] == value, name
            elif value.dtype == torch.int8:
                assert (actual[name][key].int() - value.int()).abs().max() <= 1, (name, key)
            else:
                torch.testing.assert_close(actual[name][key], value, msg=f"{name} {key}")


def assert_8bit_state(state: dict, config: str) -> None:
    """The state snapshot really holds int8 codes with their scales where the param is eligible
    (and the momentum buffer too with momentum_dtype=torch.int8), fp32 elsewhere."""
    int8_buffer = CONFIGS[config][1].get("momentum_dtype") is torch.int8
    coded = dict(SCALED, **({"momentum_buffer": "momentum_buffer_scales"} if int8_buffer else {}))
    for name, entries in state.items():
        if name not in EIGHT_BIT:
            assert not any(key.endswith("_scales") for key in entries), name
            assert all(entries[key].dtype == torch.float32 for key in coded), name
            continue
        assert entries["momentum_buffer"].dtype == (torch.int8 if int8_buffer
                                                    else torch.float32), name
        for key, scales_key in coded.items():
            assert entries[key].dtype == torch.int8, (name, key)
            assert entries[key].shape == entries["param"].shape, (name, key)
            assert entries[scales_key].dtype == torch.float32, (name, scales_key)
            assert tuple(entries[scales_key].shape) == EIGHT_BIT[name], (name, scales_key)
            assert entries[key].any(), (name, key)  # written by the steps, not the zero start
        assert entries["delta_even"].abs().max() == int8_history.CODE_MAX, name


@pytest.fixture(scope="module", params=list(CONFIGS))
def fsdp2(request, tmp_path_factory) -> tuple[str, Path, dict, list]:
    """Per configuration: a checkpoint one process saves after half the steps (and the state it
    saved), then one run of distributed_int8_workers.fsdp2_runs, for the tests below."""
    folder = tmp_path_factory.mktemp(request.param)
    one_process = save_one_process_checkpoint(request.param, folder)
    return request.param, folder, one_process, run_on_ranks(fsdp2_runs, folder, request.param)


def test_fsdp2_trains_like_one_process_with_8bit_state(fsdp2) -> None:
    """Momentum turned on half way (8-bit buffers started for params that have taken steps):
    both ranks' whole tensors equal the one-process peer's; and with momentum throughout."""
    config, _, _, ranks = fsdp2
    reference = snapshot(*single_process(config, batches(), late_momentum=True))
    assert_8bit_state(reference, config)
    assert_same(ranks[0]["late"]["full"], reference)
    assert_same(ranks[1]["late"]["full"], reference)
    full_batch = snapshot(*single_process(config, batches(), late_momentum=True,
                                          accumulated_halves=False))
    assert_within_one_code(ranks[0]["late"]["full"], full_batch)
    uninterrupted = snapshot(*single_process(config, batches()))
    assert_same(ranks[0]["uninterrupted_full"], uninterrupted)


def test_fsdp2_8bit_state_is_sharded_in_whole_rows(fsdp2) -> None:
    """Codes are DTensors placed like their params; scales are DTensors with the same placement
    and, on each rank, one row per row of the param's shard, which holds exactly the whole
    tensor's scales for those rows: each rank encodes its own rows, and blocks never cross
    them."""
    config, _, _, ranks = fsdp2
    whole = snapshot(*single_process(config, batches()))
    first_rows = {name: ranks[0]["late"]["layout"][name]["param"][0][0] for name in EIGHT_BIT}
    for rank, outcome in enumerate(ranks):
        for name, entries in outcome["late"]["layout"].items():
            local_shape, shape = entries["param"]
            assert entries["step"] == (torch.int64, "Tensor"), name
            for key, entry in entries.items():
                if key in ("param", "step"):
                    continue
                dtype, placed_like_param, local, full = entry
                assert placed_like_param, (rank, name, key)
                if key.endswith("_scales"):
                    assert dtype == torch.float32 and full == EIGHT_BIT[name], (name, key)
                    assert local == (local_shape[0], full[1]), (rank, name, key)
                else:
                    assert local == local_shape and full == shape, (rank, name, key)
        for name in EIGHT_BIT:
            start = 0 if rank == 0 else first_rows[name]
            shard = outcome["uninterrupted"][name]
            for key in ("param", *SCALED, *SCALED.values()):
                rows = whole[name][key][start:start + shard[key].shape[0]]
                assert torch.equal(shard[key], rows), (rank, name, key)
    # 15 rows split 8 / 7; the one-row param leaves rank 1 an empty shard (and no scales).
    assert first_rows == {"0.weight": 8, "2.weight": 2050, "4.weight": 1}
    assert ranks[1]["late"]["layout"]["4.weight"]["delta_odd_scales"][2] == (0, 17)


def test_fsdp2_distributed_checkpoint_resume_is_bit_exact(fsdp2) -> None:
    config, _, _, ranks = fsdp2
    for rank in ranks:
        assert_8bit_state(rank["saved"], config)
        assert_same(rank["resumed"], rank["uninterrupted"])


def test_fsdp2_gathered_state_dict_holds_the_whole_8bit_state(fsdp2) -> None:
    """get_optimizer_state_dict(full_state_dict=True) gathers codes and scales into whole plain
    tensors, and set_optimizer_state_dict shards them back, both bit for bit."""
    _, _, _, ranks = fsdp2
    saved = ranks[0]["saved"]
    for rank in ranks:
        assert "full_state_error" not in rank, rank["full_state_error"]
        state = rank["full_state"]["state"]
        assert not any(isinstance(v, DTensor) for s in state.values() for v in s.values())
        assert_same({n: {"param": saved[n]["param"], **s} for n, s in state.items()}, saved)
        assert_same(rank["full_state_loaded"], saved)


def test_checkpoint_from_two_ranks_continues_in_one_process(fsdp2) -> None:
    config, folder, _, ranks = fsdp2
    model = make_model(seed=123)
    optimizer = make_optimizer(model.parameters(), config)
    restore(model, optimizer, folder / "checkpoint")
    assert_same(snapshot(model, optimizer), ranks[0]["saved"])
    with one_thread():
        train(model, optimizer, batches()[HALF:], accumulated_halves=True)
    assert_same(snapshot(model, optimizer), ranks[0]["uninterrupted_full"])


def test_checkpoint_from_one_process_continues_on_two_ranks(fsdp2) -> None:
    config, _, saved, ranks = fsdp2
    assert_8bit_state(saved, config)
    final = snapshot(*single_process(config, batches()))
    for rank in ranks:
        assert_same(rank["loaded"]["full"], saved)
        assert all(entry[1] for entries in rank["loaded"]["layout"].values()
                   for key, entry in entries.items() if key not in ("param", "step"))
        assert_same(rank["continued"], final)
        # A plain optimizer.state_dict() loaded on every rank: each keeps its own rows.
        assert_same({n: {**s, "param": saved[n]["param"]}
                     for n, s in rank["plain_loaded"]["full"].items()}, saved)
        assert all(entry[1] for entries in rank["plain_loaded"]["layout"].values()
                   for key, entry in entries.items() if key not in ("param", "step"))
        assert "is a DTensor" in rank["refusal"] and "plain tensor" in rank["refusal"]


def test_zero_redundancy_optimizer_trains_like_one_process_and_resumes_exactly(tmp_path) -> None:
    config = "int8_history_and_momentum"
    ranks = run_on_ranks(zero_train_and_resume, tmp_path, config)
    reference = snapshot(*single_process(config, batches()))
    assert_8bit_state(reference, config)
    stepped = {}
    for rank in ranks:
        assert_same(rank["resumed"]["state"], rank["uninterrupted"]["state"])
        for name, value in rank["uninterrupted"]["params"].items():
            assert torch.equal(rank["resumed"]["params"][name], value), name
            assert torch.equal(value, reference[name]["param"]), name
        # Each param's state lives on the one rank that steps it.
        stepped.update({n: s for n, s in rank["uninterrupted"]["state"].items() if len(s) > 1})
    assert stepped.keys() == reference.keys()
    assert_same(stepped, reference)
    # The consolidated checkpoint holds every param's 8-bit state (codes and scales).
    checkpoint = ranks[0]["consolidated"]
    assert len(checkpoint) == len(reference)
    assert sum(s["delta_even"].dtype == torch.int8 and "delta_even_scales" in s
               and s["momentum_buffer"].dtype == torch.int8 for s in checkpoint.values()) \
        == len(EIGHT_BIT)
