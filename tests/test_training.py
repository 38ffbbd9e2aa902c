import keras
import numpy as np
import pytest
import tensorflow as tf
from keras import ops

import keras_monet
from keras_monet.models.trainer import order_optimizers


def _data(n=128, features=32, tasks=12, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, features)).astype("float32")
    y = (rng.random((n, tasks)) < 0.3).astype("float32")
    return x, y


def _logits(model):
    return ops.convert_to_numpy(model.layers[-1].order_logits).copy()


class RecordOrderLogits(keras.callbacks.Callback):
    def on_train_begin(self, logs=None):
        self.history = {"begin": _logits(self.model)}

    def on_epoch_end(self, epoch, logs=None):
        self.history[epoch] = _logits(self.model)


def _small_model(tasks=12, orders=512, order_dropout=None, features=32, seed=0):
    model = keras_monet.Sequential(
        [keras.Input((features,)), keras.layers.Dense(64, activation="relu")]
    )
    model.add(
        keras_monet.MONETHead(
            tasks=tasks, orders=orders, order_dropout=order_dropout, samples=4,
            seed=seed,
        )
    )
    return model


def test_design_card_snippet_trains_with_xla_and_warm_up():
    x, y = _data()
    model = keras_monet.Sequential(
        [keras.Input((32,)), keras.layers.Dense(64, activation="relu")]
    )
    model.add(keras_monet.MONETHead(tasks=12, orders=512))
    model.compile(
        optimizer=keras.optimizers.AdamW(1e-3),
        order_optimizer=keras.optimizers.Adam(5e-3),
        jit_compile=True,
    )
    record = RecordOrderLogits()
    history = model.fit(
        x, y, epochs=3, batch_size=32, verbose=0,
        callbacks=[keras_monet.OrderWarmUp(epochs=1), record],
    )
    assert np.all(np.isfinite(history.history["loss"]))
    assert history.history["loss"][-1] < history.history["loss"][0]
    # Frozen means bitwise unchanged during the warm-up epoch...
    np.testing.assert_array_equal(record.history[0], record.history["begin"])
    # ...then the order logits train.
    assert not np.array_equal(record.history[1], record.history[0])
    assert not np.array_equal(record.history[2], record.history[1])
    # The main weights trained throughout, with their own optimizer.
    order_optimizer = model.order_optimizer
    assert isinstance(order_optimizer, keras.optimizers.Adam)
    assert float(order_optimizer.learning_rate) == pytest.approx(5e-3)
    assert int(order_optimizer.iterations) == 2 * 4  # 2 epochs of 4 steps


def test_warm_up_leaves_optimizer_moments_untouched():
    x, y = _data(n=64)
    model = _small_model(orders=16, order_dropout=8)
    model.compile(optimizer="adam", jit_compile=True)
    model.fit(x, y, epochs=2, batch_size=32, verbose=0,
              callbacks=[keras_monet.OrderWarmUp(epochs=2)])
    inner = model.order_optimizer
    assert int(inner.iterations) == 0
    for variable in inner.variables:
        if variable.path.endswith(("momentum", "velocity")) or "order_logits" in variable.path:
            np.testing.assert_array_equal(ops.convert_to_numpy(variable), 0.0)
    np.testing.assert_array_equal(_logits(model), 0.0)


def test_warm_up_counts_absolute_epochs():
    x, y = _data(n=64)
    model = _small_model(orders=16)
    model.compile(optimizer="adam", jit_compile=True)
    record = RecordOrderLogits()
    # Resuming at epoch 1 with a 2-epoch warm-up: epoch 1 is still frozen.
    model.fit(x, y, initial_epoch=1, epochs=3, batch_size=32, verbose=0,
              callbacks=[keras_monet.OrderWarmUp(epochs=2), record])
    np.testing.assert_array_equal(record.history[1], record.history["begin"])
    assert not np.array_equal(record.history[2], record.history[1])
    # After training the logits are free again for a later fit.
    assert all(int(o.frozen) == 0 for o in order_optimizers(model.optimizer))


