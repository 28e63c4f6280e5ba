"""The Python API and its kernel against the float64 references in naive.py."""

from __future__ import annotations

import naive
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from naive import assert_close_to_reference

from conv1x1_cli import conv1x1
from conv1x1_cli.engine.layers import as_bank
from conv1x1_cli.errors import ArgumentError, InputError


def test_lecture_example_doubles_every_value():
    image = np.array([[1, 2, 3, 6, 5, 8], [3, 5, 5, 1, 3, 4]], dtype=np.float32)[..., None]
    result = conv1x1(image, np.array([[2.0]], dtype=np.float32))
    np.testing.assert_array_equal(result[..., 0], [[2, 4, 6, 12, 10, 16], [6, 10, 10, 2, 6, 8]])


def test_the_lazily_loaded_api_names_are_bound_in_the_package_once_found():
    """``conv1x1_cli.conv1x1`` is loaded on first use (importing the package loads no NumPy), then
    bound: Python asks the package's __getattr__ only for names it lacks, and that lookup (an import
    statement) cost every ``conv1x1_cli.conv1x1(...)`` call 4 us of 12.8 on a Zen 1 host."""
    import conv1x1_cli
    from conv1x1_cli import api

    assert conv1x1_cli.conv1x1 is api.conv1x1
    assert vars(conv1x1_cli)["conv1x1"] is api.conv1x1
    assert conv1x1_cli.ApplyOptions is api.ApplyOptions and "ApplyOptions" in vars(conv1x1_cli)
    assert api.explain_pixel is vars(api)["explain_pixel"]
    with pytest.raises(AttributeError):
        conv1x1_cli.no_such_name  # noqa: B018


def test_hand_worked_pixel_with_bias_and_relu():
    pixel = np.array([[1.0, -2.0, 0.5]])
    bank = np.array([[1.0, 0.0], [1.0, 1.0], [2.0, -4.0]])  # (C=3, F=2)
    # filter 0: 1 - 2 + 1 + 0.25 = 0.25; filter 1: 0 - 2 - 2 + 0.25 = -3.75 -> ReLU 0
    result = conv1x1(pixel, bank, bias=np.array([0.25, 0.25]))
    np.testing.assert_array_equal(result, [[0.25, 0.0]])
    np.testing.assert_array_equal(conv1x1(pixel, bank, np.array([0.25, 0.25]), activation="none"), [[0.25, -3.75]])


@settings(max_examples=60, deadline=None)
@given(
    pixels=st.integers(0, 300),
    channels=st.integers(1, 70),
    filters=st.integers(1, 70),
    dtype=st.sampled_from(["float32", "float64"]),
    with_bias=st.booleans(),
    relu=st.booleans(),
    seed=st.integers(0, 2**32 - 1),
)
def test_matches_float64_reference(pixels, channels, filters, dtype, with_bias, relu, seed):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((pixels, channels)).astype(dtype)
    w = rng.standard_normal((channels, filters)).astype(dtype)
    b = rng.standard_normal(filters).astype(dtype) if with_bias else None
    result = conv1x1(x, w, b, activation="relu" if relu else "none")
    assert_close_to_reference(result, x, w, b, relu)


@pytest.mark.parametrize("shape", [(5, 7, 3), (2, 5, 7, 3), (3,), (1, 1, 1, 3), (0, 4, 3)])
def test_any_leading_axes_are_pixels(rng, shape):
    x = rng.standard_normal(shape).astype(np.float32)
    w = rng.standard_normal((3, 4)).astype(np.float32)
    result = conv1x1(x, w)
    assert result.shape == (*shape[:-1], 4)
    assert_close_to_reference(result, x, w)


@pytest.mark.parametrize(
    "dtype, expected_dtype",
    [("float16", np.float32), ("int8", np.float32), ("uint8", np.float32), ("int16", np.float32),
     ("int32", np.float32), (">f4", np.float32), (">f8", np.float64), ("bool", np.float32)],
)  # fmt: skip
def test_other_dtypes_compute_as_float32_except_float64(rng, dtype, expected_dtype):
    x = (rng.standard_normal((4, 6, 5)) * 3).astype(dtype)
    w = rng.standard_normal((5, 3)).astype(np.float32)
    result = conv1x1(x, w)
    assert result.dtype == expected_dtype
    assert_close_to_reference(result, x.astype(np.float64) if expected_dtype == np.float64 else x.astype(np.float32), w)


