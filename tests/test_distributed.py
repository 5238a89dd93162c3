"""TMSGD inside PyTorch's distributed engines, on two local CPU ranks (gloo): DDP, FSDP2
(`fully_shard`, DTensor params with uneven and empty shards), torch.distributed.checkpoint
(resume, and checkpoints moved between 2 ranks and 1 process) and ZeroRedundancyOptimizer.

Peers: the same training in one process, and an uninterrupted run for every resume. Where the
engines reduce gradients in another order than one process does, results are compared with
torch.testing's default fp32 tolerance; everything that must not depend on reduction order
(ranks against each other, a resume against the run it interrupted, a checkpoint against what
was saved) is compared bit for bit. Each run is bounded by distributed_harness.DEADLINE_S.
"""

from __future__ import annotations

import pytest
import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from distributed_harness import run_on_ranks
from distributed_workers import (
    HALF,
    OPTIONS,
    batches,
    ddp_no_sync_accumulation,
    fsdp2_load_and_continue,
    fsdp2_resume,
    fsdp2_save_and_continue,
    fsdp2_state_creation,
    fsdp2_train,
    make_model,
    single_process_run,
    snapshot,
    train,
    zero_train_and_resume,
)
from torch.distributed.checkpoint.state_dict import (
    get_model_state_dict,
    get_optimizer_state_dict,
    set_model_state_dict,
    set_optimizer_state_dict,
)

from tmsgd_kernels import TMSGD
from tmsgd_kernels.implementations import unavailable_reason

pytestmark = pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(),
                                reason="needs torch.distributed with gloo")

# The backends whose kernels step CPU tensors (triton through its interpreter, as conftest sets).
CPU_BACKENDS = [b for b in ("torch", "cpu", "triton")
                if unavailable_reason(b, torch.device("cpu")) is None]


def assert_snapshots_close(actual: dict, expected: dict, exact: bool = False) -> None:
    assert actual.keys() == expected.keys()
    for name in expected:
        assert actual[name].keys() == expected[name].keys(), name
        for key, value in expected[name].items():
            if key == "step" or exact:
                assert torch.equal(torch.as_tensor(actual[name][key]), torch.as_tensor(value)), \
                    (name, key)
            else:
                torch.testing.assert_close(actual[name][key], value, msg=f"{name} {key}")


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_fsdp2_trains_like_one_process_with_sharded_state(backend, tmp_path) -> None:
    ranks = run_on_ranks(fsdp2_train, tmp_path, backend)
    layout = ranks[0]["layout"] + ranks[1]["layout"]
    # History and momentum are DTensors placed like their params; counts are plain tensors.
    assert all(row[2] is True for row in layout if row[1] != "step")
    assert all(row[2] == "Tensor" for row in layout if row[1] == "step")
    local_shapes = {row[3] for row in ranks[1]["layout"]}
    assert (0,) in local_shapes and (0, 3) in local_shapes  # rank 1 holds empty shards
    reference = single_process_run(backend, batches(), late_momentum=True)
    assert_snapshots_close(ranks[0]["full"], reference)
    assert_snapshots_close(ranks[1]["full"], ranks[0]["full"], exact=True)


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_fsdp2_distributed_checkpoint_resume_is_bit_exact(backend, tmp_path) -> None:
    for rank in run_on_ranks(fsdp2_resume, tmp_path, backend):
        assert_snapshots_close(rank["resumed"], rank["uninterrupted"], exact=True)


def test_state_creation_by_distributed_checkpoint_changes_nothing_under_fsdp2(tmp_path) -> None:
    for rank in run_on_ranks(fsdp2_state_creation, tmp_path, "cpu"):
        assert_snapshots_close({n: {"param": s["param"]} for n, s in rank["created"].items()},
                               rank["before"], exact=True)
        assert all(s["step"] == 0 for s in rank["created"].values())
        assert_snapshots_close(rank["with_creation"], rank["without"], exact=True)


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_state_creation_by_distributed_checkpoint_changes_nothing(backend) -> None:
    """get_optimizer_state_dict on a fresh optimizer steps with zero grads and lr 0: the state
    appears (counts 0, zero history) and training afterwards is the same, bit for bit."""
    data = batches()
    model = make_model()
    optimizer = TMSGD(model.parameters(), backend=backend, **OPTIONS)
    weights = [p.detach().clone() for p in model.parameters()]
    saved = get_optimizer_state_dict(model, optimizer)
    assert len(saved["state"]) == len(weights)
    for state in saved["state"].values():
        assert int(state["step"]) == 0
        assert not any(state[key].any() for key in ("delta_even", "delta_odd", "momentum_buffer"))
    assert all(torch.equal(p, w) for p, w in zip(model.parameters(), weights))
    train(model, optimizer, data)
    assert_snapshots_close(snapshot(model, optimizer), single_process_run(backend, data),
                           exact=True)


