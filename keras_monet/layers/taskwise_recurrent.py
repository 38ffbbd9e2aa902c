"""T task-wise GRU cells unrolled along many task orders at once."""

import keras
from keras import ops


def _per_task(initializer, tasks):
    """Initialises a `[T, ...]` weight as T independent `[...]` weights."""
    initializer = keras.initializers.get(initializer)

    def init(shape, dtype=None):
        return ops.stack(
            [initializer(shape[1:], dtype=dtype) for _ in range(tasks)]
        )

    return init


def step_layout(task, tasks, block_size):
    """Where each (row, step) sits when rows are grouped by task.

    At step t, row n runs the cell of task `task[n, t]`. Rows are grouped by
    task into blocks of `block_size` rows, each group padded to a whole
    number of blocks, so that one batched matmul `[G, R, H] x [G, H, 3H]`
    applies every row's own cell with static shapes and without copying a
    weight matrix per row: G = (N + T (R - 1)) // R blocks always suffice.

    Args:
        task: int32 `[N, T]`, the task processed by row n at step t.
        tasks: int, T.
        block_size: int, R.

    Returns:
        `slot` `[N, T]` (the padded position of row n at step t),
        `row_of_slot` `[T, P]` (the row in each padded position, N for
        padding) and `block_task` `[T, G]` (the cell each block uses),
        with P = G R.
    """
    n = ops.shape(task)[0]
    one_hot = ops.one_hot(task, tasks, dtype="int32")  # [N, T_step, T_task]
    counts = ops.sum(one_hot, axis=0)  # [T_step, T_task]
    rank = ops.sum((ops.cumsum(one_hot, axis=0) - 1) * one_hot, axis=-1)
    padded = (counts + block_size - 1) // block_size * block_size
    ends = ops.cumsum(padded, axis=-1)
    starts = ends - padded
    slot = ops.sum(one_hot * starts[None], axis=-1) + rank  # [N, T_step]
    num_blocks = (n + tasks * (block_size - 1)) // block_size
    num_slots = num_blocks * block_size
    step = ops.broadcast_to(ops.arange(tasks, dtype="int32")[None], (n, tasks))
    indices = ops.reshape(ops.stack([step, slot], axis=-1), (-1, 2))
    rows = ops.broadcast_to(
        ops.arange(1, n + 1, dtype="int32")[:, None], (n, tasks)
    )
    row_of_slot = (
        ops.scatter(indices, ops.reshape(rows, (-1,)), (tasks, num_slots)) - 1
    )
    row_of_slot = ops.where(row_of_slot < 0, n, row_of_slot)
    block_start = ops.arange(num_blocks, dtype="int32") * block_size
    block_task = ops.sum(
        ops.cast(ends[:, None, :] <= block_start[None, :, None], "int32"),
        axis=-1,
    )
    block_task = ops.minimum(block_task, tasks - 1)
    return slot, row_of_slot, block_task


def _take_rows(values, index):
    """`values[index]`, where index `len(values)` reads a row of zeros."""
    padding = ops.zeros((1, ops.shape(values)[1]), dtype=values.dtype)
    return ops.take(ops.concatenate([values, padding], axis=0), index, axis=0)


def move_rows(values, index, adjoint_index):
    """Moves rows between the row and the grouped layout: `values[index]`.

    `index` and `adjoint_index` are inverse one-to-one maps (up to padding),
    so the gradient is the reverse move, a gather too. Left to autodiff it
    would be a scatter-add, whose chain over T steps XLA compiles in time
    that grows steeply with T.
    """

    @ops.custom_gradient
    def move(v):
        def grad(*args, upstream=None):
            if upstream is None:
                (upstream,) = args
            return _take_rows(upstream, adjoint_index)

        return _take_rows(v, index), grad

    return move(values)