def test_functional_model_trains_predicts_and_reloads(tmp_path):
    x, y = _data(n=64, features=8, tasks=4)
    inputs = keras.Input((8,))
    features = keras.layers.Dense(16, activation="relu")(inputs)
    outputs = keras_monet.MONETHead(tasks=4, orders=24, order_dropout=6, samples=5, seed=0)(features)
    model = keras_monet.MONETModel(inputs, outputs)
    model.compile(optimizer="adam", metrics=[keras.metrics.BinaryAccuracy()], jit_compile=True)
    history = model.fit(x, y, epochs=2, batch_size=16, validation_data=(x, y), verbose=0)
    assert {"loss", "binary_accuracy", "val_loss", "val_binary_accuracy"} <= set(history.history)
    prediction = model.predict(x, verbose=0)
    assert prediction.shape == (64, 4)
    assert np.all((prediction >= 0) & (prediction <= 1))
    path = str(tmp_path / "functional.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert type(loaded) is keras_monet.MONETModel
    np.testing.assert_array_equal(loaded.layers[-1].orders, model.layers[-1].orders)
    assert isinstance(loaded.order_optimizer, keras.optimizers.Adam)


def test_stock_keras_fit_refuses_to_train_a_monet_head():
    x, y = _data(n=16, features=4, tasks=3)
    model = keras.Sequential(
        [keras.Input((4,)), keras_monet.MONETHead(tasks=3, orders=6, seed=0)]
    )
    model.compile(optimizer="adam", loss="binary_crossentropy")
    with pytest.raises(ValueError, match="keras_monet.Sequential"):
        model.fit(x, y, epochs=1, verbose=0)


def test_compile_rejects_a_loss():
    model = _small_model(tasks=3, orders=6)
    with pytest.raises(ValueError, match="objective"):
        model.compile(optimizer="adam", loss="binary_crossentropy")


@pytest.mark.parametrize(
    "labels, message",
    [
        (np.full((16, 3), 2.0, "float32"), r"0 or 1. Received 2.0 at row 0, task 0"),
        (np.full((16, 3), np.nan, "float32"), "0 or 1. Received nan"),
        (np.zeros((16,), "float32"), r"\[B, T\]"),
    ],
)
def test_fit_rejects_bad_label_values(labels, message):
    model = _small_model(tasks=3, orders=6, features=4)
    model.compile(optimizer="adam")
    with pytest.raises(ValueError, match=message):
        model.fit(np.zeros((16, 4), "float32"), labels, epochs=1, verbose=0)


def test_fit_rejects_wrong_label_width():
    model = _small_model(tasks=3, orders=6, features=4)
    model.compile(optimizer="adam")
    with pytest.raises(ValueError, match=r"expected 3 \(`tasks`\)"):
        model.fit(np.zeros((16, 4), "float32"), np.zeros((16, 5), "float32"),
                  epochs=1, verbose=0)


def test_dataset_labels_are_checked_too():
    model = _small_model(tasks=3, orders=6, features=4)
    model.compile(optimizer="adam")
    dataset = tf.data.Dataset.from_tensor_slices(
        (np.zeros((8, 4), "float32"), np.full((8, 3), 3.0, "float32"))
    ).batch(4)
    with pytest.raises(tf.errors.InvalidArgumentError, match="0 or 1"):
        model.fit(dataset, epochs=1, verbose=0)


def test_keras_round_trip_keeps_orders_pi_weights_and_both_optimizers(tmp_path):
    x, y = _data(n=64, features=8, tasks=5)
    model = _small_model(tasks=5, orders=40, order_dropout=10, features=8, seed=None)
    model.compile(optimizer=keras.optimizers.AdamW(1e-3),
                  order_optimizer=keras.optimizers.Adam(1e-2), jit_compile=True)
    path = str(tmp_path / "monet.keras")
    model.fit(x, y, epochs=2, batch_size=16, verbose=0,
              callbacks=[keras.callbacks.ModelCheckpoint(path)])
    loaded = keras.saving.load_model(path)
    head, loaded_head = model.layers[-1], loaded.layers[-1]
    assert type(loaded) is keras_monet.Sequential
    np.testing.assert_array_equal(loaded_head.orders, head.orders)
    np.testing.assert_array_equal(
        ops.convert_to_numpy(loaded_head.order_probabilities()),
        ops.convert_to_numpy(head.order_probabilities()),
    )
    for a, b in zip(model.get_weights(), loaded.get_weights()):
        np.testing.assert_array_equal(a, b)
    # Both optimizers' states, moments and step counts included.
    assert isinstance(loaded.order_optimizer, keras.optimizers.Adam)
    assert float(loaded.order_optimizer.learning_rate) == pytest.approx(1e-2)
    assert len(loaded.optimizer.variables) == len(model.optimizer.variables)
    for a, b in zip(model.optimizer.variables, loaded.optimizer.variables):
        np.testing.assert_array_equal(ops.convert_to_numpy(a), ops.convert_to_numpy(b))
    assert int(loaded.order_optimizer.iterations) == 8
    # The same teacher-forced chain, end to end.
    def chain(m):
        features = m.layers[0](x)
        h0 = m.layers[-1].compression(features)
        orders = m.layers[-1].order_selector.gather_orders(
            np.tile(np.arange(40, dtype="int32"), (64, 1))
        )
        return ops.convert_to_numpy(m.layers[-1].recurrent(h0, orders, labels=y))

    np.testing.assert_allclose(chain(loaded), chain(model), atol=1e-6)
    # And training goes on from there.
    history = loaded.fit(x, y, epochs=1, batch_size=16, verbose=0)
    assert np.isfinite(history.history["loss"][0])
    assert int(loaded.order_optimizer.iterations) == 12
    assert not np.array_equal(_logits(loaded), _logits(model))


def test_many_tasks_build_and_train():
    x, y = _data(n=32, features=8, tasks=40)
    model = _small_model(tasks=40, orders=256, order_dropout=16, features=8)
    # XLA compiles the 40 unrolled steps slowly on CPU; the jit path is
    # covered by the other tests.
    model.compile(optimizer="adam", jit_compile=False)
    history = model.fit(x, y, epochs=1, batch_size=16, verbose=0)
    assert np.isfinite(history.history["loss"][0])
    assert model.predict(x[:4], verbose=0).shape == (4, 40)


def test_mixed_precision_training_keeps_order_logits_float32():
    keras.config.set_dtype_policy("mixed_float16")
    x, y = _data(n=64, features=8, tasks=4)
    model = _small_model(tasks=4, orders=24, order_dropout=6, features=8)
    model.compile(optimizer="adam", jit_compile=True)
    record = RecordOrderLogits()
    history = model.fit(x, y, epochs=2, batch_size=16, verbose=0,
                        callbacks=[keras_monet.OrderWarmUp(1), record])
    assert isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer)
    assert model.layers[-1].order_logits.dtype == "float32"
    assert np.all(np.isfinite(history.history["loss"]))
    np.testing.assert_array_equal(record.history[0], record.history["begin"])
    assert not np.array_equal(record.history[1], record.history[0])


