"""The warm-up of the order selector (paper section 3.3.1, Figure 3)."""

import keras

from keras_monet.models.trainer import order_optimizers


@keras.saving.register_keras_serializable(package="keras_monet")
class OrderWarmUp(keras.callbacks.Callback):
    """Freezes the order logits for the first `epochs` epochs.

    During the warm-up the task-wise cells learn every order while pi stays
    uniform, so that the selection starts from measured order performance
    rather than from the initialisation (section 3.3.1). Frozen means frozen:
    the order optimizer does not update the logits and does not move its
    moments or its step count. Epochs are counted absolutely, so
    `fit(initial_epoch=...)` (resumed runs, KerasTuner's Hyperband) freezes
    exactly epochs `0 .. epochs - 1`. The switch is a variable: no retracing.

    Example:

    ```python
    model.fit(x, y, epochs=500, callbacks=[keras_monet.OrderWarmUp(20)])
    ```

    Args:
        epochs: int n >= 0, the number of warm-up epochs.
    """

    def __init__(self, epochs):
        super().__init__()
        if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 0:
            raise ValueError(
                "`epochs` (the warm-up length n) should be an integer >= 0. "
                f"Received: `epochs={epochs}`."
            )
        self.epochs = epochs

    def _set_frozen(self, frozen):
        found = order_optimizers(getattr(self.model, "optimizer", None))
        if not found:
            raise ValueError(
                "OrderWarmUp needs a model compiled by `keras_monet.Sequential`"
                " or `keras_monet.MONETModel` (with an order optimizer). "
                f"Received a model whose optimizer is {self.model.optimizer!r}."
            )
        for optimizer in found:
            if not optimizer.built:
                optimizer.build(
                    [v for v in self.model.trainable_variables
                     if v.path.endswith("order_logits")]
                )
            optimizer.frozen.assign(1 if frozen else 0)

    def on_epoch_begin(self, epoch, logs=None):
        self._set_frozen(epoch < self.epochs)

    def on_train_end(self, logs=None):
        # A later fit without this callback trains the order logits.
        self._set_frozen(False)

    def get_config(self):
        return {"epochs": self.epochs}
