"""What a path names, and whether Dask can open it: cheap checks that import nothing heavy."""

from __future__ import annotations

from ..errors import InputError

EXTRA = 'pip install "conv1x1[dask]"'


def is_store(path: str) -> bool:
    """Whether ``path`` names a zarr store (``.zarr``, local or an fsspec URL); cheap, imports nothing."""
    return path.rstrip("/").lower().endswith(".zarr")


def is_url(path: str) -> bool:
    return "://" in path


def require_dask(name: str, action: str = "reading") -> None:
    """Raise one ``InputError`` line naming the extra if dask, distributed or zarr cannot be imported."""
    try:
        import dask.array  # noqa: F401
        import distributed  # noqa: F401
        import zarr  # noqa: F401
    except ImportError:
        raise InputError(f"{name}: {action} .zarr stores needs the dask extra: {EXTRA}") from None
