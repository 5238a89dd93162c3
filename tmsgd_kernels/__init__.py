"""tmsgd-kernels: TM-SGD (Taylor multi-step SGD) as a fused PyTorch optimizer."""

from . import functional, ops  # noqa: F401  (ops: defines the op schemas at import)
from ._version import __version__
from .coefficients import PAPER_COEFFICIENTS
from .flatten import flatten_parameters
from .implementations import available_backends
from .optimizer import TMSGD
from .step_in_backward import step_in_backward

__all__ = ["TMSGD", "PAPER_COEFFICIENTS", "available_backends", "flatten_parameters",
           "functional", "step_in_backward", "__version__"]
