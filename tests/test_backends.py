"""Which implementations can run, and which backend="auto" chooses
(tmsgd_kernels/implementations.py)."""

from __future__ import annotations

import pytest
import torch

import tmsgd_kernels
from tmsgd_kernels import implementations


def test_available_backends_reports_every_backend_with_a_reason():
    report = tmsgd_kernels.available_backends("cpu")
    assert set(report) == {"cuda", "triton", "cpu", "torch"}
    assert report["torch"] is None
    assert isinstance(report["cuda"], str) and report["cuda"]  # no CUDA tensors on a CPU device


def test_auto_prefers_a_native_backend_and_never_interpreted_triton():
    cpu = torch.device("cpu")
    chosen = implementations.choose("auto", cpu)
    expected = "cpu" if implementations.unavailable_reason("cpu", cpu) is None else "torch"
    assert chosen == expected


def test_unknown_backend_name():
    with pytest.raises(ValueError, match="unknown backend"):
        implementations.choose("opencl", torch.device("cpu"))
