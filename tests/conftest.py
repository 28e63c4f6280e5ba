import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import settings

# No deadline for any example: timings belong in the benchmark, and on a shared 2-core machine one
# example of the .npy fuzz test (a small file written and read) took 508 ms while the other core was busy.
settings.register_profile("conv1x1", deadline=None)
settings.load_profile("conv1x1")

# tests/ holds naive.py, the references; make it importable as a plain module.
sys.path.insert(0, str(Path(__file__).resolve().parent))

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = ROOT / "samples"


@pytest.fixture
def rng():
    return np.random.default_rng(12345)


@pytest.fixture
def samples_dir():
    return SAMPLES
