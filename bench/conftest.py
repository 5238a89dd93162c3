"""The benchmark suite's modules import each other by name, as the scripts in bench/ do."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
