"""Pictures (PNG bytes): a channel as a heat map, every channel of a volume as a grid, the machine's
roofline with the bench's layers on it, and a model's MACs per layer by kind.

Drawn with matplotlib (the ``plot`` extra: the plotting library of the field, whose colour maps,
colour bars and log axes would be a project of their own by hand), imported only when a picture is
asked for, through its object interface and the Agg canvas (no pyplot: no global state, no window).
Every picture is deterministic for its data: fixed size, DPI and font (DejaVu Sans, which matplotlib
ships), and no metadata (no software version, no time). The caller writes the bytes (the CLI, with
the atomic writer every output uses).
"""

from __future__ import annotations

import io
import math

from ..errors import ArgumentError
from .tables import every_nth

COLOUR_MAP = "viridis"
DPI = 100
_NUMBERS_UP_TO = 16  # slices up to 16×16 carry their values in the cells, like the lecture's 6×6
_GRID_TILE_PIXELS = 48  # a grid tile is downsampled to at most this many rows and columns
KIND_COLOURS = {
    "pointwise": "#1f77b4",
    "depthwise": "#ff7f0e",
    "grouped": "#2ca02c",
    "full": "#d62728",
    "transposed": "#9467bd",
    "fully connected": "#8c564b",
}


def require_matplotlib(output_name: str) -> None:
    """One line naming the extra when matplotlib is missing: asked before a long run that ends in a picture."""
    _matplotlib(output_name)


def _matplotlib(output_name: str):
    """matplotlib's Figure, set up for deterministic output, or one line naming the extra."""
    try:
        import matplotlib
    except ImportError:
        raise ArgumentError(f'{output_name}: pictures need the plot extra: pip install "conv1x1[plot]"') from None
    import matplotlib.ticker  # (MaxNLocator, for integer row and column indices)

    matplotlib.use("Agg", force=True)
    matplotlib.rcParams.update(
        {"font.family": "DejaVu Sans", "font.size": 9, "svg.hashsalt": "conv1x1", "path.simplify": False}
    )
    from matplotlib.figure import Figure

    return matplotlib, Figure


def _png(figure) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=DPI, metadata={"Software": None})
    return buffer.getvalue()


def _stats_text(values) -> str:
    import numpy as np

    with np.errstate(invalid="ignore", over="ignore"):
        return f"min {np.min(values):.4g} · max {np.max(values):.4g} · mean {np.mean(values, dtype=np.float64):.4g}"


# --- one channel ---------------------------------------------------------------------------------------------


def channel_png(plane, title: str, what: str, output_name: str) -> bytes:
    """A heat map of a 2-D slice with its colour bar, row and column indices on the axes, and ``what``
    (its shape), min, max and mean in the title; slices up to 16×16 carry their numbers in the cells."""
    import numpy as np

    matplotlib, Figure = _matplotlib(output_name)
    rows, columns = plane.shape
    figure = Figure(figsize=(6.4, 5.6))
    axes = figure.add_subplot()
    image = axes.imshow(plane, cmap=COLOUR_MAP, interpolation="nearest", aspect="auto")
    figure.colorbar(image, ax=axes)
    axes.set_title(f"{title}\n{what} · {_stats_text(plane)}")
    axes.set_xlabel("column")
    axes.set_ylabel("row")
    axes.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    axes.yaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    if rows <= _NUMBERS_UP_TO and columns <= _NUMBERS_UP_TO:
        low, high = image.get_clim()
        for (row, column), value in np.ndenumerate(plane):
            share = 0.5 if high == low else (float(value) - low) / (high - low)
            colour = "black" if share > 0.6 else "white"  # viridis is light at the top, dark at the bottom
            axes.text(column, row, _cell_text(float(value)), ha="center", va="center", color=colour, fontsize=8)
    figure.tight_layout()
    return _png(figure)


def _cell_text(value: float) -> str:
    return f"{value:.0f}" if math.isfinite(value) and value.is_integer() and abs(value) < 1e6 else f"{value:.3g}"


# --- every channel ---------------------------------------------------------------------------------------------


