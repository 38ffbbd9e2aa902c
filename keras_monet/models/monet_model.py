"""`keras_monet.MONETModel`: a functional `keras.Model` that trains MONET."""

import keras

from keras_monet.models.trainer import MONETTrainer


@keras.saving.register_keras_serializable(package="keras_monet")
class MONETModel(MONETTrainer, keras.Model):
    """A `keras.Model` with MONET's two-optimizer training step.

    Use it exactly like the functional `keras.Model`:

    ```python
    inputs = keras.Input((2,))
    features = keras.layers.Dense(64, activation="relu")(inputs)
    outputs = keras_monet.MONETHead(tasks=5, orders=120, order_dropout=100)(
        features
    )
    model = keras_monet.MONETModel(inputs, outputs)
    model.compile(optimizer="adam")
    ```

    See `MONETTrainer` for `compile`'s arguments and what the step does.
    """
