"""Multi-step coefficients: validation and the delta-form constants.

The paper's update is W[k+1] = a0 W[k] + a1 W[k-1] + a2 W[k-2] - lr u[k]. With d[k] = W[k] - W[k-1]
it becomes d_new = b1 d1 + b2 d2 - lr u with b1 = a0 - 1 and b2 = a0 + a1 - 1, which is what every
backend computes (it never forms large weight combinations, so low-precision history is safe).
"""

from __future__ import annotations

import cmath
import math

PAPER_COEFFICIENTS = (1.5, -1.0, 0.5)

# Roots closer than this to the unit circle (or to each other) count as on it (or equal).
_ROOT_TOLERANCE = 1e-9


def delta_coefficients(coefficients: tuple[float, float, float]) -> tuple[float, float]:
    """Return (b1, b2) of the delta form for validated paper coefficients (a0, a1, a2)."""
    a0, a1, _ = coefficients
    return a0 - 1.0, a0 + a1 - 1.0


def validate_coefficients(coefficients) -> tuple[float, float, float]:
    """Check that (a0, a1, a2) is consistent and zero-stable; return it as a tuple of floats.

    Consistency: a0 + a1 + a2 == 1, so that z = 1 is a root of z^3 - a0 z^2 - a1 z - a2.
    Zero-stability: every root in the closed unit disk, roots on the circle simple, z = 1 simple.
    Dividing out (z - 1) leaves z^2 - b1 z - b2, whose roots govern how the history decays.
    """
    try:
        a0, a1, a2 = (float(c) for c in coefficients)
    except (TypeError, ValueError) as error:
        raise ValueError(
            f"coefficients must be three numbers (a0, a1, a2), got {coefficients!r}"
        ) from error
    if not all(math.isfinite(c) for c in (a0, a1, a2)):
        raise ValueError(f"coefficients must be finite, got {(a0, a1, a2)}")
    if abs(a0 + a1 + a2 - 1.0) > 1e-12:
        raise ValueError(
            f"coefficients must sum to 1 (consistency), got {(a0, a1, a2)} "
            f"summing to {a0 + a1 + a2}"
        )
    b1, b2 = delta_coefficients((a0, a1, a2))
    discriminant = cmath.sqrt(b1 * b1 + 4.0 * b2)
    roots = ((b1 + discriminant) / 2.0, (b1 - discriminant) / 2.0)
    problem = None
    if any(abs(r) > 1.0 + _ROOT_TOLERANCE for r in roots):
        problem = "a root lies outside the unit disk"
    elif any(abs(r - 1.0) <= _ROOT_TOLERANCE for r in roots):
        problem = "z = 1 is a repeated root"
    elif (abs(roots[0] - roots[1]) <= _ROOT_TOLERANCE
          and abs(abs(roots[0]) - 1.0) <= _ROOT_TOLERANCE):
        problem = "a repeated root lies on the unit circle"
    if problem is not None:
        raise ValueError(
            f"coefficients {(a0, a1, a2)} are not zero-stable: {problem} of "
            f"z^3 - a0 z^2 - a1 z - a2 (other roots {roots[0]:.6g}, {roots[1]:.6g})"
        )
    return a0, a1, a2
