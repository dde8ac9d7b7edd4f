"""`python -m harness`: see harness.cli. A package of the `harness` extra that is missing is
one line saying what to install, not a traceback."""

import sys

HARNESS_EXTRA = ("scapy", "rich", "docker", "matplotlib")

try:
    from .cli import main

    status = main()
except ModuleNotFoundError as exc:
    if (exc.name or "").split(".")[0] not in HARNESS_EXTRA:
        raise
    sys.exit(f"error: python -m harness needs {exc.name}: pip install -e '.[harness]' in the "
             "clone (README, Install)")
sys.exit(status)
