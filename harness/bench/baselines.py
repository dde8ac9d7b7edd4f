"""Published throughput figures kept as data in ``harness/baselines/*.toml``: foreign hardware,
shown next to the local results as context only, never compared with them."""

from __future__ import annotations

import tomllib
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

BASELINES_DIR = Path(__file__).resolve().parent.parent / "baselines"
REQUIRED = ("name", "label", "source", "description", "hardware", "method", "unit")


class BaselineError(ValueError):
    """A baseline file is missing a field or has a bad value."""


@dataclass(frozen=True, slots=True)
class BaselineResult:
    name: str
    implementation: str
    upload: float
    download: float


@dataclass(frozen=True, slots=True)
class Baseline:
    name: str
    label: str  # how charts and tables title it ("foreign hardware (...) — context only")
    source: str
    description: str
    hardware: str
    method: str
    unit: str
    os: str = ""
    comparable: bool = False
    results: tuple[BaselineResult, ...] = field(default_factory=tuple)
    path: str = ""

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def parse_baseline(data: dict[str, Any], origin: str = "<baseline>") -> Baseline:
    missing = [key for key in REQUIRED if not isinstance(data.get(key), str) or not data[key]]
    if missing:
        raise BaselineError(f"{origin}: missing or empty {', '.join(missing)}")
    rows = data.get("result", [])
    if not isinstance(rows, list) or not rows:
        raise BaselineError(f"{origin}: needs at least one [[result]]")
    results = []
    for index, row in enumerate(rows, 1):
        try:
            upload, download = float(row["upload"]), float(row["download"])
            result = BaselineResult(str(row["name"]), str(row.get("implementation", "")),
                                    upload, download)
        except (KeyError, TypeError, ValueError) as exc:
            raise BaselineError(f"{origin}: result {index} needs name, upload and download "
                                f"numbers ({exc!r})") from exc
        if upload < 0 or download < 0:
            raise BaselineError(f"{origin}: result {index} has a negative rate")
        results.append(result)
    comparable = data.get("comparable", False)
    if not isinstance(comparable, bool):
        raise BaselineError(f"{origin}: comparable must be true or false")
    return Baseline(
        name=data["name"], label=data["label"], source=data["source"],
        description=" ".join(data["description"].split()), hardware=data["hardware"],
        method=data["method"], unit=data["unit"], os=str(data.get("os", "")),
        comparable=comparable, results=tuple(results), path=origin)


def load_baseline(path: Path) -> Baseline:
    try:
        data = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise BaselineError(f"cannot read {path}: {exc}") from exc
    try:
        origin = str(path.resolve().relative_to(BASELINES_DIR.parent.parent))
    except ValueError:
        origin = str(path)
    return parse_baseline(data, origin)


def load_baselines(folder: Path = BASELINES_DIR) -> list[Baseline]:
    return [load_baseline(p) for p in sorted(folder.glob("*.toml"))]
