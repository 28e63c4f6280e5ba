import sys
from pathlib import Path

import numpy as np
import pytest

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
