"""Training with self-adaptive weighted auxiliary variables (Ng, Liu, Gu, arXiv 2504.21501),
reconstructed from the abstract and published summaries: see docs/AUXVAR.md for what is from the
paper and what is not.

- ``AuxVarLoss``: J(theta, z) of an MLP with one auxiliary per point and hidden layer; the true
  MSE is bounded by ``L * J``.
- ``FirstOrderPINNLoss``: the same for a physics-informed network of a first-order linear PDE
  ``c(x) . grad u = f`` with ``u = g`` on the boundary, with value and derivative auxiliaries.
"""

from .fnn import AuxVarLoss, squared_error
from .network import UnsupportedModelError, parse_mlp
from .pinn import FirstOrderPINNLoss

__all__ = ["AuxVarLoss", "FirstOrderPINNLoss", "UnsupportedModelError", "parse_mlp",
           "squared_error"]
