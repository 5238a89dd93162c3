"""Builds tmsgd_kernels._C from csrc/: C++ always, CUDA where a CUDA toolkit and a CUDA torch exist.

TMSGD_NO_EXTENSION=1 skips the extension (the package then runs on its pure-PyTorch backend).
"""

import glob
import os

from setuptools import setup

PACKAGES = ["tmsgd_kernels", "tmsgd_kernels.backends", "tmsgd_kernels.triton_kernels"]
# The Triton project ships its own top-level `triton_kernels`: ours lives inside the package.
PACKAGE_DIR = {"tmsgd_kernels.triton_kernels": "triton_kernels"}


def extension_build():
    if os.environ.get("TMSGD_NO_EXTENSION") == "1":
        return [], {}
    import torch
    from torch.utils.cpp_extension import CUDA_HOME, BuildExtension, CppExtension, CUDAExtension

    sources = sorted(glob.glob("csrc/*.cpp"))
    if not sources:
        return [], {}
    cxx_flags = ["-O3", "-g0", "-std=c++17"]
    with_cuda = (
        torch.version.cuda is not None
        and CUDA_HOME is not None
        and os.environ.get("TMSGD_NO_CUDA") != "1"
    )
    if with_cuda:
        extension = CUDAExtension(
            "tmsgd_kernels._C",
            sources + sorted(glob.glob("csrc/*.cu")),
            extra_compile_args={"cxx": cxx_flags + ["-DTMSGD_WITH_CUDA"],
                                "nvcc": ["-O3", "-DTMSGD_WITH_CUDA", "--use_fast_math"]},
        )
    else:
        extension = CppExtension("tmsgd_kernels._C", sources, extra_compile_args=cxx_flags)
    return [extension], {"build_ext": BuildExtension.with_options(use_ninja=True)}


ext_modules, cmdclass = extension_build()
setup(
    packages=PACKAGES,
    package_dir=PACKAGE_DIR,
    ext_modules=ext_modules,
    cmdclass=cmdclass,
)
