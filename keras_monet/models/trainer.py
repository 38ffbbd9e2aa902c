"""The training step shared by `keras_monet.Sequential` and `MONETModel`."""

import contextlib

import keras
import numpy as np
from keras import ops

# Keras's own (not exported) helpers to scale a loss for tf.distribute: the
# TensorFlow step mirrors Keras's.
from keras.src.losses import loss as loss_module

from keras_monet import teacher_forcing
from keras_monet.optimizers.freezable_optimizer import FreezableOptimizer

# The optimizer map routes every variable whose path ends with this to the
# order optimizer.
ORDER_LOGITS_PATTERN = r"(.*/)?order_logits"


def order_optimizers(optimizer):
    """The `FreezableOptimizer`s inside a (possibly wrapped) optimizer."""
    if optimizer is None:
        return []
    if isinstance(optimizer, FreezableOptimizer):
        return [optimizer]
    if isinstance(optimizer, keras.optimizers.LossScaleOptimizer):
        return order_optimizers(optimizer.inner_optimizer)
    if isinstance(optimizer, keras.optimizers.MultiOptimizer):
        return [
            inner
            for opt in optimizer.optimizers
            for inner in order_optimizers(opt)
        ]
    return []


def validate_labels(labels, where="labels"):
    """Raises a ValueError naming any label that is not 0 or 1."""
    if labels is None:
        raise ValueError(
            "MONET trains on labels, and none were given: pass `y` (or a "
            "dataset yielding `(x, y)`)."
        )
    if isinstance(labels, (dict, list, tuple)):
        raise ValueError(
            "MONET expects one `[B, T]` array of 0/1 labels. Received a "
            f"{type(labels).__name__}."
        )
    array = np.asarray(labels)
    if array.ndim != 2:
        raise ValueError(
            f"The {where} should be a `[B, T]` array of 0/1 labels. Received "
            f"shape {array.shape}."
        )
    bad = ~np.isin(array, (0, 1))
    if bad.any():
        row, column = np.argwhere(bad)[0]
        raise ValueError(
            f"The {where} should all be 0 or 1. Received {array[row, column].item()!r} "
            f"at row {row}, task {column} ({int(bad.sum())} such values)."
        )


def _check_dataset_labels(dataset):
    """Maps a label check over a `tf.data.Dataset` (outside the step)."""
    import tensorflow as tf

    def check(*element):
        labels = element[1] if len(element) > 1 else None
        if labels is None:
            return element
        labels = tf.convert_to_tensor(labels)
        ok = tf.reduce_all(
            tf.logical_or(tf.equal(labels, 0), tf.equal(labels, 1))
        )
        bad = tf.boolean_mask(
            labels,
            tf.logical_not(tf.logical_or(tf.equal(labels, 0), tf.equal(labels, 1))),
        )
        assertion = tf.debugging.Assert(
            ok, ["MONET labels should all be 0 or 1; received", bad[:5]]
        )
        with tf.control_dependencies([assertion]):
            return (element[0], tf.identity(labels)) + tuple(element[2:])

    return dataset.map(check)


