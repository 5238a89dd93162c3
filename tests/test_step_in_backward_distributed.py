"""step_in_backward under FSDP2 and DDP on two local CPU ranks (gloo). FSDP2: the hooks on the
sharded params step each rank's shards bit for bit as FSDP2 with optimizer.step() does (also
after a distributed checkpoint saved and restored with the hooks on), and the
run ends where one process with normal steps ends (compared with torch.testing's fp32
tolerance, since the reduce-scatter sums in another order; see tests/test_distributed.py). DDP:
the step in the comm hook is DDP with optimizer.step() bit for bit; two folded micro-batches
per step are DDP's own accumulation up to fp32 rounding."""

from __future__ import annotations

import pytest
import torch
import torch.distributed as dist
from distributed_harness import run_on_ranks
from distributed_workers import batches, single_process_run
from step_in_backward_workers import in_backward
from test_distributed import assert_snapshots_close

from tmsgd_kernels.implementations import unavailable_reason

pytestmark = pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(),
                                reason="needs torch.distributed with gloo")


# One backend (about 25 s a run): the hooks are the same for every backend, and the native
# kernel is the one FSDP2 users get on a CPU.
BACKEND = "cpu" if unavailable_reason("cpu", torch.device("cpu")) is None else "torch"


@pytest.fixture(scope="module")
def results(tmp_path_factory) -> list[dict]:
    return run_on_ranks(in_backward, tmp_path_factory.mktemp("in_backward"), BACKEND)


def test_fsdp2_step_in_backward_is_fsdp2_with_normal_steps(results) -> None:
    for result in (r["fsdp2"] for r in results):
        assert result["counts_after_creation"] == [0]
        assert not any(result["grads_left"])
        assert_snapshots_close(result["in_backward"], result["normal"], exact=True)
        assert_snapshots_close(result["resumed"], result["normal"], exact=True)
    assert_snapshots_close(results[0]["fsdp2"]["full"], single_process_run(BACKEND, batches()))


def test_ddp_step_in_the_comm_hook_is_ddp_with_normal_steps(results) -> None:
    for result in (r["ddp"] for r in results):
        assert result["grads_zeroed"]
        assert_snapshots_close(result["in_backward"], result["normal"], exact=True)
        assert_snapshots_close(result["folded"], result["accumulated"])
    assert_snapshots_close(results[0]["ddp"]["in_backward"], results[1]["ddp"]["in_backward"],
                           exact=True)
