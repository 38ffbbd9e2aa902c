"""The order selector: M fixed task orders and a softmax over them."""

import math

import keras
import numpy as np
from keras import ops

from keras_monet.layers.head import check_positive_int

# Above this many permutations we never enumerate them; distinct orders are
# drawn by rejection instead (cheap while M is far below T!).
_MAX_ENUMERATED_PERMUTATIONS = 40320  # 8!


def draw_orders(tasks, orders, seed=None):
    """Draws `orders` distinct permutations of `range(tasks)`.

    Never enumerates all `tasks!` permutations unless there are at most 8! of
    them and more than half are asked for (then every order is taken, or a
    uniform subset of all of them).

    Args:
        tasks: int, the number of tasks T.
        orders: int, the number of orders M, `1 <= M <= T!`.
        seed: int or None, seeds numpy's generator.

    Returns:
        int32 array `[M, T]`; row m is the order sigma_m, `row[t]` being the
        task processed at step t.
    """
    total = math.factorial(tasks)
    if orders > total:
        raise ValueError(
            f"`orders` should be at most tasks! = {tasks}! = {total}, the "
            f"number of distinct orders of {tasks} tasks. Received: "
            f"`orders={orders}`, `tasks={tasks}`."
        )
    rng = np.random.default_rng(seed)
    if total <= _MAX_ENUMERATED_PERMUTATIONS and 2 * orders > total:
        import itertools

        every = np.array(list(itertools.permutations(range(tasks))), "int32")
        pick = rng.choice(total, size=orders, replace=False)
        return every[np.sort(pick) if orders == total else pick]
    seen = set()
    drawn = []
    while len(drawn) < orders:
        sigma = rng.permutation(tasks)
        key = sigma.tobytes()
        if key not in seen:
            seen.add(key)
            drawn.append(sigma)
    return np.stack(drawn).astype("int32")


def validate_orders(orders, tasks):
    """Checks an explicit `[M, T]` array of orders; returns it as int32."""
    array = np.asarray(orders)
    if array.ndim == 1:
        array = array[None]
    if array.ndim != 2 or array.shape[1] != tasks:
        raise ValueError(
            "Explicit `orders` should have shape [M, tasks] = [M, "
            f"{tasks}]. Received an array of shape {np.shape(orders)}."
        )
    for m, sigma in enumerate(array):
        if sorted(sigma.tolist()) != list(range(tasks)):
            raise ValueError(
                f"Order {m} should be a permutation of 0..{tasks - 1}. "
                f"Received: {sigma.tolist()}."
            )
    if len({row.tobytes() for row in array.astype("int32")}) != len(array):
        raise ValueError("Explicit `orders` should be distinct permutations.")
    return array.astype("int32")


def log_normalize(logits):
    """log softmax over the last axis (also for a single order, M = 1)."""
    return logits - ops.logsumexp(logits, axis=-1, keepdims=True)


