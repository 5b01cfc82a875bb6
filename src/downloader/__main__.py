"""`python -m downloader` is the `downloader` command."""

import sys

from downloader.cli import main

sys.exit(main())
