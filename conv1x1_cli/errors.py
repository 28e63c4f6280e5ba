"""The one family of errors conv1x1 raises on purpose: each message is one line that names the file or
argument at fault and the problem, so the CLI can print it as it is (no traceback).

- ``ArgumentError``: an argument that cannot be right whatever the data (a layout name, a shape spec, a
  filter list, more biases than banks);
- ``InputError``: data that cannot be used (a file that is missing, truncated, pickled or of the wrong
  shape; arrays whose shapes cannot form the convolution asked for);
- ``ClusterError``: a Dask cluster that cannot be reached, or that lost the workers of a task.

All three derive from ``Conv1x1Error``, and the first two from ``ValueError`` as well (the third from
``RuntimeError``), so callers may catch either.

This module imports nothing: every layer of the package may use it.
"""

from __future__ import annotations


class Conv1x1Error(Exception):
    """Base class of the errors conv1x1 raises for bad arguments, bad data and cluster failures."""


class ArgumentError(Conv1x1Error, ValueError):
    """An argument that cannot describe what was asked for (a spec, a layout, an option).

    ``option`` names the command-line option it came from, when there is one, so the CLI can report
    it as a usage error of that option."""

    def __init__(self, message: str, option: str | None = None):
        super().__init__(message)
        self.option = option


class InputError(Conv1x1Error, ValueError):
    """Bad input or output data: the message names the file (or array) and the problem in one line."""


class ClusterError(Conv1x1Error, RuntimeError):
    """The cluster could not be reached, or lost the workers running a task too many times."""


def first_line(error: BaseException | Warning) -> str:
    """The first line of an exception's (or a warning's) message, or its type's name when it has none."""
    text = str(error).strip().splitlines()
    return text[0] if text else type(error).__name__


def tuple_text(shape: tuple[int, ...]) -> str:
    """A shape as Python writes a tuple, ``(3,)`` or ``(2, 3)``, for messages about arrays."""
    return "(" + ", ".join(map(str, shape)) + ("," if len(shape) == 1 else "") + ")"
