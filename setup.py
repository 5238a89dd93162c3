"""Builds tmsgd_kernels._C from csrc/: C++ always, CUDA where a CUDA toolkit and a CUDA torch exist.

TMSGD_NO_EXTENSION=1 skips the extension (the package then runs on its pure-PyTorch backend);
TMSGD_NO_CUDA=1 builds the C++ part only.

The CPU kernel is compiled once per instruction set, as ATen compiles its own kernels: csrc/*.cpp
with no -m flags (the DEFAULT copy, safe on any x86-64), and on x86-64 the files of
csrc/cpu_capability/ again with -mavx2 / -mavx512*, in their own namespaces; the op picks one at
run time from at::get_cpu_capability() and the CPU's flags. Those objects are linked after the
default ones, so an inline function the copies share resolves to the DEFAULT build's version.

torch is imported only to build: the sdist and the metadata need none. pip's build isolation would
hide the installed torch; the in-tree backend (build_backend/tmsgd_build.py) shows it to this file.
"""

import glob
import os
import platform
import re
import subprocess
import sys

from setuptools import find_packages, setup

# The Triton project ships its own top-level `triton_kernels`: ours lives inside the package.
PACKAGES = find_packages(include=["tmsgd_kernels", "tmsgd_kernels.*"]) + [
    "tmsgd_kernels.triton_kernels"]
PACKAGE_DIR = {"tmsgd_kernels.triton_kernels": "triton_kernels"}

# Per-capability files and their flags (the flags ATen uses for the same capabilities).
CPU_CAPABILITIES = {
    "AVX2": ["-mavx2", "-mfma", "-mf16c", "-DCPU_CAPABILITY=AVX2", "-DCPU_CAPABILITY_AVX2"],
    "AVX512": ["-mavx512f", "-mavx512bw", "-mavx512vl", "-mavx512dq", "-mfma", "-mf16c",
               "-DCPU_CAPABILITY=AVX512", "-DCPU_CAPABILITY_AVX512",
               # GCC 12 false positive inside its own avx512fintrin.h (ATen headers hit it).
               "-Wno-maybe-uninitialized"],
}


# The oldest toolkit the CUDA kernels compile with: their tables are __grid_constant__ kernel
# parameters (CUDA 11.7). They stay under 4 KB (csrc/cuda_table.h), so no newer toolkit or driver
# is needed for large parameter lists. csrc/cuda_kernel.cu refuses older ones too (#error).
MIN_CUDA = (11, 7)


def _check_cuda_toolkit(cuda_home: str) -> None:
    version = _cuda_toolkit_version(cuda_home)
    if version < MIN_CUDA:
        raise RuntimeError(
            f"the CUDA toolkit at {cuda_home} is {version[0]}.{version[1]}; the CUDA kernels need "
            f"{MIN_CUDA[0]}.{MIN_CUDA[1]} or newer. Point CUDA_HOME at a newer toolkit, or set "
            f"TMSGD_NO_CUDA=1 to build without them (the triton and torch backends still run)")


# What CUDA code to generate when no GPU is visible, so none can be asked (torch's own detection
# reads the visible devices and fails without one): Ampere (sm_80 code runs on sm_86 and sm_89
# too) and Hopper, with sm_90 PTX for newer GPUs to compile at load; CI builds exactly this list.
# CUDA 11.7 predates sm_90. TORCH_CUDA_ARCH_LIST, when set, wins; with a GPU, torch detects it.
def _default_cuda_arch_list(cuda_home: str) -> str:
    return "8.0;9.0+PTX" if _cuda_toolkit_version(cuda_home) >= (11, 8) else "8.0+PTX"


def _cuda_toolkit_version(cuda_home: str) -> tuple[int, int]:
    nvcc = os.path.join(cuda_home, "bin", "nvcc")
    report = subprocess.run([nvcc, "--version"], capture_output=True, text=True).stdout
    found = re.search(r"release (\d+)\.(\d+)", report)
    if found is None:
        raise RuntimeError(f"cannot read the CUDA version from `{nvcc} --version`")
    return int(found[1]), int(found[2])


# Commands that need no compiled code (pip's metadata and sdist hooks run these).
METADATA_COMMANDS = {"egg_info", "dist_info", "sdist", "--name", "--version"}


