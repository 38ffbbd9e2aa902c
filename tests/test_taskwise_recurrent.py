import keras
import numpy as np
import pytest
import tensorflow as tf
from keras import ops

from keras_monet import TaskwiseRecurrent
from keras_monet.layers.taskwise_recurrent import step_layout
from tests import reference
from tests.testing import run_layer_test


def _random_layer(tasks=4, units=6, label_units=5, block_size=2, seed=0):
    layer = TaskwiseRecurrent(
        tasks, units=units, label_units=label_units, block_size=block_size
    )
    layer.build((None, units), None)
    rng = np.random.default_rng(seed)
    # Random biases too, so that every term of the cell is exercised.
    for weight in layer.trainable_weights:
        weight.assign(rng.normal(size=weight.shape).astype("float32") * 0.5)
    return layer


def _random_orders(batch, orders, tasks, seed=0):
    rng = np.random.default_rng(seed)
    return np.stack(
        [[rng.permutation(tasks) for _ in range(orders)] for _ in range(batch)]
    ).astype("int32")


def test_layer_contract():
    batch, k, tasks, units = 3, 4, 5, 8
    run_layer_test(
        TaskwiseRecurrent,
        {"tasks": tasks, "units": units, "label_units": 6, "block_size": 4, "seed": 3},
        (
            np.random.default_rng(0).normal(size=(batch, units)).astype("float32"),
            _random_orders(batch, k, tasks),
        ),
        expected_output_shape=(batch, k, tasks),
    )


def test_teacher_forcing_matches_hand_chain_for_every_example_and_order():
    batch, k, tasks, units = 3, 5, 4, 6
    layer = _random_layer(tasks, units)
    rng = np.random.default_rng(1)
    h0 = rng.normal(size=(batch, units)).astype("float32")
    labels = rng.integers(0, 2, size=(batch, tasks)).astype("float32")
    orders = _random_orders(batch, k, tasks, seed=2)
    logits = ops.convert_to_numpy(layer(h0, orders, labels=labels))
    w = reference.recurrent_weights(layer)
    for b in range(batch):
        for j in range(k):
            expected = reference.chain(w, h0[b], orders[b, j], labels[b])
            np.testing.assert_allclose(logits[b, j], expected, atol=1e-5)


def test_unknown_labels_are_fed_as_zero():
    batch, k, tasks, units = 2, 3, 4, 6
    layer = _random_layer(tasks, units)
    rng = np.random.default_rng(3)
    h0 = rng.normal(size=(batch, units)).astype("float32")
    labels = rng.integers(0, 2, size=(batch, tasks)).astype("float32")
    known = np.array([[1, 0, 1, 1], [0, 1, 1, 0]], "float32")
    orders = _random_orders(batch, k, tasks, seed=4)
    logits = ops.convert_to_numpy(
        layer(h0, orders, labels=labels, label_mask=known)
    )
    w = reference.recurrent_weights(layer)
    for b in range(batch):
        for j in range(k):
            expected = reference.chain(w, h0[b], orders[b, j], labels[b], known[b])
            np.testing.assert_allclose(logits[b, j], expected, atol=1e-5)


def test_each_task_cell_is_a_standard_keras_gru_cell():
    tasks, units = 3, 6
    layer = _random_layer(tasks, units)
    w = reference.recurrent_weights(layer)
    rng = np.random.default_rng(5)
    h = rng.normal(size=units)
    label_input = np.zeros(tasks)
    label_input[1] = -1.0
    for task in range(tasks):
        cell = keras.layers.GRUCell(units)
        cell.build((None, layer.label_units))
        cell.set_weights(
            [
                w["kernel"][task],
                w["recurrent_kernel"][task],
                np.stack([w["input_bias"][task], w["recurrent_bias"][task]]),
            ]
        )
        embedding = label_input @ w["label_kernel"] + w["label_bias"]
        keras_h, _ = cell(embedding[None].astype("float32"), [h[None].astype("float32")])
        np.testing.assert_allclose(
            ops.convert_to_numpy(keras_h)[0],
            reference.gru_step(w, task, h, label_input),
            atol=1e-5,
        )


