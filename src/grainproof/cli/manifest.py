"""`grainproof manifest check`: validate a lot manifest and summarise it."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import typer
from rich.table import Table

from grainproof.cli import app
from grainproof.cli._output import json_option, print_json
from grainproof.errors import ManifestError
from grainproof.progress import console, err_console

manifest_app = typer.Typer(help="Read and check lot manifests (the CSV every command uses).", no_args_is_help=True)
app.add_typer(manifest_app, name="manifest")


@manifest_app.command("check")
def check(path: Path = typer.Argument(..., help="Manifest CSV to validate."), as_json: bool = json_option()) -> None:
    """Check every row of a manifest: list every problem with its line, or print lots per species and variety."""
    from grainproof.manifest import read_manifest

    try:
        lots = read_manifest(path)
    except ManifestError as exc:
        # Every problem, however many: other commands stop at the first 50, this one is for fixing the file.
        if as_json:
            print_json({"path": str(path), "ok": False, "problems": exc.problems})
        else:
            err_console.print(f"{path}: {len(exc.problems)} problem(s) in the lot manifest:", highlight=False)
            for problem in exc.problems:
                err_console.print(f"  - {problem}", highlight=False, markup=False)
        raise typer.Exit(2) from None
    counts = Counter((lot.claim.species, lot.claim.variety) for lot in lots)
    if as_json:
        varieties = [{"species": s, "variety": v, "lots": n} for (s, v), n in sorted(counts.items())]
        print_json({"path": str(path), "ok": True, "lots": len(lots), "varieties": varieties})
        return
    table = Table(title=f"{path}: {len(lots)} lots")
    table.add_column("species")
    table.add_column("variety")
    table.add_column("lots", justify="right")
    for (species, variety), n in sorted(counts.items()):
        table.add_row(species, variety, str(n))
    console.print(table)
