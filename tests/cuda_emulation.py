"""The op's CUDA implementation run on the CPU (host emulation, docs/DESIGN.md section 6).

csrc/cuda_kernel.cu and csrc/cuda_step.cpp are compiled unchanged by the host C++ compiler
against csrc/emulation/: shim headers of the CUDA runtime and c10/cuda, an emulated device that
runs every thread of every block in turn, and "fake CUDA" tensors (device cuda:<n> over CPU
memory). Loaded into this process, the library registers the op's real CUDA entry point, and
the dispatcher runs it on fake CUDA tensors: argument checks, host and device count modes,
tables, grid sizing and the kernels themselves.

    library(variant, source)  builds, or finds in build/cuda_emulation/, the shared library
    load()                    builds and loads the variant this process runs (once)
    fake(tensor)              a fake CUDA tensor over a CPU tensor's memory
    configured(...)           the emulated device's multiprocessors and block order, for a block
    take_launches()           the kernel launches since the last call
    contract_call(...)        the step as tests/kernel_contract.py calls an implementation

Variants: "plain" (-O2) and "sanitize" (AddressSanitizer and UndefinedBehaviorSanitizer, -O1),
which needs the sanitizer runtimes preloaded into Python (`make emulate-sanitize` does it).
The environment chooses what a test process loads: TMSGD_EMULATION_VARIANT (default plain),
TMSGD_EMULATION_SOURCE (a copy of csrc/ to build instead, for bench/emulation_mutants.py), and
MAX_JOBS (parallel compiles; default: every core).
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import hashlib
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch

from tmsgd_kernels import ops
from tmsgd_kernels.step_contract import TENSOR_LISTS

ROOT = Path(__file__).resolve().parents[1]
CACHE = ROOT / "build" / "cuda_emulation"
VARIANTS = ("plain", "sanitize")
# The toolkit the emulation stands for: cuda_kernel.cu refuses one older than 11.7.
CUDA_VERSION = (13, 0)

# (object, source relative to the source folder, whether it is the kernel file)
_SOURCES = (
    ("cuda_kernel", "cuda_kernel.cu", True),
    ("cuda_step", "cuda_step.cpp", False),
    ("emulated_device", "emulation/emulated_device.cpp", False),
    ("fake_cuda", "emulation/fake_cuda.cpp", False),
    ("device_ops", "emulation/device_ops.cpp", False),
)
_SANITIZERS = ["-fsanitize=address,undefined", "-fno-sanitize-recover=all"]
_VARIANT_FLAGS = {
    "plain": ["-O2"],
    # -g: the sanitizers' reports name files and lines.
    "sanitize": ["-O1", "-g", "-fno-omit-frame-pointer", *_SANITIZERS],
}


def unavailable_reason() -> str | None:
    """None when the emulation can be built and loaded here, else why not. Where the environment
    asks for a variant (TMSGD_EMULATION_VARIANT, as `make emulate-sanitize` does), a reason is an
    error instead: a run that asked for the emulation must not pass by skipping it."""
    reason = _unavailable_reason()
    if reason is not None and "TMSGD_EMULATION_VARIANT" in os.environ:
        raise RuntimeError(f"host emulation asked for (TMSGD_EMULATION_VARIANT), but {reason}")
    return reason


def _unavailable_reason() -> str | None:
    if torch.version.cuda is not None:
        return ("torch is a CUDA build: the real kernels run on a GPU (tests/test_native_cuda.py), "
                "and the emulation's CUDA kernels of ATen would replace torch's own")
    if not sys.platform.startswith("linux"):
        return "the host emulation is built with g++ on Linux"
    if shutil.which("g++") is None:
        return "no g++ to build the host emulation"
    return None


# ---------------------------------------------------------------------------------------- build


def _compiler_version() -> str:
    return subprocess.run(["g++", "--version"], capture_output=True, text=True,
                          check=True).stdout.splitlines()[0]


def _flags(source: Path, variant: str) -> list[str]:
    from torch.utils.cpp_extension import include_paths

    abi = int(torch._C._GLIBCXX_USE_CXX11_ABI)
    # The shims come first: they stand in for the CUDA headers of a CUDA build of torch.
    includes = [source / "emulation", source, *map(Path, include_paths())]
    return ["-std=c++20", "-fPIC", "-ffp-contract=off", "-Wall", "-Wno-unknown-pragmas",
            f"-D_GLIBCXX_USE_CXX11_ABI={abi}", "-DTMSGD_WITH_CUDA",
            *_VARIANT_FLAGS[variant], *(f"-I{path}" for path in includes)]


def _headers_digest(source: Path) -> bytes:
    """Every header the sources may include from the source folder (conservatively all)."""
    digest = hashlib.sha256()
    for header in sorted(source.rglob("*.h")):
        digest.update(str(header.relative_to(source)).encode() + header.read_bytes())
    return digest.digest()


def _compile(command: list[str], output: Path) -> None:
    partial = output.with_suffix(f".{os.getpid()}.partial")
    result = subprocess.run([*command, "-o", str(partial)], capture_output=True, text=True)
    if result.returncode != 0:
        partial.unlink(missing_ok=True)
        raise RuntimeError(f"host emulation: the build failed:\n{' '.join(command)}\n"
                           f"{result.stderr[-6000:]}")
    partial.replace(output)


def library(variant: str = "plain", source: Path = ROOT / "csrc",
            jobs: int | None = None) -> Path:
    """The emulation's shared library for `variant`, built from the C++ sources in `source` (a
    copy of csrc/) unless an identical build is in build/cuda_emulation/. Objects are kept by a
    hash of the compiler, torch, the flags and every source and header, so a changed file
    rebuilds only what it can affect."""
    if variant not in VARIANTS:
        raise ValueError(f"unknown variant {variant!r}; choose from {VARIANTS}")
    reason = unavailable_reason()
    if reason is not None:
        raise RuntimeError(f"host emulation: {reason}")
    from torch.utils.cpp_extension import library_paths

    source = Path(source).resolve()
    flags = _flags(source, variant)
    stamp = hashlib.sha256(
        (_compiler_version() + torch.__version__ + " ".join(flags).replace(str(source), "<src>"))
        .encode() + _headers_digest(source)).digest()
    compiles, objects = [], []
    for name, relative, is_kernel in _SOURCES:
        file = source / relative
        extra = ["-x", "c++", f"-D__CUDACC_VER_MAJOR__={CUDA_VERSION[0]}",
                 f"-D__CUDACC_VER_MINOR__={CUDA_VERSION[1]}"] if is_kernel else []
        key = hashlib.sha256(stamp + " ".join(extra).encode() + file.read_bytes()).hexdigest()
        output = CACHE / "objects" / f"{name}-{variant}-{key[:20]}.o"
        objects.append(output)
        compiles.append((["g++", *flags, *extra, "-c", str(file)], output))
    key = hashlib.sha256("".join(o.name for o in objects).encode()).hexdigest()
    target = CACHE / f"libtmsgd_cuda_emulation-{variant}-{key[:20]}.so"
    (CACHE / "objects").mkdir(parents=True, exist_ok=True)
    with open(CACHE / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one build at a time; the next finds it done
        if target.exists():
            return target
        missing = [(command, output) for command, output in compiles if not output.exists()]
        jobs = jobs or int(os.environ.get("MAX_JOBS", 0)) or os.cpu_count() or 1
        started = time.monotonic()
        with ThreadPoolExecutor(max_workers=jobs) as pool:
            for future in [pool.submit(_compile, *job) for job in missing]:
                future.result()
        link = ["g++", "-shared", *(_SANITIZERS if variant == "sanitize" else []),
                *map(str, objects), f"-L{library_paths()[0]}", "-lc10", "-ltorch_cpu",
                "-ltorch", f"-Wl,-rpath,{library_paths()[0]}"]
        _compile(link, target)
        print(f"host emulation: built {target.name} ({len(missing)} of {len(objects)} objects "
              f"compiled, {time.monotonic() - started:.0f} s)", file=sys.stderr)
    return target


# ----------------------------------------------------------------------------------------- load

_loaded: Path | None = None


def _preloaded_sanitizers() -> bool:
    return "libasan" in os.environ.get("LD_PRELOAD", "")


def load() -> None:
    """Build and load the library this process runs: TMSGD_EMULATION_VARIANT from
    TMSGD_EMULATION_SOURCE (defaults: plain, csrc/). Once per process: one library only."""
    global _loaded
    if _loaded is not None:
        return
    variant = os.environ.get("TMSGD_EMULATION_VARIANT", "plain")
    source = Path(os.environ.get("TMSGD_EMULATION_SOURCE", ROOT / "csrc"))
    if variant == "sanitize" and not _preloaded_sanitizers():
        raise RuntimeError("host emulation: the sanitize variant needs the ASan and UBSan "
                           "runtimes preloaded into Python; run it with `make emulate-sanitize`")
    path = library(variant, source)
    assert ops.native_step is not None  # the op's schema is defined before its kernel
    torch.ops.load_library(str(path))
    _loaded = path


def fake(tensor: torch.Tensor | None, device: int = 0) -> torch.Tensor | None:
    """`tensor` (a CPU tensor) as a fake CUDA tensor on cuda:`device`; None stays None."""
    if tensor is None:
        return None
    load()
    return torch.ops.tmsgd_emulation.fake_cuda(tensor, device)


# --------------------------------------------------------------------------------- the device

def resident_blocks() -> int:
    """Blocks per multiprocessor the emulated occupancy query reports for every kernel."""
    load()
    return torch.ops.tmsgd_emulation.resident_blocks()


@contextlib.contextmanager
def configured(multiprocessors: int = 132, block_order: str = "in order",
               seed: int = 1) -> Iterator[None]:
    """The emulated device with `multiprocessors` (the grid is at most that many times
    resident_blocks()) running blocks "in order", "reversed" or "shuffled" (by `seed`), for the
    block; then back to 132 multiprocessors in order."""
    load()
    torch.ops.tmsgd_emulation.configure(multiprocessors, block_order, seed)
    try:
        yield
    finally:
        torch.ops.tmsgd_emulation.configure(132, "in order", 1)


@dataclasses.dataclass(frozen=True)
class Launch:
    """One kernel launch as the emulated device saw it."""

    kernel: str  # the kernel's type, e.g. "void (*)(tmsgd::cuda::CountTable, float const*)"
    grid: tuple[int, int, int]
    block: tuple[int, int, int]
    shared: int
    parameter_bytes: int
    device: int
    current_stream: bool
    ran: bool

    @property
    def counts(self) -> bool:
        """The kernel that advances device-side counts (else the step kernel)."""
        return "CountTable" in self.kernel


def take_launches() -> list[Launch]:
    """The launches since the last call, oldest first."""
    load()
    kernels, numbers = torch.ops.tmsgd_emulation.take_launches()
    return [Launch(kernel, tuple(row[0:3]), tuple(row[3:6]), row[6], row[7], row[8],
                   bool(row[9]), bool(row[10])) for kernel, row in zip(kernels, numbers.tolist())]


# ------------------------------------------------------------------------------ calling the op


def contract_call(counts_on_device: bool, scalars_on_device: bool = True,
                  device: int = 0) -> Callable[..., None]:
    """The op on fake CUDA views of CPU tensors, called as tests/kernel_contract.py calls an
    implementation, `call(*lists, scalars, grad_scale=None, found_inf=None)` with the contract's
    lists in order: every tensor becomes a fake CUDA tensor on cuda:`device`, the counts only in
    device mode, and lr_tensor, grad_scale and found_inf unless `scalars_on_device` is False (the
    contract allows them on the CPU too)."""
    def scalar(tensor: torch.Tensor | None) -> torch.Tensor | None:
        return fake(tensor, device) if scalars_on_device else tensor

    def call(*arguments) -> None:
        lists, (scalars, *optional) = arguments[:len(TENSOR_LISTS)], arguments[len(TENSOR_LISTS):]
        grad_scale, found_inf = [*optional, None, None][:2]
        placed = [list(tensors) if name == "steps" and not counts_on_device
                  else [fake(t, device) for t in tensors]
                  for (name, _), tensors in zip(TENSOR_LISTS, lists)]
        scalars = dataclasses.replace(scalars, lr_tensor=scalar(scalars.lr_tensor))
        ops.native_step(*placed, *scalars.arguments(), scalar(grad_scale), scalar(found_inf))

    return call