class MONETTrainer:
    """Mixin: MONET's `compile`, `train_step`, `test_step` and label checks.

    The training step runs the forward pass inside
    `keras_monet.teacher_forcing.TeacherForcing(y)`: MONET heads read the
    labels from it (teacher forcing) and hand back their `[B]` per-example
    objective, which is weighted by `sample_weight` and averaged. Two
    optimizers share the update through one `keras.optimizers.MultiOptimizer`:
    `optimizer` for every weight but the order logits, `order_optimizer`
    (wrapped in a `FreezableOptimizer`, for the warm-up) for the order
    logits alone. Both are saved with the model.
    """

    def compile(
        self,
        optimizer="adam",
        order_optimizer=None,
        loss=None,
        metrics=None,
        **kwargs,
    ):
        """Configures the model for MONET training.

        Args:
            optimizer: optimizer for every weight except the order logits.
            order_optimizer: optimizer for the order logits, by default
                `keras.optimizers.Adam(5e-3)` (the paper's).
            loss: must be None: the objective is the head's (`objective=`).
            metrics: metrics on the `[B, T]` predicted probabilities.
            **kwargs: the rest of `keras.Model.compile`'s arguments
                (`jit_compile`, `steps_per_execution`, ...).
        """
        if loss is not None:
            raise ValueError(
                "MONET models train on their head's own objective; choose it "
                "with `MONETHead(objective=...)`. `compile` should get "
                f"`loss=None`. Received: `loss={loss!r}`."
            )
        optimizer = keras.optimizers.get(optimizer)
        if order_optimizers(optimizer) and order_optimizer is None:
            combined = optimizer  # already built for MONET (e.g. reloaded)
        else:
            if order_optimizer is None:
                order_optimizer = keras.optimizers.Adam(5e-3)
            order_optimizer = keras.optimizers.get(order_optimizer)
            if not isinstance(order_optimizer, FreezableOptimizer):
                order_optimizer = FreezableOptimizer(
                    order_optimizer, name="order_optimizer"
                )
            combined = keras.optimizers.MultiOptimizer(
                keras.optimizers.OptimizerMap(
                    optimizer, {ORDER_LOGITS_PATTERN: order_optimizer}
                ),
                name="monet_optimizer",
            )
        super().compile(
            optimizer=combined, loss=None, metrics=metrics, **kwargs
        )

    def compile_from_config(self, config):
        config = keras.saving.deserialize_keras_object(config)
        self.compile(**config)
        if self.built:
            self.optimizer.build(self.trainable_variables)

    @property
    def order_optimizer(self):
        """The order logits' optimizer (unwrapped), or None if not compiled."""
        found = order_optimizers(getattr(self, "optimizer", None))
        return found[0].inner_optimizer if found else None

    # Label checks happen on the host, before any compiled step.
    def fit(self, x=None, y=None, *args, validation_data=None, **kwargs):
        x, y = self._checked(x, y)
        if validation_data is not None and not _is_dataset(validation_data):
            validate_labels(validation_data[1], "validation labels")
        elif validation_data is not None:
            validation_data = _check_dataset_labels(validation_data)
        return super().fit(x, y, *args, validation_data=validation_data, **kwargs)

    def evaluate(self, x=None, y=None, *args, **kwargs):
        x, y = self._checked(x, y)
        return super().evaluate(x, y, *args, **kwargs)

    def train_on_batch(self, x, y=None, *args, **kwargs):
        validate_labels(y)
        return super().train_on_batch(x, y, *args, **kwargs)

    def test_on_batch(self, x, y=None, *args, **kwargs):
        validate_labels(y)
        return super().test_on_batch(x, y, *args, **kwargs)

    def _checked(self, x, y):
        if _is_dataset(x):
            return _check_dataset_labels(x), y
        if isinstance(x, keras.utils.PyDataset) or callable(
            getattr(x, "__next__", None)
        ):
            return x, y  # generators are checked by shape in the step only
        validate_labels(y)
        return x, y

    def compute_loss(
        self, x=None, y=None, y_pred=None, sample_weight=None, training=True
    ):
        """MONET's loss: the head's objective in training, else the marginals'.

        In training (inside the step's `TeacherForcing` context) it is the
        mean over the batch of the head's per-example objective (eq. 18 or the
        expected form), weighted by `sample_weight`. Otherwise it is the
        summed binary cross-entropy of the Monte-Carlo marginals (eq. 27),
        which is what `predict` returns. Regularization losses are added.
        """
        context = teacher_forcing.current() if training else None
        if training:
            per_example = self._head_objective(context)
        else:
            epsilon = keras.config.epsilon()
            probabilities = ops.clip(
                ops.cast(y_pred, "float32"), epsilon, 1.0 - epsilon
            )
            per_example = ops.sum(
                ops.binary_crossentropy(ops.cast(y, "float32"), probabilities),
                axis=-1,
            )
        if sample_weight is not None:
            per_example = per_example * ops.reshape(
                ops.cast(sample_weight, "float32"), (-1,)
            )
        loss = ops.mean(per_example)
        if self.losses:
            loss = loss + ops.cast(ops.sum(self.losses), "float32")
        # Each replica's share of the global mean, as Keras's losses do.
        return loss_module.scale_loss_for_distribution(loss)

    def _head_objective(self, context):
        if context is None or not context.losses:
            raise ValueError(
                "The model has no MONET head that used the labels: add a "
                "`keras_monet.MONETHead` (or a baseline head from "
                "`keras_monet.baselines`) to the model."
            )
        if len(context.losses) > 1:
            raise ValueError(
                "A MONET model trains exactly one head on its labels; found "
                f"{len(context.losses)} heads."
            )
        return context.losses[0]  # [B]

    # JAX: Keras's stateless training step calls this for the forward pass
    # and the loss; the labels reach the head through the context.
    def compute_loss_and_updates(
        self, trainable_variables, non_trainable_variables, metrics_variables,
        x, y, sample_weight, training=False, optimizer_variables=None,
    ):
        if training and y is None:
            validate_labels(None)
        forcing = (
            teacher_forcing.TeacherForcing(ops.cast(y, "float32"))
            if training
            else contextlib.nullcontext()
        )
        with forcing:
            return super().compute_loss_and_updates(
                trainable_variables, non_trainable_variables,
                metrics_variables, x, y, sample_weight, training=training,
                optimizer_variables=optimizer_variables,
            )

    if keras.backend.backend() == "tensorflow":

        def train_step(self, data):
            """Keras's TensorFlow step, with the forward pass under teacher forcing."""
            import tensorflow as tf

            x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
            if y is None:
                validate_labels(None)
            with tf.GradientTape() as tape:
                with teacher_forcing.TeacherForcing(ops.cast(y, "float32")):
                    y_pred = self(x, training=True)
                    loss = self._compute_loss(
                        x=x, y=y, y_pred=y_pred,
                        sample_weight=sample_weight, training=True,
                    )
                self._loss_tracker.update_state(
                    loss_module.unscale_loss_for_distribution(loss),
                    sample_weight=tf.shape(tf.nest.flatten(x)[0])[0],
                )
                scaled = self.optimizer.scale_loss(loss)
            trainable = self.trainable_weights
            gradients = tape.gradient(scaled, trainable)
            self.optimizer.apply(gradients, trainable)
            return self.compute_metrics(
                x, y, y_pred, sample_weight=sample_weight
            )


def _is_dataset(value):
    try:
        import tensorflow as tf
    except ImportError:  # pragma: no cover
        return False
    return isinstance(value, tf.data.Dataset)
