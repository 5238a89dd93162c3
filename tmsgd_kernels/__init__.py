"""tmsgd-kernels: TM-SGD (Taylor multi-step SGD) as a fused PyTorch optimizer."""

from . import functional, ops  # noqa: F401  (ops: defines the op schemas at import)
from .backends import available_backends
from .coefficients import PAPER_COEFFICIENTS
from .optimizer import TMSGD

__all__ = ["TMSGD", "PAPER_COEFFICIENTS", "available_backends", "functional"]
__version__ = "0.1.0"
