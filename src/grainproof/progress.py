"""Progress reporting shared by services and the CLI, without tying services to a terminal.

Services accept an optional `ProgressCallback`; the CLI passes one backed by a rich progress bar,
the API passes none.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

#: Called with (units done so far, total units); services call it as they go.
ProgressCallback = Callable[[int, int], None]

#: Width of output that goes to a file or a pipe: wide enough that no table column is cut.
UNBOUNDED_WIDTH = 1000


def _console(*, stderr: bool = False) -> Console:
    """A console that fits the terminal, or prints in full where no terminal is (a pipe, a file, a CI log).

    Rich assumes 80 columns without a terminal and cuts table cells to fit ("endpo…"); figures in a log must be
    readable, so a redirected console gets an unbounded width (COLUMNS, when set, still wins).
    """
    console = Console(stderr=stderr)
    if console.is_terminal or "COLUMNS" in os.environ:
        return console
    return Console(stderr=stderr, width=UNBOUNDED_WIDTH)


#: Results for people go to stdout; progress and errors to stderr so stdout stays pipeable.
console = _console()
err_console = _console(stderr=True)


@contextmanager
def progress_bar(description: str, total: int | None = None) -> Iterator[ProgressCallback]:
    """A rich progress bar on stderr; yields a callback taking (done, total)."""
    with Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=err_console,
        transient=False,
    ) as progress:
        task = progress.add_task(description, total=total)

        def update(done: int, total_now: int) -> None:
            progress.update(task, completed=done, total=total_now)

        yield update
