"""`grainproof manifest check`: validate a lot manifest and summarise it."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import typer
from rich.table import Table

from grainproof.cli import app
from grainproof.progress import console

manifest_app = typer.Typer(help="Read and check lot manifests (the CSV every command uses).", no_args_is_help=True)
app.add_typer(manifest_app, name="manifest")


@manifest_app.command("check")
def check(path: Path = typer.Argument(..., help="Manifest CSV to validate.")) -> None:
    """Check every row of a manifest and print lots per species and variety."""
    from grainproof.manifest import read_manifest

    lots = read_manifest(path)
    counts = Counter((lot.claim.species, lot.claim.variety) for lot in lots)
    table = Table(title=f"{path}: {len(lots)} lots")
    table.add_column("species")
    table.add_column("variety")
    table.add_column("lots", justify="right")
    for (species, variety), n in sorted(counts.items()):
        table.add_row(species, variety, str(n))
    console.print(table)
