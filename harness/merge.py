"""``python -m harness merge OUT SHARD_DIR...``: the folders of a ``--shard K/N`` run (one per
CI machine) combined into one run folder - results.json, junit.xml, summary.md and index.html
over every cell, in plan order, with each cell's folder (logs, pcaps, key logs) copied in and
each shard's host and times kept under ``shards``.

It refuses, saying which folder and why: a folder without results.json or not run with
``--shard``; shards of different plans (other peers, scenarios or order), of different code
(harness, wgref or scenarios), of different N; a shard given twice or missing.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

from .report import write_all
from .results import CellResult, PeerInfo, RunResult, load_results, now_iso

RESULTS = "results.json"


class MergeError(ValueError):
    """Shard folders that cannot be merged; the message says which and why."""


def _load(folder: Path) -> RunResult:
    path = folder / RESULTS
    if not path.is_file():
        raise MergeError(f"{folder}: no {RESULTS} (not a harness run folder)")
    try:
        run = load_results(path)
    except (ValueError, TypeError, KeyError) as exc:
        raise MergeError(f"{path}: unreadable ({exc})") from exc
    if not run.shard:
        raise MergeError(f"{folder}: not a shard (it was not run with --shard K/N)")
    return run


def _check(shards: list[tuple[Path, RunResult]]) -> None:
    first_dir, first = shards[0]
    assert first.shard is not None
    for folder, run in shards[1:]:
        assert run.shard is not None
        for key, what in (("version", "code (harness, wgref or scenarios)"),
                          ("count", "number of shards"), ("plan", "plan (peers, scenarios)")):
            if run.shard.get(key) != first.shard.get(key):
                raise MergeError(
                    f"{folder} and {first_dir} ran different {what}: {key} "
                    f"{run.shard.get(key)} vs {first.shard.get(key)}; merge only the shards "
                    "of one `--shard K/N` run")
    count = int(first.shard["count"])
    seen: dict[int, Path] = {}
    for folder, run in shards:
        assert run.shard is not None
        index = int(run.shard["index"])
        if index in seen:
            raise MergeError(f"shard {index}/{count} given twice: {seen[index]} and {folder}")
        seen[index] = folder
    missing = [f"{k}/{count}" for k in range(1, count + 1) if k not in seen]
    if missing:
        raise MergeError(f"shard {', '.join(missing)} missing (given: "
                         f"{', '.join(f'{k}/{count}' for k in sorted(seen))})")


def _copy_cell(cell: CellResult, shard_dir: Path, out: Path) -> None:
    if not cell.folder:
        return
    source = Path(cell.folder)  # load_results made it a path from here
    try:
        rel = source.resolve().relative_to(shard_dir.resolve())
    except ValueError:
        rel = Path(source.parent.name) / source.name  # client_server/scenario
    if source.is_dir():
        shutil.copytree(source, out / rel, dirs_exist_ok=True)
    cell.folder = str(out / rel)


def merge(out: Path, shard_dirs: list[Path]) -> tuple[RunResult, dict[str, Path]]:
    """Write the merged run into ``out``; (the merged run, the reports written)."""
    if not shard_dirs:
        raise MergeError("no shard folders given")
    out_resolved = out.resolve()
    for folder in shard_dirs:
        if folder.resolve() == out_resolved:
            raise MergeError(f"OUT {out} is one of the shard folders; give a new folder")
    shards = [(folder, _load(folder)) for folder in shard_dirs]
    _check(shards)
    shards.sort(key=lambda item: int((item[1].shard or {})["index"]))
    first = shards[0][1]
    order = {key: i for i, key in enumerate((first.shard or {}).get("order", []))}
    merged = RunResult(started=min(r.started for _, r in shards), ended=now_iso(),
                       seconds=max(r.seconds for _, r in shards), command=sys.argv,
                       host={"merged": f"{len(shards)} shards"},
                       interrupted=any(r.interrupted for _, r in shards))
    peers: dict[str, PeerInfo] = {}
    scenarios: dict[str, dict[str, object]] = {}
    out.mkdir(parents=True, exist_ok=True)
    for folder, run in shards:
        for peer in run.peers:
            peers.setdefault(peer.name, peer)
        for scenario in run.scenarios:
            scenarios.setdefault(str(scenario.get("name")), scenario)
        for cell in run.cells:
            _copy_cell(cell, folder, out)
        merged.cells += run.cells
        merged.shards.append({"index": (run.shard or {}).get("index"),
                              "folder": os.path.relpath(folder.resolve(), out.resolve()),
                              "host": run.host, "started": run.started, "ended": run.ended,
                              "seconds": run.seconds, "command": run.command,
                              "cells": len(run.cells)})
    merged.ended = max((r.ended for _, r in shards), default=merged.ended)
    merged.cells.sort(key=lambda c: order.get(c.key, len(order)))
    merged.peers = list(peers.values())
    merged.scenarios = list(scenarios.values())
    merged.shard = None
    paths = write_all(merged, out)
    from .html import write_report_quietly

    page = write_report_quietly(out)
    if page is not None:
        paths["html"] = page
    return merged, paths
