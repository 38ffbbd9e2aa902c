"""T task-wise GRU cells unrolled along many task orders at once."""

import keras
from keras import ops

from keras_monet.layers.head import check_positive_int


# Up to this many tasks, `step_layout` counts ranks by prefix sums; above,
# it sorts (XLA's sort on CPU costs more than the O(N T^2) sums at small T).
_CUMSUM_MAX_TASKS = 12


def auto_block_size(rows, tasks):
    """A block size for `rows` (example, order) rows and T tasks.

    Each task gets about N / T rows per step and up to R - 1 padding rows:
    the largest power of two <= N / (2 T), between 8 and 64, keeps padding
    under about half the rows while blocks stay large enough for an
    efficient batched matmul. 32 when N is not known when tracing.
    """
    if not isinstance(rows, int):
        return 32
    size = 8
    while size < 64 and 2 * size <= rows / (2 * tasks):
        size *= 2
    return size


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
    Within a group, rows keep their order. Computed by prefix counts
    (O(N T^2)) for small T, by one sort per step (O(T N log N)) above.

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
    if tasks <= _CUMSUM_MAX_TASKS:
        return _ranks_by_cumsum(task, tasks, block_size)
    n = ops.shape(task)[0]
    step_task = ops.transpose(task)  # [T_step, N]
    counts = ops.sum(
        ops.one_hot(step_task, tasks, dtype="int32"), axis=1
    )  # [T_step, T_task]
    # Rows sorted by (task, row) at each step: unique keys, so any sort will do.
    row_ids = ops.arange(n, dtype="int32")[None, :]
    sorted_rows = ops.sort(step_task * n + row_ids, axis=-1) % n  # [T, N]
    padded = (counts + block_size - 1) // block_size * block_size
    ends = ops.cumsum(padded, axis=-1)
    starts = ends - padded  # [T, T_task], padded group starts
    sorted_starts = ops.cumsum(counts, axis=-1) - counts  # unpadded
    num_blocks = (n + tasks * (block_size - 1)) // block_size
    num_slots = num_blocks * block_size
    block_start = ops.arange(num_blocks, dtype="int32") * block_size
    block_task = ops.sum(
        ops.cast(ends[:, None, :] <= block_start[None, :, None], "int32"),
        axis=-1,
    )
    block_task = ops.minimum(block_task, tasks - 1)  # [T, G]
    # Padded slot s of step t holds the rank-th row of its block's task.
    slot_task = ops.reshape(
        ops.broadcast_to(
            block_task[:, :, None], (tasks, num_blocks, block_size)
        ),
        (tasks, num_slots),
    )
    slots = ops.arange(num_slots, dtype="int32")[None, :]
    rank = slots - ops.take_along_axis(starts, slot_task, axis=-1)
    filled = rank < ops.take_along_axis(counts, slot_task, axis=-1)
    position = ops.take_along_axis(sorted_starts, slot_task, axis=-1) + rank
    position = ops.where(filled, position, 0)
    row_of_slot = ops.where(
        filled, ops.take_along_axis(sorted_rows, position, axis=-1), n
    )  # [T, P]
    # And back: row n's slot, scattering each filled slot's index.
    steps = ops.broadcast_to(
        ops.arange(tasks, dtype="int32")[:, None], (tasks, num_slots)
    )
    indices = ops.reshape(
        ops.stack([ops.minimum(row_of_slot, n - 1), steps], axis=-1), (-1, 2)
    )
    slot = ops.scatter(
        indices,
        ops.reshape(ops.where(filled, slots + 1, 0), (-1,)),
        (n, tasks),
    ) - 1
    return slot, row_of_slot, block_task


def _ranks_by_cumsum(task, tasks, block_size):
    """`step_layout` by prefix counts, O(N T^2): fastest for small T."""
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
    """`values[index]` along axis 0; an index past the end reads zeros."""
    size = ops.shape(values)[0]
    rows = ops.take(values, ops.minimum(index, size - 1), axis=0)
    inside = index < size
    if len(values.shape) > 1:
        inside = inside[:, None]
    return ops.where(inside, rows, ops.zeros_like(rows))


