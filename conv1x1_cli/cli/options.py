"""What the commands share: the options written the same way everywhere, the consoles, and the
command class that turns the package's errors into Click's one-line errors."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable
from typing import Any

import click

from ..costs.volume import ACTIVATIONS, DTYPE_BYTES, LAYOUTS, WEIGHT_LAYOUTS
from ..errors import ArgumentError, Conv1x1Error

LAYOUT_OPTION = click.option(
    "--layout",
    type=click.Choice(list(LAYOUTS)),
    default="nhwc",
    show_default=True,
    help="Axis order of the data: channels last (NHWC / HWC) or first (NCHW / CHW).",
)
# The options of the commands that read banks (apply, explain), written once.
BIAS_FILES_OPTION = click.option(
    "--bias", "bias_paths", multiple=True, metavar="B.npy", help="Bias of shape (F,); repeat once per bank, in order."
)
WEIGHTS_LAYOUT_OPTION = click.option(
    "--weights-layout",
    type=click.Choice(list(WEIGHT_LAYOUTS)),
    default="cf",
    show_default=True,
    help="Axis order of 2-D banks: (C, F) or (F, C). 4-D PyTorch and Keras banks are recognised.",
)
ACTIVATION_OPTION = click.option(
    "--activation",
    type=click.Choice(list(ACTIVATIONS)),
    default="relu",
    show_default=True,
    help="ReLU after the (last) layer, or none.",
)


def check_bias_count(bias_paths, weight_paths) -> None:
    """At most one --bias per bank: more is a usage error."""
    if len(bias_paths) > len(weight_paths):
        banks = f"{len(weight_paths)} bank" + ("s" if len(weight_paths) > 1 else "")
        raise click.BadParameter(
            f"given {len(bias_paths)} times for {banks}: at most one per bank", param_hint="'--bias'"
        )


BIAS_OPTION = click.option("--bias/--no-bias", default=True, show_default=True, help="Count a bias per filter.")
DTYPE_OPTION = click.option(
    "--dtype",
    type=click.Choice(list(DTYPE_BYTES)),
    default="float32",
    show_default=True,
    help="Element type for byte sizes.",
)
FORMAT_OPTION = click.option(
    "--format", "fmt", type=click.Choice(["table", "json", "csv"]), default="table", show_default=True
)


class ReaderGone(Exception):
    """The reader of our stdout closed it early (``| head``): not an OSError, so that Click does not
    turn it into exit status 1 before ``signals.run_main`` can give the shell's 141."""


class Command(click.Command):
    """A command whose run turns any ``Conv1x1Error`` (bad data, bad arguments, a lost cluster) into
    Click's one error line and exit status 1, with no traceback."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except ArgumentError as error:
            if error.option is None:
                raise click.ClickException(str(error)) from None
            raise click.BadParameter(str(error), ctx=ctx, param_hint=f"'{error.option}'") from None
        except Conv1x1Error as error:
            raise click.ClickException(str(error)) from None
        except BrokenPipeError:
            raise ReaderGone from None


@contextlib.contextmanager
def usage_error(param_hint: str):
    """Report an ``ArgumentError`` raised inside as a usage error of ``param_hint`` (exit status 2)."""
    try:
        yield
    except ArgumentError as error:
        raise click.BadParameter(str(error), param_hint=param_hint) from None


@contextlib.contextmanager
def quiet_libraries(quiet: bool):
    """With ``-q``: no warning and no log record reaches stderr while the block runs, ours or those of
    the libraries a run uses (distributed, fsspec, aiohttp). Errors still end the run as one line."""
    if not quiet:
        yield
        return
    import logging
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        logging.disable(logging.CRITICAL)
        try:
            yield
        finally:
            logging.disable(logging.NOTSET)


def stdout_console():
    """A rich console on stdout; a closed or failing stdout becomes one error line."""
    from ..render.tables import make_console
    from ..sources.streams import text_stdout

    return make_console(file=text_stdout())


PLOT_HELP = 'Draw it as a PNG picture at this path (- for stdout); needs pip install "conv1x1[plot]".'


def write_picture(path: str, draw: Callable[[], bytes]) -> None:
    """Draw a picture (``draw()`` gives PNG bytes) and write it to ``path`` atomically, or to stdout
    with ``-``: drawn first, so that nothing is written when it cannot be drawn."""
    from ..sources.npy import BinaryOutput

    picture = draw()
    with BinaryOutput(path, "PNG") as output:
        output.write_bytes(picture)


# ---------------------------------------------------------------------------------------------------
# --storage-option KEY=VALUE


def storage_options(pairs: Iterable[str]) -> dict[str, Any]:
    """``KEY=VALUE`` pairs as the keyword arguments of an fsspec file system.

    A VALUE that reads as JSON is that value (``true``, ``3``, ``null``, ``{"a": 1}``), anything else
    a string; a dotted KEY (``client_kwargs.region_name``) fills a nested dictionary, as s3fs's
    ``client_kwargs`` and ``config_kwargs`` want.

    >>> storage_options(["endpoint_url=http://127.0.0.1:8333", "anon=true", "client_kwargs.region_name=eu-west-1"])
    {'endpoint_url': 'http://127.0.0.1:8333', 'anon': True, 'client_kwargs': {'region_name': 'eu-west-1'}}
    """
    options: dict[str, Any] = {}
    for pair in pairs:
        key, separator, text = pair.partition("=")
        if not separator or not key.strip():
            raise ArgumentError(f"{pair!r} is not KEY=VALUE")
        *parents, name = key.strip().split(".")
        level = options
        for parent in parents:
            level = level.setdefault(parent, {})
            if not isinstance(level, dict):
                raise ArgumentError(f"{key}: {parent} is given both a value and keys")
        if isinstance(level.get(name), dict):
            raise ArgumentError(f"{key}: is given both a value and keys")
        level[name] = _json_or_text(text)
    return options


def _json_or_text(text: str) -> Any:
    import json

    try:
        return json.loads(text)
    except ValueError:
        return text
