"""Hard order selection, the "Order Matters" baseline of Table 1."""

import keras
import numpy as np
from keras import ops

from keras_monet import losses
from keras_monet.layers.head import TaskHead
from keras_monet.layers.head import check_positive_int
from keras_monet.layers.order_selector import OrderSelector
from keras_monet.layers.taskwise_recurrent import TaskwiseRecurrent

SELECTIONS = ("proportional", "best")


@keras.saving.register_keras_serializable(package="keras_monet")
class HardOrderSelection(TaskHead):
    """Explores M task orders, then commits to one of them for good.

    The baseline of Table 1 after Vinyals et al., "Order Matters". It has
    the same task-wise GRU cells as `MONETHead` and the same `OrderSelector`
    (the M orders, and the k-subsets drawn per example), but it never
    learns a soft order: the selector's logits stay frozen at 0.

    1. Exploration (while `exploring` is 1): every example is unrolled in
       all M orders (or `exploration_orders` k of them, drawn uniformly per
       example), each order weighted equally, `L_i = mean_m L_i^m`. The
       head accumulates each order's teacher-forced loss.
    2. Selection (`select_order`, called by the `OrderExploration`
       callback): order m's performance is its mean per-example likelihood
       `exp(-mean_i L_i^m)` over the measured epochs, and one order is drawn
       with probability proportional to it (`selection="proportional"`, the
       paper's baseline) or the best taken (`"best"`).
    3. Exploitation: training and prediction use the selected order only.

    The phase and the selected order are saved variables. Prediction reads
    them in the compiled function; the training step is traced for one
    phase (exploring unrolls k orders per example, exploiting one), so the
    switch rebuilds the model's train function once (`OrderExploration`
    does it). A `cond` holding both phases cannot be XLA-compiled here: the
    gradient of the cells' dynamic-batch broadcast inside a branch needs a
    compile-time shape.

    References:
        - [Tallec et al., Multi-Order Networks for Action Unit Detection](
          https://arxiv.org/abs/2202.00446), section 4.3, Table 1.
        - [Vinyals et al., Order Matters: Sequence to sequence for sets](
          https://arxiv.org/abs/1511.06391).

    Example:

    ```python
    model = keras_monet.Sequential(
        [keras.Input((2,)), keras.layers.Dense(64, activation="relu")]
    )
    model.add(keras_monet.baselines.HardOrderSelection(tasks=5, orders=120))
    model.compile(optimizer="adam")
    model.fit(
        x, y, epochs=100,
        callbacks=[keras_monet.baselines.OrderExploration(epochs=20)],
    )
    model.layers[-1].selected_order()     # [T] list, step -> task
    ```

    Args:
        tasks: int, the number of binary tasks T.
        orders: int M (<= T!) of random orders, or an explicit `[M, T]` array.
        exploration_orders: int k or None: orders unrolled per example
            during exploration (a uniform random subset); None uses all M.
        selection: `"proportional"` (default) or `"best"`.
        samples: int L, trajectories averaged at inference (eq. 27).
        units: int H, the compressed feature and GRU size.
        label_units: int, the previous-label embedding size.
        seed: int or None, seeds the orders, the selection draw and the
            sampling.
        **kwargs: base layer keyword arguments.

    Call arguments:
        inputs: `[B, D]` features.
        training: bool. In training, the head must run inside a MONET
            training step (teacher forcing).

    Returns:
        float32 `[B, T]` probabilities in task order: in training the
        teacher-forced probabilities averaged over the orders used; at
        inference the Monte-Carlo marginal over L trajectories, in orders
        drawn uniformly while exploring, in the selected order after.
    """

    def __init__(
        self,
        tasks,
        orders,
        exploration_orders=None,
        selection="proportional",
        samples=20,
        units=64,
        label_units=64,
        seed=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        for name, value in (("tasks", tasks), ("samples", samples),
                            ("units", units), ("label_units", label_units)):
            check_positive_int(name, value)
        if selection not in SELECTIONS:
            raise ValueError(
                f"`selection` should be one of {SELECTIONS}. Received: "
                f"`selection={selection!r}`."
            )
        self.tasks = tasks
        self.selection = selection
        self.samples = samples
        self.units = units
        self.label_units = label_units
        self.seed = seed
        # The orders and the exploration's per-example k-subsets are an
        # `OrderSelector`'s (order dropout = exploration_orders); its logits
        # stay frozen at 0, so its pi is uniform: hard selection learns no
        # soft order, it measures the orders instead.
        self.order_selector = OrderSelector(
            tasks,
            orders,
            seed=seed,
            trainable=False,
            dtype=self.dtype_policy,
            name="order_selector",
        )
        if exploration_orders is not None and (
            isinstance(exploration_orders, bool)
            or not isinstance(exploration_orders, (int, np.integer))
            or not 1 <= exploration_orders <= self.num_orders
        ):
            raise ValueError(
                "`exploration_orders` (the k orders unrolled per example while "
                f"exploring) should be an integer in [1, orders={self.num_orders}]"
                f" or None. Received: `exploration_orders={exploration_orders}`."
            )
        self.exploration_orders = (
            None if exploration_orders is None else int(exploration_orders)
        )
        self.order_selector.order_dropout = self.exploration_orders
        # The phase the training step is traced for; `exploring` mirrors it
        # as a saved variable.
        self._exploring_step = True
        self._rng = np.random.default_rng(None if seed is None else seed + 2)
        self.compression = keras.layers.Dense(
            units, activation="relu", dtype=self.dtype_policy, name="compression"
        )
        self.recurrent = TaskwiseRecurrent(
            tasks,
            units=units,
            label_units=label_units,
            seed=None if seed is None else seed + 1,
            dtype=self.dtype_policy,
            name="taskwise_recurrent",
        )

    @property
    def orders(self):
        """The M orders, int numpy `[M, T]`."""
        return self.order_selector.orders

    @property
    def num_orders(self):
        return self.order_selector.num_orders

    def build(self, input_shape):
        if self.built:
            return
        self.compression.build(input_shape)
        self.order_selector.build(input_shape)
        self.recurrent.build((input_shape[0], self.units), None)
        m = self.num_orders
        self.exploring = self.add_weight(
            name="exploring", shape=(), dtype="int32",
            initializer=keras.initializers.Constant(1), trainable=False,
        )
        self.selected_index = self.add_weight(
            name="selected_index", shape=(), dtype="int32",
            initializer="zeros", trainable=False,
        )
        self.order_loss_sum = self.add_weight(
            name="order_loss_sum", shape=(m,), dtype="float32",
            initializer="zeros", trainable=False, autocast=False,
        )
        self.order_loss_count = self.add_weight(
            name="order_loss_count", shape=(m,), dtype="float32",
            initializer="zeros", trainable=False, autocast=False,
        )
        self.built = True

    # -- the phases, driven from the host (`OrderExploration`) -------------
    def reset_measurements(self):
        """Forgets the accumulated per-order losses."""
        self.order_loss_sum.assign(ops.zeros((self.num_orders,)))
        self.order_loss_count.assign(ops.zeros((self.num_orders,)))

    def order_performance(self):
        """Each order's measured mean likelihood exp(-mean L^m), numpy `[M]`.

        Orders never measured get the mean of the measured ones (all 1 if
        none was measured).
        """
        total = np.asarray(ops.convert_to_numpy(self.order_loss_sum), "float64")
        count = np.asarray(
            ops.convert_to_numpy(self.order_loss_count), "float64"
        )
        measured = count > 0
        performance = np.ones(self.num_orders)
        if measured.any():
            performance[measured] = np.exp(-total[measured] / count[measured])
            performance[~measured] = performance[measured].mean()
        return performance

    def select_order(self, rng=None):
        """Ends exploration: picks one order from the measured performance.

        Args:
            rng: optional `numpy.random.Generator` for the draw (default:
                the head's own, seeded from `seed`).

        Returns:
            int, the index m of the selected order.
        """
        performance = self.order_performance()
        if self.selection == "best":
            index = int(np.argmax(performance))
        else:
            rng = self._rng if rng is None else rng
            index = int(
                rng.choice(self.num_orders, p=performance / performance.sum())
            )
        self.selected_index.assign(index)
        self.exploring.assign(0)
        self._exploring_step = False
        return index

    def explore(self):
        """Back to exploration (e.g. to restart the baseline)."""
        self.exploring.assign(1)
        self._exploring_step = True

    def load_own_variables(self, store):
        super().load_own_variables(store)
        self._exploring_step = self.is_exploring()

    def is_exploring(self):
        return bool(ops.convert_to_numpy(self.exploring))

    def selected_order(self):
        """The selected order as a list (step -> task), None while exploring."""
        if self.is_exploring():
            return None
        index = int(ops.convert_to_numpy(self.selected_index))
        return self.orders[index].tolist()

    # -- the forward pass ---------------------------------------------------
    def call(self, inputs, training=None):
        if training:
            context = self.training_context()
        initial_state = self.compression(inputs)  # [B, H]
        if training:
            return self._teacher_forced(initial_state, context)
        return self.predict_marginals(initial_state)

    def _teacher_forced(self, initial_state, context):
        labels, label_mask = context.labels, context.label_mask
        m = self.num_orders
        if self._exploring_step:
            explored, _ = self.order_selector(initial_state, training=True)
        else:
            batch_size = ops.shape(initial_state)[0]
            explored = ops.broadcast_to(
                ops.reshape(self.selected_index, (1, 1)), (batch_size, 1)
            )
        orders = self.order_selector.gather_orders(explored)  # [B, k, T]
        logits = self.recurrent(
            initial_state, orders, labels=labels, label_mask=label_mask
        )
        order_loss = -losses.order_log_likelihood(
            labels, logits, None, label_mask
        )  # [B, k]
        if self._exploring_step:
            flat = ops.reshape(explored, (-1,))
            self.order_loss_sum.assign_add(
                ops.segment_sum(
                    ops.reshape(ops.stop_gradient(order_loss), (-1,)),
                    flat,
                    num_segments=m,
                )
            )
            self.order_loss_count.assign_add(
                ops.segment_sum(
                    ops.ones_like(flat, dtype="float32"), flat, num_segments=m
                )
            )
        context.add_loss(ops.mean(order_loss, axis=-1))
        return ops.mean(ops.sigmoid(logits), axis=1)

    def predict_marginals(self, initial_state, samples=None):
        """Eq. 27 with uniform orders (exploring) or the selected one."""
        samples = samples or self.samples
        batch_size = ops.shape(initial_state)[0]
        uniform = self.order_selector.sample_orders(batch_size, samples)
        indices = ops.where(
            ops.equal(self.exploring, 1),
            uniform,
            ops.broadcast_to(self.selected_index, (batch_size, samples)),
        )
        orders = self.order_selector.gather_orders(indices)  # [B, L, T]
        probabilities = self.recurrent(initial_state, orders)  # [B, L, T]
        return ops.mean(probabilities, axis=1)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "tasks": self.tasks,
                "orders": self.order_selector._orders_arg,
                "exploration_orders": self.exploration_orders,
                "selection": self.selection,
                "samples": self.samples,
                "units": self.units,
                "label_units": self.label_units,
                "seed": self.seed,
            }
        )
        return config