def test_big_endian_float64_keeps_float64_precision():
    """A float64 array in the other byte order (FITS and ENVI files are often big-endian) is float64."""
    x = np.array([[1.0 + 1e-12, -3.0]], dtype=">f8")
    result = conv1x1(x, np.array([[1.0], [0.0]]))
    assert result.dtype == np.float64 and result.dtype.isnative
    assert result[0, 0] == 1.0 + 1e-12  # (float32 would round it to 1.0)
    out = np.empty((1, 1))
    assert conv1x1(x, np.array([[1.0], [0.0]]), out=out) is out and out[0, 0] == 1.0 + 1e-12


def test_a_complex_bias_is_refused_like_a_complex_input():
    with pytest.raises(InputError, match=r"bias has dtype complex128; real numbers are needed"):
        conv1x1(np.ones((2, 3), np.float32), np.ones((3, 2), np.float32), np.array([1 + 1j, 2]))


def test_fortran_ordered_and_strided_inputs(rng):
    x = np.asfortranarray(rng.standard_normal((9, 8, 6)).astype(np.float32))
    w = rng.standard_normal((6, 5)).astype(np.float32)
    assert_close_to_reference(conv1x1(x, w), x, w)
    strided = rng.standard_normal((9, 16, 6)).astype(np.float32)[:, ::2]
    assert_close_to_reference(conv1x1(strided, w), strided, w)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("with_bias", [False, True])
def test_plain_arrays_and_the_general_path_give_the_same_bits(rng, dtype, with_bias):
    """A C-contiguous array with a bank and bias of its dtype skips the general path's checks; the
    same values through the general path (a Fortran-ordered copy, a list of one bank) must agree."""
    x = rng.standard_normal((7, 11, 20)).astype(dtype)
    w = rng.standard_normal((20, 70)).astype(dtype)
    b = rng.standard_normal(70).astype(dtype) if with_bias else None
    plain = conv1x1(x, w, b)
    np.testing.assert_array_equal(plain, conv1x1(np.asfortranarray(x), [w], [b] if with_bias else None))
    assert_close_to_reference(plain, x, w, b)


@pytest.mark.parametrize(
    ("x", "w", "bias", "message"),
    [
        (np.zeros((2, 3), np.float32), np.zeros((3, 2), np.float32), np.zeros(3, np.float32), r"shape \(2,\)"),
        (np.zeros((2, 3), np.float32), np.zeros((4, 2), np.float32), None, "expects 4 input channels"),
        (np.zeros((2, 3), np.float32), np.zeros((3, 0), np.float32), None, "is empty"),
    ],
)
def test_plain_arrays_with_mismatched_banks_get_the_general_paths_errors(x, w, bias, message):
    with pytest.raises(InputError, match=message):
        conv1x1(x, w, bias)


def test_an_unknown_activation_is_refused_for_plain_arrays_too():
    with pytest.raises(ArgumentError, match="activation must be one of relu, none"):
        conv1x1(np.zeros((2, 3), np.float32), np.zeros((3, 2), np.float32), activation="tanh")


@pytest.mark.parametrize("shape", [(2, 6, 5, 7), (6, 5, 7)])
def test_nchw_input_keeps_its_layout(rng, shape):
    x = rng.standard_normal(shape).astype(np.float32)
    w = rng.standard_normal((shape[-3], 4)).astype(np.float32)
    result = conv1x1(x, w, layout="nchw")
    channels_last = np.moveaxis(x, -3, -1)
    assert result.shape == (*shape[:-3], 4, *shape[-2:])
    assert_close_to_reference(np.moveaxis(result, -3, -1), channels_last, w)


