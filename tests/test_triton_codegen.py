"""The compiled (GPU) path, checked without a GPU: the kernels compile ahead of time for sm_90
with the ptxas that ships in the Triton wheel, and the PTX of full blocks uses 16-byte vector
loads and stores (what a bandwidth-bound step needs). This runs nothing on a device; it is the
part of the GPU path that a machine without one can check.

The test re-runs this file as a script with TRITON_INTERPRET unset, because kernels defined
under the interpreter cannot be compiled.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest


def _compile_all() -> dict:
    import triton
    import triton.language as tl
    from tmsgd_kernels.triton_kernels.count_kernel import advance_counts_kernel
    from tmsgd_kernels.triton_kernels.flat_kernel import tmsgd_flat_kernel
    from tmsgd_kernels.triton_kernels.table_kernel import tmsgd_table_kernel
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    types = {"fp32": tl.float32, "fp16": tl.float16, "bf16": tl.bfloat16, "fp64": tl.float64}
    target = GPUTarget("cuda", 90, 32)

    def build(kernel, signature, constants, warps):
        signature = dict(signature, **{name: "constexpr" for name in constants})
        # Tensor arguments 16-byte aligned, as Triton's launcher specializes them at run time.
        attrs = {(kernel.arg_names.index(name),): [["tt.divisibility", 16]]
                 for name, kind in signature.items() if kind.startswith("*")}
        compiled = triton.compile(ASTSource(kernel, signature, constants, attrs), target=target,
                                  options={"num_warps": warps})
        ptx = compiled.asm["ptx"]
        return {"ld_v4": ptx.count("ld.global.v4"), "st_v4": ptx.count("st.global.v4"),
                "cubin_bytes": len(compiled.asm["cubin"])}

    results = {}
    for param, history in [("fp32", "fp32"), ("bf16", "bf16"), ("fp16", "fp32"),
                           ("fp64", "bf16")]:
        compute = tl.float64 if param == "fp64" else tl.float32
        scalars = {"count": "i64", "lr": "fp64", "lr_ptr": "*fp32", "grad_scale_ptr": "*fp32",
                   "found_inf_ptr": "*fp32", "b1": "fp64", "b2": "fp64", "momentum": "fp64",
                   "gain": "fp64", "weight_decay": "fp64", "switch_step": "i64"}
        flags = dict(HAS_MOMENTUM=True, NESTEROV=False, MAXIMIZE=False, HAS_WEIGHT_DECAY=True,
                     LR_ON_DEVICE=True, HAS_GRAD_SCALE=True, COMPUTE=compute)
        flat = dict(scalars, param_ptr=f"*{param}", grad_ptr=f"*{param}", d1_ptr=f"*{history}",
                    d2_ptr=f"*{history}", momentum_ptr=f"*{param}", numel="i64")
        results[f"flat {param}/{history}"] = build(
            tmsgd_flat_kernel, flat, dict(flags, HAS_FOUND_INF=False, BLOCK=4096), 8)
        table = dict(scalars, table_ptr="*i64", tensors="i32")
        for on_device in (False, True):
            for aligned in (True, False):
                results[f"table {param}/{history} device={on_device} aligned={aligned}"] = build(
                    tmsgd_table_kernel, table,
                    dict(flags, HAS_FOUND_INF=on_device, BLOCK=1024, PARAM_DTYPE=types[param],
                         HISTORY_DTYPE=types[history], COUNTS_ON_DEVICE=on_device,
                         ALIGNED=aligned), 4)
    results["advance_counts"] = build(
        advance_counts_kernel, {"table_ptr": "*i64", "tensors": "i32", "found_inf_ptr": "*fp32"},
        {"HAS_FOUND_INF": True, "BLOCK": 1024}, 4)
    return results


def _ahead_of_time_available() -> str | None:
    try:
        import triton
    except ImportError:
        return "Triton is not installed"
    ptxas = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "ptxas")
    if not os.path.exists(ptxas):
        return "this Triton wheel ships no NVIDIA backend/ptxas"
    return None


@pytest.mark.skipif(_ahead_of_time_available() is not None,
                    reason=f"cannot compile ahead of time: {_ahead_of_time_available()}")
def test_kernels_compile_for_sm90_with_vector_memory_access(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["TRITON_CACHE_DIR"] = str(tmp_path)  # a real compile, not a cache hit
    result = subprocess.run([sys.executable, __file__], env=env, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    results = json.loads(result.stdout.strip().splitlines()[-1])
    assert all(r["cubin_bytes"] > 0 for r in results.values())
    # Full blocks: every element stream moves 16 bytes per instruction. Flat fp32 with momentum:
    # 4096 elements over 256 threads = 4 vectors per thread for each of 5 loads (grad, param,
    # momentum, d1, d2) and 3 stores (momentum, d_new, param).
    assert results["flat fp32/fp32"]["ld_v4"] == 5 * 4
    assert results["flat fp32/fp32"]["st_v4"] == 3 * 4
    # Table, 1024 elements over 128 threads = 2 vectors per thread per stream, with the counts
    # on the host or read per program, but only with the alignment hint: addresses read from
    # the table carry no alignment facts.
    for on_device in (False, True):
        aligned = results[f"table fp32/fp32 device={on_device} aligned=True"]
        assert (aligned["ld_v4"], aligned["st_v4"]) == (5 * 2, 3 * 2), on_device
        assert results[f"table fp32/fp32 device={on_device} aligned=False"]["ld_v4"] == 0


if __name__ == "__main__":
    print(json.dumps(_compile_all()))
