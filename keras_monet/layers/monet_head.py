"""The MONET prediction head: order selector + task-wise recurrent cells."""


import keras
import numpy as np
from keras import ops

from keras_monet import losses
from keras_monet.layers.head import TaskHead
from keras_monet.layers.head import check_positive_int
from keras_monet.layers.order_selector import OrderSelector
from keras_monet.layers.taskwise_recurrent import TaskwiseRecurrent


def positive_rate_bias(positive_rates):
    """Output biases log(f / (1 - f)) from per-task positive rates f."""
    rates = np.asarray(positive_rates, dtype="float64")
    if rates.ndim != 1 or np.any(rates <= 0) or np.any(rates >= 1):
        raise ValueError(
            "`positive_rates` should be a list of T rates strictly between 0 "
            f"and 1. Received: `positive_rates={positive_rates}`."
        )
    return np.log(rates / (1.0 - rates)).astype("float32")


@keras.saving.register_keras_serializable(package="keras_monet")
class MONETHead(TaskHead):
    """Multi-Order Network head: T binary tasks predicted in learned orders.

    Features are compressed once, `h_0 = ReLU(Dense(units)(features))`, then
    unrolled by T task-wise GRU cells (`TaskwiseRecurrent`) in the orders of
    an `OrderSelector`. The joint label distribution is the mixture

    ```
    p(y | x) = sum_m pi_m prod_t p_sigma_m(y_sigma_m(t) | y_sigma_m(<t), x)   # eq. 14
    ```

    trained with teacher forcing on `objective` (eq. 18 by default) and order
    dropout; the prediction is the Monte-Carlo marginal of eq. 27: L orders
    drawn from pi, one ancestrally sampled trajectory each, and the average
    of the per-task conditional probabilities over the L trajectories.

    The head trains only inside `keras_monet.Sequential` or
    `keras_monet.MONETModel`, whose training step feeds it the labels.

    References:
        - [Tallec et al., Multi-Order Networks for Action Unit Detection](
          https://arxiv.org/abs/2202.00446), section 3, Algorithm 2.

    Example:

    ```python
    model = keras_monet.Sequential(
        [keras.Input((32,)), keras.layers.Dense(64, activation="relu")]
    )
    model.add(keras_monet.MONETHead(tasks=12, orders=512, order_dropout=128))
    model.compile(optimizer=keras.optimizers.AdamW(1e-3))
    model.fit(x, y, epochs=3, callbacks=[keras_monet.OrderWarmUp(epochs=1)])
    model.layers[-1].soft_order()     # [12, 12], row = step, column = task
    ```

    Args:
        tasks: int, the number of binary tasks T.
        orders: int M (<= T!) of random orders, or an explicit `[M, T]` array
            of orders (e.g. `[list(range(T))]` imposes the identity).
        order_dropout: int k, orders kept per training example; None keeps
            all M.
        samples: int L, trajectories averaged at inference (eq. 27).
        units: int H, the compressed feature and GRU size.
        label_units: int, the previous-label embedding size.
        objective: `"mixture"` (eq. 18, default) or `"expected"` (the
            pi~-weighted sum of per-order losses).
        task_weights: optional T per-task loss weights w_t.
        positive_rates: optional T positive rates f_t; each task's output
            bias starts at log(f_t / (1 - f_t)).
        block_size: int, rows per block in the grouped recurrent matmul.
        seed: int or None, seeds the orders and all of the head's sampling.
        **kwargs: base layer keyword arguments.

    Call arguments:
        inputs: `[B, D]` features.
        training: bool. In training, the head must run inside a MONET
            training step (teacher forcing).

    Returns:
        float32 `[B, T]` probabilities in task order. In training, the
        teacher-forced probabilities averaged with weights pi~ (cheap, for
        metrics); otherwise the Monte-Carlo prediction of eq. 27.
    """

    def __init__(
        self,
        tasks,
        orders,
        order_dropout=None,
        samples=20,
        units=64,
        label_units=64,
        objective="mixture",
        task_weights=None,
        positive_rates=None,
        block_size=32,
        seed=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        check_positive_int("tasks", tasks)
        check_positive_int("samples", samples)
        if objective not in losses.OBJECTIVES:
            raise ValueError(
                f"`objective` should be one of {losses.OBJECTIVES}. "
                f"Received: `objective={objective!r}`."
            )
        if task_weights is not None:
            task_weights = [float(w) for w in task_weights]
            if len(task_weights) != tasks or min(task_weights) < 0:
                raise ValueError(
                    f"`task_weights` should be {tasks} non-negative numbers, "
                    f"one per task. Received: `task_weights={task_weights}`."
                )
        if positive_rates is not None:
            positive_rates = [float(f) for f in positive_rates]
            if len(positive_rates) != tasks:
                raise ValueError(
                    f"`positive_rates` should have one rate per task ({tasks})."
                    f" Received {len(positive_rates)}: {positive_rates}."
                )
            output_bias = positive_rate_bias(positive_rates)
            output_bias_initializer = keras.initializers.Constant(
                output_bias.tolist()
            )
        else:
            output_bias_initializer = "zeros"
        self.tasks = tasks
        self.samples = samples
        self.units = units
        self.label_units = label_units
        self.objective = objective
        self.task_weights = task_weights
        self.positive_rates = positive_rates
        self.block_size = block_size
        self.seed = seed
        self.order_selector = OrderSelector(
            tasks,
            orders,
            order_dropout=order_dropout,
            seed=seed,
            dtype=self.dtype_policy,
            name="order_selector",
        )
        self.compression = keras.layers.Dense(
            units, activation="relu", dtype=self.dtype_policy, name="compression"
        )
        self.recurrent = TaskwiseRecurrent(
            tasks,
            units=units,
            label_units=label_units,
            block_size=block_size,
            output_bias_initializer=output_bias_initializer,
            seed=None if seed is None else seed + 1,
            dtype=self.dtype_policy,
            name="taskwise_recurrent",
        )

    # The order selector's view, in the paper's words.
    @property
    def orders(self):
        """The M orders, int numpy `[M, T]`."""
        return self.order_selector.orders

    @property
    def num_orders(self):
        return self.order_selector.num_orders

    @property
    def order_dropout(self):
        return self.order_selector.order_dropout

    @property
    def order_logits(self):
        """The order selector's logits u, a float32 `[M]` variable."""
        return self.order_selector.order_logits

    def order_probabilities(self):
        """pi, float32 `[M]`."""
        return self.order_selector.order_probabilities()

    def soft_order(self):
        """Omega, float32 `[T, T]`, row = step, column = task."""
        return self.order_selector.soft_order()

    def top_orders(self, count=5):
        """The `count` most probable orders: a list of (order, pi) pairs."""
        pi = np.asarray(ops.convert_to_numpy(self.order_probabilities()))
        best = np.argsort(-pi, kind="stable")[:count]
        orders = self.orders
        return [(orders[m].tolist(), float(pi[m])) for m in best]

    def build(self, input_shape):
        if self.built:
            return
        self.compression.build(input_shape)
        self.order_selector.build(input_shape)
        self.recurrent.build((input_shape[0], self.units), None)
        self.built = True

    def call(self, inputs, training=None):
        context = self.training_context() if training else None
        initial_state = self.compression(inputs)  # [B, H], before tiling
        if training:
            return self._teacher_forced(initial_state, context)
        return self.predict_marginals(initial_state)

    def _teacher_forced(self, initial_state, context):
        labels = context.labels
        order_indices, log_weights = self.order_selector(
            initial_state, training=True
        )  # [B, k]
        orders = self.order_selector.gather_orders(order_indices)  # [B, k, T]
        logits = self.recurrent(
            initial_state, orders, labels=labels, label_mask=context.label_mask
        )  # [B, k, T]
        log_likelihood = losses.order_log_likelihood(
            labels, logits, self.task_weights, context.label_mask
        )
        context.add_loss(
            losses.objective_loss(self.objective, log_weights, log_likelihood)
        )
        weights = ops.exp(log_weights)[:, :, None]
        return ops.sum(weights * ops.sigmoid(logits), axis=1)

    def predict_marginals(self, initial_state, samples=None):
        """Eq. 27 from compressed features `[B, H]`: `[B, T]` probabilities."""
        samples = samples or self.samples
        batch_size = ops.shape(initial_state)[0]
        order_indices = self.order_selector.sample_orders(batch_size, samples)
        orders = self.order_selector.gather_orders(order_indices)  # [B, L, T]
        probabilities = self.recurrent(initial_state, orders)  # [B, L, T]
        return ops.mean(probabilities, axis=1)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "tasks": self.tasks,
                "orders": self.order_selector._orders_arg,
                "order_dropout": self.order_selector.order_dropout,
                "samples": self.samples,
                "units": self.units,
                "label_units": self.label_units,
                "objective": self.objective,
                "task_weights": self.task_weights,
                "positive_rates": self.positive_rates,
                "block_size": self.block_size,
                "seed": self.seed,
            }
        )
        return config
