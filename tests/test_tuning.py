import keras
import numpy as np
import pytest

import keras_monet

keras_tuner = pytest.importorskip("keras_tuner")


def test_hyperband_sweeps_order_dropout_and_warm_up(tmp_path):
    x, y = keras_monet.datasets.make_toy(3, 128, seed=0)

    def build(hp):
        model = keras_monet.Sequential(
            [keras.Input((2,)), keras.layers.Dense(16, activation="relu")]
        )
        model.add(
            keras_monet.MONETHead(
                tasks=3, orders=6, order_dropout=hp.Choice("k", [2, 6]),
                samples=4, seed=0,
            )
        )
        model.compile(
            optimizer="adam",
            metrics=[keras.metrics.BinaryAccuracy(name="accuracy")],
        )
        return model

    tuner = keras_tuner.Hyperband(
        build,
        objective=keras_tuner.Objective("val_accuracy", "max"),
        max_epochs=2,
        hyperband_iterations=1,
        directory=str(tmp_path),
        seed=0,
    )
    tuner.search(
        x, y, validation_data=(x, y), batch_size=32, verbose=0,
        callbacks=[keras_monet.OrderWarmUp(1)],
    )
    trials = tuner.oracle.trials.values()
    assert {t.hyperparameters.values["k"] for t in trials} == {2, 6}
    assert all(np.isfinite(t.score) for t in trials if t.score is not None)
    best = tuner.get_best_models(1)[0]
    assert isinstance(best, keras_monet.Sequential)
    assert best.layers[-1].order_dropout == tuner.get_best_hyperparameters()[0]["k"]
