"""Shared fixtures: the device under test and every backend that can run on it."""

from __future__ import annotations

import os

import pytest
import torch

# Triton kernels run on CPU tensors only under its interpreter, which must be chosen before any
# kernel is defined; on a GPU machine they run compiled.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")
os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", os.path.join(os.getcwd(), ".inductor-cache"))

from tmsgd_kernels.implementations import unavailable_reason  # noqa: E402

DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")
BACKENDS = [n for n in ("torch", "cpu", "cuda", "triton") if unavailable_reason(n, DEVICE) is None]


@pytest.fixture(params=BACKENDS)
def backend(request) -> str:
    return request.param


@pytest.fixture
def device() -> torch.device:
    return DEVICE