@keras.saving.register_keras_serializable(package="keras_monet")
class OrderSelector(keras.layers.Layer):
    """Soft order selection over M task orders (paper section 3.2 / 3.3).

    The selector owns M fixed, distinct task orders sigma_1..sigma_M and one
    trainable logit u_m per order. Its soft order is a point of Birkhoff's
    polytope:

    ```
    pi = softmax(u)                                  # [M]
    Omega = sum_m pi_m P_m,  (P_m)[i, j] = 1 iff j = sigma_m(i)   # eq. 12
    ```

    so `Omega[i, j]` is the probability of processing task j at step i. During
    training each example keeps a uniform random k-subset of the orders
    (order dropout, eq. 25) and pi is renormalised over the kept ones. At
    inference pi is the softmax over all M orders (eq. 26), and orders are
    sampled from it (Algorithm 2).

    The order logits are always float32, whatever the dtype policy.

    References:
        - [Tallec et al., Multi-Order Networks for Action Unit Detection](
          https://arxiv.org/abs/2202.00446), eqs. 10-12, 25, 26.

    Example:

    ```python
    selector = keras_monet.OrderSelector(tasks=4, orders=10, seed=0)
    selector.build()
    selector.orders.shape               # (10, 4)
    keras.ops.sum(selector.soft_order(), axis=0)   # all ones
    ```

    Args:
        tasks: int, the number of tasks T (>= 1).
        orders: int M (1 <= M <= T!), the number of orders to draw, or an
            explicit `[M, T]` array of distinct permutations (e.g. `[[0, 1,
            2]]` to impose the identity order).
        order_dropout: int k or None. Each training example keeps k of the M
            orders. None (the default) keeps all M, i.e. no order dropout.
        seed: int or None. Seeds the drawing of the orders and the order
            dropout / sampling noise.
        **kwargs: base layer keyword arguments (`name`, `dtype`, ...).

    Call arguments:
        inputs: any tensor whose first dimension is the batch size B.
        training: bool. True applies order dropout.

    Returns:
        A tuple `(order_indices, log_weights)`, both `[B, k]` (`[B, M]` when
        not training): which orders each example uses and their log pi~.
    """

    def __init__(self, tasks, orders, order_dropout=None, seed=None, **kwargs):
        super().__init__(**kwargs)
        check_positive_int("tasks", tasks)
        if isinstance(orders, (int, np.integer)) and not isinstance(
            orders, bool
        ):
            if orders < 1:
                raise ValueError(
                    "`orders` should be an integer >= 1. Received: "
                    f"`orders={orders}`."
                )
            order_array = draw_orders(tasks, int(orders), seed)
        else:
            order_array = validate_orders(orders, tasks)
        num_orders = len(order_array)
        if order_dropout is not None:
            if (
                isinstance(order_dropout, bool)
                or not isinstance(order_dropout, (int, np.integer))
                or not 1 <= order_dropout <= num_orders
            ):
                raise ValueError(
                    "`order_dropout` (the k orders kept per example) should "
                    f"be an integer in [1, orders={num_orders}]. Received: "
                    f"`order_dropout={order_dropout}`."
                )
            order_dropout = int(order_dropout)
        self.tasks = tasks
        self.num_orders = num_orders
        self._orders_arg = (
            int(orders) if isinstance(orders, (int, np.integer))
            else order_array.tolist()
        )
        self.order_dropout = order_dropout
        self.seed = seed
        self._initial_orders = order_array
        self.seed_generator = keras.random.SeedGenerator(seed)

    @property
    def kept_orders(self):
        """k, the number of orders each training example keeps."""
        return self.order_dropout or self.num_orders

    def build(self, input_shape=None):
        if self.built:
            return
        initial = self._initial_orders
        # Orders are state, not hyperparameters: saved with the weights so
        # a model drawn without a seed reloads with the same orders.
        self.order_table = self.add_weight(
            name="orders",
            shape=initial.shape,
            dtype="int32",
            initializer=lambda shape, dtype: ops.convert_to_tensor(
                initial, dtype
            ),
            trainable=False,
        )
        self.order_logits = self.add_weight(
            name="order_logits",
            shape=(self.num_orders,),
            dtype="float32",
            initializer="zeros",
            autocast=False,
        )
        self.built = True

    @property
    def orders(self):
        """The M orders as an int numpy array `[M, T]` (row = order)."""
        if not self.built:
            return self._initial_orders.copy()
        return np.asarray(ops.convert_to_numpy(self.order_table))

    def order_probabilities(self):
        """pi = softmax(u) over all M orders, float32 `[M]` (eq. 26)."""
        return ops.exp(log_normalize(self.order_logits))

    def soft_order(self):
        """Omega = sum_m pi_m P_m, float32 `[T, T]`, row = step, col = task."""
        tasks = self.tasks
        pi = self.order_probabilities()
        # Omega[i, sigma_m(i)] += pi_m, as one segment sum over (step, task).
        flat_index = ops.reshape(
            ops.arange(tasks, dtype="int32")[None, :] * tasks
            + self.order_table,
            (-1,),
        )
        weights = ops.reshape(
            ops.broadcast_to(pi[:, None], (self.num_orders, tasks)), (-1,)
        )
        omega = ops.segment_sum(weights, flat_index, num_segments=tasks**2)
        return ops.reshape(omega, (tasks, tasks))

    def call(self, inputs, training=None):
        batch_size = ops.shape(inputs)[0]
        if training and self.kept_orders < self.num_orders:
            # A uniform random k-subset per example: the top k of i.i.d.
            # uniform noise (Gumbel-top-k on equal logits), eq. 25.
            noise = keras.random.uniform(
                (batch_size, self.num_orders), seed=self.seed_generator
            )
            _, order_indices = ops.top_k(noise, self.kept_orders, sorted=False)
            order_indices = ops.cast(order_indices, "int32")
            kept_logits = ops.take(self.order_logits, order_indices, axis=0)
            return order_indices, log_normalize(kept_logits)
        order_indices = ops.broadcast_to(
            ops.arange(self.num_orders, dtype="int32")[None, :],
            (batch_size, self.num_orders),
        )
        log_weights = ops.broadcast_to(
            log_normalize(self.order_logits)[None, :],
            (batch_size, self.num_orders),
        )
        return order_indices, log_weights

    def sample_orders(self, batch_size, samples):
        """Draws `samples` order indices per example from pi, `[B, L]`."""
        logits = ops.broadcast_to(
            self.order_logits[None, :], (batch_size, self.num_orders)
        )
        return ops.cast(
            keras.random.categorical(
                logits, samples, seed=self.seed_generator
            ),
            "int32",
        )

    def gather_orders(self, order_indices):
        """The permutations of `order_indices` `[...]`: int32 `[..., T]`."""
        return ops.take(self.order_table, order_indices, axis=0)

    def compute_output_shape(self, input_shape):
        # Symbolic calls are inference calls: every order is used.
        shape = (input_shape[0], self.num_orders)
        return shape, shape

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "tasks": self.tasks,
                "orders": self._orders_arg,
                "order_dropout": self.order_dropout,
                "seed": self.seed,
            }
        )
        return config
