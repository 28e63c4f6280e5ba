"""The pictures, checked by their pixels: size, not blank, the extreme cells in the colour map's extreme
colours, one tile per channel; deterministic bytes without metadata; and the commands that draw them."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys

import numpy as np
import pytest

PIL = pytest.importorskip("PIL.Image")
matplotlib = pytest.importorskip("matplotlib")

from conv1x1_cli.render import pictures  # noqa: E402

COMMAND = [sys.executable, "-m", "conv1x1_cli"]
VIRIDIS_LOW, VIRIDIS_HIGH = (68, 1, 84), (253, 231, 37)  # viridis at 0 and at 1, as 8-bit RGB


def rgb(png: bytes) -> np.ndarray:
    return np.asarray(PIL.open(io.BytesIO(png)).convert("RGB")).astype(int)


def pixels_of(image: np.ndarray, colour, tolerance: int = 6) -> np.ndarray:
    """(row, column) of every pixel within ``tolerance`` of ``colour`` in each channel."""
    return np.argwhere(np.all(np.abs(image - np.array(colour)) <= tolerance, axis=-1))


def text_chunks(png: bytes) -> list[bytes]:
    """The keys of the PNG's tEXt, zTXt and iTXt chunks (metadata)."""
    keys, position = [], 8
    while position < len(png):
        length = int.from_bytes(png[position : position + 4], "big")
        kind = png[position + 4 : position + 8]
        if kind in (b"tEXt", b"zTXt", b"iTXt"):
            keys.append(png[position + 8 : position + 8 + length].split(b"\0")[0])
        position += 12 + length
    return keys


def test_a_channel_heat_map_puts_the_extremes_where_they_are():
    plane = np.zeros((4, 4))
    plane[0, 3] = 10.0  # the top-right cell is the maximum; every other cell the minimum
    image = rgb(pictures.channel_png(plane, "t", "shape 4×4", "x.png"))
    assert image.shape == (560, 640, 3)
    high, low = pixels_of(image, VIRIDIS_HIGH), pixels_of(image, VIRIDIS_LOW)
    assert len(high) > 1000 and len(low) > 10 * len(high) // 2  # one cell; fifteen cells (and the bar's ends)
    cells = low[low[:, 1] < image.shape[1] * 0.75]  # leave out the colour bar on the right
    top, bottom, left, right = cells[:, 0].min(), cells[:, 0].max(), cells[:, 1].min(), cells[:, 1].max()
    in_map = high[(high[:, 1] <= right) & (high[:, 1] >= left)]
    # the high cell lies in the top-right quarter of the map
    assert in_map[:, 0].mean() < (top + bottom) / 2 and in_map[:, 1].mean() > (left + right) / 2


def test_small_slices_carry_their_numbers_and_large_ones_do_not():
    small = rgb(pictures.channel_png(np.arange(36.0).reshape(6, 6), "t", "s", "x.png"))
    uniform = rgb(pictures.channel_png(np.full((6, 6), 3.0), "t", "s", "x.png"))
    assert not np.array_equal(small, uniform)
    big = np.arange(40 * 40, dtype=float).reshape(40, 40)
    assert rgb(pictures.channel_png(big, "t", "s", "x.png")).std() > 10  # drawn, not blank


def test_a_grid_has_one_tile_per_channel():
    channels = 10
    volume = np.broadcast_to(np.arange(channels, dtype=float), (8, 8, channels)).copy()  # channel k is all k
    image = rgb(pictures.grid_png(volume, "t", "x.png"))
    colour_map = matplotlib.colormaps[pictures.COLOUR_MAP]
    tiles = 0
    for channel in range(channels):
        colour = tuple(round(255 * part) for part in colour_map(channel / (channels - 1))[:3])
        found = len(pixels_of(image, colour, tolerance=2))
        tiles += found > 1000  # a tile is ~2,000 pixels; the colour bar gives a colour a few dozen
    assert tiles == channels


def test_a_large_grid_is_downsampled_and_drawn():
    volume = np.random.default_rng(0).standard_normal((200, 100, 3))
    assert pictures.grid_step(200, 100) == 5  # its caption says so: see grid_caption's doctest
    assert rgb(pictures.grid_png(volume, "t", "x.png")).std() > 10


def test_pictures_are_deterministic_and_carry_no_metadata():
    plane = np.random.default_rng(1).standard_normal((5, 7))
    first, second = (pictures.channel_png(plane, "t", "s", "x.png") for _ in range(2))
    assert first == second and text_chunks(first) == []


def test_the_roofline_draws_a_roof_per_level_and_each_layers_own():
    """L2 and L3 roofs in their colours (the memory roof in black), and each layer's own roof as a bar
    in the colour of its level: the L2 colour fills more of the picture once a layer is judged by L2."""
    layer = {"name": "a", "spec": "1×1×8→8", "intensity": 4.0, "ours_gflops": 80.0, "attainable_gflops": 150.0}
    levels = [
        {"name": "L2", "capacity_bytes": 2**21, "read_gbs": 400.0, "write_gbs": 300.0},
        {"name": "L3", "capacity_bytes": 2**25, "read_gbs": 200.0, "write_gbs": 200.0},
        {"name": "DRAM", "capacity_bytes": None, "read_gbs": 60.0, "write_gbs": 45.0},
    ]
    limits = {"peak_gflops": 500.0, "bandwidth_gbs": 40.0, "sgemm_gflops": 450.0, "threads": 2, "levels": levels}
    colour_of = {
        name: tuple(int(pictures.LEVEL_STYLES[name][0][i : i + 2], 16) for i in (1, 3, 5)) for name in ("L2", "L3")
    }
    counts = {}
    for level in ("DRAM", "L2"):
        report = {"limits": limits, "machine": {}, "layers": [{**layer, "level": level}]}
        image = rgb(pictures.roofline_png(report, "x.png"))
        counts[level] = {name: len(pixels_of(image, colour, tolerance=8)) for name, colour in colour_of.items()}
    assert all(count > 200 for count in counts["DRAM"].values())  # both cache roofs are drawn
    assert counts["L2"]["L2"] > counts["DRAM"]["L2"] + 50  # and the layer's bar, in L2's colour
    assert counts["L2"]["L3"] == counts["DRAM"]["L3"]


