"""Property tests: drawn shapes, dtypes and hyperparameters against the oracle."""

from __future__ import annotations

import cmath

import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from trajectory import run_against_oracle

from tmsgd_kernels.coefficients import validate_coefficients

shapes = st.lists(st.lists(st.integers(0, 9), min_size=0, max_size=3).map(tuple),
                  min_size=1, max_size=4)
# Zero-stable families: heavy ball (1 + m, -m, 0) and the paper's shape scaled by c in [0, 1].
coefficients = st.one_of(
    st.floats(0.0, 0.95).map(lambda m: (1.0 + m, -m, 0.0)),
    st.floats(0.0, 1.0).map(lambda c: (1.0 + 0.5 * c, -c, 0.5 * c)),
)


@settings(max_examples=25, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    shapes=shapes,
    dtype=st.sampled_from([torch.float32, torch.float64]),
    lr=st.floats(1e-3, 0.2),
    momentum=st.sampled_from([0.0, 0.5, 0.9]),
    dampening=st.floats(0.0, 0.5),
    weight_decay=st.sampled_from([0.0, 1e-2]),
    nesterov=st.booleans(),
    maximize=st.booleans(),
    switch_step=st.integers(0, 4),
    coefficients=coefficients,
    steps=st.integers(1, 12),
)
def test_drawn_configurations_match_oracle(backend, device, shapes, dtype, lr, momentum,
                                           dampening, weight_decay, nesterov, maximize,
                                           switch_step, coefficients, steps):
    if nesterov:
        momentum, dampening = momentum or 0.5, 0.0
    run_against_oracle(backend=backend, dtype=dtype, device=device, steps=steps, shapes=shapes,
                       lr=lr, momentum=momentum, dampening=dampening if momentum else 0.0,
                       weight_decay=weight_decay, nesterov=nesterov, maximize=maximize,
                       switch_step=switch_step, coefficients=coefficients)


@settings(max_examples=200, deadline=None)
@given(a0=st.floats(-3, 3), a1=st.floats(-3, 3))
def test_zero_stability_check_agrees_with_the_roots(a0, a1):
    """Accepted exactly when z^2 - b1 z - b2 has its roots inside the unit disk (clear of the
    boundary cases, which the check treats with a tolerance)."""
    coefficients = (a0, a1, 1.0 - a0 - a1)
    b1, b2 = a0 - 1.0, a0 + a1 - 1.0
    root = cmath.sqrt(b1 * b1 + 4 * b2)
    largest = max(abs((b1 + root) / 2), abs((b1 - root) / 2))
    if abs(largest - 1.0) < 1e-6:
        return
    try:
        validate_coefficients(coefficients)
        accepted = True
    except ValueError:
        accepted = False
    assert accepted == (largest < 1.0)