def grid_png(volume, title: str, output_name: str) -> bytes:
    """Every channel of an (H, W, C) volume as a grid of small heat maps with one shared colour scale and
    the channel number on each. Channels larger than 48×48 are downsampled by taking every k-th row
    and column (the same k for both), and the title says by how much."""
    import numpy as np

    _, Figure = _matplotlib(output_name)
    height, width, channels = volume.shape
    step = grid_step(height, width)
    shown = volume[::step, ::step, :]
    columns = math.ceil(math.sqrt(channels))
    rows = math.ceil(channels / columns)
    finite = shown[np.isfinite(shown)]
    low, high = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
    # Tiles of about 1.2 inches, a title band of 1 inch above them and the colour bar on the right.
    width, height = min(16.0, max(6.4, 1.2 + 1.2 * columns)), min(16.0, max(3.5, 1.1 + 1.3 * rows))
    figure = Figure(figsize=(width, height))
    grid = figure.add_gridspec(
        rows, columns, left=0.3 / width, right=1 - 1.0 / width, top=1 - 1.0 / height, bottom=0.1 / height,
        wspace=0.08, hspace=0.3,
    )  # fmt: skip
    image = None
    for channel in range(channels):
        axes = figure.add_subplot(grid[channel // columns, channel % columns])
        image = axes.imshow(shown[:, :, channel], cmap=COLOUR_MAP, vmin=low, vmax=high, interpolation="nearest")
        axes.set_title(str(channel), fontsize=7, pad=2)
        axes.set_xticks([])
        axes.set_yticks([])
    figure.suptitle(f"{title}\n{grid_caption(volume.shape, step, low, high)}")
    bar = figure.add_axes((1 - 0.8 / width, 0.2, 0.15 / width, 0.6))
    figure.colorbar(image, cax=bar)
    return _png(figure)


def grid_step(height: int, width: int) -> int:
    """Every how many rows and columns a grid tile takes, to be at most 48 pixels each way.

    >>> grid_step(28, 28), grid_step(200, 100), grid_step(49, 10)
    (1, 5, 2)
    """
    return max(1, math.ceil(max(height, width) / _GRID_TILE_PIXELS))


def grid_caption(shape: tuple[int, int, int], step: int, low: float, high: float) -> str:
    r"""What a grid shows, said under its title.

    >>> grid_caption((200, 100, 3), 5, -1.5, 2.0)
    '3 channels, every 5th row and column of 200×100 each\none colour scale: -1.5 to 2'
    """
    height, width, channels = shape
    sampled = f"{every_nth(step, 'row and column')} of " if step > 1 else ""
    return f"{channels} channels, {sampled}{height}×{width} each\none colour scale: {low:.4g} to {high:.4g}"


# --- the roofline ------------------------------------------------------------------------------------------------


# Each level's roof, from the nearest cache out to memory (memory's in black, as the classic roofline).
LEVEL_STYLES = {"L2": ("#9467bd", (0, (5, 2))), "L3": ("#8c564b", (0, (2, 2))), "DRAM": ("black", "solid")}


def roofline_png(report: dict, output_name: str) -> bytes:
    """The machine's roofline (log-log: FLOPs per byte against GFLOP/s): the FMA peak, a memory roof
    per level a layer's data can stream from (L2, L3, memory: its read bandwidth), the ridge point of
    memory, and NumPy's sgemm rate; every layer of a bench report as three points, ours, NumPy and
    PyTorch, numbered beside ours (the key under the plot names them), and a tick at the layer's own
    roof, in the colour of its level: the roof its points are judged against."""
    matplotlib, Figure = _matplotlib(output_name)
    limits, layers = report["limits"], report["layers"]
    peak, bandwidth = limits["peak_gflops"], limits["bandwidth_gbs"]
    levels = [(level["name"], level["read_gbs"]) for level in limits.get("levels") or ()] or [("DRAM", bandwidth)]
    ridge = peak / levels[-1][1]
    intensities = [layer["intensity"] for layer in layers] + [ridge]
    left, right = min(intensities) / 3, max(intensities) * 3
    speeds = [
        layer[key] for layer in layers for key in ("ours_gflops", "numpy_gflops", "torch_gflops") if layer.get(key)
    ]
    bottom = min([left * levels[-1][1], *speeds]) / 1.5
    figure = Figure(figsize=(10, 6.0 + 0.12 * (len(layers) + 1)))
    axes = figure.add_subplot()
    axes.set_xscale("log")
    axes.set_yscale("log")
    for axis in (axes.xaxis, axes.yaxis):  # ticks at 1, 2 and 5 of each power of ten, written plainly
        axis.set_major_locator(matplotlib.ticker.LogLocator(subs=(1.0, 2.0, 5.0)))
        axis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda value, _: f"{value:g}"))
        axis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    for name, read_gbs in levels:
        colour, dashes = LEVEL_STYLES.get(name, ("grey", "solid"))
        knee = peak / read_gbs
        axes.plot([left, knee, right], [left * read_gbs, peak, peak], color=colour, linestyle=dashes, linewidth=1.5)
        where = max(left * 1.3, min(knee / 8, right / 10))  # on the slope, left of its knee
        axes.annotate(f"{'memory' if name == 'DRAM' else name} reads {read_gbs:,.0f} GB/s", (where, where * read_gbs),
                      textcoords="offset points", xytext=(-4, 6), fontsize=8, color=colour, rotation=0)  # fmt: skip
    axes.axhline(limits["sgemm_gflops"], color="#ff7f0e", linestyle="--", linewidth=0.8)
    axes.annotate(f"FMA peak {peak:,.0f} GFLOP/s", (right, peak), ha="right", va="bottom", fontsize=8)
    axes.annotate(f"NumPy sgemm {limits['sgemm_gflops']:,.0f}", (right, limits["sgemm_gflops"]), ha="right",
                  va="top", fontsize=8, color="#ff7f0e")  # fmt: skip
    axes.axvline(ridge, color="grey", linestyle=":", linewidth=1)
    axes.annotate(f"ridge {ridge:.1f} FLOP/B", (ridge, bottom * 1.2), rotation=90, ha="right", fontsize=8, color="grey")
    for layer in layers:  # each layer's own roof: min(peak, what its level allows it)
        if layer.get("attainable_gflops"):
            colour = LEVEL_STYLES.get(layer.get("level", "DRAM"), ("grey", ""))[0]
            axes.plot([layer["intensity"] / 1.12, layer["intensity"] * 1.12], [layer["attainable_gflops"]] * 2,
                      color=colour, linewidth=2.5, solid_capstyle="butt", zorder=2)  # fmt: skip
    contenders = [("ours_gflops", "conv1x1", "o", "#1f77b4"), ("numpy_gflops", "NumPy", "s", "#ff7f0e")]
    contenders.append(("torch_gflops", "PyTorch", "^", "#2ca02c"))
    for key, label, marker, colour in contenders:
        points = [(layer["intensity"], layer[key]) for layer in layers if layer.get(key)]
        if points:
            axes.scatter(*zip(*points, strict=True), marker=marker, color=colour, label=label, zorder=3, s=28)
    for number, layer in enumerate(layers, start=1):
        axes.annotate(str(number), (layer["intensity"], layer["ours_gflops"]), textcoords="offset points",
                      xytext=(5, 3), fontsize=7, color="#1f77b4")  # fmt: skip
    axes.set_xlim(left, right)
    axes.set_ylim(bottom, peak * 1.6)
    axes.set_xlabel("arithmetic intensity: FLOPs per byte of input, output and weights")
    axes.set_ylabel("GFLOP/s")
    cpu = report["machine"].get("cpu", "this machine")
    axes.set_title(f"Roofline of {cpu}, float32, {limits['threads']} threads: conv1x1, NumPy and PyTorch per layer")
    axes.grid(True, which="both", linewidth=0.3, alpha=0.5)
    axes.legend(loc="lower right", fontsize=8)
    names = ["A bar at a layer's intensity is its own roof, in the colour of the level its working set fits."]
    names += [f"{number:>2} {layer['name']} ({layer['spec']}, roof: {layer.get('level', 'DRAM')})"
              for number, layer in enumerate(layers, start=1)]  # fmt: skip
    figure.text(0.01, 0.01, "\n".join(names), fontsize=7, va="bottom", family="DejaVu Sans Mono")
    key_height = (0.12 * len(names) + 0.75) / (6.0 + 0.12 * len(names))  # inches of key and x label, as a fraction
    figure.subplots_adjust(left=0.08, right=0.98, top=0.94, bottom=key_height)
    return _png(figure)