def test_nan_and_inf_propagate_as_in_numpy():
    x = np.array([[np.nan, 1.0], [np.inf, 1.0], [-np.inf, 1.0], [1.0, 1.0]], dtype=np.float32)
    w = np.array([[1.0, -1.0, 0.0], [1.0, 1.0, 1.0]], dtype=np.float32)
    result = conv1x1(x, w)
    expected = naive.pointwise(x, w)
    np.testing.assert_array_equal(np.isnan(result), np.isnan(expected))
    assert np.isnan(result[0]).all()  # NaN in -> NaN out, through ReLU too
    np.testing.assert_array_equal(result[1], [np.inf, 0.0, np.nan])  # inf*0 is NaN, -inf is clipped to 0
    np.testing.assert_array_equal(result[2], [0.0, np.inf, np.nan])
    np.testing.assert_array_equal(result[3], [2.0, 0.0, 1.0])


def test_chain_matches_reference(rng):
    x = rng.standard_normal((7, 9, 12)).astype(np.float64)
    banks = [rng.standard_normal(shape) for shape in [(12, 8), (8, 5), (5, 3)]]
    biases = [rng.standard_normal(8), rng.standard_normal(5)]
    result = conv1x1(x, banks, biases, activation="none")
    np.testing.assert_allclose(result, naive.chain(x, banks, biases, relu_last=False), rtol=1e-12, atol=1e-12)


def test_pytorch_and_keras_banks_are_recognised(rng):
    bank = rng.standard_normal((6, 4))
    np.testing.assert_array_equal(as_bank(bank.T[:, :, None, None]), bank)  # PyTorch (F, C, 1, 1)
    np.testing.assert_array_equal(as_bank(bank[None, None]), bank)  # Keras (1, 1, C, F)
    np.testing.assert_array_equal(as_bank(bank.T, layout="fc"), bank)


def test_spatial_kernels_are_refused():
    with pytest.raises(InputError, match="3x3 spatial kernel"):
        as_bank(np.zeros((32, 16, 3, 3)))
    with pytest.raises(InputError, match="3x3 spatial kernel"):
        as_bank(np.zeros((3, 3, 16, 32)))


def test_channel_mismatch_names_both_counts(rng):
    with pytest.raises(InputError, match="expects 4 input channels but the input has 3"):
        conv1x1(np.zeros((2, 2, 3)), np.zeros((4, 2)))


def test_bias_of_wrong_length_is_refused():
    with pytest.raises(InputError, match=r"bias must have shape \(2,\)"):
        conv1x1(np.zeros((2, 3)), np.zeros((3, 2)), bias=np.zeros(3))


def test_threads_option_gives_the_same_answer(rng):
    x = rng.standard_normal((1000, 16)).astype(np.float32)
    w = rng.standard_normal((16, 24)).astype(np.float32)
    np.testing.assert_array_equal(conv1x1(x, w, threads=1), conv1x1(x, w))


@pytest.mark.parametrize(
    ("threads", "message"),
    [
        (True, "threads must be a whole number of threads"),
        (2.0, "threads must be a whole number of threads"),
        ("2", "threads must be a whole number of threads"),
        (0, "threads must be >= 1, got 0"),
        (-2, "threads must be >= 1, got -2"),
    ],
)
@pytest.mark.parametrize("call", ["one bank", "a list of banks", "a Dask array"])
def test_thread_counts_that_are_not_whole_numbers_from_one_up_are_refused(threads, message, call):
    """threads=True would have run on one thread (True is 1); a Dask array's run took 0 as 1."""
    x, w = np.ones((3, 4, 8), np.float32), np.ones((8, 5), np.float32)
    if call == "a Dask array":
        x = pytest.importorskip("dask.array").from_array(x, chunks=(3, 2, 8))
    with pytest.raises(ArgumentError, match=message):
        conv1x1(x, [w] if call == "a list of banks" else w, threads=threads)


def test_numpy_integer_thread_counts_are_taken(rng):
    x, w = rng.standard_normal((40, 8)).astype(np.float32), rng.standard_normal((8, 5)).astype(np.float32)
    np.testing.assert_array_equal(conv1x1(x, w, threads=np.int64(2)), conv1x1(x, w, threads=2))


