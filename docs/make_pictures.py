"""Regenerate the README's pictures from the bundled samples: ``python docs/make_pictures.py``.

Runs the commands a user would (``conv1x1 apply``, ``conv1x1 show --png``) in this interpreter's
environment, which needs the plot extra (``pip install ".[plot]"``). The pictures are deterministic:
the same samples give the same bytes.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = ROOT / "samples"
DOCS = ROOT / "docs"


def conv1x1(*args) -> None:
    subprocess.run([sys.executable, "-m", "conv1x1_cli", *map(str, args)], check=True, cwd=ROOT)


def main() -> None:
    # The lecture's 6×6 image, its numbers in the cells.
    conv1x1("show", "samples/lecture_6x6.npy", "--png", DOCS / "lecture_6x6.png")
    # The 32 feature maps of the README's first command: the 28×28×192 sample through its 192→32 bank.
    with tempfile.TemporaryDirectory() as folder:
        maps = Path(folder) / "out.npy"
        conv1x1("apply", "samples/volume_28x28x192.npy", "samples/bank_192x32.npy", "-o", maps, "-q")
        subprocess.run(
            [sys.executable, "-m", "conv1x1_cli", "show", "out.npy", "--grid", "--png", DOCS / "feature_maps.png"],
            check=True,
            cwd=folder,
        )


if __name__ == "__main__":
    main()
