"""The straightforward MONET recurrence, kept for comparison and as a check.

`RowGatherRecurrent` computes exactly what `keras_monet.TaskwiseRecurrent`
computes (same weights, same outputs, same sampling noise) the way the
authors' implementation did: at every step, each (example, order) row gathers
its own cell's weight matrices, `[B k, E, 3H]` and `[B k, H, 3H]`, and
multiplies its input and state by them (a batched matrix-vector product).
At batch 64 with k = 128 orders and H = 64 that is 400 MB per kernel per step,
and its gradient is a scatter-add of the same size.

It is deliberately plain: the label embedding is a Dense layer on the signed
one-hot previous label, no lookup table, no grouping of rows by task.
"""

import keras
from keras import ops

from keras_monet.layers.taskwise_recurrent import TaskwiseRecurrent


class RowGatherRecurrent(TaskwiseRecurrent):
    """`TaskwiseRecurrent` by per-row weight gathers (the authors' design).

    Same constructor, weights and call signature as `TaskwiseRecurrent`
    (`block_size` is ignored): load one's weights into the other and they
    give the same logits.
    """

    def call(self, initial_state, orders, labels=None, label_mask=None):
        tasks, units = self.tasks, self.units
        batch_size = ops.shape(initial_state)[0]
        orders = ops.cast(orders, "int32")
        num_orders = ops.shape(orders)[1]
        n = batch_size * num_orders
        task = ops.reshape(orders, (n, tasks))  # [N, T]
        teacher_forcing = labels is not None
        if teacher_forcing:
            step_labels = ops.reshape(
                ops.take_along_axis(
                    ops.cast(labels, self.compute_dtype)[:, None, :],
                    orders,
                    axis=-1,
                ),
                (n, tasks),
            )
            step_known = None
            if label_mask is not None:
                step_known = ops.reshape(
                    ops.take_along_axis(
                        ops.cast(label_mask, self.compute_dtype)[:, None, :],
                        orders,
                        axis=-1,
                    ),
                    (n, tasks),
                )
        h = ops.reshape(
            ops.broadcast_to(
                initial_state[:, None, :], (batch_size, num_orders, units)
            ),
            (n, units),
        )
        # The previous label as a signed one-hot over tasks (0: none).
        signed = ops.zeros((n, tasks), dtype=self.compute_dtype)
        outputs = []
        for t in range(tasks):
            cell = task[:, t]  # [N]
            embedding = ops.matmul(signed, self.label_kernel) + self.label_bias
            kernel = ops.take(self.kernel, cell, axis=0)  # [N, E, 3H]
            recurrent_kernel = ops.take(
                self.recurrent_kernel, cell, axis=0
            )  # [N, H, 3H]
            x = ops.einsum("ne,neg->ng", embedding, kernel) + ops.take(
                self.input_bias, cell, axis=0
            )
            recurrent = ops.einsum(
                "nh,nhg->ng", h, recurrent_kernel
            ) + ops.take(self.recurrent_bias, cell, axis=0)
            x_z, x_r, x_h = ops.split(x, 3, axis=-1)
            h_z, h_r, h_h = ops.split(recurrent, 3, axis=-1)
            z = ops.sigmoid(x_z + h_z)
            r = ops.sigmoid(x_r + h_r)
            h = z * h + (1.0 - z) * ops.tanh(x_h + r * h_h)
            logit = ops.sum(
                h * ops.take(self.output_kernel, cell, axis=0), axis=-1
            ) + ops.take(self.output_bias, cell, axis=0)
            logit = ops.cast(logit, "float32")
            if teacher_forcing:
                outputs.append(logit)
                sign = 2.0 * step_labels[:, t] - 1.0
                if step_known is not None:
                    sign = sign * step_known[:, t]
            else:
                probability = ops.sigmoid(logit)
                outputs.append(probability)
                noise = keras.random.uniform(
                    (n,), seed=self.seed_generator, dtype="float32"
                )
                sign = 2.0 * ops.cast(noise < probability, self.compute_dtype)
                sign = sign - 1.0
            signed = ops.one_hot(cell, tasks, dtype=self.compute_dtype)
            signed = signed * ops.cast(sign, self.compute_dtype)[:, None]
        step_outputs = ops.stack(outputs, axis=-1)  # [N, T], step order
        inverse = ops.argsort(task, axis=-1)
        task_outputs = ops.take_along_axis(step_outputs, inverse, axis=-1)
        return ops.reshape(task_outputs, (batch_size, num_orders, tasks))
