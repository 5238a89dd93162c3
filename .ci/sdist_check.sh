#!/usr/bin/env bash
# The package as a user gets it: build the sdist (python -m build, isolated, as a release would),
# install it with plain `pip install <sdist>` (default build isolation) into a fresh venv that
# already has torch, import it from there and take a few steps against torch.optim.SGD.
#
# The fresh venv reuses the main venv's torch through a .pth file holding only that
# site-packages path: a plain path, so the main venv's own .pth files (the editable install of
# this checkout) are not processed and `import tmsgd_kernels` can only find the installed copy.
# The check fails if pip puts a torch of its own into the venv: the build backend must build
# against the torch that is there (build_backend/tmsgd_build.py). The extension is built for the
# CPU only (TMSGD_NO_CUDA=1); the CUDA build has its own check (.ci/cuda_build_check.sh).
# Measured on the 2-core CI machine: about 2 minutes, nearly all of it compiling.
set -euo pipefail
cd "$(dirname "$0")/.."
start=$(date +%s)
MAIN_PYTHON=${MAIN_PYTHON:-.venv/bin/python}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

"$MAIN_PYTHON" -m build --sdist --outdir "$work/dist" . > "$work/build.log" 2>&1 \
    || { cat "$work/build.log"; exit 1; }
sdist=$(ls "$work"/dist/*.tar.gz)
echo "sdist: built $(basename "$sdist") after $(( $(date +%s) - start )) s"

"$MAIN_PYTHON" -m venv "$work/venv"
main_site=$("$MAIN_PYTHON" -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")
own_site=$("$work/venv/bin/python" -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")
echo "$main_site" > "$own_site/zz_main_venv_torch.pth"

TMSGD_NO_CUDA=1 MAX_JOBS=${MAX_JOBS:-2} "$work/venv/bin/python" -m pip install "$sdist" \
    > "$work/install.log" 2>&1 || { cat "$work/install.log"; exit 1; }
if [ -e "$own_site/torch" ]; then
    echo "sdist: pip installed a second torch into the venv:"; grep -i torch "$work/install.log"
    exit 1
fi
echo "sdist: installed with build isolation after $(( $(date +%s) - start )) s"

# Run outside the checkout, so that nothing of it is on the path.
(cd "$work" && "$work/venv/bin/python" - "$own_site" <<'PY'
import sys
from pathlib import Path

import torch

import tmsgd_kernels
from tmsgd_kernels import TMSGD, native_extension

site = Path(sys.argv[1])
assert Path(tmsgd_kernels.__file__).is_relative_to(site), tmsgd_kernels.__file__
assert native_extension.load_error is None, native_extension.load_error
assert Path(native_extension._C.__file__).is_relative_to(site), native_extension._C.__file__
assert (site / "tmsgd_kernels" / "py.typed").is_file()

# (1, 0, 0) is plain SGD: the same gradients give the same params up to the rounding of each
# step (SGD may fuse p - lr * g into one rounding, the kernel rounds lr * g and the sum: at most
# an ulp of lr * g and one of W apart per step, the bound accumulated below).
torch.manual_seed(0)
model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.Tanh(), torch.nn.Linear(16, 1))
ours = [p.detach().clone().requires_grad_() for p in model.parameters()]
peer = [p.detach().clone().requires_grad_() for p in model.parameters()]
initial = [p.detach().clone() for p in model.parameters()]
tmsgd = TMSGD(ours, lr=0.1, coefficients=(1.0, 0.0, 0.0), backend="cpu")
sgd = torch.optim.SGD(peer, lr=0.1)
eps = torch.finfo(torch.float32).eps
bounds = [0.0] * len(ours)
for _ in range(5):
    for i, (a, b) in enumerate(zip(ours, peer)):
        g = torch.randn_like(a)
        a.grad, b.grad = g.clone(), g.clone()
        bounds[i] += eps * (2 * 0.1 * g.abs().max().item() + b.detach().abs().max().item())
    tmsgd.step()
    sgd.step()
for a, b, p0, bound in zip(ours, peer, initial, bounds):
    difference = (a - b).abs().max().item()
    assert difference <= bound, (difference, bound)
    assert (a - p0).abs().max().item() > 1e3 * bound  # the step did move the params
print(f"sdist: smoke step ok (tmsgd_kernels {tmsgd_kernels.__version__} from {site}, "
      f"cpu kernel {native_extension.cpu_capability()})")
PY
)
echo "sdist: done in $(( $(date +%s) - start )) s"
