"""Convergence experiments: TM-SGD against SGD, SGD+momentum and Adam on small CPU tasks.

Run ``python -m bench.convergence --quick`` (minutes) or ``python -m bench.convergence --full``.
Results go to ``docs/experiments/<mode>/``; see ``docs/EXPERIMENTS.md``.
"""
