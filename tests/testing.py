"""The one shared layer test: build, config round trip, compiled step, dtypes.

Every layer of the library goes through `run_layer_test`, so no test file
re-invents these checks (keras-hub's `run_layer_test` is the model).
"""

import contextlib

import keras
import numpy as np
import tensorflow as tf
from keras import ops

from keras_monet import teacher_forcing


def _outputs_list(outputs):
    return [ops.convert_to_numpy(o) for o in keras.tree.flatten(outputs)]


def run_layer_test(
    layer_cls,
    init_kwargs,
    call_args,
    call_kwargs=None,
    labels=None,
    expected_output_shape=None,
):
    """Runs the checks every keras_monet layer must pass.

    Args:
        layer_cls: the layer class.
        init_kwargs: constructor arguments.
        call_args: tuple of positional call arguments (numpy / tensors).
        call_kwargs: keyword call arguments for inference calls.
        labels: `[B, T]` labels; given, the training call runs inside
            `TeacherForcing(labels)` and its loss is the context's loss.
        expected_output_shape: the inference output's shape (first output).
    """
    call_kwargs = call_kwargs or {}

    # Build, and the output shape.
    layer = layer_cls(**init_kwargs)
    outputs = layer(*call_args, **call_kwargs)
    first = keras.tree.flatten(outputs)[0]
    if expected_output_shape is not None:
        assert tuple(first.shape) == tuple(expected_output_shape), first.shape
    for value in _outputs_list(outputs):
        assert np.all(np.isfinite(value))

    # Config round trip, and the same outputs from the same weights.
    config = layer.get_config()
    for key in init_kwargs:
        assert key in config, f"get_config() misses `{key}`"
    clone = layer_cls.from_config(config)
    assert clone.get_config() == config
    clone(*call_args, **call_kwargs)
    clone.set_weights(layer.get_weights())
    for a, b in zip(
        _outputs_list(layer(*call_args, **call_kwargs)),
        _outputs_list(clone(*call_args, **call_kwargs)),
    ):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    serialized = keras.saving.serialize_keras_object(layer)
    revived = keras.saving.deserialize_keras_object(serialized)
    assert type(revived) is layer_cls

    # One compiled (XLA) training step: finite gradients reach every weight.
    run_compiled_training_step(layer, call_args, labels)

    # Mixed precision: finite outputs; trainable weights stay float32.
    mixed = layer_cls(**init_kwargs, dtype="mixed_float16")
    mixed_outputs = mixed(*call_args, **call_kwargs)
    for value in _outputs_list(mixed_outputs):
        assert np.all(np.isfinite(value.astype("float32")))
    for weight in mixed.trainable_weights:
        assert weight.dtype == "float32", (weight.path, weight.dtype)
    run_compiled_training_step(mixed, call_args, labels)
    return layer


def _projection(tensor):
    size = int(np.prod(tensor.shape))
    return ops.reshape(ops.sin(ops.arange(size, dtype="float32") + 1.0), tensor.shape)


def run_compiled_training_step(layer, call_args, labels=None):
    """One SGD step under `tf.function(jit_compile=True)`; checks gradients."""
    variables = layer.trainable_variables
    before = [ops.convert_to_numpy(v) for v in variables]

    @tf.function(jit_compile=True)
    def step(*args):
        with tf.GradientTape() as tape:
            context = (
                teacher_forcing.TeacherForcing(ops.convert_to_tensor(labels))
                if labels is not None
                else contextlib.nullcontext()
            )
            with context as active:
                outputs = layer(*args, training=labels is not None)
            if active is not None:
                loss = ops.mean(active.losses[0])
            else:
                # A fixed, asymmetric projection: no symmetry zeroes it.
                loss = sum(
                    ops.mean(ops.cast(o, "float32") * _projection(o))
                    for o in keras.tree.flatten(outputs)
                )
        grads = tape.gradient(loss, variables)
        for v, g in zip(variables, grads):
            v.assign_sub(0.1 * ops.cast(tf.convert_to_tensor(g), v.dtype))
        return loss, [tf.convert_to_tensor(g) for g in grads]

    loss, grads = step(*call_args)
    assert np.isfinite(ops.convert_to_numpy(loss))
    for v, g in zip(variables, grads):
        assert g is not None, f"no gradient reaches {v.path}"
        assert np.all(np.isfinite(ops.convert_to_numpy(g))), v.path
    changed = [
        not np.array_equal(b, ops.convert_to_numpy(v))
        for b, v in zip(before, variables)
    ]
    assert any(changed), "the training step changed no weight"
