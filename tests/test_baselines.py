"""Tests of keras_monet.baselines: VMNC, VMNS, MRNN, hard selection, oracle."""

import math

import keras
import numpy as np
import pytest
from keras import ops

import keras_monet
from keras_monet import baselines
from keras_monet import teacher_forcing
from tests.testing import run_layer_test


def _loss_and_outputs(head, x, labels, label_mask=None):
    with teacher_forcing.TeacherForcing(
        ops.convert_to_tensor(labels), label_mask
    ) as context:
        outputs = head(x, training=True)
    return (
        ops.convert_to_numpy(context.losses[0]),
        ops.convert_to_numpy(outputs),
    )


def _data(batch=6, features=7, tasks=4, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(batch, features)).astype("float32")
    y = rng.integers(0, 2, size=(batch, tasks)).astype("float32")
    return x, y


# -- the layer contract (build, config, compiled step, mixed precision) -----


@pytest.mark.parametrize(
    "layer_cls, init_kwargs",
    [
        (baselines.VMNC, {"tasks": 4, "units": 8, "momentum": 0.9}),
        (baselines.VMNS, {"tasks": 4, "units": 8, "momentum": 0.9}),
        (
            baselines.MRNN,
            {"tasks": 4, "order": [2, 0, 3, 1], "samples": 3, "units": 8,
             "label_units": 5, "seed": 3},
        ),
        (
            baselines.HardOrderSelection,
            {"tasks": 4, "orders": 6, "exploration_orders": 3,
             "selection": "best", "samples": 3, "units": 8, "label_units": 5,
             "seed": 1},
        ),
    ],
)
def test_layer_contract(layer_cls, init_kwargs):
    x, y = _data()
    run_layer_test(
        layer_cls, init_kwargs, (x,), labels=y, expected_output_shape=(6, 4)
    )


@pytest.mark.parametrize(
    "head",
    [
        lambda: baselines.VMNC(4),
        lambda: baselines.VMNS(4),
        lambda: baselines.MRNN(4, seed=0),
        lambda: baselines.HardOrderSelection(4, orders=5, seed=0),
    ],
)
def test_training_call_without_labels_raises(head):
    x, _ = _data()
    layer = head()
    layer(x)
    assert layer.compute_output_shape((None, 7)) == (None, 4)
    with pytest.raises(ValueError, match="without its labels"):
        layer(x, training=True)
    with pytest.raises(ValueError, match="one column per task"):
        _loss_and_outputs(layer, x, np.zeros((6, 3), "float32"))


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: baselines.VMNC(0), "`tasks` should be an integer >= 1"),
        (lambda: baselines.VMNS(3, units=0), "`units=0`"),
        (lambda: baselines.VMNC(3, momentum=1.5), "`momentum=1.5`"),
        (lambda: baselines.MRNN(3, order=[0, 0, 1]), r"permutation of 0..2"),
        (lambda: baselines.MRNN(3, order=[[0, 1, 2]]), "one order"),
        (lambda: baselines.MRNN(3, samples=0), "`samples=0`"),
        (lambda: baselines.HardOrderSelection(3, orders=7), "at most tasks!"),
        (
            lambda: baselines.HardOrderSelection(3, 6, exploration_orders=9),
            "`exploration_orders=9`",
        ),
        (
            lambda: baselines.HardOrderSelection(3, 6, selection="max"),
            "`selection='max'`",
        ),
        (lambda: baselines.OrderExploration(-1), "`epochs=-1`"),
        (lambda: baselines.oracle(3, orders=2), "exactly one order"),
        (lambda: baselines.oracle(3, order=[0, 1]), r"shape \[M, tasks\]"),
    ],
)
def test_bad_arguments_name_the_value(make, message):
    with pytest.raises(ValueError, match=message):
        make()


# -- hand-checked numbers ---------------------------------------------------


@pytest.mark.parametrize("layer_cls", [baselines.VMNC, baselines.VMNS])
def test_vanilla_loss_is_summed_bce(layer_cls):
    # Zero output layers: every probability is 1/2, so the loss of every
    # example is T log 2 (a known label) and drops by log 2 per masked one.
    x, y = _data(tasks=3)
    head = layer_cls(3, units=5)
    head(x)
    for weight in head.trainable_weights:
        if "output" in weight.path:
            weight.assign(ops.zeros(weight.shape))
    loss, outputs = _loss_and_outputs(head, x, y)
    np.testing.assert_allclose(loss, np.full(6, 3 * math.log(2)), rtol=1e-6)
    np.testing.assert_allclose(outputs, 0.5)
    mask = np.ones((6, 3), "float32")
    mask[0, 1] = 0
    loss, _ = _loss_and_outputs(head, x, y, ops.convert_to_tensor(mask))
    np.testing.assert_allclose(loss[0], 2 * math.log(2), rtol=1e-6)