LEAVES_THREADS_ALONE = """
import json, os, sys
import numpy as np
from threadpoolctl import threadpool_info
try:
    import torch
except ImportError:
    torch = None

def settings(libraries=None):
    # numba may load libraries of its own (SciPy's OpenBLAS): only those loaded before are compared.
    blas = {pool["filepath"]: pool["num_threads"] for pool in threadpool_info()
            if libraries is None or pool["filepath"] in libraries}
    return {"blas": blas, "torch": torch.get_num_threads() if torch else None, "env": dict(os.environ)}

before = settings()
from conv1x1_cli import conv1x1
from conv1x1_cli import kernel
x = np.ones((64, 64, 64), np.float32)  # 16.8M multiply-adds: the worker pool takes part
for _ in range(3):
    conv1x1(x, np.ones((64, 64), np.float32))
after = settings(before["blas"])
print(json.dumps({"same": before == after, "before": before["blas"], "after": after["blas"],
                  "workers": kernel.worker_pool().n_workers, "pooled": kernel.pool.current_pool() is not None}))
"""


def test_convolving_leaves_numpy_and_torch_thread_settings_alone():
    """NumPy's BLAS thread pools, torch's thread count and the environment are the same after the
    kernel's worker pool has run: it starts threads of its own and sets nothing for others."""
    import json
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-c", LEAVES_THREADS_ALONE], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads(done.stdout)
    assert report["pooled"] and report["before"], report
    assert report["same"], report


def test_weights_layout_fc_takes_f_by_c_banks(rng):
    x = rng.standard_normal((4, 5, 6)).astype(np.float32)
    w = rng.standard_normal((6, 3)).astype(np.float32)
    np.testing.assert_array_equal(conv1x1(x, w.T, weights_layout="fc"), conv1x1(x, w))
    chained = conv1x1(x, [w.T, np.eye(3, dtype=np.float32)], weights_layout="fc")
    np.testing.assert_array_equal(chained, conv1x1(x, w))
    with pytest.raises(ArgumentError, match="weights layout must be one of cf, fc"):
        conv1x1(x, w, weights_layout="kc")


def test_apply_on_files_is_the_public_entry_point(tmp_path, rng):
    from conv1x1_cli import ApplyOptions, apply

    x = rng.standard_normal((3, 4, 5)).astype(np.float32)
    w, b = rng.standard_normal((5, 2)).astype(np.float32), rng.standard_normal(2).astype(np.float32)
    for name, array in (("x", x), ("w", w), ("b", b)):
        np.save(tmp_path / f"{name}.npy", array)
    options = ApplyOptions(bias_paths=[str(tmp_path / "b.npy")], weights_layout="cf", threads=1)
    report = apply(str(tmp_path / "x.npy"), [str(tmp_path / "w.npy")], str(tmp_path / "y.npy"), options)
    assert report.output_shape == (3, 4, 2) and report.cost.total("params") == 5 * 2 + 2
    assert_close_to_reference(np.load(tmp_path / "y.npy"), x, w, b)
    with pytest.raises(ArgumentError, match="chunks only apply to zarr stores"):
        apply(str(tmp_path / "x.npy"), [str(tmp_path / "w.npy")], str(tmp_path / "z.npy"), ApplyOptions(chunks=(2, 2)))
    assert not (tmp_path / "z.npy").exists()


@pytest.mark.parametrize("channels", [3, 64, 513, 4096])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("filters", [40, 8, 3], ids=["40 filters", "8 filters", "3 filters"])
def test_every_value_is_within_the_documented_error_bound(rng, channels, dtype, filters):
    """README, Accuracy: |ours - exact| <= (C + 1) * u * (sum of |x_c * w_c| + |b|), u the unit roundoff;
    banks narrower than a vector (8 and 3 filters) are summed in interleaved chains of channels."""
    x = rng.standard_normal((300, channels)).astype(dtype)
    w, b = rng.standard_normal((channels, filters)).astype(dtype), rng.standard_normal(filters).astype(dtype)
    ours = conv1x1(x, w, b, activation="none").astype(np.float64)
    exact = x.astype(np.float64) @ w.astype(np.float64) + b
    if dtype == np.float64:  # the exact value to float64's own precision: in longdouble where it is longer
        exact = (x.astype(np.longdouble) @ w.astype(np.longdouble) + b).astype(np.float64)
    magnitude = np.abs(x.astype(np.float64)) @ np.abs(w.astype(np.float64)) + np.abs(b)
    unit_roundoff = np.finfo(dtype).eps / 2
    assert np.all(np.abs(ours - exact) <= (channels + 1) * unit_roundoff * magnitude)


