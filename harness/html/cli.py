"""`python -m harness report RUN_DIR [--open]` and `report --compare OLD NEW [--out FILE]`."""

from __future__ import annotations

import argparse
import sys
import webbrowser
from pathlib import Path

from . import ReportError, write_compare, write_report


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_dir", type=Path, nargs="?", metavar="RUN_DIR",
                        help="a run folder (results.json and/or bench.json): writes "
                        "RUN_DIR/index.html")
    parser.add_argument("--compare", type=Path, nargs=2, metavar=("OLD", "NEW"),
                        help="compare two run folders: writes NEW/compare.html with changed "
                        "cells and throughput that moved beyond the noise")
    parser.add_argument("--out", type=Path, default=None,
                        help="with --compare: the page to write (inside NEW)")
    parser.add_argument("--open", action="store_true",
                        help="open the page in the default browser")


def cmd_report(args: argparse.Namespace) -> int:
    try:
        if args.compare:
            if args.run_dir is not None:
                print("error: give RUN_DIR or --compare OLD NEW, not both", file=sys.stderr)
                return 2
            old, new = args.compare
            page = write_compare(old, new, args.out)
        elif args.run_dir is not None:
            page = write_report(args.run_dir)
        else:
            print("error: give RUN_DIR or --compare OLD NEW", file=sys.stderr)
            return 2
    except ReportError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"report: {page}")
    if args.open:
        webbrowser.open(page.resolve().as_uri())
    return 0
