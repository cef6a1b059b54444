"""Progress reporting shared by services and the CLI, without tying services to a terminal.

Services accept an optional `ProgressCallback`; the CLI passes one backed by a rich progress bar,
the API passes none.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

#: Called with (units done so far, total units); services call it as they go.
ProgressCallback = Callable[[int, int], None]

#: Results for people go to stdout; progress and errors to stderr so stdout stays pipeable.
console = Console()
err_console = Console(stderr=True)


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
