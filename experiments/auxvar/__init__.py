"""Experiments on training with self-adaptive weighted auxiliary variables (docs/AUXVAR.md).

Run ``python -m experiments.auxvar --quick`` (a few minutes) or ``--full``.
"""
