"""The compiled (GPU) path, checked without a GPU: the kernels compile ahead of time for sm_90
with the ptxas that ships in the Triton wheel, at the block sizes and warps the launch rule picks
and with the launches' compile options, and the result is read back:

- registers and local memory (cuobjdump of the cubin: Triton fills `n_regs` only when it loads a
  kernel onto a GPU): the rule must leave several CTAs per SM and spill nothing;
- 16-byte vector loads and stores in the PTX of full blocks, for a list that starts with a
  one-element param too (each tensor's alignment is its own);
- no fused multiply-add, and a correctly rounded division by grad_scale (the C++ and CUDA
  kernels contract nothing either, and divide with IEEE rounding);
- with an 8-bit history (int8 codes, quantized_update.py): the same for the param, grad and
  buffer streams and 8-byte vectors for the codes (an 8-bit buffer's too) where the rows are
  whole blocks (the flat range and the table's aligned launch), no vectors where they are
  addressed row by row; the encoder's divisions correctly rounded, and its round-half-even
  addition and subtraction of 1.5 * 2**23 both kept for every element (no compiler folded them
  away).

The test re-runs this file as a script with TRITON_INTERPRET unset, because kernels defined
under the interpreter cannot be compiled.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile

import pytest

SCALARS = {"count": "i64", "lr": "fp64", "lr_tensor_ptr": "*fp32", "grad_scale": "fp64",
           "grad_scale_ptr": "*fp32", "found_inf_ptr": "*fp32", "b1": "fp64", "b2": "fp64",
           "momentum": "fp64", "gain": "fp64", "weight_decay": "fp64", "switch_step": "i64"}
# (param, history, momentum): the common cases and the widest and narrowest element types.
CASES = [("fp32", "fp32", False), ("fp32", "fp32", True), ("bf16", "fp32", True),
         ("bf16", "bf16", True), ("fp64", "fp64", True)]
# (param, momentum) with an 8-bit history; momentum "int8": an 8-bit buffer too.
INT8_CASES = [("fp32", False), ("fp32", True), ("bf16", True), ("fp32", "int8"), ("bf16", "int8")]
BYTES = {"fp32": 4, "bf16": 2, "fp16": 2, "fp64": 8}
VECTOR = re.compile(r"\b(ld|st)\.global(?:\.[\w:]+)*\.(?:v4\.b32|v2\.b64)\b")
VECTOR_8B = re.compile(r"\b(ld|st)\.global(?:\.[\w:]+)*\.v2\.b32\b")
# quantized_update.ROUNDER and its negation, as PTX writes fp32 immediates.
ROUNDER = ("0f4B400000", "0fCB400000")


def _tools() -> tuple[str, str]:
    import triton

    bin_dir = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin")
    return os.path.join(bin_dir, "ptxas"), os.path.join(bin_dir, "cuobjdump")


def _resources(cubin: bytes) -> dict:
    with tempfile.NamedTemporaryFile(suffix=".cubin") as file:
        file.write(cubin)
        file.flush()
        report = subprocess.run([_tools()[1], "--dump-resource-usage", file.name],
                                capture_output=True, text=True, check=True).stdout
    found = re.search(r"REG:(\d+) STACK:(\d+) SHARED:\d+ LOCAL:(\d+)", report)
    return {"regs": int(found[1]), "stack": int(found[2]), "local": int(found[3])}


def _compile_all() -> dict:
    import torch
    import triton
    import triton.language as tl
    from tmsgd_kernels.triton_kernels import launch_rule, pointer_table
    from tmsgd_kernels.triton_kernels.step_kernel import tmsgd_step_kernel
    from tmsgd_kernels.triton_kernels.tensor_lists import TensorLists
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    types = {"fp32": tl.float32, "fp16": tl.float16, "bf16": tl.bfloat16, "fp64": tl.float64,
             "i8": tl.int8}
    target = GPUTarget("cuda", 90, 32)

    def build(kernel, signature, constants, warps) -> dict:
        signature = dict(signature, **{name: "constexpr" for name in constants})
        # Tensor arguments 16-byte aligned, as Triton's launcher specializes them at run time.
        attrs = {(kernel.arg_names.index(name),): [["tt.divisibility", 16]]
                 for name, kind in signature.items() if kind.startswith("*")}
        compiled = triton.compile(ASTSource(kernel, signature, constants, attrs), target=target,
                                  options={"num_warps": warps, **launch_rule.COMPILE_OPTIONS})
        ptx = compiled.asm["ptx"]
        vectors = [m[1] for m in VECTOR.finditer(ptx)]
        vectors_8B = [m[1] for m in VECTOR_8B.finditer(ptx)]
        return {**_resources(compiled.asm["cubin"]), "ld_16B": vectors.count("ld"),
                "st_16B": vectors.count("st"), "ld_8B": vectors_8B.count("ld"),
                "st_8B": vectors_8B.count("st"), "fma": ptx.count("fma.rn"),
                "div_rn": ptx.count("div.rn."), "div_approximate": ptx.count("div.full."),
                "rounder": sum(ptx.count(f"{c};") for c in ROUNDER)}

    def flags(param, momentum):
        return dict(HAS_MOMENTUM=bool(momentum), MOMENTUM_CODES=momentum == "int8",
                    NESTEROV=False, MAXIMIZE=False,
                    HAS_WEIGHT_DECAY=True, LR_ON_DEVICE=True, HAS_GRAD_SCALE=True,
                    GRAD_SCALE_ON_DEVICE=True,
                    COMPUTE=tl.float64 if param == "fp64" else tl.float32)

    def signature(param, history, table, momentum=False):
        # What the launches pass: the table variant gets the table for the eight pointers it
        # does not use, the flat variant its param for the table (and for the scales with a
        # float history, and the buffer's scales without an 8-bit buffer).
        stream = "*i64" if table else f"*{param}"
        scales = "*i64" if table else ("*fp32" if history == "i8" else f"*{param}")
        codes = momentum == "int8" and not table
        return dict(SCALARS, table_ptr="*i64" if table else f"*{param}", map_start="i32",
                    param_ptr=stream, grad_ptr=stream, d1_ptr="*i64" if table else f"*{history}",
                    d2_ptr="*i64" if table else f"*{history}", s1_ptr=scales, s2_ptr=scales,
                    momentum_ptr="*i8" if codes else stream,
                    momentum_scales_ptr="*fp32" if codes else stream, numel="i64")

    def table(param, history, momentum, block, warps, aligned=True, on_device=True):
        return build(tmsgd_step_kernel, signature(param, history, True),
                     dict(flags(param, momentum), HAS_FOUND_INF=on_device, BLOCK=block,
                          TABLE=True, PARAM_DTYPE=types[param], HISTORY_DTYPE=types[history],
                          COUNTS_ON_DEVICE=on_device, ALIGNED=aligned), warps)

    results = {}
    cuda = torch.device("cuda")
    for name, (block, warps) in (("large", launch_rule.flat_config(1 << 26, cuda)),
                                 ("small", launch_rule.table_config([300, 5000], cuda))):
        results[f"rule {name}"] = [block, warps]
        for param, history, momentum in CASES:
            case = f"{name} {param}/{history} momentum={momentum}"
            results[f"table {case}"] = table(param, history, momentum, block, warps)
            results[f"flat {case}"] = build(
                tmsgd_step_kernel, signature(param, history, False),
                dict(flags(param, momentum), HAS_FOUND_INF=False, BLOCK=block, TABLE=False,
                     PARAM_DTYPE=types[param], HISTORY_DTYPE=types[history],
                     COUNTS_ON_DEVICE=False, ALIGNED=False), warps)
        for param, momentum in INT8_CASES:
            case = f"{name} {param}/i8 momentum={momentum}"
            results[f"table {case}"] = table(param, "i8", momentum, block, warps)
            results[f"rows {case}"] = table(param, "i8", momentum, block, warps, aligned=False)
            results[f"flat {case}"] = build(
                tmsgd_step_kernel, signature(param, "i8", False, momentum),
                dict(flags(param, momentum), HAS_FOUND_INF=False, BLOCK=block, TABLE=False,
                     PARAM_DTYPE=types[param], HISTORY_DTYPE=tl.int8, COUNTS_ON_DEVICE=False,
                     ALIGNED=False), warps)

    # A list that starts with a one-element param, in the launches the table kernel makes for it.
    sizes = [1, 4097, 300, 3, 65536]
    params = [torch.zeros(n) for n in sizes]
    lists = TensorLists(params, [torch.zeros(n) for n in sizes],
                        [torch.zeros(n) for n in sizes], [torch.zeros(n) for n in sizes], [], [],
                        [], [],
                        [torch.zeros((), dtype=torch.int64) for _ in sizes])
    block, warps = launch_rule.table_config(sizes, cuda)
    built = pointer_table.build(lists, block, counts_on_device=False)
    results["list from (1,)"] = {
        "blocks": built.blocks, "aligned_blocks": built.aligned_blocks,
        "aligned launch": table("fp32", "fp32", False, block, warps, on_device=False),
        "unaligned launch": table("fp32", "fp32", False, block, warps, aligned=False,
                                  on_device=False)}
    return results


def _ahead_of_time_available() -> str | None:
    try:
        import triton  # noqa: F401
    except ImportError:
        return "Triton is not installed"
    missing = [tool for tool in _tools() if not os.path.exists(tool)]
    return f"this Triton wheel ships no {missing}" if missing else None


@pytest.fixture(scope="module")
def compiled(tmp_path_factory) -> dict:
    reason = _ahead_of_time_available()
    if reason is not None:
        pytest.skip(f"cannot compile ahead of time: {reason}")
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["TRITON_CACHE_DIR"] = str(tmp_path_factory.mktemp("triton"))  # a real compile
    result = subprocess.run([sys.executable, __file__], env=env, capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def _vectors_per_stream(block: int, warps: int, dtype: str) -> int:
    """16-byte vectors each thread moves per stream in a full block."""
    return block // (32 * warps) * BYTES[dtype] // 16


def test_rule_holds_eight_elements_per_thread(compiled):
    # 16 per thread (4096 with 8 warps) took 144-210 registers (launch_rule.py); 8 take 48-140.
    for name in ("large", "small"):
        block, warps = compiled[f"rule {name}"]
        assert block // (32 * warps) == 8, name


# Registers measured here (ptxas of Triton 3.6.0 / 3.7.1 / 3.9.0, sm_90, no fusion, div.rn) at
# both of the rule's configs, table kernel and flat kernel: fp32/fp32 48 without momentum, 48-60
# with it; bf16/fp32 63-71 (3.6.0, 3.9.0) but 127-140 with 3.7.1; bf16/bf16 48-55; fp64/fp64
# 68-87. No spills anywhere. At 16 elements per thread the same kernels took 144-210 (3.7.1).
# Resident warps per SM: 65536 / (32 * registers rounded up to 8), at most 64 (48 registers: 42;
# 64: 32; 136: 15).
REGISTER_BOUNDS = {("fp32", "fp32", False): 56, ("fp32", "fp32", True): 64,
                   ("bf16", "fp32", True): 144, ("bf16", "bf16", True): 64,
                   ("fp64", "fp64", True): 96}


@pytest.mark.parametrize("kernel", ["table", "flat"])
@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c[0]}/{c[1]} momentum={c[2]}")
def test_registers_and_no_spills_at_the_rule(compiled, kernel, case):
    param, history, momentum = case
    for name in ("large", "small"):
        resources = compiled[f"{kernel} {name} {param}/{history} momentum={momentum}"]
        assert resources["regs"] <= REGISTER_BOUNDS[case], (name, resources)
        assert resources["local"] == 0 and resources["stack"] == 0, (name, resources)


@pytest.mark.parametrize("kernel", ["table", "flat"])
@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c[0]}/{c[1]} momentum={c[2]}")
def test_full_blocks_move_16_byte_vectors_with_the_cpu_kernels_arithmetic(compiled, kernel,
                                                                           case):
    param, history, momentum = case
    for name in ("large", "small"):
        block, warps = compiled[f"rule {name}"]
        result = compiled[f"{kernel} {name} {param}/{history} momentum={momentum}"]
        p, h = (_vectors_per_stream(block, warps, dtype) for dtype in (param, history))
        # Loads: grad, param, d1, d2 (+ buffer); stores: d_new, param (+ buffer).
        extra = p if momentum else 0
        assert (result["ld_16B"], result["st_16B"]) == (2 * p + 2 * h + extra, p + h + extra)
        assert result["fma"] == 0, result
        # Every config divides by grad_scale (HAS_GRAD_SCALE): div.rn, never div.full.
        assert result["div_rn"] > 0 and result["div_approximate"] == 0, result


# 8-bit history, registers at both of the rule's configs (ptxas of Triton 3.6.0 / 3.7.1 / 3.9.0,
# sm_90): rows of whole blocks (table, flat) 48-64, fp32 and bf16 params; row by row 92-128
# (each block's row, column and length, in int64). No spills: with the codes computed before the
# param was stored, 3.9.0 kept one register on the stack across the divisions' slow-path calls.
# With an 8-bit buffer too (a second encoding, Triton 3.9.0): whole-block rows 54-63, row by row
# 93-95 at the small config and 141-142 at the large one (one CTA of 256 threads per SM).
INT8_REGISTER_BOUNDS = {"table": 72, "flat": 72, "rows": 136}
INT8_BUFFER_REGISTER_BOUNDS = {"table": 72, "flat": 72, "rows": 152}


def _stack_bytes_allowed(kernel: str, codes: bool, config: str) -> int:
    """0, except one case: ptxas may hold the row-by-row kernel with an 8-bit buffer at the large
    config to 128 registers with an 8-byte stack frame (the divisions' slow-path call) and no
    local memory: Triton 3.6.0 and 3.9.0 did so for bf16 params in CI (2026-12-04), where a
    helper's earlier 3.9.0 build used 141-142 registers and no stack. A cost of speed on a path
    for rows with a short block or misaligned tensors, not of results."""
    return 8 if kernel == "rows" and codes and config == "large" else 0


@pytest.mark.parametrize("kernel", ["table", "flat", "rows"])
@pytest.mark.parametrize("case", INT8_CASES, ids=lambda c: f"{c[0]}/i8 momentum={c[1]}")
def test_int8_history_registers_vectors_and_arithmetic(compiled, kernel, case):
    """table: the aligned launch (whole-block rows), flat: a flattened range of such tensors,
    rows: the launch that addresses blocks row by row (rows with a short block, or misaligned
    tensors): no vectors there, but the same arithmetic. An 8-bit buffer (momentum "int8") is
    loaded and stored as codes like a history slot and encoded by the same arithmetic."""
    param, momentum = case
    codes = momentum == "int8"
    bounds = INT8_BUFFER_REGISTER_BOUNDS if codes else INT8_REGISTER_BOUNDS
    for name in ("large", "small"):
        block, warps = compiled[f"rule {name}"]
        result = compiled[f"{kernel} {name} {param}/i8 momentum={momentum}"]
        assert result["regs"] <= bounds[kernel], (name, result)
        assert result["local"] == 0, (name, result)
        assert result["stack"] <= _stack_bytes_allowed(kernel, codes, name), (name, result)
        elements = block // (32 * warps)
        vectors = (result["ld_16B"], result["st_16B"], result["ld_8B"], result["st_8B"])
        if kernel == "rows":
            assert vectors == (0, 0, 0, 0), (name, result)
        else:
            p = _vectors_per_stream(block, warps, param)
            extra = p if momentum is True else 0
            # 16 bytes: grad, param (+ buffer) loaded, param (+ buffer) stored; 8 bytes: the
            # codes (one byte each) of both slots (+ an 8-bit buffer) loaded and of the new slot
            # (+ the buffer) stored.
            assert vectors == (2 * p + extra, p + extra, (2 + codes) * elements // 8,
                               (1 + codes) * elements // 8), (name, result)
        assert result["fma"] == 0, (name, result)
        assert result["div_rn"] > 0 and result["div_approximate"] == 0, (name, result)
        # Both encodings (d_new and an 8-bit buffer) round every element of theirs.
        assert result["rounder"] == 2 * elements * (1 + codes), (name, result)


def test_list_starting_with_one_element_param_keeps_its_vectors(compiled):
    """The first param's 4 bytes no longer put the other tensors off 16 bytes: each is its own
    allocation, every block launches with the alignment hint, and that launch has vectors."""
    result = compiled["list from (1,)"]
    # Blocks of 1024: 1 + 5 + 1 + 1 + 64.
    assert result["blocks"] == result["aligned_blocks"] == 72
    aligned, unaligned = result["aligned launch"], result["unaligned launch"]
    assert (aligned["ld_16B"], aligned["st_16B"]) == (4 * 2, 2 * 2)
    # Without the hint (a misaligned view) nothing is vectorized: the hint is what matters.
    assert (unaligned["ld_16B"], unaligned["st_16B"]) == (0, 0)


if __name__ == "__main__":
    print(json.dumps(_compile_all()))
