"""How the command ends: exit statuses for Ctrl-C (130), SIGTERM (143) and a reader closing the pipe,
with clean-up code run on the way out whatever stopped us."""

from __future__ import annotations

import contextlib
import signal
import sys
import warnings

import click

from ..errors import first_line
from ..sources.atomic import held_or_now, remove_leftovers
from ..sources.streams import encode_what_streams_can, open_closed_stderr, silence_stdout
from .options import ReaderGone


def run_main(main: click.Group) -> None:
    """Run the Click group, then exit with the status a shell expects, however the run ended."""
    _signals_become_exceptions()
    open_closed_stderr()
    encode_what_streams_can()
    warnings.showwarning = _show_warning_in_one_line
    try:
        status = _run_and_clean_up(main)
    except click.exceptions.Abort:  # Click's wrapper for KeyboardInterrupt
        sys.stderr.write("Interrupted\n")
        status = 128 + signal.SIGINT
    except click.ClickException as error:
        error.show()
        status = error.exit_code
    except (BrokenPipeError, ReaderGone):
        silence_stdout()
        status = 128 + signal.SIGPIPE
    except Exception as error:
        # A signal that lands inside a library (Numba compiling, say) can surface as that library's own
        # error raised while the KeyboardInterrupt or SystemExit unwound: it is still an interruption.
        status = _interruption_status(error)
        if status is None:
            raise
    status = status if isinstance(status, int) else 0
    if status == 0 and _received_signal is not None:  # its exception was dropped on the way (a callback's)
        status = 128 + _received_signal
    _signals_back_to_their_defaults()
    sys.exit(status)


def _signals_back_to_their_defaults() -> None:
    """Once the run is over (outputs in place, temporaries gone), a signal during the interpreter's last
    steps ends the process as the signal does: raised there, in an exit handler, it would be dropped."""
    for signum in (signal.SIGINT, signal.SIGTERM, *_TERMINATING):
        with contextlib.suppress(OSError, ValueError):
            if signal.getsignal(signum) not in (signal.SIG_IGN, None):
                signal.signal(signum, signal.SIG_DFL)


def _show_warning_in_one_line(message, category, filename, lineno, file=None, line=None) -> None:
    """A warning on the command line is one line, as an error is: no source file, no line of code."""
    (file or sys.stderr).write(f"warning: {first_line(message)}\n")


def _run_and_clean_up(main: click.Group):
    try:
        return main.main(standalone_mode=False)
    finally:
        remove_leftovers()  # a temporary a signal struck before anything else could remove it


def _interruption_status(error: BaseException | None) -> int | None:
    while error is not None:
        if isinstance(error, KeyboardInterrupt | click.exceptions.Abort):
            sys.stderr.write("Interrupted\n")
            return 128 + signal.SIGINT
        if isinstance(error, SystemExit) and _received_signal and error.code == 128 + _received_signal:
            return error.code
        error = error.__context__
    # The handler's exception can also be lost on the way: raised inside a ctypes callback (llvmlite
    # calls back into Python while Numba compiles), it is printed and dropped, and the compiler then
    # fails with an error of its own.  The signal still arrived, so it is still an interruption.
    if _received_signal == signal.SIGINT:
        sys.stderr.write("Interrupted\n")
    return None if _received_signal is None else 128 + _received_signal


_received_signal: int | None = None


# Signals whose default action ends the process and that another process (or the terminal, or a timer)
# sends: each unwinds like SIGTERM, so the clean-up code runs, and exits with 128 + its number. SIGPIPE is
# left to Python (a write then fails with BrokenPipeError); faults (SIGSEGV, SIGBUS, ...) cannot be
# handled in Python; SIGXFSZ is ignored (below).
_TERMINATING_NAMES = "SIGHUP SIGQUIT SIGUSR1 SIGUSR2 SIGALRM SIGSTKFLT SIGXCPU SIGVTALRM SIGPROF SIGIO SIGPWR"
_TERMINATING = (
    *(getattr(signal, name) for name in _TERMINATING_NAMES.split() if hasattr(signal, name)),
    *(range(signal.SIGRTMIN, signal.SIGRTMAX + 1) if hasattr(signal, "SIGRTMIN") else ()),
)


def _signals_become_exceptions() -> None:
    """Let every way of stopping us run the clean-up code (temporary outputs are removed on the way out).

    A file-size limit would otherwise kill the process with SIGXFSZ mid-write; ignored, the write fails
    with EFBIG and is reported. SIGTERM unwinds like Ctrl-C, with the conventional status 143, and so
    does every other signal that would end the process, unless it was ignored when we started (nohup).
    """
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, held_or_now(_exit_on_signal))
    for signum in _TERMINATING:
        with contextlib.suppress(OSError, ValueError):  # (signals the C library keeps for itself)
            if signal.getsignal(signum) is signal.SIG_DFL:
                signal.signal(signum, held_or_now(_exit_on_signal))
    if signal.getsignal(signal.SIGINT) is signal.default_int_handler:
        signal.signal(signal.SIGINT, held_or_now(_interrupt_on_sigint))
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


def _exit_on_signal(signum, frame) -> None:
    """Say what stopped us as a shell would ("Terminated", "Hangup", ...) and unwind with 128 + N."""
    global _received_signal
    _received_signal = signum
    sys.stderr.write(f"{signal.strsignal(signum) or f'Signal {signum}'}\n")
    raise SystemExit(128 + signum)
