"""The CLI lists its commands and turns user errors into one clear line (no stack trace)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", "from grainproof.cli import main; main()", *args],
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_help_lists_commands() -> None:
    result = _run("--help")
    assert result.returncode == 0
    assert "manifest" in result.stdout


def test_bad_manifest_is_one_clear_error_without_traceback(tmp_path: Path) -> None:
    bad = tmp_path / "lots.csv"
    bad.write_text("lot_id,species,variety,lon,lat,photos\nL1,barley,Planet,4.0,123,x.jpg\n")
    result = _run("manifest", "check", str(bad))
    assert result.returncode == 2
    assert "line 2" in result.stderr and "lat 123" in result.stderr
    assert "Traceback" not in result.stderr + result.stdout
