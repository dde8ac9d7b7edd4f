"""`python -m harness.bench`: see harness.bench.cli."""

import sys

from .cli import main

sys.exit(main())