def _import_torch():
    """torch, or None when it is missing and only metadata or an sdist is being made."""
    try:
        import torch
    except ImportError:
        if set(sys.argv[1:]) & METADATA_COMMANDS:
            return None
        raise SystemExit(
            "tmsgd-kernels: building the C++ extension needs torch, which this interpreter "
            f"({sys.executable}) cannot import. Install a torch release that pyproject.toml's "
            "`dependencies` accept and build with `pip install .` (or `pip install "
            "--no-build-isolation .`), or set TMSGD_NO_EXTENSION=1 to install without the "
            "extension (the pure-PyTorch backend then runs)") from None
    return torch


def _builds_capabilities() -> bool:
    return platform.machine().lower() in ("x86_64", "amd64") and sys.platform != "win32"


def extension_build():
    if os.environ.get("TMSGD_NO_EXTENSION") == "1":
        return [], {}
    torch = _import_torch()
    if torch is None:
        return [], {}
    from torch.utils.cpp_extension import CUDA_HOME, BuildExtension, CppExtension, CUDAExtension

    sources = sorted(glob.glob("csrc/*.cpp"))
    if not sources:
        return [], {}
    # No -std: torch.utils.cpp_extension adds the one its headers need (C++17 for torch 2.13,
    # C++20 for 2.14). -ffp-contract=off: GCC contracts a * b + c into an FMA in C++ even in ISO
    # mode, which in the -mfma copies made the scalar tail round differently from the SIMD body
    # (seen: 1-ulp differences between a bucket stepped whole and stepped per tensor); nvcc gets
    # --fmad=false for the same reason, so CPU and GPU run the same arithmetic.
    # -Wno-psabi: GCC notes the (irrelevant, internal) ABI of passing 32-byte vectors by value.
    cxx_flags = ["-O3", "-g0", "-ffp-contract=off", "-Wno-psabi", "-Wno-unknown-pragmas"]
    link_flags = []
    if sys.platform != "win32":
        # at::parallel_for is inline OpenMP code: without -fopenmp it would run on one thread.
        # libgomp.so.1 resolves to the copy torch already loaded (same soname).
        cxx_flags.append("-fopenmp")
        link_flags.append("-fopenmp")
    if _builds_capabilities():
        cxx_flags += [f"-DTMSGD_CPU_{name}" for name in CPU_CAPABILITIES]
    with_cuda = (
        torch.version.cuda is not None
        and CUDA_HOME is not None
        and os.environ.get("TMSGD_NO_CUDA") != "1"
    )
    if with_cuda:
        _check_cuda_toolkit(CUDA_HOME)
        if "TORCH_CUDA_ARCH_LIST" not in os.environ and not torch.cuda.is_available():
            os.environ["TORCH_CUDA_ARCH_LIST"] = _default_cuda_arch_list(CUDA_HOME)
        extension = CUDAExtension(
            "tmsgd_kernels._C",
            sources + sorted(glob.glob("csrc/*.cu")),
            extra_compile_args={"cxx": cxx_flags + ["-DTMSGD_WITH_CUDA"],
                                "nvcc": ["-O3", "--fmad=false", "-DTMSGD_WITH_CUDA"]},
            extra_link_args=link_flags,
        )
    else:
        extension = CppExtension("tmsgd_kernels._C", sources, extra_compile_args=cxx_flags,
                                 extra_link_args=link_flags)

    class BuildWithCpuCapabilities(BuildExtension):
        """BuildExtension that also compiles csrc/cpu_capability/*.cpp once per capability."""

        def build_extension(self, ext) -> None:
            if _builds_capabilities():
                args = ext.extra_compile_args
                base = list(args["cxx"] if isinstance(args, dict) else args)
                objects = []
                for name, flags in CPU_CAPABILITIES.items():  # ascending: see the docstring
                    source = f"csrc/cpu_capability/{name.lower()}.cpp"
                    objects += self.compiler.compile(
                        [source],
                        output_dir=os.path.join(self.build_temp, name.lower()),
                        include_dirs=ext.include_dirs,
                        extra_postargs=base + flags,
                        depends=ext.depends,
                    )
                ext.extra_objects = [o for o in ext.extra_objects if o not in objects] + objects
            super().build_extension(ext)

    return [extension], {"build_ext": BuildWithCpuCapabilities.with_options(use_ninja=True)}


ext_modules, cmdclass = extension_build()
setup(
    packages=PACKAGES,
    package_dir=PACKAGE_DIR,
    package_data={"tmsgd_kernels": ["py.typed"]},
    ext_modules=ext_modules,
    cmdclass=cmdclass,
)
