"""step_in_backward under FSDP2 on two local CPU ranks (gloo): the hooks on the sharded params
step each rank's shards bit for bit as FSDP2 with optimizer.step() does, and the run ends where
one process with normal steps ends (compared with torch.testing's fp32 tolerance, since the
reduce-scatter sums in another order; see tests/test_distributed.py)."""

from __future__ import annotations

import pytest
import torch
import torch.distributed as dist
from distributed_harness import run_on_ranks
from distributed_workers import batches, single_process_run
from step_in_backward_workers import fsdp2_in_backward
from test_distributed import assert_snapshots_close

from tmsgd_kernels.implementations import unavailable_reason

pytestmark = pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(),
                                reason="needs torch.distributed with gloo")


# One backend (about 25 s a run): the hooks are the same for every backend, and the native
# kernel is the one FSDP2 users get on a CPU.
BACKEND = "cpu" if unavailable_reason("cpu", torch.device("cpu")) is None else "torch"


def test_fsdp2_step_in_backward_is_fsdp2_with_normal_steps(tmp_path) -> None:
    backend = BACKEND
    results = run_on_ranks(fsdp2_in_backward, tmp_path, backend)
    for result in results:
        assert result["counts_after_creation"] == [0]
        assert not any(result["grads_left"])
        assert_snapshots_close(result["in_backward"], result["normal"], exact=True)
    assert_snapshots_close(results[0]["full"], single_process_run(backend, batches()))
