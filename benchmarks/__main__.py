"""`python -m benchmarks [--quick] [--cases ...]`: the same run as `python benchmarks/run.py`."""

import sys

from benchmarks.bench.main import main

sys.exit(main())
