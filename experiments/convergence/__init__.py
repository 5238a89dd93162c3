"""Convergence experiments: TM-SGD against SGD, SGD+momentum and Adam on small CPU tasks.

Run ``python -m experiments.convergence --quick`` (minutes) or ``--full``; the theory section
alone with ``python -m experiments.convergence.theory``.
Results go to ``docs/experiments/<mode>/``; see ``docs/EXPERIMENTS.md``.
"""
