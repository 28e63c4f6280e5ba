"""The Python API: ``conv1x1`` on arrays, and ``apply`` on files and stores, each picking its backend.

- ``conv1x1(x, w)``: a NumPy array goes to the engine in this process (the commonest call straight to
  the kernel), a ``dask.array`` becomes a lazy Dask array (``cluster``).
- ``apply(input, weights, output, options)``: .npy files and streams are convolved here chunk by chunk
  (``engine.streaming``); zarr stores, or a Dask scheduler in the options, run on Dask (``cluster``).

Numba is imported only when a convolution actually runs, Dask only when a run needs it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from .costs.volume import ACTIVATIONS, checked_choice, checked_threads
from .engine.arrays import checked_out, convolve_array
from .engine.report import ApplyReport
from .engine.stack import one_layer_function
from .engine.streaming import check_stdin_read_once
from .errors import ArgumentError

if TYPE_CHECKING:  # (what the type checker sees; at run time they load on first use: __getattr__ below)
    from .engine.explain import explain_files, explain_pixel  # noqa: F401
    from .engine.models import extract_tensor, model_cost  # noqa: F401

_FLOAT32, _FLOAT64, _NDARRAY = np.dtype(np.float32), np.dtype(np.float64), np.ndarray  # (a global is read faster)


def conv1x1(
    x: np.ndarray,
    w: np.ndarray | Sequence[np.ndarray],
    bias: np.ndarray | Sequence[np.ndarray | None] | None = None,
    activation: str = "relu",
    *,
    layout: str = "nhwc",
    weights_layout: str = "cf",
    threads: int | None = None,
    out: np.ndarray | None = None,
) -> np.ndarray:
    """ReLU(x · w + bias) at every pixel: a 1x1 convolution.

    ``x`` is channels-last ``(..., C)`` (or ``(N, C, H, W)`` / ``(C, H, W)`` with ``layout="nchw"``),
    ``w`` a ``(C, F)`` bank (``(F, C)`` with ``weights_layout="fc"``; PyTorch ``(F, C, 1, 1)`` and Keras
    ``(1, 1, C, F)`` banks work too), or a list of banks applied in order with ReLU after each.
    float64 input gives float64, anything else float32.

    >>> x = np.array([[[1.0, -2.0]]])            # one pixel, two channels
    >>> w = np.array([[1.0, 3.0], [1.0, 1.0]])   # (C=2, F=2)
    >>> conv1x1(x, w)
    array([[[0., 1.]]])
    >>> conv1x1(x, w.T, weights_layout="fc")
    array([[[0., 1.]]])

    ``out``, as in NumPy's ufuncs: an array of the result's shape and dtype (C-contiguous, writeable)
    to write the result into, and return; a caller that reuses one pays no allocation and no page
    faults on every call. It may be the input itself when the shapes allow (the result goes through
    a temporary then).

    >>> y = np.empty((1, 1, 2))
    >>> conv1x1(x, w, out=y) is y, y
    (True, array([[[0., 1.]]]))

    A ``dask.array.Array`` input (with the ``dask`` extra installed) gives a lazy Dask array: the
    kernel runs block by block through ``map_blocks``.
    """
    if threads is not None:
        threads = checked_threads(threads)
    if weights_layout == "cf" and _is_plain_call(x, w, bias, layout):
        relu = activation == "relu" or checked_choice(activation, ACTIVATIONS, "activation") == "relu"
        # (w is an ndarray and bias one or None, as _is_plain_call found them: typing.cast cost 0.1 us a call)
        if out is not None:
            out = checked_out(out, (*x.shape[:-1], w.shape[1]), x.dtype)  # type: ignore[union-attr]
        return (_one_layer or _load_one_layer())(x, w, bias, relu, threads, out)
    if type(x).__module__.startswith("dask."):
        if out is not None:
            raise ArgumentError("out= is for NumPy arrays; a Dask array's result is lazy (use dask.array.store)")
        from .cluster.blocks import conv1x1_dask

        return conv1x1_dask(x, w, bias, activation, layout=layout, weights_layout=weights_layout, threads=threads)
    return convolve_array(x, w, bias, activation, layout, weights_layout, threads, out=out)


_one_layer: Callable[..., np.ndarray] | None = None  # engine.stack.one_layer_function(), once loaded


def _load_one_layer() -> Callable[..., np.ndarray]:
    global _one_layer
    _one_layer = one_layer_function()
    return _one_layer


def _is_plain_call(x: object, w: object, bias: object, layout: str) -> bool:
    """Whether the call is the commonest kind, which every check of the general path would pass: a
    C-contiguous, aligned channels-last float32 or float64 array, one non-empty 2-D (C, F) bank of its dtype
    and no bias or a (F,) one of that dtype too.

    A handful of attribute reads instead of the general path's checks, which cost 8 us a call on
    a 28x28x192 input (a tenth of 28x28x192->64): anything this does not vouch for goes the general
    way, which also words the errors.
    """
    if type(x) is not _NDARRAY or type(w) is not _NDARRAY or layout != "nhwc":
        return False
    dtype, bank_shape = x.dtype, w.shape  # (each read of .shape or .flags builds a new object: read once)
    if (dtype is not _FLOAT32 and dtype is not _FLOAT64) or w.dtype is not dtype or len(bank_shape) != 2:
        return False
    shape, (n_channels, n_filters) = x.shape, bank_shape
    if not shape or shape[-1] != n_channels or not n_channels or not n_filters:
        return False
    flags = x.flags
    if not (flags.c_contiguous and flags.aligned):  # (the kernel reads through typed pointers)
        return False
    return bias is None or (type(bias) is _NDARRAY and bias.dtype is dtype and bias.shape == (n_filters,))


Progress = Callable[[int, int], None]  # (units done since the last call, units in all): pixels or blocks


@dataclass(frozen=True)
class ApplyOptions:
    """How ``apply`` runs: the same choices as ``conv1x1 apply``'s options.

    ``threads``: the kernel's threads (None: all cores, except for a .npy run of under 2^28
    multiply-adds in all, which runs on one). ``scheduler`` (a dask.distributed address) or a .zarr
    input or output runs on Dask; ``chunks`` (rows, cols) sets the Dask block size and is only for
    such runs. ``progress(done, total)`` is called as the work advances: pixels in this process,
    blocks or tasks on Dask.

    For stores: ``storage_options`` go to the fsspec file system of every URL (``s3://…``), on this
    machine and on the workers; ``overwrite`` lets an output store replace what is already there;
    ``codec`` names the output store's compression (``cluster.codecs``; None: the default).
    """

    bias_paths: Sequence[str] = ()
    layout: str = "nhwc"
    weights_layout: str = "cf"
    activation: str = "relu"
    threads: int | None = None
    scheduler: str | None = None
    chunks: tuple[int, int] | None = None
    progress: Progress | None = None
    storage_options: Mapping[str, Any] = field(default_factory=dict)
    overwrite: bool = False
    codec: str | None = None


def runs_on_cluster(input_path: str, output_path: str, scheduler: str | None = None) -> bool:
    """Whether ``apply`` runs on Dask: with a scheduler, or when the input or the output is a zarr store."""
    from .cluster.paths import is_store

    return bool(scheduler) or is_store(input_path) or is_store(output_path)


def check_apply_options(input_path: str, weight_paths: Sequence[str], output_path: str, options: ApplyOptions) -> None:
    """What ``apply`` refuses before it reads anything (ArgumentError): standard input named twice,
    and options for stores (chunks, codec, storage options) on a run of .npy files. The CLI checks
    them before its progress bar starts."""
    checked_threads(options.threads)
    check_stdin_read_once([input_path, *weight_paths, *options.bias_paths])
    if runs_on_cluster(input_path, output_path, options.scheduler):
        return
    store_only = (
        ("chunks only apply", "--chunks", options.chunks),
        ("a codec only applies", "--codec", options.codec),
        ("storage options only apply", "--storage-option", options.storage_options),
    )
    for what, option, given in store_only:
        if given:
            raise ArgumentError(f"{what} to zarr stores and Dask scheduler runs", option=option)


def apply(
    input_path: str, weight_paths: Sequence[str], output_path: str, options: ApplyOptions = ApplyOptions()
) -> ApplyReport:
    """Convolve ``input_path`` with each bank in ``weight_paths``, in order, into ``output_path``.

    Paths are .npy files (``-``: standard input or output) or zarr stores (``.zarr``, local or an fsspec
    URL). The output is written atomically: it appears complete or not at all.

    >>> import pathlib, tempfile
    >>> folder = pathlib.Path(tempfile.mkdtemp())
    >>> np.save(folder / "x.npy", np.ones((2, 2, 3), np.float32))
    >>> np.save(folder / "w.npy", np.ones((3, 1), np.float32))
    >>> report = apply(str(folder / "x.npy"), [str(folder / "w.npy")], str(folder / "y.npy"))
    >>> report.output_shape, np.load(folder / "y.npy")[..., 0].tolist()
    ((2, 2, 1), [[3.0, 3.0], [3.0, 3.0]])
    """
    check_apply_options(input_path, weight_paths, output_path, options)
    if runs_on_cluster(input_path, output_path, options.scheduler):
        from .cluster.run import apply_on_dask

        return apply_on_dask(input_path, weight_paths, output_path, options)
    from .engine.streaming import apply_npy

    return apply_npy(
        input_path,
        weight_paths,
        output_path,
        bias_paths=options.bias_paths,
        layout=options.layout,
        weights_layout=options.weights_layout,
        activation=options.activation,
        threads=options.threads,
        progress=options.progress,
    )


# Loaded on first use: every `apply` imports this module, and these are for other commands.
_LAZY = {
    "explain_files": "engine.explain",
    "explain_pixel": "engine.explain",
    "extract_tensor": "engine.models",
    "model_cost": "engine.models",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        value = globals()[name] = getattr(importlib.import_module(f".{_LAZY[name]}", __package__), name)
        return value  # (bound once found: see conv1x1_cli.__getattr__)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
