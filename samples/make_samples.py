"""Regenerate the bundled samples, byte for byte: ``python samples/make_samples.py``.

- lecture_6x6.npy, times2.npy: the lecture's 6x6 one-channel image and its 1x1 "times 2" filter;
- volume_6x6x32.npy, bank_32x8.npy, bias_8.npy: a small multi-channel volume, bank and bias;
- volume_28x28x192.npy, bank_192x32.npy: GoogLeNet's inception (3a) input and a 192 -> 32 reduce.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
SEED = 20261125

LECTURE_6X6 = [
    [1, 2, 3, 6, 5, 8],
    [3, 5, 5, 1, 3, 4],
    [2, 1, 3, 4, 9, 3],
    [4, 7, 8, 5, 7, 9],
    [1, 5, 3, 7, 4, 8],
    [5, 4, 9, 8, 3, 5],
]


def samples() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(SEED)
    # Fixed-seed normals rounded to a few digits, so the files are small to read by eye and identical everywhere.
    normal = lambda *shape, scale=1.0: np.round(rng.standard_normal(shape) * scale, 4).astype(np.float32)  # noqa: E731
    return {
        "lecture_6x6.npy": np.array(LECTURE_6X6, dtype=np.float32),
        "times2.npy": np.array([[2.0]], dtype=np.float32),
        "volume_6x6x32.npy": normal(6, 6, 32),
        "bank_32x8.npy": normal(32, 8, scale=32**-0.5),
        "bias_8.npy": normal(8, scale=0.1),
        "volume_28x28x192.npy": np.maximum(normal(28, 28, 192), 0),
        "bank_192x32.npy": normal(192, 32, scale=192**-0.5),
    }


def main() -> None:
    for name, array in samples().items():
        np.save(HERE / name, array, allow_pickle=False)
        print(f"{name}: {array.shape} {array.dtype}")


if __name__ == "__main__":
    main()
