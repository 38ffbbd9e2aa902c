"""The benchmark suite behind `benchmarks/run.py` (importable, for tests).

Everything is measured in one process: the machine's dense matmul rate, then
training-step time (median after warm-up, XLA-compiled), peak memory and
inference throughput of MONET heads, the per-row-gather reference and the
baselines, then the scaling of the step time with k, M and T.

Useful GRU FLOPs are the recurrent matmuls a GRU cannot avoid: 2 H 3H per
(example, order, step) forward, twice that backward (input and weight
gradients), so a training step does 18 H^2 B k T of them and an inference
pass 6 H^2 B L T. Everything else (gates, moves, the label lookup, the
encoder, padding rows) counts as overhead.
"""

import math
import os
import statistics
import time

import keras
import numpy as np

import keras_monet
from benchmarks.reference import RowGatherRecurrent

# The issue's shapes. `features` is the input width: the toy's 2-d points
# through a 4 x Dense(64) encoder, or a backbone's pooled 2048-d output.
SHAPES = {
    "toy": dict(tasks=5, orders=120, k=100, batch=64, features=2, encoder=4),
    "au": dict(tasks=12, orders=512, k=128, batch=16, features=2048, encoder=0),
    "large": dict(
        tasks=40, orders=4096, k=64, batch=32, features=2048, encoder=0
    ),
}
UNITS = 64
SAMPLES = 20  # L, trajectories at inference


def backend():
    return keras.backend.backend()


def device_name():
    """'GPU:0' when an accelerator is visible to the backend, else 'CPU:0'."""
    if backend() == "tensorflow":
        import tensorflow as tf

        return "GPU:0" if tf.config.list_physical_devices("GPU") else "CPU:0"
    if backend() == "jax":
        import jax

        return "GPU:0" if jax.default_backend() == "gpu" else "CPU:0"
    return "CPU:0"


# ----------------------------------------------------------------- timing
def _sync(value):
    for leaf in keras.tree.flatten(value):
        if hasattr(leaf, "numpy"):
            leaf.numpy()
        elif hasattr(leaf, "block_until_ready"):
            leaf.block_until_ready()


def time_call(fn, repeats, warmup=1):
    """(first-call seconds, median seconds of `repeats` calls after warm-up)."""
    start = time.perf_counter()
    _sync(fn())
    first = time.perf_counter() - start
    for _ in range(warmup):
        _sync(fn())
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        _sync(fn())
        times.append(time.perf_counter() - start)
    return first, statistics.median(times)


class PeakMemory:
    """Peak bytes allocated on the device during a block (TF or JAX on GPU).

    TensorFlow tracks its allocations (XLA's buffers included) on CPU and
    GPU: `tf.config.experimental.get_memory_info`. Returns None where the
    backend keeps no such count (JAX on CPU).
    """

    def __init__(self, device):
        self.device = device
        self.peak = None

    def __enter__(self):
        self.base = None
        if backend() == "tensorflow":
            import tensorflow as tf

            try:
                tf.config.experimental.reset_memory_stats(self.device)
                self.base = tf.config.experimental.get_memory_info(
                    self.device
                )["current"]
            except (ValueError, RuntimeError):
                self.base = None
        return self

    def __exit__(self, *exc):
        if exc[0] is not None:
            return False
        if backend() == "tensorflow" and self.base is not None:
            import tensorflow as tf

            info = tf.config.experimental.get_memory_info(self.device)
            self.peak = info["peak"] - self.base
        elif backend() == "jax":
            import jax

            stats = jax.devices()[0].memory_stats() or {}
            if "peak_bytes_in_use" in stats:
                self.peak = stats["peak_bytes_in_use"]
        return False


def matmul_rate(size=1024, repeats=10, rows=None):
    """This machine's XLA-compiled float32 dense matmul rate, GFLOP/s.

    `[size, size] x [size, size]` by default; with `rows`, the GRU's own
    shape `[rows, H] x [H, 3H]` (one weight matrix for all rows).
    """
    rng = np.random.default_rng(0)
    shape_a = (size, size) if rows is None else (rows, UNITS)
    shape_b = (size, size) if rows is None else (UNITS, 3 * UNITS)
    a = keras.ops.convert_to_tensor(rng.normal(size=shape_a).astype("float32"))
    b = keras.ops.convert_to_tensor(rng.normal(size=shape_b).astype("float32"))
    if backend() == "tensorflow":
        import tensorflow as tf

        fn = tf.function(lambda a, b: tf.matmul(a, b), jit_compile=True)
    elif backend() == "jax":
        import jax

        fn = jax.jit(lambda a, b: a @ b)
    else:
        fn = keras.ops.matmul
    _, seconds = time_call(lambda: fn(a, b), repeats)
    return 2.0 * shape_a[0] * shape_a[1] * shape_b[1] / seconds / 1e9