def test_a_long_sum_of_tenths_is_within_the_bound():
    x, w = np.full((1, 4096), 0.1, np.float32), np.ones((4096, 1), np.float32)
    exact = 4096 * float(np.float32(0.1))
    assert abs(float(conv1x1(x, w)[0, 0]) - exact) <= 4097 * 2**-24 * exact


def test_array_likes_are_taken_as_numpy_takes_them():
    x = np.ones((2, 3), np.float32)
    w = np.arange(6, dtype=np.float32).reshape(3, 2)
    expected = conv1x1(x, w, np.array([0.5, -100.0], np.float32))
    np.testing.assert_array_equal(conv1x1(x, w.tolist(), [0.5, -100.0]), expected)  # nested lists, a list of numbers
    np.testing.assert_array_equal(conv1x1(x, w.T.tolist(), [0.5, -100.0], weights_layout="fc"), expected)
    np.testing.assert_array_equal(conv1x1(x, [w.tolist(), np.eye(2).tolist()]), conv1x1(x, w))  # a chain of lists
    with pytest.raises(InputError, match=r"a filter bank is needed \(an array of shape \(C, F\)\), got None"):
        conv1x1(x, None)
    with pytest.raises(InputError, match=r"bias must have shape \(2,\) to match 2 filters, got \(\)"):
        conv1x1(x, w, 1.0)


def test_a_pytorch_bank_as_nested_lists_is_one_bank():
    x = np.ones((2, 3), np.float32)
    w = np.arange(6, dtype=np.float32).reshape(3, 2)
    np.testing.assert_array_equal(conv1x1(x, w.T[:, :, None, None].tolist()), conv1x1(x, w))


# --- out=: the result written into the caller's array -------------------------------------------------------


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("layout", ["nhwc", "nchw"])
def test_out_receives_the_same_bits_as_a_new_result(rng, dtype, layout):
    x = rng.standard_normal((2, 5, 7, 12)).astype(dtype)
    w = rng.standard_normal((12, 9)).astype(dtype)
    bias = rng.standard_normal(9).astype(dtype)
    if layout == "nchw":
        x = np.ascontiguousarray(x.transpose(0, 3, 1, 2))
    fresh = conv1x1(x, w, bias, layout=layout)
    out = np.full(fresh.shape, np.nan, dtype)
    assert conv1x1(x, w, bias, layout=layout, out=out) is out
    np.testing.assert_array_equal(out, fresh)
    assert_close_to_reference(out if layout == "nhwc" else out.transpose(0, 2, 3, 1),
                              x if layout == "nhwc" else x.transpose(0, 2, 3, 1), w, bias)  # fmt: skip


def test_out_for_a_chain_and_for_integer_input(rng):
    x = rng.integers(-5, 5, (6, 6, 4)).astype(np.int16)
    banks = [rng.standard_normal((4, 8)).astype(np.float32), rng.standard_normal((8, 3)).astype(np.float32)]
    out = np.empty((6, 6, 3), np.float32)
    assert conv1x1(x, banks, out=out) is out
    np.testing.assert_array_equal(out, conv1x1(x, banks))


def test_out_may_be_the_input_itself(rng):
    x = rng.standard_normal((5, 5, 8)).astype(np.float32)
    w = rng.standard_normal((8, 8)).astype(np.float32)
    expected = conv1x1(x, w)
    assert conv1x1(x, w, out=x) is x  # read whole before it is written
    np.testing.assert_array_equal(x, expected)
    y = np.ascontiguousarray(rng.standard_normal((2, 8, 3, 3)).astype(np.float32))  # the general path (NCHW)
    expected = conv1x1(y, w, layout="nchw")
    conv1x1(y, w, layout="nchw", out=y)
    np.testing.assert_array_equal(y, expected)


