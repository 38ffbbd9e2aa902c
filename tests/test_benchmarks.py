"""The benchmark suite runs, and its per-row-gather reference is exact."""

import os
import sys

import numpy as np
import pytest
from keras import ops

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from benchmarks import run  # noqa: E402
from benchmarks import suite  # noqa: E402
from benchmarks.reference import RowGatherRecurrent  # noqa: E402

import keras_monet  # noqa: E402

TINY = {"tiny": dict(tasks=3, orders=6, k=4, batch=4, features=2, encoder=1)}


def _pair(tasks, units=6, block_size=2, seed=0):
    fast = keras_monet.TaskwiseRecurrent(
        tasks, units=units, label_units=5, block_size=block_size, seed=seed,
        bias_initializer="random_normal",
    )
    slow = RowGatherRecurrent(
        tasks, units=units, label_units=5, block_size=block_size, seed=seed
    )
    fast.build((None, units))
    slow.build((None, units))
    for source, target in zip(fast.weights, slow.weights):
        target.assign(source)
    return fast, slow


def _inputs(tasks, batch, orders, units=6, seed=0):
    rng = np.random.default_rng(seed)
    h0 = rng.normal(size=(batch, units)).astype("float32")
    sigma = np.stack(
        [np.stack([rng.permutation(tasks) for _ in range(orders)])
         for _ in range(batch)]
    ).astype("int32")
    labels = (rng.random((batch, tasks)) < 0.5).astype("float32")
    mask = (rng.random((batch, tasks)) < 0.7).astype("float32")
    return h0, sigma, labels, mask


@pytest.mark.parametrize("tasks,block_size", [(3, 1), (5, 2), (14, 4)])
def test_row_gather_reference_gives_taskwise_logits(tasks, block_size):
    fast, slow = _pair(tasks, block_size=block_size)
    h0, sigma, labels, mask = _inputs(tasks, batch=3, orders=5)
    for label_mask in (None, mask):
        expected = fast(h0, sigma, labels=labels, label_mask=label_mask)
        got = slow(h0, sigma, labels=labels, label_mask=label_mask)
        np.testing.assert_allclose(
            ops.convert_to_numpy(got), ops.convert_to_numpy(expected),
            atol=1e-5,
        )


def test_row_gather_reference_samples_the_same_trajectories():
    fast, slow = _pair(4, seed=7)
    h0, sigma, _, _ = _inputs(4, batch=3, orders=5, seed=1)
    fast.seed_generator.state.assign(slow.seed_generator.state)
    np.testing.assert_allclose(
        ops.convert_to_numpy(slow(h0, sigma)),
        ops.convert_to_numpy(fast(h0, sigma)),
        atol=1e-5,
    )


def test_row_gather_reference_has_the_same_gradients():
    import tensorflow as tf

    fast, slow = _pair(4, block_size=3)
    h0, sigma, labels, _ = _inputs(4, batch=2, orders=3)
    weights = np.random.default_rng(2).normal(size=(2, 3, 4)).astype("float32")
    grads = []
    for layer in (fast, slow):
        h = tf.constant(h0)
        with tf.GradientTape() as tape:
            tape.watch(h)
            loss = tf.reduce_sum(layer(h, sigma, labels=labels) * weights)
        grads.append(
            [tf.convert_to_tensor(g).numpy()
             for g in tape.gradient(loss, [h] + layer.trainable_weights)]
        )
    for expected, got in zip(*grads):
        np.testing.assert_allclose(got, expected, atol=1e-5)


def test_benchmark_run_prints_the_table_rows(monkeypatch, capsys):
    monkeypatch.setattr(suite, "SHAPES", TINY)
    monkeypatch.setattr(
        suite, "scaling_points",
        lambda quick: [("k", 2, suite.scaled(TINY["tiny"], k=2))],
    )
    monkeypatch.setattr(suite, "matmul_rate", lambda *a, **k: 10.0)
    results, points = run.main(
        ["--shapes", "tiny", "--reference-shapes", "tiny",
         "--baseline-shapes", "", "--repeats", "1"]
    )
    out = capsys.readouterr().out
    assert "| tiny | monet |" in out
    assert "| tiny | row_gather |" in out
    assert "| k | 2 |" in out
    assert "faster than the per-row gather" in out
    for row in results["tiny"]:
        assert row["step_ms"] > 0 and row["infer_per_s"] > 0
        assert row["gru_gflops"] > 0
    assert points[0][3]["step_ms"] > 0


def test_baselines_are_measured_when_present(monkeypatch):
    if not suite.baseline_classes():
        pytest.skip("keras_monet.baselines has none of VMNC, VMNS, MRNN")
    name = sorted(suite.baseline_classes())[0]
    row = suite.measure(name, TINY["tiny"], repeats=1, inference=False)
    assert row["kind"] == name and row["step_ms"] > 0
