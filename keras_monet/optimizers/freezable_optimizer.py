"""An optimizer wrapper whose updates can be switched off with no trace."""

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="keras_monet")
class FreezableOptimizer(keras.optimizers.Optimizer):
    """Wraps an optimizer so that its updates can be frozen (MONET warm-up).

    While the `frozen` flag is 1, `apply` changes nothing: not the variables,
    not the inner optimizer's moments, not its iteration count. Setting a
    learning rate of 0 instead (as the paper's reference code did) would
    still move Adam's moments during the warm-up. The flag is a variable, so
    flipping it never retraces a compiled step. `keras_monet.OrderWarmUp`
    drives it for the order logits.

    Built like `keras.optimizers.LossScaleOptimizer`: a conditional around
    the inner optimizer's `apply`, with the same `tf.distribute` handling.

    Example:

    ```python
    order_optimizer = keras_monet.optimizers.FreezableOptimizer(
        keras.optimizers.Adam(5e-3)
    )
    ```

    Args:
        inner_optimizer: the `keras.optimizers.Optimizer` to wrap.
        name: optional name.
    """

    def __init__(self, inner_optimizer, name=None, **kwargs):
        if kwargs:
            raise ValueError(
                "FreezableOptimizer takes no optimizer arguments of its own; "
                f"set them on `inner_optimizer`. Received: {sorted(kwargs)}."
            )
        inner_optimizer = keras.optimizers.get(inner_optimizer)
        super().__init__(learning_rate=0.0, name=name)
        self.inner_optimizer = inner_optimizer

    def build(self, var_list):
        if self.built:
            return
        self.frozen = self.add_variable(
            shape=(),
            dtype="int32",
            initializer="zeros",
            aggregation="none",
            name="frozen",
        )
        self.inner_optimizer.build(var_list)
        super().build(var_list)

    @property
    def variables(self):
        return self._variables + self.inner_optimizer.variables

    def _thawed(self):
        return ops.equal(self.frozen, 0)

    def apply(self, grads, trainable_variables=None):
        if not self.built:
            self.build(trainable_variables)
        if keras.backend.backend() == "tensorflow":
            self._tf_apply(grads, trainable_variables)
        else:
            self._common_apply(grads, trainable_variables)

    def _common_apply(self, grads, trainable_variables=None):
        # A select rather than a conditional: under JAX, stateless updates
        # made inside a traced `cond` branch cannot leave it. The update is
        # computed and discarded while frozen; its state is then unchanged.
        trainable_variables = list(
            trainable_variables or self.inner_optimizer._trainable_variables
        )
        watched = trainable_variables + list(self.inner_optimizer.variables)
        before = [ops.convert_to_tensor(v) for v in watched]
        self.inner_optimizer.apply(grads, trainable_variables)
        thawed = self._thawed()
        for variable, old in zip(watched, before):
            variable.assign(ops.where(thawed, ops.convert_to_tensor(variable), old))

    def _tf_apply(self, grads, trainable_variables=None):
        import tensorflow as tf

        if tf.__internal__.distribute.strategy_supports_no_merge_call():
            # A true skip: the conditional holds the whole update.
            ops.cond(
                self._thawed(),
                lambda: self.inner_optimizer.apply(grads, trainable_variables),
                lambda: None,
            )
            return

        # Under MirroredStrategy the inner update merges across replicas, so
        # the condition must sit in cross-replica context (as in Keras's
        # LossScaleOptimizer).
        def cross_replica(distribution, grads, trainable_variables):
            def update():
                distribution.extended.call_for_each_replica(
                    self.inner_optimizer.apply,
                    args=(grads, trainable_variables),
                )

            ops.cond(self._thawed(), update, lambda: None)

        tf.distribute.get_replica_context().merge_call(
            cross_replica, args=(grads, trainable_variables)
        )

    @property
    def learning_rate(self):
        return self.inner_optimizer.learning_rate

    @learning_rate.setter
    def learning_rate(self, learning_rate):
        if hasattr(self, "inner_optimizer"):
            self.inner_optimizer.learning_rate = learning_rate

    @property
    def iterations(self):
        return self.inner_optimizer.iterations

    def finalize_variable_values(self, var_list):
        self.inner_optimizer.finalize_variable_values(var_list)

    def get_config(self):
        return {
            "name": self.name,
            "inner_optimizer": keras.saving.serialize_keras_object(
                self.inner_optimizer
            ),
        }

    @classmethod
    def from_config(cls, config, custom_objects=None):
        config = dict(config)
        inner = keras.saving.deserialize_keras_object(
            config.pop("inner_optimizer"), custom_objects=custom_objects
        )
        return cls(inner, **config)
