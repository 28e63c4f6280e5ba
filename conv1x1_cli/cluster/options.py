"""What the command line says about storage: ``--storage-option KEY=VALUE`` pairs for fsspec file
systems. Pure parsing that imports nothing heavy, so that bad options fail before Dask starts.

>>> storage_options(["endpoint_url=http://127.0.0.1:8333", "anon=true", "client_kwargs.region_name=eu-west-1"])
{'endpoint_url': 'http://127.0.0.1:8333', 'anon': True, 'client_kwargs': {'region_name': 'eu-west-1'}}
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from ..errors import ArgumentError

OPTION = "'--storage-option'"


def storage_options(pairs: Iterable[str]) -> dict[str, Any]:
    """``KEY=VALUE`` pairs as the keyword arguments of an fsspec file system.

    A VALUE that reads as JSON is that value (``true``, ``3``, ``null``, ``{"a": 1}``), anything else
    a string; a dotted KEY (``client_kwargs.region_name``) fills a nested dictionary, as s3fs's
    ``client_kwargs`` and ``config_kwargs`` want.
    """
    options: dict[str, Any] = {}
    for pair in pairs:
        key, separator, text = pair.partition("=")
        if not separator or not key.strip():
            raise ArgumentError(f"{pair!r} is not KEY=VALUE", option=OPTION)
        *parents, name = key.strip().split(".")
        level = options
        for parent in parents:
            level = level.setdefault(parent, {})
            if not isinstance(level, dict):
                raise ArgumentError(f"{key}: {parent} is given both a value and keys", option=OPTION)
        if isinstance(level.get(name), dict):
            raise ArgumentError(f"{key}: is given both a value and keys", option=OPTION)
        level[name] = _value(text)
    return options


def _value(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return text
