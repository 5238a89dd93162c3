"""Entry point: ``python -m bench.convergence [--quick | --full]``."""

from .cli import main

if __name__ == "__main__":
    raise SystemExit(main())