# ----------------------------------------------------------------- models
def _orders(shape):
    return min(shape["orders"], math.factorial(shape["tasks"]))


def make_head(kind, shape, block_size=None, seed=0):
    """A MONET head ('monet', 'row_gather') or a baseline by class name."""
    tasks = shape["tasks"]
    if kind in ("monet", "row_gather"):
        # block_size: None keeps the head's default, "auto" asks
        # TaskwiseRecurrent to choose (block_size=None there).
        if block_size is None:
            extra = {}
        elif block_size == "auto":
            extra = {"block_size": None}
        else:
            extra = {"block_size": int(block_size)}
        head = keras_monet.MONETHead(
            tasks=tasks,
            orders=_orders(shape),
            order_dropout=min(shape["k"], _orders(shape)),
            samples=SAMPLES,
            units=UNITS,
            seed=seed,
            **extra,
        )
        if kind == "row_gather":
            config = head.recurrent.get_config()
            head.recurrent = RowGatherRecurrent.from_config(config)
        return head
    baselines = baseline_classes()
    if kind not in baselines:
        raise KeyError(f"No baseline {kind!r} in keras_monet.baselines.")
    cls = baselines[kind]
    kwargs = {"tasks": tasks, "units": UNITS}
    if kind in ("MRNN",):
        kwargs.update(samples=SAMPLES, seed=seed)
    return cls(**kwargs)


def baseline_classes():
    """{name: class} of the paper's baselines present in keras_monet."""
    try:
        from keras_monet import baselines
    except ImportError:
        return {}
    return {
        name: getattr(baselines, name)
        for name in ("VMNC", "VMNS", "MRNN")
        if hasattr(baselines, name)
    }


def make_model(kind, shape, block_size=None, seed=0):
    """Encoder + head in `keras_monet.Sequential`, compiled with XLA."""
    keras.utils.set_random_seed(seed)
    layers = [keras.Input((shape["features"],))]
    layers += [
        keras.layers.Dense(UNITS, activation="relu")
        for _ in range(shape["encoder"])
    ]
    model = keras_monet.Sequential(layers)
    model.add(make_head(kind, shape, block_size=block_size, seed=seed))
    model.compile(
        optimizer=keras.optimizers.Adam(1e-3),
        order_optimizer=keras.optimizers.Adam(5e-3),
        jit_compile=True,
    )
    return model


def make_batch(shape, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(shape["batch"], shape["features"])).astype("float32")
    y = (rng.random((shape["batch"], shape["tasks"])) < 0.5).astype("float32")
    return keras.ops.convert_to_tensor(x), keras.ops.convert_to_tensor(y)


def train_step_function(model):
    """The model's training step, XLA-compiled: returns `step(x, y)`.

    TensorFlow: the step itself under `tf.function(jit_compile=True)`. JAX:
    Keras's own jitted step through `train_on_batch` (a little host
    overhead per call)."""
    if backend() != "tensorflow":
        return lambda x, y: model.train_on_batch(x, y)
    import tensorflow as tf

    model.optimizer.build(model.trainable_variables)
    return tf.function(
        lambda x, y: model.train_step((x, y)), jit_compile=True
    )


def predict_function(model):
    """Inference (eq. 27, L = SAMPLES trajectories), XLA-compiled."""
    if backend() == "tensorflow":
        import tensorflow as tf

        return tf.function(
            lambda x: model(x, training=False), jit_compile=True
        )
    return lambda x: model.predict_on_batch(x)


def gru_flops(shape, training=True):
    rows = shape["batch"] * (min(shape["k"], _orders(shape)) if training else SAMPLES)
    per_row = (18 if training else 6) * UNITS * UNITS * shape["tasks"]
    return rows * per_row


# ------------------------------------------------------------- measuring
def measure(kind, shape, repeats=5, inference=True, block_size=None):
    """One row of the table: a dict of timings for `kind` at `shape`."""
    device = device_name()
    model = make_model(kind, shape, block_size=block_size)
    x, y = make_batch(shape)
    row = {"kind": kind}
    try:
        step = train_step_function(model)
    except NotImplementedError as error:
        row["train_error"] = str(error)
    else:
        with PeakMemory(device) as memory:
            compile_s, step_s = time_call(lambda: step(x, y), repeats)
        row.update(compile_s=compile_s, step_ms=1e3 * step_s, peak=memory.peak)
        if kind in ("monet", "row_gather"):
            row["gru_gflops"] = gru_flops(shape) / step_s / 1e9
            row["gru_shaped_matmul_gflops"] = matmul_rate(
                rows=shape["batch"] * shape["k"]
            )
    if inference:
        predict = predict_function(model)
        with PeakMemory(device) as memory:
            infer_compile_s, infer_s = time_call(lambda: predict(x), repeats)
        row.update(
            infer_compile_s=infer_compile_s,
            infer_ms=1e3 * infer_s,
            infer_per_s=shape["batch"] / infer_s,
            infer_peak=memory.peak,
        )
    return row


