"""Whether compute-sanitizer works on this machine (bench/gpu_check/run.py, stages probe-build
and sanitizer-probe): memcheck must pass a clean kernel and report a planted out-of-bounds write
(sanitizer_probe.cu). Without that, a failed sanitizer stage would say nothing about the kernels.

    python bench/gpu_check/sanitizer_probe.py build BINARY --arch 9.0   (nvcc; no GPU needed)
    python bench/gpu_check/sanitizer_probe.py run BINARY                (a few seconds)
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
from pathlib import Path

SOURCE = Path(__file__).resolve().parent / "sanitizer_probe.cu"


def cuda_tool(name: str) -> str:
    """`name` from the CUDA toolkit: on PATH, else under $CUDA_HOME (default /usr/local/cuda)."""
    home = os.environ.get("CUDA_HOME", "/usr/local/cuda")
    return shutil.which(name) or os.path.join(home, "bin", name)


def build(binary: Path, arch: str) -> int:
    sm = arch.replace(".", "")
    command = [cuda_tool("nvcc"), f"-arch=sm_{sm}", "-o", str(binary), str(SOURCE)]
    print(" ".join(command), flush=True)
    return subprocess.run(command).returncode


def run(binary: Path) -> int:
    """0 when memcheck passes the clean run and reports the overflow."""
    verdicts = []
    for case, expected_code, expected_text in (("clean", 0, "ERROR SUMMARY: 0 errors"),
                                               ("overflow", 9, "Invalid __global__ write")):
        command = [cuda_tool("compute-sanitizer"), "--tool", "memcheck", "--error-exitcode", "9",
                   str(binary), case]
        result = subprocess.run(command, capture_output=True, text=True)
        output = result.stdout + result.stderr
        ok = result.returncode == expected_code and expected_text in output
        verdicts.append(ok)
        print(f"{case}: exit {result.returncode} (want {expected_code}), "
              f"{expected_text!r} {'found' if expected_text in output else 'missing'}: "
              f"{'ok' if ok else 'FAILED'}\n{output.strip()}\n", flush=True)
    return 0 if all(verdicts) else 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("action", choices=("build", "run"))
    parser.add_argument("binary", type=Path)
    parser.add_argument("--arch", default="9.0", help="the GPU's compute capability (build)")
    args = parser.parse_args()
    return build(args.binary, args.arch) if args.action == "build" else run(args.binary)


if __name__ == "__main__":
    sys.exit(main())
