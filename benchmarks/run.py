#!/usr/bin/env python3
"""`python benchmarks/run.py [--quick] [--cases ...]`: runs the benchmark package.

Kept so that the command the README has always shown still works; the code lives in
`benchmarks/bench/` (see benchmarks/README.md).
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.bench.main import main

if __name__ == "__main__":
    sys.exit(main())
