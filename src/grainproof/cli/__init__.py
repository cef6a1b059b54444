"""The `grainproof` command line: thin typer commands over the same services the API uses.

Each area registers its commands from its own module below; heavy libraries (torch, geopandas)
are imported inside commands so `grainproof --help` stays fast.
"""

from __future__ import annotations

import sys

import typer

from grainproof.errors import GrainproofError
from grainproof.progress import err_console

app = typer.Typer(
    name="grainproof",
    help="Verify the declared origin and harvest date of grain lots from smartphone photos.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)

bench_app = typer.Typer(
    help="Benchmarks: each prints a baseline and ours from the same run, and their ratio.", no_args_is_help=True
)
app.add_typer(bench_app, name="bench")


def _register_commands() -> None:
    """Import each area's command module so its commands attach to `app` (or `bench_app`)."""
    import importlib
    import pkgutil

    import grainproof.cli as package

    for module in sorted(m.name for m in pkgutil.iter_modules(package.__path__)):
        if not module.startswith("_"):
            importlib.import_module(f"grainproof.cli.{module}")


_register_commands()


def main() -> None:
    """Console-script entry: user errors become one clear message and exit code 2, no stack trace."""
    try:
        app()
    except GrainproofError as exc:
        err_console.print(f"[bold red]error:[/] {exc}", highlight=False, markup=True)
        sys.exit(2)
