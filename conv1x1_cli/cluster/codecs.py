"""The compression of output stores: zarr v3's own codecs, named on the command line as ``NAME[:LEVEL]``.

Cheap to import (zarr is imported only to build the codec), so the CLI checks a name before Dask starts.
"""

from __future__ import annotations

from typing import Any

from ..errors import ArgumentError

DEFAULT = "zstd"
# name: (what it is, default level or None when it takes none)
CODECS: dict[str, tuple[str, int | None]] = {
    "zstd": ("zarr's default: Zstandard", 0),
    "blosc-lz4": ("Blosc, LZ4 with byte shuffle", 5),
    "blosc-zstd": ("Blosc, Zstandard with byte shuffle", 3),
    "none": ("no compression", None),
}
CODEC_HELP = ", ".join(CODECS) + f" [default: {DEFAULT}]."


def check_codec(spec: str | None) -> tuple[str, int | None]:
    """(name, level) of ``NAME[:LEVEL]``; raises ``ArgumentError`` for an unknown name or a bad level."""
    name, _, level_text = (spec or DEFAULT).partition(":")
    if name not in CODECS:
        raise ArgumentError(f"unknown codec {name!r}; choose one of {', '.join(CODECS)}", option="--codec")
    default_level = CODECS[name][1]
    if not level_text:
        return name, default_level
    if default_level is None or not level_text.lstrip("-").isdigit():
        raise ArgumentError(f"{spec!r}: {name} takes no level" if default_level is None else f"{spec!r}: bad level")
    return name, int(level_text)


def compressors(spec: str | None) -> Any:
    """The ``compressors`` argument of ``zarr.create_array`` for ``spec``."""
    name, level = check_codec(spec)
    if name == "none":
        return None
    from zarr.codecs import BloscCodec, ZstdCodec

    if name == "zstd":
        return ZstdCodec(level=level or 0)
    return BloscCodec(cname=name.removeprefix("blosc-"), clevel=level, shuffle="shuffle", typesize=4)