def move_rows(values, index, adjoint_index):
    """Moves rows between two layouts: `values[index]` (past the end: 0).

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


def take_cells(weights, cells):
    """`weights[cells]` along axis 0, with a dense gradient.

    Autodiff of a gather gives sparse slices that TensorFlow concatenates
    across the T steps before one scatter-add; this gradient is instead one
    small matmul per step, `one_hot(cells)^T @ upstream`, summed densely.
    """

    @ops.custom_gradient
    def take(w):
        def grad(*args, upstream=None):
            if upstream is None:
                (upstream,) = args
            count = ops.shape(w)[0]
            one_hot = ops.one_hot(cells, count, dtype=upstream.dtype)
            flat = ops.reshape(upstream, (ops.shape(upstream)[0], -1))
            return ops.reshape(
                ops.matmul(ops.transpose(one_hot), flat), ops.shape(w)
            )

        return ops.take(w, cells, axis=0), grad

    # A tensor, not the variable (`+ 0` reads it, autocast included): TF's
    # eager custom gradient would otherwise want the variable's gradient
    # returned separately.
    return take(weights + 0)


def lookup(table, index):
    """`table[index]` along axis 0; the gradient is one segment sum."""

    @ops.custom_gradient
    def take(w):
        def grad(*args, upstream=None):
            if upstream is None:
                (upstream,) = args
            return ops.segment_sum(upstream, index, ops.shape(w)[0])

        return ops.take(w, index, axis=0), grad

    return take(table)


def gru_update(x, recurrent, h):
    """A GRU cell's state update from its two projections (gates z, r, h).

    `h' = z h + (1 - z) tanh(x_h + r rec_h)` with `z, r = sigmoid(x + rec)`
    (Keras's `reset_after=True` cell). The gradient is written by hand so
    that each of `dx`, `drec` is one fused elementwise pass over `[P, 3H]`.
    """

    @ops.custom_gradient
    def update(x, recurrent, h):
        units = ops.shape(h)[-1]
        x3 = ops.reshape(x, (-1, 3, units))
        rec3 = ops.reshape(recurrent, (-1, 3, units))
        z = ops.sigmoid(x3[:, 0] + rec3[:, 0])
        r = ops.sigmoid(x3[:, 1] + rec3[:, 1])
        rec_h = rec3[:, 2]
        n = ops.tanh(x3[:, 2] + r * rec_h)
        new = z * h + (1.0 - z) * n

        def grad(*args, upstream=None):
            if upstream is None:
                (upstream,) = args
            d_pre_h = upstream * (1.0 - z) * (1.0 - n * n)
            d_pre_z = upstream * (h - n) * z * (1.0 - z)
            d_pre_r = d_pre_h * rec_h * r * (1.0 - r)
            def by_gate(last):
                return ops.concatenate([d_pre_z, d_pre_r, last], axis=-1)

            return (
                by_gate(d_pre_h),
                by_gate(d_pre_h * r),
                upstream * z,
            )

        return new, grad

    return update(x, recurrent, h)


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
        block_size: int, rows per block when grouping rows by task, or
            None to choose it from the number of rows per task and step
            (`auto_block_size`). It changes speed only, never the outputs.
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
        check_positive_int("tasks", tasks)
        check_positive_int("units", units)
        check_positive_int("label_units", label_units)
        self.tasks = tasks
        self.units = units
        self.label_units = label_units
        if block_size is not None and (
            isinstance(block_size, bool)
            or not isinstance(block_size, int)
            or block_size < 1
        ):
            raise ValueError(
                "`block_size` should be an integer >= 1 or None. Received: "
                f"`block_size={block_size}`."
            )
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
        block = self.block_size or auto_block_size(n, tasks)
        task = ops.reshape(orders, (n, tasks))  # [N, T] step -> task
        slot, row_of_slot, block_task = step_layout(task, tasks, block)
        num_blocks = ops.shape(block_task)[1]
        num_slots = num_blocks * block
        # The state stays in the grouped layout of the current step: one
        # move per step, from step t - 1's layout to step t's. Row n (a
        # padding slot's row) sits past the end of every layout (zeros).
        slot_or_end = ops.concatenate(
            [slot, ops.full((1, tasks), num_slots, dtype="int32")], axis=0
        )  # [N + 1, T]

        values = 2 * tasks + 1
        table = ops.reshape(self.input_table(), (tasks * values, 3 * units))
        teacher_forcing = labels is not None
        if teacher_forcing:
            # Labels in each row's step order, [N, T].
            step_labels = ops.take_along_axis(
                ops.cast(labels, "int32")[:, None, :], orders, axis=-1
            )
            step_labels = ops.reshape(step_labels, (n, tasks))
            # The label value fed at each step (0 at step 0 or if unknown).
            fed = 1 + 2 * task[:, :-1] + step_labels[:, :-1]
            if label_mask is not None:
                step_known = ops.take_along_axis(
                    ops.cast(label_mask, "int32")[:, None, :], orders, axis=-1
                )
                fed = fed * ops.reshape(step_known, (n, tasks))[:, :-1]
            fed = ops.concatenate(
                [ops.zeros((n, 1), dtype="int32"), fed], axis=1
            )  # [N, T]

        h = ops.reshape(
            ops.broadcast_to(
                initial_state[:, None, :], (batch_size, num_orders, units)
            ),
            (n, units),
        )
        h = move_rows(h, row_of_slot[0], slot[:, 0])  # [P, H], grouped
        outputs = []
        for t in range(tasks):
            rows = row_of_slot[t]  # [P]
            cells = block_task[t]  # [G]
            if t > 0:
                h = move_rows(
                    h,
                    ops.take(slot_or_end[:, t - 1], rows, axis=0),
                    ops.take(slot_or_end[:, t], row_of_slot[t - 1], axis=0),
                )
            slot_cell = ops.reshape(
                ops.broadcast_to(cells[:, None], (num_blocks, block)), (-1,)
            )  # [P]
            if teacher_forcing:
                label_value = _take_rows(fed[:, t], rows)
            elif t == 0:
                label_value = ops.zeros((num_slots,), dtype="int32")
            x = lookup(table, slot_cell * values + label_value)
            grouped = ops.reshape(h, (num_blocks, block, units))
            recurrent = ops.matmul(
                grouped, take_cells(self.recurrent_kernel, cells)
            ) + ops.take(self.recurrent_bias, cells, axis=0)[:, None, :]
            recurrent = ops.reshape(recurrent, (num_slots, 3 * units))
            h = gru_update(x, recurrent, h)
            logit = ops.sum(
                ops.reshape(h, (num_blocks, block, units))
                * ops.take(self.output_kernel, cells, axis=0)[:, None, :],
                axis=-1,
            ) + ops.take(self.output_bias, cells, axis=0)[:, None]
            logit = ops.cast(ops.reshape(logit, (num_slots,)), "float32")
            if teacher_forcing:
                outputs.append(move_rows(logit, slot[:, t], rows))
            else:
                probability = ops.sigmoid(logit)
                outputs.append(ops.take(probability, slot[:, t], axis=0))
                noise = keras.random.uniform(
                    (n,), seed=self.seed_generator, dtype="float32"
                )
                label = ops.cast(_take_rows(noise, rows) < probability, "int32")
                if t + 1 < tasks:
                    label_value = _take_rows(
                        1 + 2 * slot_cell + label,
                        ops.take(slot_or_end[:, t], row_of_slot[t + 1], axis=0),
                    )
        step_outputs = ops.stack(outputs, axis=-1)  # [N, T] in step order
        # Back to task order: out[n, j] = step_outputs[n, t] where task j is
        # step t's; a one-hot contraction (exact), cheaper than a sort.
        task_outputs = ops.einsum(
            "nt,ntj->nj",
            step_outputs,
            ops.one_hot(task, tasks, dtype=step_outputs.dtype),
        )
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
