"""The standard streams as a command-line tool must treat them: closed ones named in one line, a stream
that cannot take a character given a plain-ASCII stand-in, and a failed stdout silenced so that
Python's last flush does not fail a second time. No NumPy here: every command uses it."""

from __future__ import annotations

import codecs
import contextlib
import os
import sys

from ..errors import InputError

# Plain-ASCII stand-ins for the characters the tables and messages use, for streams whose encoding
# lacks them (PYTHONIOENCODING=ascii, a latin-1 terminal); anything else becomes "?".
_ASCII_STAND_INS = {
    "×": "x",
    "·": ".",
    "Σ": "S",
    "→": "->",
    "←": "<-",
    "÷": "/",
    "≥": ">=",
    "≤": "<=",
    "²": "^2",
    "—": "-",
    "–": "-",
    "…": "...",
    "─": "-",
    "━": "=",
    "│": "|",
    "’": "'",
    "≈": "~",
}
_ERROR_HANDLER = "conv1x1-ascii"


def _stand_in(error: UnicodeError) -> tuple[str, int]:
    assert isinstance(error, UnicodeEncodeError)  # (registered for encoding only)
    text = error.object[error.start : error.end]
    return "".join(_ASCII_STAND_INS.get(character, "?") for character in text), error.end


codecs.register_error(_ERROR_HANDLER, _stand_in)


def encode_what_streams_can() -> None:
    """Let stdout and stderr write any text: characters their encoding lacks get plain stand-ins."""
    for stream in (sys.stdout, sys.stderr):
        if stream is not None and hasattr(stream, "reconfigure") and not _is_utf(stream.encoding):
            stream.reconfigure(errors=_ERROR_HANDLER)


def _is_utf(encoding: str | None) -> bool:
    return (encoding or "").lower().replace("-", "").replace("_", "").startswith("utf")


def binary_stdio(reading: bool):
    """stdin's (``reading``) or stdout's binary buffer, for .npy data: a closed stream, or a terminal
    (where binary data would wait for typing, or spray the screen), is one ``InputError`` line."""
    stream, name = (sys.stdin, "<stdin>") if reading else (sys.stdout, "<stdout>")
    if stream is None:
        raise InputError(f"{name}: standard {'input' if reading else 'output'} is closed")
    if stream.isatty():
        action = (
            "read binary .npy data from a terminal; pipe it in or name a file"
            if reading
            else ("write binary .npy data to a terminal; redirect it or use -o FILE")
        )
        raise InputError(f"{name}: refusing to {action}")
    return stream.buffer


def open_closed_stderr() -> None:
    """A closed stderr (``2>&-``) swallows diagnostics rather than failing the run that writes them."""
    if sys.stderr is None:
        sys.stderr = open(os.devnull, "w")  # noqa: SIM115 (for the life of the process)


def text_stdout():
    """stdout for text, as a stream whose failed writes (a full disk, a closed descriptor) are one
    ``InputError`` line; a reader closing the pipe still raises BrokenPipeError."""
    if sys.stdout is None:
        raise InputError("<stdout>: standard output is closed")
    return _ReportingStream(sys.stdout)


class _ReportingStream:
    """A text stream whose write and flush errors become ``InputError``s (after silencing stdout)."""

    def __init__(self, stream):
        self._stream = stream

    def write(self, text: str) -> int:
        with reporting_stdout_errors():
            return self._stream.write(text)

    def flush(self) -> None:
        with reporting_stdout_errors():
            self._stream.flush()

    def __getattr__(self, name: str):
        return getattr(self._stream, name)


@contextlib.contextmanager
def reporting_stdout_errors():
    """A failed write to stdout is one line; a reader closing the pipe early is not an error here."""
    try:
        yield
    except BrokenPipeError:
        raise
    except OSError as error:
        silence_stdout()
        raise InputError(f"<stdout>: write failed ({error.strerror or error})") from None


def silence_stdout() -> None:
    """Point stdout at /dev/null, so that Python's final flush of what is left does not fail again."""
    with contextlib.suppress(OSError, AttributeError, ValueError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
