"""A .npy file streamed through the engine: the exact counts its ``ApplyReport`` gives (which the
summary prints), through the public ``apply``."""

from __future__ import annotations

import naive
import numpy as np
import pytest

from conv1x1_cli import ApplyOptions, apply


def save(directory, name, array):
    path = directory / name
    np.save(path, array)
    return str(path)


@pytest.mark.parametrize(
    ("biased", "params", "flops"),
    [
        # 3 images of 4x5 pixels = 60 pixels; 6 channels -> 4 -> 2: 6·4 + 4·2 = 32 weights,
        # 60·32 = 1,920 MACs, FLOPs 2·1,920 = 3,840 + 60 per biased filter
        ((), 32, 3840),
        ((True,), 32 + 4, 3840 + 60 * 4),
        ((True, True), 32 + 4 + 2, 3840 + 60 * (4 + 2)),
    ],
)
def test_apply_report_counts_a_bias_only_for_the_layers_that_have_one(tmp_path, rng, biased, params, flops):
    x = rng.standard_normal((3, 4, 5, 6)).astype(np.float32)
    banks = [rng.standard_normal((6, 4)).astype(np.float32), rng.standard_normal((4, 2)).astype(np.float32)]
    biases = [rng.standard_normal(4).astype(np.float32), rng.standard_normal(2).astype(np.float32)][: len(biased)]
    report = apply(
        save(tmp_path, "x.npy", x),
        [save(tmp_path, f"w{index}.npy", bank) for index, bank in enumerate(banks)],
        str(tmp_path / "y.npy"),
        ApplyOptions(bias_paths=[save(tmp_path, f"b{index}.npy", bias) for index, bias in enumerate(biases)]),
    )
    cost = report.cost
    assert [layer.bias for layer in cost.layers] == [4, 2][: len(biased)] + [0, 0][len(biased) :]
    assert (cost.total("weights"), cost.total("params")) == (32, params)
    assert (cost.total("macs"), cost.total("flops")) == (1920, flops)
    assert report.input_shape == (3, 4, 5, 6) and report.output_shape == (3, 4, 5, 2)
    assert report.bank_shapes == [(6, 4), (4, 2)]
    naive.assert_chain_close_to_reference(np.load(tmp_path / "y.npy"), x, banks, biases)


def test_a_whole_run_with_little_work_runs_on_one_thread_unless_told_otherwise():
    """A run of under 2^28 multiply-adds in all is given one thread (the pool's code costs more to load
    than it could save), counted over every layer; a thread count the caller chose is kept."""
    from conv1x1_cli.engine.layers import Layer
    from conv1x1_cli.engine.stack import run_threads

    def layer(channels, filters):
        return Layer(np.zeros((channels, filters), np.float32), None, True)

    chain = [layer(192, 64), layer(64, 32)]  # 192·64 + 64·32 = 14,336 multiply-adds a pixel
    under, over = 18724, 18725  # 2^28 / 14,336 = 18,724.6
    assert run_threads(None, chain, under) == 1 and run_threads(None, chain, over) is None
    assert run_threads(None, chain[:1], over) == 1  # 12,288 a pixel: 230 M in all
    assert run_threads(2, chain, under) == 2 and run_threads(1, chain, over) == 1
