import signal
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import settings

# No deadline for any example: timings belong in the benchmark, and on a shared 2-core machine one
# example of the .npy fuzz test (a small file written and read) took 508 ms while the other core was busy.
settings.register_profile("conv1x1", deadline=None)
settings.load_profile("conv1x1")

# Started in the background by a shell without job control (`.ci/run &`, nohup), a process inherits
# SIGINT ignored, and so does every process it starts: the CLI rightly keeps ignoring it, so the tests
# that press Ctrl-C on a child failed or skipped. A handler, unlike SIG_IGN, is not inherited across
# exec: children then start with Ctrl-C working, as from a terminal.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)
# The same shell ignores SIGQUIT in its background jobs: put back the default, which children inherit
# (else the CLI, rightly, keeps ignoring it, and the SIGQUIT test saw its run finish with status 0).
if signal.getsignal(signal.SIGQUIT) is signal.SIG_IGN:
    signal.signal(signal.SIGQUIT, signal.SIG_DFL)

# tests/ holds naive.py, the references, seaweed.py, the S3 server, and models/builders.py; make them
# importable as plain modules.
sys.path.insert(0, str(Path(__file__).resolve().parent))
# builders.py is a helper, not a test module: collecting it (for doctests) would import torch in every run.
collect_ignore = ["models/builders.py", "seaweed.py"]

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = ROOT / "samples"


@pytest.fixture
def rng():
    return np.random.default_rng(12345)


@pytest.fixture
def samples_dir():
    return SAMPLES
