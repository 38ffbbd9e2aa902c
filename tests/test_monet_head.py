import keras
import numpy as np
import pytest
import tensorflow as tf
from keras import ops

from keras_monet import MONETHead
from keras_monet import teacher_forcing
from tests import reference
from tests.testing import run_layer_test


def _head_loss(head, x, labels, label_mask=None):
    with teacher_forcing.TeacherForcing(
        ops.convert_to_tensor(labels), label_mask
    ) as context:
        head(x, training=True)
    return ops.convert_to_numpy(context.losses[0])


def _initial_state(head, x):
    kernel, bias = (ops.convert_to_numpy(w) for w in head.compression.weights)
    return np.maximum(x.astype("float64") @ kernel + bias, 0.0)


def _randomise(head, seed=0):
    rng = np.random.default_rng(seed)
    for weight in head.recurrent.trainable_weights:
        weight.assign(rng.normal(size=weight.shape).astype("float32") * 0.5)


def test_layer_contract():
    rng = np.random.default_rng(0)
    run_layer_test(
        MONETHead,
        {
            "tasks": 4,
            "orders": 10,
            "order_dropout": 3,
            "samples": 3,
            "units": 8,
            "label_units": 5,
            "objective": "expected",
            "task_weights": [1.0, 2.0, 0.5, 1.0],
            "positive_rates": [0.1, 0.5, 0.3, 0.9],
            "block_size": 4,
            "seed": 1,
        },
        (rng.normal(size=(6, 7)).astype("float32"),),
        labels=rng.integers(0, 2, size=(6, 4)).astype("float32"),
        expected_output_shape=(6, 4),
    )


def test_single_order_loss_is_the_hand_computed_chain():
    # One imposed, non-identity order: checks the compression, teacher
    # forcing, the choice of each task's cell and the un-permutation.
    rng = np.random.default_rng(1)
    order = [2, 0, 3, 1]
    head = MONETHead(tasks=4, orders=[order], units=6, label_units=5, seed=0)
    x = rng.normal(size=(5, 3)).astype("float32")
    head(x)
    _randomise(head)
    labels = rng.integers(0, 2, size=(5, 4)).astype("float32")
    loss = _head_loss(head, x, labels)
    w = reference.recurrent_weights(head.recurrent)
    h0 = _initial_state(head, x)
    for b in range(5):
        logits = reference.chain(w, h0[b], order, labels[b])
        np.testing.assert_allclose(
            loss[b], -reference.log_likelihood(labels[b], logits), rtol=1e-5
        )


def test_mixture_and_expected_objectives_by_hand():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(3, 4)).astype("float32")
    labels = rng.integers(0, 2, size=(3, 3)).astype("float32")
    task_weights = [0.5, 2.0, 1.0]
    for objective in ("mixture", "expected"):
        head = MONETHead(
            tasks=3, orders=6, units=5, label_units=4, objective=objective,
            task_weights=task_weights, seed=3,
        )
        head(x)
        _randomise(head, seed=4)
        u = rng.normal(size=6).astype("float32")
        head.order_logits.assign(u)
        loss = _head_loss(head, x, labels)
        w = reference.recurrent_weights(head.recurrent)
        h0 = _initial_state(head, x)
        pi = np.exp(u) / np.exp(u).sum()
        for b in range(3):
            per_order = []
            for sigma in head.orders:
                logits = reference.chain(w, h0[b], sigma, labels[b])
                bce = -(
                    labels[b] * np.log(reference.sigmoid(logits))
                    + (1 - labels[b]) * np.log(reference.sigmoid(-logits))
                )
                per_order.append(-(np.asarray(task_weights) * bce).sum())
            per_order = np.array(per_order)  # log p_sigma_m(y | x)
            if objective == "mixture":
                expected = -np.log(np.sum(pi * np.exp(per_order)))
            else:
                expected = -np.sum(pi * per_order)
            np.testing.assert_allclose(loss[b], expected, rtol=1e-5)


