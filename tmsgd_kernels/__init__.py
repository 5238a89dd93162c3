"""tmsgd-kernels: TM-SGD (Taylor multi-step SGD) as a fused PyTorch optimizer."""

from . import functional, ops  # noqa: F401  (ops: defines the op schemas at import)
from .backends import available_backends
from .coefficients import PAPER_COEFFICIENTS
from .flatten import flatten_parameters
from .optimizer import TMSGD

__all__ = ["TMSGD", "PAPER_COEFFICIENTS", "available_backends", "flatten_parameters",
           "functional"]
__version__ = "0.1.0"
