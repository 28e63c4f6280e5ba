"""The ``conv1x1`` command: Click commands that parse arguments, call the API and hand results to render.

One module per family of commands (``apply``, ``costs``, ``show``, ``bench``); ``options`` holds what
they share and ``signals`` how the process ends. Heavy modules (the API and its NumPy and Numba) are
imported inside the commands that need them, so ``conv1x1 --help`` and ``conv1x1 shapes`` start instantly.
"""

from __future__ import annotations

import click

from . import apply, bench, costs, explain, model, show
from .signals import run_main


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="conv1x1", prog_name="conv1x1")
def main() -> None:
    """Apply, check and cost 1×1 (pointwise) convolutions on .npy arrays.

    \b
    conv1x1 apply in.npy w.npy -o out.npy            ReLU(x·w) at every pixel
    conv1x1 shapes 28x28x192 --filters 32            shapes, params, MACs, FLOPs, roofline
    conv1x1 bottleneck 28x28x192 -r 16 -k 5 -f 32    a 1×1 reduce before a K×K conv
    conv1x1 inception 28x28x192 64 96 128 16 32 32   a GoogLeNet module's cost
    conv1x1 model mobilenet.onnx                     every layer of a model, costed by kind
    conv1x1 show out.npy --channel 0                 look at one channel (--png: as a picture)
    conv1x1 explain in.npy w.npy --pixel 0,0         one pixel walked through the layer
    conv1x1 bench --quick                            our kernel against NumPy and PyTorch
    """


for command in (
    apply.apply,
    bench.bench,
    costs.bottleneck,
    explain.explain,
    costs.inception,
    model.model,
    costs.shapes,
    show.show,
):
    main.add_command(command)


def run() -> None:
    """Entry point: Click, plus exit 130 on Ctrl-C and quiet handling of a reader closing the pipe early."""
    run_main(main)
