"""The one progress bar: rich, on stderr, drawn only when stderr is a terminal and gone when done."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable, Iterator


def stderr_console():
    from .tables import make_console

    return make_console(stderr=True)


@contextlib.contextmanager
def progress_bar(label: str, enabled: bool = True) -> Iterator[Callable[..., None] | None]:
    """Yields ``advance(done_now, total, what=None)`` that moves the bar on by ``done_now`` of ``total``
    units (and names the step ``what`` when given), or None when there is nothing to draw on: callers
    pass it on as an optional callback."""
    if not (enabled and sys.stderr.isatty()):
        yield None
        return
    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

    columns = (TextColumn("{task.description}"), BarColumn(), TextColumn("{task.percentage:>3.0f}%"))
    with Progress(*columns, TimeRemainingColumn(), console=stderr_console(), transient=True) as bar:
        task = bar.add_task(label, total=None)

        def advance(done_now: int, total: int, what: str | None = None) -> None:
            if what:
                bar.update(task, advance=done_now, total=total, description=what)
            else:
                bar.update(task, advance=done_now, total=total)

        yield advance
