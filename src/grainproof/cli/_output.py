"""How commands print their results: a table for people, or JSON for scripts (`--json`), with the same figures.

With `--json` stdout carries the JSON document alone (progress and notes go to stderr), so it pipes into `jq`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer

from grainproof.progress import console, err_console


def json_option() -> Any:
    """The `--json` flag every command that prints a table takes."""
    return typer.Option(False, "--json", help="Print the results as one JSON document instead of a table.")


def json_out_option() -> Any:
    """The `--json-out PATH` option of the benchmarks: keep the figures in a file as well."""
    return typer.Option(None, "--json-out", help="Also write the figures as JSON here.")


def _plain(value: Any) -> Any:
    """JSON's view of values the results hold (paths, tuples, numpy numbers)."""
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "item"):  # numpy scalars
        return value.item()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def print_json(data: Any) -> None:
    """The results as one JSON document on stdout."""
    console.print_json(data=data, default=_plain, highlight=console.is_terminal)


def write_json(path: Path | None, data: Any) -> None:
    """Write the results to a JSON file (when a path is given) and say so on stderr."""
    if path is None:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, sort_keys=True, default=_plain) + "\n", encoding="utf-8")
    err_console.print(f"wrote {path}", highlight=False)
