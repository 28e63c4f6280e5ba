"""What the wheel holds: the package (with py.typed and every subpackage), its metadata and licence,
and nothing else (no tests, samples, caches or build leftovers). Usage: python .ci/check_wheel.py WHEEL"""

from __future__ import annotations

import sys
import zipfile
from email.parser import Parser

REQUIRED = (
    "conv1x1_cli/py.typed",
    "conv1x1_cli/__init__.py",
    "conv1x1_cli/kernel/tiles.py",
    "conv1x1_cli/sources/onnx_model.py",
    "conv1x1_cli/render/pictures.py",
)
EXTRAS = {"dask", "s3", "gcs", "models", "plot"}


def main(wheel: str) -> None:
    names = zipfile.ZipFile(wheel).namelist()
    info = next(name.split("/")[0] for name in names if name.endswith(".dist-info/METADATA"))
    stray = [name for name in names if not name.startswith(("conv1x1_cli/", f"{info}/"))]
    caches = [name for name in names if "__pycache__" in name or name.endswith((".pyc", ".orig"))]
    missing = [name for name in REQUIRED if name not in names]
    metadata = Parser().parsestr(zipfile.ZipFile(wheel).read(f"{info}/METADATA").decode())
    extras = set(metadata.get_all("Provides-Extra") or ())
    problems = [
        *(f"stray file {name}" for name in stray + caches),
        *(f"missing {name}" for name in missing),
        *(f"extra {extra} not declared" for extra in EXTRAS - extras),
    ]
    if not any(name.startswith(f"{info}/licenses/") or name == f"{info}/LICENSE" for name in names):
        problems.append("no LICENSE in the wheel")
    if metadata.get("License-Expression", metadata.get("License")) != "MIT":
        problems.append(f"licence is {metadata.get('License-Expression')!r}, not MIT")
    if problems:
        sys.exit("wheel check failed: " + "; ".join(problems))
    print(f"{wheel}: {len(names)} files, all under conv1x1_cli/ or {info}/; extras {sorted(extras)}")


if __name__ == "__main__":
    main(sys.argv[1])
