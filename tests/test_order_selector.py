import math
import time

import numpy as np
import pytest
from keras import ops

from keras_monet import OrderSelector
from keras_monet.layers.order_selector import draw_orders
from tests.testing import run_layer_test


def _selector(tasks=4, orders=10, **kwargs):
    selector = OrderSelector(tasks, orders, **kwargs)
    selector.build()
    return selector


def test_layer_contract():
    run_layer_test(
        OrderSelector,
        {"tasks": 4, "orders": 10, "order_dropout": 3, "seed": 1},
        (np.zeros((5, 7), "float32"),),
        expected_output_shape=(5, 10),
    )


def test_orders_are_distinct_permutations_and_reproducible():
    a = draw_orders(6, 200, seed=3)
    b = draw_orders(6, 200, seed=3)
    c = draw_orders(6, 200, seed=4)
    assert a.shape == (200, 6) and a.dtype == np.int32
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    assert len({tuple(row) for row in a}) == 200
    for row in a:
        assert sorted(row) == list(range(6))


def test_all_orders_when_orders_is_t_factorial():
    orders = draw_orders(4, 24, seed=0)
    assert len({tuple(row) for row in orders}) == 24


def test_many_tasks_never_enumerate_factorial():
    start = time.perf_counter()
    orders = _selector(tasks=40, orders=256, seed=0).orders
    assert orders.shape == (256, 40)
    assert len({tuple(row) for row in orders}) == 256
    assert time.perf_counter() - start < 30  # 40! would never finish


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"tasks": 3, "orders": 7}, "3! = 6"),
        ({"tasks": 0, "orders": 1}, "`tasks=0`"),
        ({"tasks": 3, "orders": 0}, "`orders=0`"),
        ({"tasks": 3, "orders": 4, "order_dropout": 5}, "`order_dropout=5`"),
        ({"tasks": 3, "orders": 4, "order_dropout": 0}, "`order_dropout=0`"),
        ({"tasks": 3, "orders": [[0, 1, 1]]}, "permutation"),
        ({"tasks": 3, "orders": [[0, 1, 2], [0, 1, 2]]}, "distinct"),
        ({"tasks": 3, "orders": [[0, 1]]}, "shape"),
    ],
)
def test_bad_arguments_raise(kwargs, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(")):
        OrderSelector(**kwargs)


def test_orders_above_factorial_names_both_numbers():
    with pytest.raises(ValueError) as info:
        OrderSelector(tasks=4, orders=30)
    assert "30" in str(info.value) and "24" in str(info.value)


def test_soft_order_is_doubly_stochastic_and_matches_definition():
    selector = _selector(tasks=5, orders=30, seed=2)
    rng = np.random.default_rng(0)
    selector.order_logits.assign(rng.normal(size=30).astype("float32") * 2)
    omega = ops.convert_to_numpy(selector.soft_order())
    pi = ops.convert_to_numpy(selector.order_probabilities())
    np.testing.assert_allclose(omega.sum(axis=0), 1.0, atol=1e-5)
    np.testing.assert_allclose(omega.sum(axis=1), 1.0, atol=1e-5)
    expected = np.zeros((5, 5))
    for p, sigma in zip(pi, selector.orders):
        expected[np.arange(5), sigma] += p  # (P_m)[i, sigma_m(i)] = 1
    np.testing.assert_allclose(omega, expected, atol=1e-6)


def test_zero_initialised_logits_give_uniform_pi():
    pi = ops.convert_to_numpy(_selector(orders=8, seed=0).order_probabilities())
    np.testing.assert_allclose(pi, 1 / 8, rtol=1e-6)


def test_order_dropout_keeps_uniform_k_subsets():
    m, k, batch = 12, 4, 6000
    selector = _selector(tasks=4, orders=m, order_dropout=k, seed=5)
    selector.order_logits.assign(np.linspace(-1, 1, m).astype("float32"))
    indices, log_weights = selector(np.zeros((batch, 1), "float32"), training=True)
    indices = ops.convert_to_numpy(indices)
    weights = np.exp(ops.convert_to_numpy(log_weights))
    assert indices.shape == (batch, k)
    assert all(len(set(row)) == k for row in indices)
    # pi~ is pi renormalised over the kept orders (eq. 25).
    np.testing.assert_allclose(weights.sum(axis=1), 1.0, atol=1e-5)
    u = np.linspace(-1, 1, m)
    expected = np.exp(u[indices]) / np.exp(u[indices]).sum(1, keepdims=True)
    np.testing.assert_allclose(weights, expected, rtol=1e-5)
    # Each order is kept with probability k / M: a chi-square test (11 dof,
    # 99.9% quantile 31.3).
    counts = np.bincount(indices.ravel(), minlength=m)
    expected_count = batch * k / m
    chi2 = ((counts - expected_count) ** 2 / expected_count).sum()
    assert chi2 < 31.3, (counts, chi2)
    # And examples draw independently: not all rows keep the same subset.
    assert len({tuple(sorted(row)) for row in indices}) > 100


def test_inference_uses_every_order_with_pi():
    selector = _selector(tasks=3, orders=6, order_dropout=2, seed=0)
    indices, log_weights = selector(np.zeros((2, 1), "float32"), training=False)
    assert ops.convert_to_numpy(indices).shape == (2, 6)
    np.testing.assert_allclose(
        np.exp(ops.convert_to_numpy(log_weights)).sum(1), 1.0, atol=1e-6
    )


def test_sampled_orders_follow_pi():
    selector = _selector(tasks=3, orders=6, seed=0)
    logits = np.log(np.array([0.5, 0.3, 0.1, 0.05, 0.05, 1e-9]))
    selector.order_logits.assign(logits.astype("float32"))
    samples = ops.convert_to_numpy(selector.sample_orders(400, 50)).ravel()
    frequencies = np.bincount(samples, minlength=6) / samples.size
    np.testing.assert_allclose(frequencies, np.exp(logits), atol=0.01)


def test_explicit_orders_are_kept():
    selector = _selector(tasks=3, orders=[[2, 0, 1]])
    np.testing.assert_array_equal(selector.orders, [[2, 0, 1]])
    assert math.isclose(float(ops.convert_to_numpy(selector.soft_order())[0, 2]), 1.0)