# --- a model ---------------------------------------------------------------------------------------------------


def model_png(data: dict, title: str, output_name: str) -> bytes:
    """MACs of every layer of a model (``model``'s report), as bars coloured by kind, in file order."""
    _, Figure = _matplotlib(output_name)
    layers = data["layers"]
    figure = Figure(figsize=(max(6.4, min(20.0, 2.0 + 0.22 * len(layers))), 4.8))
    axes = figure.add_subplot()
    positions = range(1, len(layers) + 1)
    colours = [KIND_COLOURS[layer["kind"]] for layer in layers]
    axes.bar(positions, [layer["macs"] for layer in layers], color=colours, width=0.8)
    for kind, entry in data["by_kind"].items():
        axes.bar([0], [0], color=KIND_COLOURS[kind], label=f"{kind}: {entry['macs_share']:.2f} % of MACs")
    axes.set_xlim(0.3, len(layers) + 0.7)
    axes.set_xlabel("layer (in the file's order)")
    axes.set_ylabel("MACs")
    axes.ticklabel_format(axis="y", style="sci", scilimits=(6, 6))
    total = data["totals"]["macs"]
    axes.set_title(f"{title}: MACs per layer, {total:,} in all")
    axes.legend(fontsize=8)
    figure.tight_layout()
    return _png(figure)
