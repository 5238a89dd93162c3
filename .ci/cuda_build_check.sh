#!/usr/bin/env bash
# Compiles and links the CUDA half of the extension on a machine without a GPU, then checks that
# the built library registers the CUDA implementation of tmsgd_kernels::tmsgd_step.
#
# A second venv (.venv-cuda, reused when present) holds a CUDA build of torch (torch==2.14.1,
# CUDA 13.0), because the main .venv's CPU torch lacks the CUDA headers and libraries. The build
# runs in a copy of the sources under .venv-cuda/src, so the checkout's own CPU build is left
# alone and a rerun recompiles only what changed (ninja). Nothing CUDA is executed.
set -euo pipefail
cd "$(dirname "$0")/.."
start=$(date +%s)
PYTHON=${PYTHON:-python3}
VENV=.venv-cuda
TORCH_CUDA_VERSION=2.14.1

if ! "$VENV/bin/python" -c "import torch, sys; sys.exit(not (torch.__version__.startswith('$TORCH_CUDA_VERSION') and torch.version.cuda))" 2>/dev/null; then
    rm -rf "$VENV"
    "$PYTHON" -m venv "$VENV"
    "$VENV/bin/pip" install -q "torch==$TORCH_CUDA_VERSION" ninja setuptools wheel numpy pytest
fi
echo "cuda-build: venv ready after $(( $(date +%s) - start )) s ($("$VENV/bin/python" -c 'import torch; print(torch.__version__, "CUDA", torch.version.cuda)'))"

export CUDA_HOME=${CUDA_HOME:-/usr/local/cuda}
# 9.0+PTX: the library also carries sm_90 PTX, which tests/test_native_cuda_build.py reads (no
# fused multiply-add); its SASS and resource counts come from the sm_90 code itself.
export TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-"8.0;9.0+PTX"}
export MAX_JOBS=${MAX_JOBS:-2}
export PATH="$CUDA_HOME/bin:$PATH"
src="$VENV/src"
mkdir -p "$src/tests"
# -p keeps modification times, so ninja rebuilds only sources that changed since the last run.
# pyproject.toml's metadata names the licence and README files: setuptools reads them too.
cp -rp csrc tmsgd_kernels triton_kernels setup.py pyproject.toml LICENSE README.md "$src/"
cp -p tests/test_native_cuda_build.py "$src/tests/"
(cd "$src" && rm -f tmsgd_kernels/_C*.so && "../bin/python" setup.py -q build_ext --inplace)
echo "cuda-build: extension built after $(( $(date +%s) - start )) s"

(cd "$src" && TMSGD_EXPECT_CUDA_BUILD=1 PYTHONPATH=. "../bin/python" -m pytest -q \
    -p no:cacheprovider tests/test_native_cuda_build.py)
echo "cuda-build: done in $(( $(date +%s) - start )) s"
