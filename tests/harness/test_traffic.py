"""Reading an iperf3 -J log (harness.traffic.transfer_result) without running iperf3."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

from harness.traffic import transfer_result


def _document(received: int) -> str:
    return json.dumps({"start": {}, "end": {"sum_received": {"bytes": received,
                                                            "seconds": 8.0}}}, indent="\t")


def test_a_log_reused_by_a_second_run_reads_the_last_document(tmp_path: Path) -> None:
    log = tmp_path / "iperf3-client.json"
    log.write_text(f"# iperf3 -c x -J\n{_document(1000)}\n# iperf3 -c x -J\n{_document(2000)}\n")
    result = transfer_result(SimpleNamespace(log=log, proc=SimpleNamespace(returncode=0)))
    assert result.ok
    assert result.measurements["transfer_bytes"] == 2000.0


def test_a_log_without_a_document_fails_with_the_exit_status(tmp_path: Path) -> None:
    log = tmp_path / "iperf3-client.json"
    log.write_text("# iperf3 -c x -J\niperf3: error - unable to connect\n")
    result = transfer_result(SimpleNamespace(log=log, proc=SimpleNamespace(returncode=1)))
    assert not result.ok
    assert result.detail.startswith("transfer failed: iperf3 exited 1: ")
    assert "unable to connect" in result.detail
