"""The CUDA build check (.ci/cuda_build_check.sh): the extension built against a CUDA torch
registers the CUDA implementation of the op. Skipped unless TMSGD_EXPECT_CUDA_BUILD=1."""

from __future__ import annotations

import os
import re
import subprocess

import pytest
import torch

pytestmark = pytest.mark.skipif(
    os.environ.get("TMSGD_EXPECT_CUDA_BUILD") != "1",
    reason="only in .ci/cuda_build_check.sh, which builds the extension with CUDA",
)


def test_extension_registers_cpu_and_cuda_implementations() -> None:
    from tmsgd_kernels import native_extension

    assert torch.version.cuda is not None, "this check needs a CUDA build of torch"
    assert native_extension.load_error is None, native_extension.load_error
    assert native_extension.has_kernel("CUDA")
    assert native_extension.has_kernel("CPU")
    assert torch._C._dispatch_has_kernel_for_dispatch_key(native_extension.OP_NAME, "CUDA")


def test_cuda_backend_reports_only_a_missing_device() -> None:
    from tmsgd_kernels.implementations import unavailable_reason

    reason = unavailable_reason("cuda", torch.device("cuda"))
    if torch.cuda.is_available():
        assert reason is None
    else:
        assert reason == "no CUDA device is available"


def test_library_embeds_device_code() -> None:
    """The kernels were compiled for the device, not only declared: the library carries a fatbin
    (readelf lists its .nv_fatbin section) and the kernels' host stubs."""
    import shutil
    import subprocess

    from tmsgd_kernels import native_extension

    readelf = shutil.which("readelf")
    if readelf is None:
        pytest.skip("readelf is not installed")
    library = native_extension._C.__file__
    sections = subprocess.run([readelf, "-S", "-W", library], capture_output=True, text=True,
                              check=True).stdout
    assert ".nv_fatbin" in sections
    symbols = subprocess.run(["nm", "-C", library], capture_output=True, text=True,
                             check=True).stdout
    assert "tmsgd_step_kernel" in symbols and "increment_counts_kernel" in symbols


# ------------------------------------------------------------------ the compiled device code
# Read from the library with cuobjdump (shipped in the Triton wheel that a CUDA torch pulls in;
# the CUDA toolkit of this machine has none). sm_90: the GPU machines' H100 / H200.

CPP_TYPES = {"float": "fp32", "double": "fp64", "c10::Half": "fp16", "c10::BFloat16": "bf16"}
STEP_KERNEL = re.compile(r"tmsgd_step_kernel<([\w:]+), ([\w:]+), (true|false)>")


def _cuobjdump(*args: str) -> str:
    import triton

    tool = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "cuobjdump")
    if not os.path.exists(tool):
        pytest.skip("no cuobjdump in this Triton wheel")
    from tmsgd_kernels import native_extension

    dump = subprocess.run([tool, *args, native_extension._C.__file__], capture_output=True,
                          text=True, check=True).stdout
    names = sorted(set(re.findall(r"_Z\w+", dump)))
    plain = subprocess.run(["c++filt"], input="\n".join(names), capture_output=True, text=True,
                           check=True).stdout.splitlines()
    for name, readable in sorted(zip(names, plain), key=lambda pair: -len(pair[0])):
        dump = dump.replace(name, readable)
    return dump


def _per_step_kernel(text: str, marker: str) -> dict[tuple[str, str, bool], str]:
    """The part of a cuobjdump listing that follows each step kernel's `marker` line, by
    (param, history, momentum)."""
    parts = {}
    for chunk in text.split(marker)[1:]:
        found = STEP_KERNEL.search(chunk.splitlines()[0])
        if found:
            key = (CPP_TYPES[found[1]], CPP_TYPES[found[2]], found[3] == "true")
            parts[key] = chunk
    return parts


def _sm90(text: str) -> str:
    """The sm_90 section of a listing (the library holds sm_80 code too)."""
    return text.split("arch = sm_90", 1)[1].split("arch = sm_", 1)[0]


