#!/usr/bin/env bash
# The Triton tests (tests/test_triton_*.py: the interpreter runs against the oracle and the C++
# kernel, and the ahead-of-time sm_90 compile with its register, vector and arithmetic checks)
# under Triton releases other than the pinned one: the GPU machines' (3.6.0) and the newest
# (3.9.0). Triton 3.9's interpreter rejected kernels that 3.7 accepted (comparisons yielding
# int64 masks), so one pinned version is not enough.
#
# One small venv per release (.venv-triton-X.Y.Z, reused when present) holds that Triton only;
# a .pth file adds the main venv's site-packages after its own (torch, the test tools and the
# editable install of this package, whose extension `make test` built), so its Triton wins.
# Measured on the 2-core CI machine: about 20 s to make a venv, 90 s per release for the tests.
set -euo pipefail
cd "$(dirname "$0")/.."
MAIN_PYTHON=${MAIN_PYTHON:-.venv/bin/python}
VERSIONS=${TRITON_VERSIONS:-"3.6.0 3.9.0"}
main_site=$("$MAIN_PYTHON" -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")

for version in $VERSIONS; do
    start=$(date +%s)
    venv=".venv-triton-$version"
    if ! "$venv/bin/python" -c "import triton, torch, sys; sys.exit(triton.__version__ != '$version')" 2>/dev/null; then
        rm -rf "$venv"
        "$MAIN_PYTHON" -m venv --without-pip "$venv"
        "$MAIN_PYTHON" -m pip install -q --no-deps --target \
            "$("$venv/bin/python" -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")" \
            "triton==$version"
        own_site=$("$venv/bin/python" -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")
        echo "import site; site.addsitedir('$main_site')" > "$own_site/zz_main_venv.pth"
    fi
    echo "triton $version: venv ready after $(( $(date +%s) - start )) s:" \
        "$("$venv/bin/python" -c 'import torch, triton; print("triton", triton.__version__, "torch", torch.__version__)')"
    "$venv/bin/python" -m pytest -q -p no:logging -n 2 tests/test_triton_*.py
    echo "triton $version: done in $(( $(date +%s) - start )) s"
done