def test_out_may_hold_the_bank_or_the_bias_of_a_call_run_in_chunks():
    """Two NCHW images run as two chunks: the first chunk's output must not change the bank or the
    bias (inside out) that the second chunk reads.  x = 2 everywhere, the bank's weights 1."""
    x = np.full((2, 1, 1, 1), 2, np.float32)
    out = np.empty((2, 16, 1, 1), np.float32)
    bank = out[0].reshape(1, 16)
    bank[...] = 1
    assert conv1x1(x, bank, layout="nchw", out=out) is out
    np.testing.assert_array_equal(out, np.full((2, 16, 1, 1), 2, np.float32))
    bias = out[1].reshape(16)
    bias[...] = 10
    conv1x1(x, np.ones((1, 16), np.float32), bias, layout="nchw", out=out)
    np.testing.assert_array_equal(out, np.full((2, 16, 1, 1), 12, np.float32))
    first = out[0].reshape(1, 16)
    first[...] = 1
    conv1x1(x, [first, np.ones((16, 16), np.float32)], layout="nchw", out=out)  # a chain: 16 x 2
    np.testing.assert_array_equal(out, np.full((2, 16, 1, 1), 32, np.float32))


@pytest.mark.parametrize(
    "out, message",
    [
        (np.empty((4, 4, 3), np.float32), r"out has shape \(4, 4, 3\) and dtype float32; the result is \(4, 4, 2\)"),
        (np.empty((4, 4, 2), np.float64), r"dtype float64; the result is \(4, 4, 2\) float32"),
        (np.empty((4, 2, 4), np.float32).transpose(0, 2, 1), r"out must be C-contiguous and writeable"),
        ([[0.0]], r"out must be a NumPy array, not list"),
    ],
)
def test_an_out_that_cannot_take_the_result_is_refused(out, message):
    x, w = np.ones((4, 4, 3), np.float32), np.ones((3, 2), np.float32)
    with pytest.raises(ArgumentError, match=message):
        conv1x1(x, w, out=out)


def test_a_read_only_out_is_refused():
    out = np.empty((4, 4, 2), np.float32)
    out.flags.writeable = False
    with pytest.raises(ArgumentError, match=r"out must be C-contiguous and writeable"):
        conv1x1(np.ones((4, 4, 3), np.float32), np.ones((3, 2), np.float32), out=out)


def test_out_is_refused_for_a_lazy_dask_result():
    dask_array = pytest.importorskip("dask.array")
    x = dask_array.ones((4, 4, 3), dtype=np.float32, chunks=2)
    with pytest.raises(ArgumentError, match=r"out= is for NumPy arrays"):
        conv1x1(x, np.ones((3, 2), np.float32), out=np.empty((4, 4, 2), np.float32))


@pytest.mark.parametrize("threads", [None, 1, 2])
def test_an_unaligned_input_gives_the_reference_and_the_bits_of_an_aligned_one(rng, threads):
    """A float32 array one byte off its alignment (a view of a byte buffer) gives the bits of its
    aligned copy, with and without out=, alone and through the pool.  (It goes the general way, which
    copies it: the kernel reads through typed pointers.  x86 would read it in place too, so this
    checks the results, not which path they took.)"""
    buffer = np.zeros(7 * 9 * 48 * 4 + 1, np.uint8)
    x = np.ndarray((7, 9, 48), np.float32, buffer=buffer[1:].data)
    x[...] = rng.standard_normal(x.shape)
    assert not x.flags.aligned
    w = rng.standard_normal((48, 64)).astype(np.float32)
    b = rng.standard_normal(64).astype(np.float32)
    aligned = conv1x1(x.copy(), w, b, threads=threads)
    np.testing.assert_array_equal(conv1x1(x, w, b, threads=threads), aligned)
    out = np.empty_like(aligned)
    np.testing.assert_array_equal(conv1x1(x, w, b, threads=threads, out=out), aligned)
    assert_close_to_reference(aligned.reshape(-1, 64), x.reshape(-1, 48), w, b)