def test_step_kernels_registers_and_no_local_memory() -> None:
    """Every instantiation keeps at least 3 blocks of 256 threads per SM (80 registers); fp32
    keeps 6 without momentum and 4 with it (the kernel's comment has the numbers). Resident
    blocks = 65536 / (256 * registers rounded up to 8), at most 8."""
    usage = _per_step_kernel(_sm90(_cuobjdump("--dump-resource-usage")), "Function ")
    assert len(usage) == 4 * 4 * 2
    resident = {}
    for key, chunk in usage.items():
        registers = int(re.search(r"REG:(\d+)", chunk)[1])
        assert int(re.search(r"LOCAL:(\d+)", chunk)[1]) == 0, key
        # 8 bytes of stack at most: a register saved around the division's slow-path call
        # (seen for fp64 params with bf16 history), never a spilled array.
        assert int(re.search(r"STACK:(\d+)", chunk)[1]) <= 8, key
        resident[key] = min(8, 65536 // (256 * (-(-registers // 8) * 8)))
    assert min(resident.values()) >= 3, resident
    assert resident[("fp32", "fp32", False)] == 6
    assert resident[("fp32", "fp32", True)] == 4
    assert resident[("bf16", "bf16", True)] >= 4


def test_step_kernels_vector_path_and_no_contraction() -> None:
    """Each instantiation has its 16-byte path: one 16-byte load per stream and vector of params
    (a tensor's chunks take it whenever their own pointers are aligned, whatever other tensors
    do); and its PTX fuses no multiply-add (--fmad=false; the FFMA in the SASS are the division's
    own correctly rounded expansion)."""
    sass = _per_step_kernel(_sm90(_cuobjdump("-sass")), "Function : ")
    assert len(sass) == 4 * 4 * 2
    size = {"fp32": 4, "fp64": 8, "fp16": 2, "bf16": 2}
    for (param, history, momentum), chunk in sass.items():
        vector = 16 // size[param]  # elements per iteration: 16 bytes of params
        # The history's part of a vector is 16 bytes or more only when it is as wide or wider.
        history_loads = vector * size[history] // 16
        streams = 2 + (1 if momentum else 0)  # param, grad (+ buffer), 16 bytes each
        expected_loads = streams + 2 * history_loads
        expected_stores = streams - 1 + history_loads
        assert chunk.count("LDG.E.128") == expected_loads, (param, history, momentum)
        assert chunk.count("STG.E.128") == expected_stores, (param, history, momentum)
    ptx = _cuobjdump("-ptx")
    assert "tmsgd_step_kernel" in ptx, "the library carries no sm_90 PTX (9.0+PTX)"
    # No fma at all; products and sums carry .rn, which forbids ptxas to contract them either
    # (3032 mul.rn.f32 in the CUDA 13.0 build), and the fatbin records ptxas's --fmad false.
    assert ".entry" in ptx and "fma.rn" not in ptx
    assert "mul.rn.f32" in ptx and "ptxasOptions =  --fmad false" in ptx


# tmsgd_int8_kernel<P, momentum> (no buffer or a float one), tmsgd_int8_momentum_kernel<P> (an
# 8-bit buffer).
INT8_KERNEL = re.compile(r"tmsgd_int8(_momentum)?_kernel<([\w:]+)(?:, (true|false))?>")
BUFFERS = ("none", "float", "int8")


def _per_int8_kernel(text: str, marker: str) -> dict[tuple[str, str], str]:
    """The part of a listing that follows each 8-bit history kernel's `marker` line, by (param,
    buffer: none, float or int8)."""
    parts = {}
    for chunk in text.split(marker)[1:]:
        found = INT8_KERNEL.search(chunk.splitlines()[0])
        if found:
            buffer = "int8" if found[1] else ("float" if found[3] == "true" else "none")
            parts[(CPP_TYPES[found[2]], buffer)] = chunk
    return parts


def test_int8_kernels_registers_shuffles_and_no_local_memory() -> None:
    """The 8-bit history kernels (fp32, fp16, bf16 params; no buffer, a float one, an 8-bit one):
    no local memory or stack (each lane's 8 values of d_new stay in registers), at least 3
    blocks of 256 threads per SM (sm_90, CUDA 13.0: 74 / 78 registers), and each block's absmax
    by warp shuffles (5 butterfly steps of 32 lanes; twice with an 8-bit buffer)."""
    usage = _per_int8_kernel(_sm90(_cuobjdump("--dump-resource-usage")), "Function ")
    assert sorted(usage) == sorted((p, b) for p in ("fp32", "fp16", "bf16") for b in BUFFERS)
    for key, chunk in usage.items():
        registers = int(re.search(r"REG:(\d+)", chunk)[1])
        assert int(re.search(r"LOCAL:(\d+)", chunk)[1]) == 0, key
        assert int(re.search(r"STACK:(\d+)", chunk)[1]) == 0, key
        assert min(8, 65536 // (256 * (-(-registers // 8) * 8))) >= 3, (key, registers)
    sass = _per_int8_kernel(_sm90(_cuobjdump("-sass")), "Function : ")
    assert len(sass) == 9
    for key, chunk in sass.items():
        assert chunk.count("SHFL.BFLY") >= (10 if key[1] == "int8" else 5), key
