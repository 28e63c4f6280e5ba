"""How the command ends: exit statuses for Ctrl-C (130), SIGTERM (143) and a reader closing the pipe,
with clean-up code run on the way out whatever stopped us."""

from __future__ import annotations

import contextlib
import os
import signal
import sys

import click


def run_main(main: click.Group) -> None:
    """Run the Click group, then exit with the status a shell expects, however the run ended."""
    _signals_become_exceptions()
    try:
        status = main.main(standalone_mode=False)
    except click.exceptions.Abort:  # Click's wrapper for KeyboardInterrupt
        sys.stderr.write("Interrupted\n")
        status = 128 + signal.SIGINT
    except click.ClickException as error:
        error.show()
        status = error.exit_code
    except BrokenPipeError:
        _silence_stdout()
        status = 128 + signal.SIGPIPE
    except Exception as error:
        # A signal that lands inside a library (Numba compiling, say) can surface as that library's own
        # error raised while the KeyboardInterrupt or SystemExit unwound: it is still an interruption.
        status = _interruption_status(error)
        if status is None:
            raise
    sys.exit(status if isinstance(status, int) else 0)


def _interruption_status(error: BaseException) -> int | None:
    while error is not None:
        if isinstance(error, KeyboardInterrupt | click.exceptions.Abort):
            sys.stderr.write("Interrupted\n")
            return 128 + signal.SIGINT
        if isinstance(error, SystemExit) and error.code == 128 + signal.SIGTERM:
            return error.code
        error = error.__context__
    # The handler's exception can also be lost on the way: raised inside a ctypes callback (llvmlite
    # calls back into Python while Numba compiles), it is printed and dropped, and the compiler then
    # fails with an error of its own.  The signal still arrived, so it is still an interruption.
    if _received_signal == signal.SIGINT:
        sys.stderr.write("Interrupted\n")
    return None if _received_signal is None else 128 + _received_signal


_received_signal: int | None = None


def _signals_become_exceptions() -> None:
    """Let every way of stopping us run the clean-up code (temporary outputs are removed on the way out).

    A file-size limit would otherwise kill the process with SIGXFSZ mid-write; ignored, the write fails
    with EFBIG and is reported. SIGTERM unwinds like Ctrl-C, with the conventional status 143.
    """
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    if signal.getsignal(signal.SIGINT) is signal.default_int_handler:
        signal.signal(signal.SIGINT, _interrupt_on_sigint)
    sys.unraisablehook = _quiet_about_lost_interrupts


def _quiet_about_lost_interrupts(unraisable) -> None:
    """Stay quiet about exceptions Python can only print (in a ctypes callback, a ``__del__``) once we
    are stopping for a signal: our handlers' own exceptions raised there (the signal is recorded in
    _received_signal and reported once, on the way out), and the clean-up errors of library objects
    the interruption left half-built (llvmlite's, when Ctrl-C lands in Numba's compiler)."""
    if _received_signal is None and not isinstance(unraisable.exc_value, KeyboardInterrupt | SystemExit):
        sys.__unraisablehook__(unraisable)


def _interrupt_on_sigint(signum, frame) -> None:
    global _received_signal
    _received_signal = signum
    raise KeyboardInterrupt


def _exit_on_sigterm(signum, frame) -> None:
    global _received_signal
    _received_signal = signum
    sys.stderr.write("Terminated\n")
    raise SystemExit(128 + signal.SIGTERM)


def _silence_stdout() -> None:
    """Point stdout at /dev/null so Python's final flush does not complain about the closed pipe."""
    with contextlib.suppress(OSError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