@keras.saving.register_keras_serializable(package="keras_monet")
class TaskwiseRecurrent(keras.layers.Layer):
    """T task-wise GRU cells chained along task orders (paper eq. 15-17).

    Each task t owns a GRU cell g_t and an output unit. Along an order sigma,
    step i runs the cell of task sigma(i), whichever step that is:

    ```
    h_0 = initial_state,  y~_0 = 0
    h_i = GRU_{sigma(i)}(h_{i-1}, LabelEmbedding(y~_{i-1} e_{sigma(i-1)}))
    o_i = w_{sigma(i)} . h_i + b_{sigma(i)}
    ```

    where y~ = 2 y - 1 is the signed previous label (0 when unknown). In
    training the true labels are fed (teacher forcing) and the logits are
    returned; at inference each step's label is drawn from Bernoulli(sigmoid
    (o_i)) and fed back (ancestral sampling, Algorithm 2) and the
    probabilities are returned. Outputs are put back in task order.

    All (example, order) rows are unrolled together. The signed one-hot label
    input takes only 2T + 1 values, so its embedding and the cells' input
    projections are a lookup table; the recurrent matmuls group rows by task
    (see `step_layout`), so no weight matrix is ever copied per row.

    The cells are standard Keras GRU cells (`reset_after=True`, gates ordered
    z, r, h): task t's cell equals `keras.layers.GRUCell(units)` with kernel
    `label_embedding @ kernel[t]`, recurrent kernel `recurrent_kernel[t]`
    and bias `[input_bias[t], recurrent_bias[t]]`.

    References:
        - [Tallec et al., Multi-Order Networks for Action Unit Detection](
          https://arxiv.org/abs/2202.00446), eqs. 15-17, Algorithm 2.

    Example:

    ```python
    cells = keras_monet.TaskwiseRecurrent(tasks=3, units=8)
    h0 = keras.random.normal((2, 8))
    orders = keras.ops.convert_to_tensor([[[0, 1, 2]], [[2, 0, 1]]])
    labels = keras.ops.convert_to_tensor([[1.0, 0.0, 1.0], [0.0, 0.0, 1.0]])
    logits = cells(h0, orders, labels=labels)        # [2, 1, 3]
    probabilities = cells(h0, orders)                # sampled, [2, 1, 3]
    ```

    Args:
        tasks: int, the number of tasks T.
        units: int, H, the hidden size (the initial state's last dimension).
        label_units: int, the size of the previous-label embedding.
        block_size: int, rows per block when grouping rows by task.
        kernel_initializer: initializer of each cell's input kernel.
        recurrent_initializer: initializer of each cell's recurrent kernel.
        bias_initializer: initializer of the cells' biases.
        output_bias_initializer: initializer of the T output biases.
        kernel_regularizer: regularizer of the cells' input kernels.
        recurrent_regularizer: regularizer of the cells' recurrent kernels.
        seed: int or None, seeds the Bernoulli sampling at inference.
        **kwargs: base layer keyword arguments.

    Call arguments:
        initial_state: float `[B, H]`, h_0.
        orders: int `[B, K, T]`, the K orders each example is unrolled in.
        labels: float `[B, T]` of 0/1, in task order. Given: teacher forcing.
            None: ancestral sampling.
        label_mask: optional float `[B, T]`, 1 where a label is known; an
            unknown previous label is fed as 0.

    Returns:
        `[B, K, T]` float32 in task order: logits when `labels` is given,
        else the sampled trajectories' conditional probabilities.
    """

    def __init__(
        self,
        tasks,
        units=64,
        label_units=64,
        block_size=32,
        kernel_initializer="glorot_uniform",
        recurrent_initializer="orthogonal",
        bias_initializer="zeros",
        output_bias_initializer="zeros",
        kernel_regularizer=None,
        recurrent_regularizer=None,
        seed=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        for name, value in (
            ("tasks", tasks),
            ("units", units),
            ("label_units", label_units),
            ("block_size", block_size),
        ):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(
                    f"`{name}` should be an integer >= 1. Received: "
                    f"`{name}={value}`."
                )
        self.tasks = tasks
        self.units = units
        self.label_units = label_units
        self.block_size = block_size
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.recurrent_initializer = keras.initializers.get(
            recurrent_initializer
        )
        self.bias_initializer = keras.initializers.get(bias_initializer)
        self.output_bias_initializer = keras.initializers.get(
            output_bias_initializer
        )
        self.kernel_regularizer = keras.regularizers.get(kernel_regularizer)
        self.recurrent_regularizer = keras.regularizers.get(
            recurrent_regularizer
        )
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    def build(self, initial_state_shape=None, orders_shape=None):
        if initial_state_shape is not None and initial_state_shape[-1] not in (
            None,
            self.units,
        ):
            raise ValueError(
                f"The initial state should have `units={self.units}` features. "
                f"Received a state of shape {initial_state_shape}."
            )
        t, e, h = self.tasks, self.label_units, self.units
        # The label embedding: Dense(label_units) on the signed one-hot label.
        self.label_kernel = self.add_weight(
            name="label_kernel", shape=(t, e), initializer="glorot_uniform"
        )
        self.label_bias = self.add_weight(
            name="label_bias", shape=(e,), initializer="zeros"
        )
        self.kernel = self.add_weight(
            name="kernel",
            shape=(t, e, 3 * h),
            initializer=_per_task(self.kernel_initializer, t),
            regularizer=self.kernel_regularizer,
        )
        self.recurrent_kernel = self.add_weight(
            name="recurrent_kernel",
            shape=(t, h, 3 * h),
            initializer=_per_task(self.recurrent_initializer, t),
            regularizer=self.recurrent_regularizer,
        )
        self.input_bias = self.add_weight(
            name="input_bias",
            shape=(t, 3 * h),
            initializer=_per_task(self.bias_initializer, t),
        )
        self.recurrent_bias = self.add_weight(
            name="recurrent_bias",
            shape=(t, 3 * h),
            initializer=_per_task(self.bias_initializer, t),
        )
        self.output_kernel = self.add_weight(
            name="output_kernel",
            shape=(t, h),
            initializer=_per_task("glorot_uniform", t),
        )
        self.output_bias = self.add_weight(
            name="output_bias",
            shape=(t,),
            initializer=self.output_bias_initializer,
        )
        self.built = True

    def input_table(self):
        """Each cell's input projection of every label value, `[T, 2T+1, 3H]`.

        Value 0 is "no previous label" (step 0, or unknown); value
        1 + 2 p + y is label y of task p, entering the embedding as 2 y - 1.
        """
        signs = ops.convert_to_tensor([-1.0, 1.0], dtype=self.compute_dtype)
        signed = self.label_kernel[:, None, :] * signs[None, :, None]
        embeddings = ops.concatenate(
            [
                ops.zeros((1, self.label_units), self.compute_dtype),
                ops.reshape(signed, (2 * self.tasks, self.label_units)),
            ],
            axis=0,
        ) + self.label_bias  # [2T+1, E]
        return (
            ops.einsum("ve,teg->tvg", embeddings, self.kernel)
            + self.input_bias[:, None, :]
        )

    def call(self, initial_state, orders, labels=None, label_mask=None):
        tasks, units = self.tasks, self.units
        batch_size = ops.shape(initial_state)[0]
        orders = ops.cast(orders, "int32")
        num_orders = ops.shape(orders)[1]
        n = batch_size * num_orders
        task = ops.reshape(orders, (n, tasks))  # [N, T] step -> task
        slot, row_of_slot, block_task = step_layout(
            task, tasks, self.block_size
        )

        values = 2 * tasks + 1
        table = ops.reshape(self.input_table(), (tasks * values, 3 * units))
        teacher_forcing = labels is not None
        if teacher_forcing:
            # Labels in each row's step order, [N, T].
            step_labels = ops.take_along_axis(
                ops.cast(labels, "int32")[:, None, :], orders, axis=-1
            )
            step_labels = ops.reshape(step_labels, (n, tasks))
            if label_mask is not None:
                step_known = ops.take_along_axis(
                    ops.cast(label_mask, "int32")[:, None, :], orders, axis=-1
                )
                step_known = ops.reshape(step_known, (n, tasks))

        h = ops.reshape(
            ops.broadcast_to(
                initial_state[:, None, :], (batch_size, num_orders, units)
            ),
            (n, units),
        )
        label_value = ops.zeros((n,), dtype="int32")
        outputs = []
        for t in range(tasks):
            cell = task[:, t]
            x = ops.take(table, cell * values + label_value, axis=0)
            grouped = move_rows(h, row_of_slot[t], slot[:, t])  # [P, H]
            grouped = ops.reshape(grouped, (-1, self.block_size, units))
            recurrent = ops.matmul(
                grouped, ops.take(self.recurrent_kernel, block_task[t], axis=0)
            )
            recurrent = move_rows(
                ops.reshape(recurrent, (-1, 3 * units)),
                slot[:, t],
                row_of_slot[t],
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
                label = step_labels[:, t]
                known = step_known[:, t] if label_mask is not None else None
            else:
                probability = ops.sigmoid(logit)
                outputs.append(probability)
                noise = keras.random.uniform(
                    (n,), seed=self.seed_generator, dtype="float32"
                )
                label = ops.cast(noise < probability, "int32")
                known = None
            label_value = 1 + 2 * cell + label
            if known is not None:
                label_value = label_value * known
        step_outputs = ops.stack(outputs, axis=-1)  # [N, T] in step order
        inverse = ops.argsort(task, axis=-1)  # task -> step
        task_outputs = ops.take_along_axis(step_outputs, inverse, axis=-1)
        return ops.reshape(task_outputs, (batch_size, num_orders, tasks))

    def compute_output_shape(self, initial_state_shape, orders_shape):
        return (initial_state_shape[0], orders_shape[1], self.tasks)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "tasks": self.tasks,
                "units": self.units,
                "label_units": self.label_units,
                "block_size": self.block_size,
                "kernel_initializer": keras.initializers.serialize(
                    self.kernel_initializer
                ),
                "recurrent_initializer": keras.initializers.serialize(
                    self.recurrent_initializer
                ),
                "bias_initializer": keras.initializers.serialize(
                    self.bias_initializer
                ),
                "output_bias_initializer": keras.initializers.serialize(
                    self.output_bias_initializer
                ),
                "kernel_regularizer": keras.regularizers.serialize(
                    self.kernel_regularizer
                ),
                "recurrent_regularizer": keras.regularizers.serialize(
                    self.recurrent_regularizer
                ),
                "seed": self.seed,
            }
        )
        return config
