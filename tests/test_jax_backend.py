"""The layers are written in keras.ops: MONET also trains on the JAX backend.

The backend is fixed per process, so the JAX run happens in a subprocess.
"""

import json
import os
import subprocess
import sys
import textwrap

import pytest

pytest.importorskip("jax")

SCRIPT = textwrap.dedent(
    """
    import json
    import numpy as np, keras, keras_monet
    from keras import ops
    assert keras.backend.backend() == "jax"
    x, y = keras_monet.datasets.make_toy(3, 256, seed=0)
    model = keras_monet.Sequential(
        [keras.Input((2,)), keras.layers.Dense(32, activation="relu")]
    )
    model.add(keras_monet.MONETHead(tasks=3, orders=6, order_dropout=4, samples=5, seed=0))
    model.compile(optimizer="adam", order_optimizer=keras.optimizers.Adam(5e-2),
                  jit_compile=True)
    logits = {}

    class Record(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            logits[epoch] = ops.convert_to_numpy(
                self.model.layers[-1].order_logits).tolist()

    history = model.fit(x, y, epochs=3, batch_size=32, verbose=0,
                        validation_data=(x, y),
                        callbacks=[keras_monet.OrderWarmUp(1), Record()])
    prediction = model.predict(x[:4], verbose=0)
    print("RESULT " + json.dumps({
        "logits": logits, "loss": history.history["loss"],
        "val_loss": history.history["val_loss"],
        "order_steps": int(model.order_optimizer.iterations),
        "prediction_shape": list(prediction.shape),
    }))
    """
)


def test_monet_trains_with_warm_up_on_jax():
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ, KERAS_BACKEND="jax", PYTHONPATH=root)
    run = subprocess.run(
        [sys.executable, "-c", SCRIPT], env=env, capture_output=True,
        text=True, timeout=600,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    line = [l for l in run.stdout.splitlines() if l.startswith("RESULT ")][-1]
    result = json.loads(line[len("RESULT "):])
    assert result["logits"]["0"] == [0.0] * 6  # frozen in the warm-up epoch
    assert result["logits"]["1"] != result["logits"]["0"]
    assert result["logits"]["2"] != result["logits"]["1"]
    assert result["order_steps"] == 2 * 8  # two epochs of 8 steps
    assert result["loss"][-1] < result["loss"][0]
    assert result["prediction_shape"] == [4, 3]
