"""Signals during the first compile: how many runs end cleanly, and how many lose the signal.

Each trial starts ``conv1x1 apply`` on the 28x28x192 sample with an empty Numba cache (so the first
seconds go to the compiler), sends SIGINT or SIGTERM (alternately) at a random moment of the
compile window, and classifies the end:

- clean: status 130 or 143, no traceback, no temporary left;
- finished first: status 0, and the run's own time shows it was over before the signal came;
- lost: status 0 although the signal came while the run was going on;
- anything else (a crash, a traceback) is printed in full.

    python benchmarks/signal_stress.py [--trials 30] [--seed 1]

About 8 s a trial on 2 cores (the compile is ~4 s there).
"""

from __future__ import annotations

import argparse
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SAMPLES = Path(__file__).resolve().parent.parent / "samples"


def trial(stop: signal.Signals, delay: float) -> tuple[str, str]:
    work = tempfile.mkdtemp(prefix="conv1x1-signal-")
    try:
        environment = {**os.environ, "NUMBA_CACHE_DIR": os.path.join(work, "cache")}
        command = [sys.executable, "-m", "conv1x1_cli", "apply", str(SAMPLES / "volume_28x28x192.npy")]
        command += [str(SAMPLES / "bank_192x32.npy"), "-o", os.path.join(work, "out.npy")]
        process = subprocess.Popen(command, stderr=subprocess.PIPE, env=environment, cwd=work)
        time.sleep(delay)
        process.send_signal(stop)
        _, stderr = process.communicate(timeout=300)
        text = stderr.decode()
        leftovers = [name for name in os.listdir(work) if name.endswith(".tmp")]
        if process.returncode == 0:
            took = re.search(r"time\s+([\d,.]+) ms", text)
            over_before = took and float(took.group(1).replace(",", "")) / 1000 < delay - 0.5
            return ("finished first" if over_before else "lost"), text
        if process.returncode == 128 + stop and "Traceback" not in text and not leftovers:
            return "clean", text
        return f"status {process.returncode}", text
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=30)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    # Started in the background by a shell, this process (and so its children) would ignore SIGINT.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    random.seed(args.seed)
    counts: dict[str, int] = {}
    for index in range(args.trials):
        stop = signal.SIGTERM if index % 2 else signal.SIGINT
        delay = random.uniform(0.7, 6.0)
        kind, text = trial(stop, delay)
        counts[kind] = counts.get(kind, 0) + 1
        print(f"{index:3} {stop.name:7} at {delay:4.1f} s: {kind}", flush=True)
        if kind not in ("clean", "finished first"):
            print(text, flush=True)
    print(counts)
    return 0 if set(counts) <= {"clean", "finished first"} else 1


if __name__ == "__main__":
    sys.exit(main())