def test_vmns_heads_are_separate():
    # Zeroing task 1's head changes task 1's output only.
    x, _ = _data(tasks=3)
    head = baselines.VMNS(3, units=5)
    before = ops.convert_to_numpy(head(x))
    for weight in head.trainable_weights:
        if "task_1_output" in weight.path:
            weight.assign(ops.zeros(weight.shape))
    after = ops.convert_to_numpy(head(x))
    np.testing.assert_allclose(after[:, [0, 2]], before[:, [0, 2]])
    np.testing.assert_allclose(after[:, 1], 0.5)


def _mrnn_reference(head, x, labels):
    """The chain in plain numpy, with one keras.layers.GRUCell's equations."""
    w = {v.path.split("/")[-1]: ops.convert_to_numpy(v) for v in head.weights}
    kernel, recurrent, bias = (
        ops.convert_to_numpy(v) for v in head.cell.weights
    )
    c_kernel, c_bias = (ops.convert_to_numpy(v) for v in head.compression.weights)
    sigmoid = lambda v: 1 / (1 + np.exp(-v))  # noqa: E731
    units = head.units
    logits = np.zeros(labels.shape)
    for b in range(len(x)):
        h = np.maximum(x[b] @ c_kernel + c_bias, 0)
        previous = None
        for task in head.order:
            label_input = np.zeros(head.tasks)
            if previous is not None:
                label_input[previous] = 2 * labels[b, previous] - 1
            e = label_input @ w["label_kernel"] + w["label_bias"]
            xz, xr, xh = np.split(e @ kernel + bias[0], 3)
            hz, hr, hh = np.split(h @ recurrent + bias[1], 3)
            z, r = sigmoid(xz + hz), sigmoid(xr + hr)
            h = z * h + (1 - z) * np.tanh(xh + r * hh)
            assert h.shape == (units,)
            logits[b, task] = h @ w["output_kernel"][:, task] + w["output_bias"][task]
            previous = task
    return logits


