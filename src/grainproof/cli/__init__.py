"""The `grainproof` command line: thin typer commands over the same services the API uses.

Each area registers its commands from its own module below; heavy libraries (numpy, torch, geopandas)
are imported inside commands so `grainproof --help` stays fast (tests/unit/test_cli_basics.py checks it).
"""

from __future__ import annotations

import sys

import typer

from grainproof.errors import GrainproofError
from grainproof.progress import console, err_console

app = typer.Typer(
    name="grainproof",
    help="Verify the declared origin and harvest date of grain lots from smartphone photos.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    # Typer's rich help prints a type after every option, flags too (`--overwrite <bool>`, as if they took a
    # value); click's plain help shows flags as flags. The setting holds for every command and group below.
    rich_markup_mode=None,
    # Click wraps help at 80 columns at most by default; use up to 120 where the terminal is that wide.
    context_settings={"max_content_width": 120},
)


def _print_version(requested: bool) -> None:
    if requested:
        from importlib.metadata import version

        console.print(f"grainproof {version('grainproof')}", highlight=False)
        raise typer.Exit()


@app.callback()
def _main(
    _version: bool = typer.Option(
        False, "--version", is_eager=True, callback=_print_version, help="Print the version and exit."
    ),
) -> None:
    """Verify the declared origin and harvest date of grain lots from smartphone photos."""


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
