"""`keras_monet.Sequential`: a `keras.Sequential` that trains MONET heads."""

import keras

from keras_monet.models.trainer import MONETTrainer


@keras.saving.register_keras_serializable(package="keras_monet")
class Sequential(MONETTrainer, keras.Sequential):
    """A `keras.Sequential` with MONET's two-optimizer training step.

    Stack any backbone, then a `MONETHead` (or a baseline head):

    ```python
    model = keras_monet.Sequential(
        [keras.Input((32,)), keras.layers.Dense(64, activation="relu")]
    )
    model.add(keras_monet.MONETHead(tasks=12, orders=512))
    model.compile(
        optimizer=keras.optimizers.AdamW(1e-3),
        order_optimizer=keras.optimizers.Adam(5e-3),
        jit_compile=True,
    )
    model.fit(x, y, epochs=3, callbacks=[keras_monet.OrderWarmUp(epochs=1)])
    ```

    See `MONETTrainer` for `compile`'s arguments and what the step does.
    """
