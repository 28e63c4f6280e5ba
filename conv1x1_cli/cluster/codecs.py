"""The compression of output stores: zarr v3's own codecs, named on the command line as ``NAME[:LEVEL]``.

A ReLU output is about half zeros among incompressible floats, which zstd at zarr's default level
(0, zstd's 3) compresses at a quarter of the speed it reads the input. Measured on 8 MiB chunks of
ReLU(x·w) for normal x and w, one core of a Zen 5 (benchmarks/README.md has the table):

    zstd:0 (zarr's default)  245 MB/s  ratio 1.83     zstd:1 (ours)   455 MB/s  ratio 1.77
    lz4 (Blosc, no shuffle)  800 MB/s  ratio 1.35     none          11000 MB/s  ratio 1.00

Cheap to import: zarr is imported only to build the codec, after the name is checked.

>>> check_codec("zstd"), check_codec("zstd:3"), check_codec("none")
(('zstd', 1), ('zstd', 3), ('none', None))
"""

from __future__ import annotations

from typing import Any

from ..errors import ArgumentError

DEFAULT = "zstd"
# name: (what it is, its default level; None for a codec that takes no level)
CODECS: dict[str, tuple[str, int | None]] = {
    "zstd": ("Zstandard", 1),
    "lz4": ("Blosc with LZ4, no shuffle", 5),
    "none": ("no compression", None),
}


def check_codec(spec: str | None) -> tuple[str, int | None]:
    """(name, level) of ``NAME[:LEVEL]``; raises ``ArgumentError`` for an unknown name or a bad level."""
    name, colon, level_text = (spec or DEFAULT).partition(":")
    if name not in CODECS:
        raise ArgumentError(f"unknown codec {name!r}; choose one of {', '.join(CODECS)}", option="--codec")
    default_level = CODECS[name][1]
    if not colon:
        return name, default_level
    if default_level is None:
        raise ArgumentError(f"{spec!r}: {name} takes no level", option="--codec")
    levels = range(-7, 23) if name == "zstd" else range(0, 10)
    if not level_text.lstrip("-").isdigit() or int(level_text) not in levels:
        raise ArgumentError(f"{spec!r}: {name}'s level is a whole number from {levels[0]} to {levels[-1]}", "--codec")
    return name, int(level_text)


def compressors(spec: str | None) -> Any:
    """The ``compressors`` argument of ``zarr.create_array`` for ``spec``."""
    name, level = check_codec(spec)
    if level is None:  # (only "none" has no level)
        return None
    from zarr.codecs import BloscCodec, ZstdCodec

    if name == "zstd":
        return ZstdCodec(level=level)
    return BloscCodec(cname="lz4", clevel=level, shuffle="noshuffle")