def test_order_logit_gradient_is_eq_21():
    # dL_i / du_m = pi_m (1 - exp(L_i - L_i^m)), for one example.
    rng = np.random.default_rng(5)
    head = MONETHead(tasks=3, orders=6, units=5, label_units=4, seed=6)
    x = rng.normal(size=(1, 4)).astype("float32")
    labels = np.array([[1.0, 0.0, 1.0]], "float32")
    head(x)
    _randomise(head, seed=7)
    u = rng.normal(size=6).astype("float32")
    head.order_logits.assign(u)
    with tf.GradientTape() as tape:
        with teacher_forcing.TeacherForcing(ops.convert_to_tensor(labels)) as ctx:
            head(x, training=True)
        loss = ctx.losses[0][0]
    gradient = ops.convert_to_numpy(tape.gradient(loss, head.order_logits))
    w = reference.recurrent_weights(head.recurrent)
    h0 = _initial_state(head, x)[0]
    order_losses = np.array(
        [
            -reference.log_likelihood(labels[0], reference.chain(w, h0, s, labels[0]))
            for s in head.orders
        ]
    )
    pi = np.exp(u) / np.exp(u).sum()
    total = float(ops.convert_to_numpy(loss))
    np.testing.assert_allclose(
        gradient, pi * (1 - np.exp(total - order_losses)), atol=1e-6
    )
    # Eq. 22: orders whose own loss is below the mixture's are pushed up.
    np.testing.assert_array_equal(gradient <= 0, order_losses <= total)


def test_label_mask_drops_unknown_labels_from_the_loss():
    rng = np.random.default_rng(8)
    order = [1, 0, 2]
    head = MONETHead(tasks=3, orders=[order], units=5, label_units=4, seed=0)
    x = rng.normal(size=(2, 4)).astype("float32")
    head(x)
    _randomise(head, seed=9)
    labels = np.array([[1, 0, 1], [0, 1, 1]], "float32")
    known = np.array([[1, 0, 1], [1, 1, 0]], "float32")
    loss = _head_loss(head, x, labels, ops.convert_to_tensor(known))
    w = reference.recurrent_weights(head.recurrent)
    h0 = _initial_state(head, x)
    for b in range(2):
        logits = reference.chain(w, h0[b], order, labels[b], known[b])
        keep = known[b] > 0
        np.testing.assert_allclose(
            loss[b],
            -reference.log_likelihood(labels[b][keep], logits[keep]),
            rtol=1e-5,
        )


def test_positive_rates_initialise_output_biases():
    head = MONETHead(tasks=3, orders=2, positive_rates=[0.1, 0.5, 0.8], seed=0)
    head(np.zeros((1, 2), "float32"))
    np.testing.assert_allclose(
        ops.convert_to_numpy(head.recurrent.output_bias),
        np.log([0.1 / 0.9, 1.0, 0.8 / 0.2]),
        rtol=1e-6,
    )


def test_prediction_is_the_average_over_sampled_trajectories():
    # A head whose every conditional is near-deterministic predicts its
    # output biases' probabilities whatever the order.
    head = MONETHead(tasks=3, orders=6, samples=7, units=4, seed=0)
    x = np.zeros((4, 2), "float32")
    head(x)
    for weight in head.recurrent.trainable_weights:
        weight.assign(np.zeros(weight.shape, "float32"))
    head.recurrent.output_bias.assign(np.array([3.0, -2.0, 0.0], "float32"))
    prediction = ops.convert_to_numpy(head(x))
    np.testing.assert_allclose(
        prediction, np.broadcast_to(reference.sigmoid(np.array([3.0, -2.0, 0.0])), (4, 3)),
        rtol=1e-5,
    )


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"tasks": 0, "orders": 1}, "`tasks=0`"),
        ({"tasks": 3, "orders": 0}, "`orders=0`"),
        ({"tasks": 3, "orders": 7}, "3! = 6"),
        ({"tasks": 3, "orders": 4, "order_dropout": 9}, "`order_dropout=9`"),
        ({"tasks": 3, "orders": 4, "samples": 0}, "`samples=0`"),
        ({"tasks": 3, "orders": 4, "objective": "jensen"}, "objective='jensen'"),
        ({"tasks": 3, "orders": 4, "task_weights": [1, 2]}, "task_weights"),
        ({"tasks": 3, "orders": 4, "positive_rates": [0.1, 1.0, 0.2]}, "positive_rates"),
    ],
)
def test_bad_arguments_raise(kwargs, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(")):
        MONETHead(**kwargs)


def test_label_width_must_match_tasks():
    head = MONETHead(tasks=3, orders=2, seed=0)
    with pytest.raises(ValueError, match=r"expected 3 .*\(2, 4\)"):
        _head_loss(head, np.zeros((2, 5), "float32"), np.zeros((2, 4), "float32"))


def test_training_call_without_labels_explains_what_to_use():
    head = MONETHead(tasks=3, orders=2, seed=0)
    with pytest.raises(ValueError, match="keras_monet.Sequential"):
        head(np.zeros((2, 5), "float32"), training=True)
