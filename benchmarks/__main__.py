"""`python -m benchmarks [--quick] [--cases ...]`: the same run as `python benchmarks/run.py`."""

import sys

from benchmarks.bench.main import main

if __name__ == "__main__":
    sys.exit(main())