@keras.saving.register_keras_serializable(package="keras_monet")
class OrderExploration(keras.callbacks.Callback):
    """Runs `HardOrderSelection`'s phases: explore, measure, select.

    Epochs `0 .. epochs - 1` explore; the per-order losses are measured over
    the last `measure_epochs` of them; at the start of epoch `epochs` every
    `HardOrderSelection` head in the model selects its order. Epochs are
    counted absolutely (`fit(initial_epoch=...)` works). Each phase switch
    retraces the model's train function once.

    Example:

    ```python
    model.fit(x, y, epochs=500,
              callbacks=[keras_monet.baselines.OrderExploration(20)])
    ```

    Args:
        epochs: int >= 0, the exploration length (0 selects at once, from
            uniform performance).
        measure_epochs: int >= 1, how many final exploration epochs the
            performance is measured over.
        verbose: bool, print the selected order.
    """

    def __init__(self, epochs, measure_epochs=1, verbose=False):
        super().__init__()
        if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 0:
            raise ValueError(
                "`epochs` (the exploration length) should be an integer >= 0. "
                f"Received: `epochs={epochs}`."
            )
        check_positive_int("measure_epochs", measure_epochs)
        self.epochs = epochs
        self.measure_epochs = measure_epochs
        self.verbose = verbose

    def _heads(self):
        heads = [
            layer
            for layer in _all_layers(self.model)
            if isinstance(layer, HardOrderSelection)
        ]
        if not heads:
            raise ValueError(
                "OrderExploration drives a `HardOrderSelection` head, and the "
                "model has none."
            )
        return heads

    def on_epoch_begin(self, epoch, logs=None):
        changed = False
        for head in self._heads():
            if epoch < self.epochs:
                if head.built and not head.is_exploring():
                    head.explore()
                    changed = True
                if epoch == max(0, self.epochs - self.measure_epochs):
                    if head.built:
                        head.reset_measurements()
            elif not head.built or head.is_exploring():
                index = head.select_order()
                changed = True
                if self.verbose:
                    print(
                        f"{head.name}: selected order {index} "
                        f"{head.orders[index].tolist()}"
                    )
        if changed and getattr(self.model, "train_function", None) is not None:
            # The step is traced for one phase: retrace it once.
            self.model.make_train_function(force=True)

    def get_config(self):
        return {
            "epochs": self.epochs,
            "measure_epochs": self.measure_epochs,
            "verbose": self.verbose,
        }


def _all_layers(model):
    seen = []
    stack = list(getattr(model, "layers", []))
    while stack:
        layer = stack.pop(0)
        seen.append(layer)
        stack.extend(getattr(layer, "_layers", []))
    return seen
