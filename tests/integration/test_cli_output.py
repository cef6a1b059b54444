"""Commands print in full where no terminal is (pipes, CI logs) and answer in JSON with --json."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

BENCH_REFERENCE = [
    "bench",
    "reference",
    "--sizes",
    "500",
    "--dim",
    "8",
    "--update-lots",
    "0",
    "--baseline-max-lots",
    "500",
    "--threads",
    "1",
]
#: bench reference's column headers: 7 columns, wider together than the 80 columns rich assumes without a terminal.
HEADERS = (
    "lots",
    "build s",
    "s per 10k lots",
    "peak MiB",
    "all-in-memory build s",
    "all-in-memory MiB",
    "raw vectors (float64) MiB",
)


def _piped(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """The command with stdout and stderr going to pipes, as in CI or `| tee` (no COLUMNS set)."""
    env = {k: v for k, v in os.environ.items() if k != "COLUMNS"}
    return subprocess.run(
        [sys.executable, "-c", "from grainproof.cli import main; main()", *args],
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
        cwd=cwd,
    )


def test_piped_bench_prints_every_column_header_whole(tmp_path: Path) -> None:
    result = _piped(*BENCH_REFERENCE, "--work-dir", str(tmp_path), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    header_line = next(line for line in result.stdout.splitlines() if "build s" in line)
    cells = [cell.strip() for cell in header_line.strip("┃│ ").replace("│", "┃").split("┃")]
    assert cells == list(HEADERS), header_line
    assert "…" not in result.stdout


def test_bench_answers_in_json_on_stdout_alone(tmp_path: Path) -> None:
    figures_file = tmp_path / "figures.json"
    result = _piped(
        *BENCH_REFERENCE, "--work-dir", str(tmp_path), "--json", "--json-out", str(figures_file), cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr
    figures = json.loads(result.stdout)
    assert figures["builds"][0]["lots"] == 500 and figures["builds"][0]["streaming"]["build_s"] > 0
    assert json.loads(figures_file.read_text()) == figures