def test_mrnn_loss_is_the_hand_computed_chain():
    x, y = _data(tasks=4, seed=2)
    head = baselines.MRNN(4, order=[2, 0, 3, 1], units=6, label_units=5)
    head(x)
    rng = np.random.default_rng(5)
    for weight in head.trainable_weights:
        weight.assign(rng.normal(scale=0.5, size=weight.shape))
    loss, outputs = _loss_and_outputs(head, x, y)
    logits = _mrnn_reference(head, x, y)
    probabilities = 1 / (1 + np.exp(-logits))
    expected = -np.sum(
        y * np.log(probabilities) + (1 - y) * np.log(1 - probabilities), axis=1
    )
    np.testing.assert_allclose(outputs, probabilities, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(loss, expected, rtol=1e-4)


def test_mrnn_follows_its_order_and_samples_trajectories():
    x, y = _data(tasks=3)
    head = baselines.MRNN(3, order=[2, 0, 1], samples=400, seed=0)
    _, base = _loss_and_outputs(head, x, y)
    flipped = y.copy()
    flipped[:, 1] = 1 - flipped[:, 1]  # the last task's label: feeds nothing
    np.testing.assert_allclose(_loss_and_outputs(head, x, flipped)[1], base)
    flipped = y.copy()
    flipped[:, 2] = 1 - flipped[:, 2]  # the first task's label: feeds 0 and 1
    changed = _loss_and_outputs(head, x, flipped)[1]
    np.testing.assert_allclose(changed[:, 2], base[:, 2])
    assert np.all(np.abs(changed[:, [0, 1]] - base[:, [0, 1]]) > 0)
    # Monte-Carlo marginals: the first step's task does not depend on the
    # sample, later ones are averages of conditionals, in [0, 1].
    marginals = ops.convert_to_numpy(head(x))
    np.testing.assert_allclose(marginals[:, 2], base[:, 2], rtol=1e-5)
    assert np.all((marginals >= 0) & (marginals <= 1))
    assert baselines.MRNN(5, seed=3).order == baselines.MRNN(5, seed=3).order
    assert sorted(baselines.MRNN(5, seed=3).order) == list(range(5))


def test_hard_selection_measures_and_selects():
    x, y = _data(tasks=3)
    head = baselines.HardOrderSelection(3, orders=6, seed=0)
    loss, _ = _loss_and_outputs(head, x, y)
    assert head.is_exploring() and head.selected_order() is None
    # Every order was unrolled once per example; the measured loss of each
    # order sums to the per-example exploration loss (the mean over orders).
    counts = ops.convert_to_numpy(head.order_loss_count)
    sums = ops.convert_to_numpy(head.order_loss_sum)
    np.testing.assert_allclose(counts, np.full(6, 6.0))
    np.testing.assert_allclose(sums.sum() / 6, loss.sum(), rtol=1e-5)
    np.testing.assert_allclose(
        head.order_performance(), np.exp(-sums / counts), rtol=1e-6
    )
    # Hand-set measurements: "best" takes the argmax, "proportional" draws
    # with probability exp(-mean loss) / sum.
    head.order_loss_sum.assign([3.0, 1.0, 2.0, 4.0, 5.0, 6.0])
    head.order_loss_count.assign(np.ones(6, "float32"))
    head.selection = "best"
    assert head.select_order() == 1
    assert head.selected_order() == head.orders[1].tolist()
    head.selection = "proportional"
    draws = [head.select_order(np.random.default_rng(i)) for i in range(3000)]
    expected = np.exp(-np.array([3.0, 1, 2, 4, 5, 6]))
    expected /= expected.sum()
    np.testing.assert_allclose(
        np.bincount(draws, minlength=6) / 3000, expected, atol=0.03
    )
    # Exploitation unrolls the selected order only, so the per-example loss
    # is that order's chain loss; nothing is measured any more.
    head.order_loss_sum.assign(np.zeros(6, "float32"))
    head.selected_index.assign(2)
    exploit_loss, _ = _loss_and_outputs(head, x, y)
    np.testing.assert_allclose(ops.convert_to_numpy(head.order_loss_sum), 0)
    monet = keras_monet.MONETHead(
        3, orders=[head.orders[2].tolist()], units=64, label_units=64
    )
    monet(x)
    monet.compression.set_weights(head.compression.get_weights())
    monet.recurrent.set_weights(head.recurrent.get_weights())
    with teacher_forcing.TeacherForcing(ops.convert_to_tensor(y)) as context:
        monet(x, training=True)
    np.testing.assert_allclose(
        exploit_loss, ops.convert_to_numpy(context.losses[0]), rtol=1e-5
    )


def test_hard_selection_explores_k_orders_and_learns_no_soft_order():
    x, y = _data(tasks=3)
    head = baselines.HardOrderSelection(3, orders=6, exploration_orders=2, seed=0)
    _loss_and_outputs(head, x, y)
    # k = 2 orders per example, distinct within each example.
    counts = ops.convert_to_numpy(head.order_loss_count)
    assert counts.sum() == 2 * len(x) and counts.max() <= len(x)
    # Same orders as a MONET selector drawn with the same seed, and the
    # selector's logits are not trained: pi stays uniform.
    selector = keras_monet.OrderSelector(3, 6, seed=0)
    np.testing.assert_array_equal(head.orders, selector.orders)
    assert not any("order_logits" in w.path for w in head.trainable_weights)
    np.testing.assert_allclose(
        ops.convert_to_numpy(head.order_selector.order_probabilities()),
        np.full(6, 1 / 6), rtol=1e-6,
    )


def test_oracle_is_monet_with_one_order():
    head = baselines.oracle(4, samples=5)
    assert isinstance(head, keras_monet.MONETHead)
    assert head.orders.tolist() == [[0, 1, 2, 3]]
    assert baselines.oracle(3, order=[2, 1, 0]).orders.tolist() == [[2, 1, 0]]


# -- in a compiled model, with fit ------------------------------------------


def _toy_model(head, seed=0):
    keras.utils.set_random_seed(seed)
    model = keras_monet.Sequential(
        [keras.Input((2,)), keras.layers.Dense(32, activation="relu"),
         keras.layers.Dense(32, activation="relu")]
    )
    model.add(head)
    model.compile(
        optimizer=keras.optimizers.Adam(1e-2),
        metrics=["binary_accuracy"],
        jit_compile=True,
    )
    return model


def _accuracy(model, x, y):
    return float(((model.predict(x, verbose=0, batch_size=250) > 0.5) == y).mean())


@pytest.mark.parametrize(
    "make_head, callbacks",
    [
        (lambda: baselines.VMNC(3, momentum=0.8), []),
        (lambda: baselines.VMNS(3, momentum=0.8), []),
        (lambda: baselines.MRNN(3, samples=10, seed=0), []),
        (
            lambda: baselines.HardOrderSelection(3, 6, samples=10, seed=0),
            [baselines.OrderExploration(4)],
        ),
    ],
)
def test_fit_improves_toy_accuracy(make_head, callbacks):
    (x, y), _, (x_test, y_test) = keras_monet.datasets.make_toy_splits(3, seed=0)
    model = _toy_model(make_head())
    before = _accuracy(model, x_test, y_test)
    model.fit(x, y, epochs=12, batch_size=64, verbose=0, callbacks=callbacks)
    after = _accuracy(model, x_test, y_test)
    assert after > 0.8 and after > before + 0.15, (before, after)
    head = model.layers[-1]
    if isinstance(head, baselines.HardOrderSelection):
        assert not head.is_exploring()
        assert head.selected_order() in head.orders.tolist()


def test_mrnn_model_save_and_load(tmp_path):
    x, y = _data(batch=32, features=2, tasks=3)
    model = _toy_model(baselines.MRNN(3, samples=4, seed=7))
    model.fit(x, y, epochs=1, batch_size=16, verbose=0)
    path = str(tmp_path / "mrnn.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert loaded.layers[-1].order == model.layers[-1].order
    for a, b in zip(model.get_weights(), loaded.get_weights()):
        np.testing.assert_array_equal(a, b)
    loaded.fit(x, y, epochs=1, batch_size=16, verbose=0)
