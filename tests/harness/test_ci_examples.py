"""docs/ci/: the GitHub Actions and GitLab examples run `nox -s interop -- --shard K/N` with
arguments `harness run` accepts, one shard per job of the CI's matrix, and merge every shard
folder with `harness merge` (the flow itself runs in test_shard_merge.py)."""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Any

import yaml

from harness.cli import _parser

CI = Path(__file__).resolve().parents[2] / "docs" / "ci"


def _commands(job: dict[str, Any], values: dict[str, str] | None = None) -> list[list[str]]:
    """The job's shell commands as argv lists, with CI variables replaced by ``values``."""
    lines: list[str] = []
    for key in ("before_script", "script"):
        lines += job.get(key, [])
    lines += [str(step["run"]) for step in job.get("steps", []) if "run" in step]
    out = []
    for line in lines:
        for name, value in (values or {}).items():
            line = line.replace(name, value)
        for cmd in line.replace("\\\n", " ").split("\n"):
            if cmd.strip():
                out.append(shlex.split(cmd))
    return out


def _interop_args(job: dict[str, Any], values: dict[str, str]) -> list[str]:
    (argv,) = [a for a in _commands(job, values)
               if a and a[0].endswith("nox") and "interop" in a]
    return argv[argv.index("--") + 1:]


def _merge_argv(job: dict[str, Any]) -> list[str]:
    (argv,) = [a for a in _commands(job) if "merge" in a and "harness" in a]
    return argv[argv.index("harness") + 1:]


def test_github_actions_runs_each_shard_of_the_matrix_and_merges_them() -> None:
    doc = yaml.safe_load((CI / "github-actions.yml").read_text())
    shard_job, merge_job = doc["jobs"]["shard"], doc["jobs"]["merge"]
    shards = shard_job["strategy"]["matrix"]["shard"]
    count = int(doc["env"]["SHARDS"])
    assert shards == list(range(1, count + 1))
    assert shard_job["strategy"]["fail-fast"] is False
    assert "--privileged" in shard_job["container"]["options"]
    for k in shards:
        values = {"${{ matrix.shard }}": str(k), "${{ env.SHARDS }}": str(count)}
        parsed = _parser().parse_args(["run", *_interop_args(shard_job, values)])
        assert (parsed.shard.index, parsed.shard.count) == (k, count)
        assert parsed.out == Path(f"results/shard-{k}")
    upload = next(s for s in shard_job["steps"] if "upload-artifact" in s.get("uses", ""))
    assert upload["if"] == "always()"
    assert merge_job["needs"] == "shard" and merge_job["if"] == "always()"
    merge = _parser().parse_args(_merge_argv(merge_job))
    assert merge.command == "merge" and merge.out == Path("results/interop")
    assert [str(p) for p in merge.shards] == ["shards/interop-shard-*"]


def test_gitlab_runs_parallel_shards_and_merges_them() -> None:
    doc = yaml.safe_load((CI / "gitlab-ci.yml").read_text())
    interop = doc["interop"]
    count = int(interop["parallel"])
    for k in range(1, count + 1):
        values = {"$CI_NODE_INDEX": str(k), "$CI_NODE_TOTAL": str(count)}
        parsed = _parser().parse_args(["run", *_interop_args(interop, values)])
        assert (parsed.shard.index, parsed.shard.count) == (k, count)
        assert parsed.out == Path(f"results/shard-{k}")
    assert interop["artifacts"]["when"] == "always"
    merge = doc[".merge"]
    assert merge["needs"] == ["interop"]
    parsed = _parser().parse_args(_merge_argv(merge))
    assert parsed.command == "merge" and parsed.out == Path("public")
    assert {doc["merge"]["extends"], doc["pages"]["extends"]} == {".merge"}