def test_a_real_first_step_at_lr_0_still_counts() -> None:
    """Only the checkpoint helper's step is state creation: with nonzero gradients a first step
    at lr 0 (a warm-up schedule starting at 0) counts and starts momentum, as in
    torch.optim.SGD."""
    model, peer = make_model(), make_model()
    optimizer = TMSGD(model.parameters(), **{**OPTIONS, "lr": 0.0})
    sgd = torch.optim.SGD(peer.parameters(), lr=0.0, momentum=0.9, dampening=0.1,
                          weight_decay=0.01)
    x, y = batches(1)[0]
    for net, opt in ((model, optimizer), (peer, sgd)):
        torch.nn.functional.mse_loss(net(x), y).backward()
        opt.step()
    for param, sgd_param in zip(model.parameters(), peer.parameters()):
        assert int(optimizer.state[param]["step"]) == 1
        torch.testing.assert_close(optimizer.state[param]["momentum_buffer"],
                                   sgd.state[sgd_param]["momentum_buffer"])


def _plain_restore(path, backend: str) -> tuple[torch.nn.Module, TMSGD]:
    model = make_model(seed=123)
    optimizer = TMSGD(model.parameters(), backend=backend, **OPTIONS)
    state = {"model": get_model_state_dict(model),
             "optim": get_optimizer_state_dict(model, optimizer)}
    dcp.load(state, checkpoint_id=str(path))
    set_model_state_dict(model, state["model"])
    set_optimizer_state_dict(model, optimizer, state["optim"])
    return model, optimizer


def test_checkpoint_from_two_ranks_loads_in_one_process(tmp_path) -> None:
    ranks = run_on_ranks(fsdp2_save_and_continue, tmp_path, "cpu")
    rank0 = ranks[0]
    for rank in ranks:  # the gathered (full_state_dict=True) path, both ways
        assert rank["full_state"]["state"].keys() == rank0["saved"].keys()
        assert_snapshots_close({n: {"param": rank0["saved"][n]["param"], **s}
                                for n, s in rank["full_state"]["state"].items()},
                               rank0["saved"], exact=True)
        assert_snapshots_close(rank["full_state_loaded"], rank0["saved"], exact=True)
    model, optimizer = _plain_restore(tmp_path / "checkpoint", "cpu")
    assert_snapshots_close(snapshot(model, optimizer), rank0["saved"], exact=True)
    train(model, optimizer, batches()[HALF:])
    assert_snapshots_close(snapshot(model, optimizer), rank0["final"])


def test_checkpoint_from_one_process_loads_on_two_ranks(tmp_path) -> None:
    data = batches()
    model = make_model()
    optimizer = TMSGD(model.parameters(), backend="cpu", **OPTIONS)
    train(model, optimizer, data[:HALF])
    dcp.save({"model": get_model_state_dict(model),
              "optim": get_optimizer_state_dict(model, optimizer)},
             checkpoint_id=str(tmp_path / "checkpoint"))
    torch.save(optimizer.state_dict(), tmp_path / "plain_optimizer.pt")
    saved = snapshot(model, optimizer)
    train(model, optimizer, data[HALF:])
    for rank in run_on_ranks(fsdp2_load_and_continue, tmp_path, "cpu"):
        assert_snapshots_close(rank["loaded"], saved, exact=True)
        assert_snapshots_close({n: {**s, "param": saved[n]["param"]}
                                for n, s in rank["plain_loaded"].items()}, saved, exact=True)
        assert "is a DTensor" in rank["refusal"] and "plain tensor" in rank["refusal"]
        assert_snapshots_close(rank["final"], snapshot(model, optimizer))


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_ddp_with_bucket_views_and_no_sync_trains_like_one_process(backend, tmp_path) -> None:
    ranks = run_on_ranks(ddp_no_sync_accumulation, tmp_path, backend)
    assert_snapshots_close(ranks[1], ranks[0], exact=True)
    assert_snapshots_close(ranks[0], single_process_run(backend, batches()))


def test_zero_redundancy_optimizer_trains_like_one_process_and_resumes_exactly(tmp_path) -> None:
    ranks = run_on_ranks(zero_train_and_resume, tmp_path, "cpu")
    reference = single_process_run("cpu", batches())
    stepped = {}
    for rank in ranks:
        assert_snapshots_close(rank["resumed"]["state"], rank["uninterrupted"]["state"],
                               exact=True)
        for name, value in rank["uninterrupted"]["params"].items():
            assert torch.equal(rank["resumed"]["params"][name], value), name
            torch.testing.assert_close(value, reference[name]["param"])
        # Each param's state lives on the one rank that steps it.
        stepped.update({n: s for n, s in rank["uninterrupted"]["state"].items() if len(s) > 1})
    assert stepped.keys() == reference.keys()
    assert_snapshots_close(stepped, reference)