def scaled(shape, **changes):
    new = dict(shape, **changes)
    new["orders"] = min(new["orders"], math.factorial(new["tasks"]))
    new["k"] = min(new["k"], new["orders"])
    return new


def scaling_points(quick):
    """(parameter, value, shape) points around the AU shape."""
    base = dict(SHAPES["au"], k=64, orders=512)
    ks = (16, 64, 256) if quick else (16, 32, 64, 128, 256)
    ms = (128, 4096) if quick else (128, 512, 1024, 4096)
    ts = (4, 12, 24) if quick else (4, 8, 12, 20, 40)
    points = [("k", k, scaled(base, k=k, orders=max(512, k))) for k in ks]
    points += [("M", m, scaled(base, orders=m)) for m in ms]
    points += [("T", t, scaled(base, tasks=t, k=16)) for t in ts]
    return points


# ---------------------------------------------------------------- report
def _fmt(value, spec):
    return "-" if value is None else format(value, spec)


def _mb(value):
    return "-" if value is None else f"{value / 2**20:.0f}"


def table(results, matmul_gflops):
    """Markdown table rows of the main results."""
    lines = [
        "| shape | implementation | train step (ms) | compile (s) | "
        "peak memory (MiB) | useful GRU GFLOP/s | % of matmul | "
        "% of GRU-shaped matmul | "
        "inference L=20 (examples/s) | inference peak (MiB) |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for shape_name, rows in results.items():
        for row in rows:
            if "error" in row:
                lines.append(
                    f"| {shape_name} | {row['kind']} | skipped: "
                    f"{row['error']} | | | | | | | |"
                )
                continue
            gflops = row.get("gru_gflops")
            share = None if gflops is None else 100 * gflops / matmul_gflops
            shaped = row.get("gru_shaped_matmul_gflops")
            shaped_share = (
                None if gflops is None or not shaped else 100 * gflops / shaped
            )
            step = (
                _fmt(row.get("step_ms"), ".1f")
                if "train_error" not in row
                else "n/a (TF only)"
            )
            lines.append(
                f"| {shape_name} | {row['kind']} | {step} | "
                f"{_fmt(row.get('compile_s'), '.1f')} | "
                f"{_mb(row.get('peak'))} | {_fmt(gflops, '.1f')} | "
                f"{_fmt(share, '.0f')} | {_fmt(shaped_share, '.0f')} | "
                f"{_fmt(row.get('infer_per_s'), '.0f')} | "
                f"{_mb(row.get('infer_peak'))} |"
            )
    return lines


def scaling_table(points):
    lines = [
        "| varied | value | T | M | k | B | train step (ms) | "
        "peak memory (MiB) | step / B k T (us) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, value, shape, row in points:
        step = row.get("step_ms")
        per = (
            None
            if step is None
            else 1e3 * step / (shape["batch"] * shape["k"] * shape["tasks"])
        )
        lines.append(
            f"| {name} | {value} | {shape['tasks']} | {shape['orders']} | "
            f"{shape['k']} | {shape['batch']} | {_fmt(step, '.1f')} | "
            f"{_mb(row.get('peak'))} | {_fmt(per, '.3f')} |"
        )
    return lines


def machine_line(matmul_gflops):
    device = device_name()
    cores = os.cpu_count()
    try:
        load = os.getloadavg()[0]
    except OSError:
        load = float("nan")
    return (
        f"backend {backend()}, device {device}, {cores} CPU cores, load "
        f"average {load:.1f} at the start, dense matmul {matmul_gflops:.0f} "
        "GFLOP/s (float32, XLA)"
    )


def ratio_lines(results):
    """The issue's targets as ratios measured in this run."""
    lines = []
    for shape_name, rows in results.items():
        by_kind = {row["kind"]: row for row in rows}
        monet = by_kind.get("monet", {})
        reference = by_kind.get("row_gather", {})
        if "step_ms" in monet and "step_ms" in reference:
            lines.append(
                f"- {shape_name}: MONET step {reference['step_ms'] / monet['step_ms']:.1f}x "
                "faster than the per-row gather; inference "
                f"{monet.get('infer_per_s', 0) / max(reference.get('infer_per_s', 1e-9), 1e-9):.1f}x; "
                f"peak memory {_mb(monet.get('peak'))} vs {_mb(reference.get('peak'))} MiB."
            )
    return lines