def test_roofline_and_model_bars_are_drawn():
    layer = {"name": "a", "spec": "1×1×8→8", "intensity": 4.0, "ours_gflops": 80.0, "numpy_gflops": 60.0}
    report = {
        "limits": {"peak_gflops": 200.0, "bandwidth_gbs": 25.0, "sgemm_gflops": 150.0, "threads": 2},
        "machine": {"cpu": "test CPU"},
        "layers": [layer, {**layer, "name": "b", "intensity": 40.0, "ours_gflops": 190.0, "torch_gflops": 150.0}],
    }
    assert rgb(pictures.roofline_png(report, "x.png")).std() > 10
    data = {
        "layers": [{"kind": "pointwise", "macs": 100}, {"kind": "depthwise", "macs": 10}],
        "by_kind": {"pointwise": {"macs_share": 90.9}, "depthwise": {"macs_share": 9.1}},
        "totals": {"macs": 110},
    }
    image = rgb(pictures.model_png(data, "m.onnx", "x.png"))
    kind_colour = tuple(int(pictures.KIND_COLOURS["pointwise"][i : i + 2], 16) for i in (1, 3, 5))
    assert len(pixels_of(image, kind_colour, tolerance=2)) > 1000


# --- the commands --------------------------------------------------------------------------------------------


def cli(*args, **kwargs):
    return subprocess.run([*COMMAND, *map(str, args)], capture_output=True, **kwargs)


def test_show_png_of_the_lecture_sample(tmp_path, samples_dir):
    out = tmp_path / "lecture.png"
    result = cli("show", samples_dir / "lecture_6x6.npy", "--png", out)
    assert result.returncode == 0 and result.stdout == b"", result.stderr
    image = rgb(out.read_bytes())
    # the 9s (at (2, 4), (3, 5) and (5, 2)) are the colour map's top; the 1s its bottom
    assert len(pixels_of(image, VIRIDIS_HIGH)) > 3 * 1500 and len(pixels_of(image, VIRIDIS_LOW)) > 3 * 1500


def test_show_grid_png_in_a_pipe(tmp_path, samples_dir):
    result = cli("show", samples_dir / "volume_6x6x32.npy", "--grid", "--png", "-")
    assert result.returncode == 0 and result.stdout.startswith(b"\x89PNG\r\n\x1a\n")
    assert rgb(result.stdout).std() > 10


@pytest.mark.parametrize(
    "args, fragment",
    [
        (["--grid"], "--grid draws a picture: give --png OUT.png"),
        (["--grid", "--png", "x.png", "--channel", "1"], "--channel does not apply"),
    ],
)
def test_show_picture_usage_errors(samples_dir, args, fragment):
    result = cli("show", samples_dir / "volume_6x6x32.npy", *args)
    errors = [line for line in result.stderr.decode().splitlines() if line.startswith("Error")]
    assert result.returncode == 2 and len(errors) == 1 and fragment in errors[0]


def test_no_picture_is_written_when_it_cannot_be_drawn(tmp_path, samples_dir):
    out = tmp_path / "x.png"
    result = cli("show", samples_dir / "volume_6x6x32.npy", "--channel", "40", "--png", out)
    assert result.returncode == 2 and not out.exists() and os.listdir(tmp_path) == []


def test_the_plot_extra_is_named_when_missing(tmp_path, samples_dir):
    blocker = tmp_path / "blocker"
    blocker.mkdir()
    (blocker / "matplotlib.py").write_text("raise ImportError('no matplotlib here')\n")
    out = tmp_path / "x.png"
    result = cli("show", samples_dir / "lecture_6x6.npy", "--png", out, env={**os.environ, "PYTHONPATH": str(blocker)})
    lines = result.stderr.decode().strip().splitlines()
    assert result.returncode != 0 and len(lines) == 1 and 'pip install "conv1x1[plot]"' in lines[0]
    assert not out.exists()


def test_model_plot(tmp_path):
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper

    weight = np.ones((4, 3, 1, 1), np.float32)
    graph = helper.make_graph(
        [helper.make_node("Conv", ["input", "w"], ["output"], name="pw")],
        "g",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, 5, 5])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, None)],
        [numpy_helper.from_array(weight, "w")],
    )
    path = tmp_path / "m.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    result = cli("model", path, "--plot", tmp_path / "m.png")
    assert result.returncode == 0, result.stderr
    assert rgb((tmp_path / "m.png").read_bytes()).std() > 10
    json_result = cli("model", path, "--format", "json")
    assert json.loads(json_result.stdout)["totals"]["macs"] == 300