def test_sample_weights_weight_the_per_example_objective():
    x, y = _data(n=32, features=8, tasks=4)
    model = _small_model(tasks=4, orders=8, features=8)
    model.compile(optimizer=keras.optimizers.SGD(0.0), order_optimizer=keras.optimizers.SGD(0.0))
    ones = model.train_on_batch(x, y, sample_weight=np.ones(32), return_dict=True)["loss"]
    half = model.train_on_batch(
        x, y, sample_weight=np.r_[np.ones(16), np.zeros(16)], return_dict=True
    )["loss"]
    first_half = model.train_on_batch(x[:16], y[:16], return_dict=True)["loss"]
    # Zero-weighted examples count in the batch size but add nothing.
    assert half == pytest.approx(first_half / 2, rel=1e-4)
    assert ones > 0


def test_learns_the_identity_order_on_the_toy():
    keras.utils.set_random_seed(0)
    x, y = keras_monet.datasets.make_toy(3, 1000, seed=0)
    x_test, y_test = keras_monet.datasets.make_toy(3, 1000, seed=100)
    model = keras_monet.Sequential(
        [keras.Input((2,))]
        + [keras.layers.Dense(64, activation="relu") for _ in range(2)]
    )
    head = keras_monet.MONETHead(tasks=3, orders=6, order_dropout=4, seed=0)
    model.add(head)
    model.compile(optimizer=keras.optimizers.Adam(3e-3),
                  order_optimizer=keras.optimizers.Adam(5e-2), jit_compile=True)
    model.fit(x, y, epochs=30, batch_size=64, verbose=0,
              callbacks=[keras_monet.OrderWarmUp(10)])
    accuracy = ((model.predict(x_test, verbose=0) > 0.5) == y_test).mean()
    omega = ops.convert_to_numpy(head.soft_order())
    assert head.top_orders(1)[0][0] == [0, 1, 2]
    assert np.sum((omega - np.eye(3)) ** 2) < 1.0, omega
    assert accuracy > 0.95


def test_weight_checkpoints_restore_both_optimizers(tmp_path):
    x, y = _data(n=32, features=8, tasks=4)

    def make():
        model = _small_model(tasks=4, orders=24, order_dropout=6, features=8)
        model.compile(optimizer="adam", order_optimizer=keras.optimizers.Adam(1e-2))
        return model

    model = make()
    model.fit(x, y, epochs=2, batch_size=16, verbose=0)
    path = str(tmp_path / "checkpoint.weights.h5")
    model.save_weights(path)
    restored = make()
    restored.fit(x[:16], y[:16], epochs=1, batch_size=16, verbose=0)  # builds
    restored.load_weights(path)
    for a, b in zip(model.optimizer.variables, restored.optimizer.variables):
        np.testing.assert_array_equal(ops.convert_to_numpy(a), ops.convert_to_numpy(b))
    assert int(restored.order_optimizer.iterations) == 4
    np.testing.assert_array_equal(_logits(restored), _logits(model))