def _plain_autodiff_logits(layer, h0, orders, labels):
    """The same chain in keras.ops, one row at a time: plain autodiff."""
    tasks = layer.tasks
    rows = []
    for b in range(orders.shape[0]):
        for j in range(orders.shape[1]):
            h = h0[b]
            label_input = ops.zeros((tasks,))
            logits = [None] * tasks
            for task in orders[b, j]:
                task = int(task)
                embedding = ops.matmul(label_input, layer.label_kernel) + layer.label_bias
                x = ops.matmul(embedding, layer.kernel[task]) + layer.input_bias[task]
                r_ = ops.matmul(h, layer.recurrent_kernel[task]) + layer.recurrent_bias[task]
                u = layer.units
                z = ops.sigmoid(x[:u] + r_[:u])
                r = ops.sigmoid(x[u : 2 * u] + r_[u : 2 * u])
                h = z * h + (1 - z) * ops.tanh(x[2 * u :] + r * r_[2 * u :])
                logits[task] = ops.sum(h * layer.output_kernel[task]) + layer.output_bias[task]
                label_input = ops.one_hot(task, tasks) * (2.0 * labels[b, task] - 1.0)
            rows.append(ops.stack(logits))
    return ops.reshape(ops.stack(rows), orders.shape)


def test_gradients_match_plain_autodiff():
    batch, k, tasks, units = 2, 3, 4, 5
    layer = _random_layer(tasks, units, block_size=2)
    rng = np.random.default_rng(6)
    h0 = tf.Variable(rng.normal(size=(batch, units)).astype("float32"))
    labels = rng.integers(0, 2, size=(batch, tasks)).astype("float32")
    orders = _random_orders(batch, k, tasks, seed=7)
    projection = rng.normal(size=(batch, k, tasks)).astype("float32")
    variables = layer.trainable_variables + [h0]

    def gradients(fn, jit):
        @tf.function(jit_compile=jit)
        def run():
            with tf.GradientTape() as tape:
                loss = ops.sum(fn() * projection)
            return tape.gradient(loss, variables)

        return [ops.convert_to_numpy(g) for g in run()]

    ours = gradients(lambda: layer(h0, orders, labels=labels), jit=True)
    plain = gradients(
        lambda: _plain_autodiff_logits(layer, h0, orders, labels), jit=False
    )
    for variable, a, b in zip(variables, ours, plain):
        np.testing.assert_allclose(a, b, atol=1e-4, err_msg=variable.name)


def test_step_layout_groups_rows_by_task_in_whole_blocks():
    tasks, block = 5, 4
    task = _random_orders(37, 1, tasks, seed=8).reshape(37, tasks)
    slot, row_of_slot, block_task = (
        ops.convert_to_numpy(v) for v in step_layout(task, tasks, block)
    )
    n = len(task)
    for t in range(tasks):
        # Every row has its own slot, and the slot's block runs its task.
        assert len(set(slot[:, t])) == n
        np.testing.assert_array_equal(row_of_slot[t][slot[:, t]], np.arange(n))
        np.testing.assert_array_equal(block_task[t][slot[:, t] // block], task[:, t])
        assert (row_of_slot[t] == n).sum() == row_of_slot.shape[1] - n


def test_sampling_feeds_back_sampled_labels_and_averages_to_the_marginal():
    # T = 2 in the order (1, 0): the first step's probability is exact, the
    # second's average over trajectories tends to the marginal
    # p(y_0) = sum_{y_1} p(y_1) p(y_0 | y_1).
    tasks, units, samples = 2, 4, 4000
    layer = _random_layer(tasks, units)
    w = reference.recurrent_weights(layer)
    h0 = np.random.default_rng(9).normal(size=(1, units)).astype("float32")
    order = np.array([1, 0])
    orders = np.broadcast_to(order, (1, samples, tasks)).astype("int32")
    probabilities = ops.convert_to_numpy(layer(h0, orders))  # [1, L, 2]
    p1 = reference.sigmoid(reference.chain(w, h0[0], order, [0, 0])[1])
    np.testing.assert_allclose(probabilities[0, :, 1], p1, atol=1e-5)
    given = [
        reference.sigmoid(reference.chain(w, h0[0], order, [0, y1])[0])
        for y1 in (0, 1)
    ]
    marginal = (1 - p1) * given[0] + p1 * given[1]
    # Every trajectory is one of the two conditionals...
    seen = probabilities[0, :, 0]
    assert np.all(np.min(np.abs(seen[:, None] - np.array(given)[None]), 1) < 1e-5)
    # ...chosen with probability p(y_1): the average tends to the marginal.
    assert abs(seen.mean() - marginal) < 4 * 0.5 / np.sqrt(samples) + 1e-3


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match="`units=0`"):
        TaskwiseRecurrent(3, units=0)
    layer = TaskwiseRecurrent(3, units=4)
    with pytest.raises(ValueError, match="units=4"):
        layer(np.zeros((2, 5), "float32"), np.zeros((2, 1, 3), "int32"))
