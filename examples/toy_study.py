"""
Title: MONET on the toy dataset: Figure 5, Tables 1 and 2, Figure 6
Description: Reproduces the toy study of Multi-Order Networks (section 4.3),
    where the right task order is known, with `keras_monet` and its baselines.

The toy of section 4.1 has T binary tasks: task t is the t-th binary digit of
`(x[0] + 1) / 2`. Given tasks 1..t-1 task t is a single threshold; without
them it needs 2^t - 1. The identity order is therefore the best one, and this
study checks that MONET finds it, how much the order matters, and how MONET
compares with the multi-task baselines of section 4.2.

Run one part of the study at a time:

```
python examples/toy_study.py fig5   --seeds 3 --epochs 100 --out results/toy
python examples/toy_study.py table1 --seeds 5 --epochs 500 --out results/toy
python examples/toy_study.py table2 --seeds 5 --epochs 500 --out results/toy
python examples/toy_study.py fig6   --seeds 5 --epochs 500 --out results/toy
python examples/toy_study.py table1 --quick --out /tmp/toy   # minutes
python examples/toy_study.py table2 --seeds 5 --epochs 500 --workers 8 \
    --out results/toy                        # 8 runs at once, many cores
python examples/toy_study.py run --warmup 20 --dropout 100 --seeds 2 \
    --epochs 500 --out results/toy                            # one setting
```

Each subcommand writes `<name>.json` (every run, every setting),
`<name>.md` (the table) and `<name>.png` to `--out`. Every training run is
also cached in `--out/runs/`, keyed by its full configuration, so an
interrupted study resumes where it stopped and the subcommands share runs
(Table 2's MONET row is Table 1's warm-up + dropout row; Figure 6 reuses
Table 1's plain and dropout runs). With `--workers N` the runs a step needs
train N at a time, each in its own process; a run's result does not depend
on how many train beside it.
"""

"""
## Setup
"""

import argparse
import hashlib
import itertools
import json
import math
import os
import sys
import time

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402

import keras_monet  # noqa: E402
from keras_monet import baselines  # noqa: E402
from keras_monet.layers.order_selector import draw_orders  # noqa: E402

"""
## The paper's settings

Section 4.3 trains a 4 x Dense(64, ReLU) encoder and a GRU of 64 units for
500 epochs, batch 64, with Adam (5e-4, decayed by 0.99 every epoch) for the
network and Adam (5e-3) for the order logits; M = 120 orders (all of them
for T = 5), L = 20 trajectories at inference; 500 / 250 / 250 examples.
"""

PAPER = dict(
    tasks=5,
    orders=120,
    epochs=500,
    batch_size=64,
    learning_rate=5e-4,
    decay=0.99,
    order_learning_rate=5e-3,
    samples=20,
    units=64,
)

# The paper's numbers (method-notes.md), for the tables.
PAPER_TABLE1 = {
    "hard selection": (74.2, "0/10"),
    "plain": (89.2, "8/10"),
    "warm-up": (89.3, "9/10"),
    "dropout": (89.8, "10/10"),
    "warm-up + dropout": (90.1, "10/10"),
}
PAPER_TABLE2 = {
    "VMNC": [98.7, 97.6, 92.4, 65.2, 54.0, 81.5],
    "VMNS": [98.7, 97.5, 72.8, 51.5, 52.9, 74.9],
    "MRNN": [93.7, 93.6, 80.1, 60.5, 51.3, 75.9],
    "MONET": [99.4, 98.3, 95.8, 90.0, 68.2, 90.1],
    "oracle": [99.6, 98.6, 96.1, 92.1, 80.6, 93.4],
}


def log(message):
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


"""
## One training run

Every experiment is a set of runs of `run_experiment`: a toy split drawn
from the seed, the paper's encoder, one head (MONET or a baseline), the
paper's optimizers. It returns the per-task test and validation accuracy
(of the Monte-Carlo prediction thresholded at 0.5), the top order, and,
for MONET heads, the squared Frobenius distance of the soft order Omega to
the identity after every epoch (Figure 6).
"""


def order_set(spec, tasks, seed):
    """M as an int, or, with `include_identity`, an explicit `[M, T]` list of
    the identity and M - 1 other random orders (quick runs use M < T!, and
    a random subset would usually miss the identity)."""
    orders = spec.get("orders", PAPER["orders"])
    if not spec.get("include_identity"):
        return orders
    identity = list(range(tasks))
    drawn = draw_orders(tasks, min(orders + 1, math.factorial(tasks)), seed)
    others = [o.tolist() for o in drawn if o.tolist() != identity]
    return [identity] + others[: orders - 1]


def make_head(spec, tasks, seed):
    """Builds the head a run spec names."""
    kind = spec["head"]
    samples = spec.get("samples", PAPER["samples"])
    if kind == "monet":
        return keras_monet.MONETHead(
            tasks=tasks,
            orders=order_set(spec, tasks, seed),
            order_dropout=spec.get("k"),
            samples=samples,
            objective=spec.get("objective", "mixture"),
            seed=seed,
        )
    if kind == "imposed":
        return keras_monet.MONETHead(
            tasks=tasks, orders=[spec["order"]], samples=samples, seed=seed
        )
    if kind == "oracle":
        return baselines.oracle(tasks, samples=samples, seed=seed)
    if kind == "hard":
        return baselines.HardOrderSelection(
            tasks,
            orders=order_set(spec, tasks, seed),
            samples=samples,
            seed=seed,
        )
    if kind == "vmnc":
        return baselines.VMNC(tasks, momentum=spec.get("momentum", 0.99))
    if kind == "vmns":
        return baselines.VMNS(tasks, momentum=spec.get("momentum", 0.99))
    if kind == "mrnn":
        return baselines.MRNN(tasks, samples=samples, seed=seed)
    raise ValueError(f"Unknown head kind {kind!r} in run spec {spec}.")


class SoftOrderHistory(keras.callbacks.Callback):
    """Records ||Omega - I||_F^2 and the top order after every epoch."""

    def __init__(self, head, tasks):
        super().__init__()
        self.head = head
        self.identity = np.eye(tasks)
        self.distance = []

    def on_epoch_end(self, epoch, logs=None):
        omega = np.asarray(keras.ops.convert_to_numpy(self.head.soft_order()))
        self.distance.append(float(((omega - self.identity) ** 2).sum()))


def run_experiment(spec, tasks, seed, epochs):
    """Trains and evaluates one head on one seed's split. Returns a dict."""
    (x_train, y_train), (x_val, y_val), (x_test, y_test) = (
        keras_monet.datasets.make_toy_splits(tasks, seed=seed)
    )
    keras.utils.set_random_seed(seed)
    model = keras_monet.Sequential(
        [keras.Input((2,))]
        + [keras.layers.Dense(PAPER["units"], activation="relu") for _ in range(4)]
    )
    head = make_head(spec, tasks, seed)
    model.add(head)
    batch_size = PAPER["batch_size"]
    steps_per_epoch = math.ceil(len(x_train) / batch_size)
    learning_rate = keras.optimizers.schedules.ExponentialDecay(
        PAPER["learning_rate"], decay_steps=steps_per_epoch,
        decay_rate=PAPER["decay"],
    )
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate),
        order_optimizer=keras.optimizers.Adam(
            spec.get("order_lr", PAPER["order_learning_rate"])
        ),
        jit_compile=True,
    )
    callbacks = []
    history = None
    if spec["head"] == "monet":
        callbacks.append(keras_monet.OrderWarmUp(spec.get("n", 0)))
        history = SoftOrderHistory(head, tasks)
        callbacks.append(history)
    if spec["head"] == "hard":
        callbacks.append(baselines.OrderExploration(spec.get("n", 0)))
    start = time.time()
    fit_history = model.fit(
        x_train, y_train, epochs=epochs, batch_size=batch_size, verbose=0,
        callbacks=callbacks,
    )
    train_time = time.time() - start

    def accuracy(x, y):
        probabilities = model.predict(x, batch_size=250, verbose=0)
        return ((probabilities > 0.5) == y).mean(axis=0).tolist()

    result = dict(
        spec=spec, tasks=tasks, seed=seed, epochs=epochs,
        test_accuracy=accuracy(x_test, y_test),
        val_accuracy=accuracy(x_val, y_val),
        train_seconds=train_time,
        loss_history=[float(v) for v in fit_history.history["loss"]],
    )
    if spec["head"] == "monet":
        result["top_orders"] = head.top_orders(3)
        result["top_order"] = result["top_orders"][0][0]
        result["distance_history"] = history.distance
    elif spec["head"] == "hard":
        result["top_order"] = head.selected_order()
        result["performance_top"] = sorted(
            head.order_performance().tolist(), reverse=True
        )[:5]
    result["finds_identity"] = result.get("top_order") == list(range(tasks))
    return result


"""
## Caching runs

A run is fully described by its spec, T, seed and epochs, so its result is
stored under a hash of those; asking for the same run again reads it back.
"""


def normalized(spec):
    """The same MONET run, written one way: no n = 0, no k = None or >= M."""
    spec = dict(spec)
    if spec["head"] == "monet":
        if spec.get("n") == 0:
            del spec["n"]
        if "k" in spec and (
            spec["k"] is None
            or spec["k"] >= spec.get("orders", PAPER["orders"])
        ):
            del spec["k"]
    return spec


def run_path(out, spec, tasks, seed, epochs):
    key = json.dumps(
        dict(spec=normalized(spec), tasks=tasks, seed=seed, epochs=epochs),
        sort_keys=True,
    )
    digest = hashlib.sha1(key.encode()).hexdigest()[:16]
    return os.path.join(out, "runs", f"{digest}.json")


def cached_run(out, spec, tasks, seed, epochs, label=""):
    spec = normalized(spec)
    path = run_path(out, spec, tasks, seed, epochs)
    if os.path.exists(path):
        with open(path) as f:
            result = json.load(f)
        log(f"{label} seed {seed}: cached, mean test accuracy "
            f"{100 * np.mean(result['test_accuracy']):.1f}")
        return result
    log(f"{label} seed {seed}: training {epochs} epochs ...")
    result = run_experiment(spec, tasks, seed, epochs)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path + ".part", "w") as f:
        json.dump(result, f)
    os.replace(path + ".part", path)  # a killed run leaves no half record
    extra = ""
    if "top_order" in result:
        extra = f", top order {result['top_order']}"
    log(f"{label} seed {seed}: mean test accuracy "
        f"{100 * np.mean(result['test_accuracy']):.1f} "
        f"(val {100 * np.mean(result['val_accuracy']):.1f}){extra}, "
        f"{result['train_seconds']:.0f}s")
    return result


def cached_runs(args, jobs):
    """Results of `jobs`, a list of `(label, spec, tasks, seed)`, in order.

    Runs not in the cache train `--workers` at a time, each in its own
    process (spawned, so each has a fresh backend); the runs are the same as
    one at a time, only the wall time changes.
    """
    paths = [run_path(args.out, spec, tasks, seed, args.epochs)
             for _, spec, tasks, seed in jobs]
    todo = {}
    for path, job in zip(paths, jobs):
        if not os.path.exists(path):
            todo.setdefault(path, job)
    if args.workers > 1 and len(todo) > 1:
        import concurrent.futures
        import multiprocessing

        log(f"training {len(todo)} runs, {args.workers} at a time")
        with concurrent.futures.ProcessPoolExecutor(
            max_workers=args.workers,
            mp_context=multiprocessing.get_context("spawn"),
        ) as pool:
            futures = [
                pool.submit(cached_run, args.out, spec, tasks, seed,
                            args.epochs, label)
                for label, spec, tasks, seed in todo.values()
            ]
            for future in futures:
                future.result()  # re-raises a worker's error here
    return [cached_run(args.out, spec, tasks, seed, args.epochs, label)
            for label, spec, tasks, seed in jobs]


def runs_per_setting(args, settings, tasks, seeds):
    """`cached_runs` of each `(label, spec)` on each seed: a list per setting."""
    seeds = list(seeds)
    results = cached_runs(args, [
        (label, spec, tasks, seed) for label, spec in settings for seed in seeds
    ])
    return [results[i * len(seeds):(i + 1) * len(seeds)]
            for i in range(len(settings))]


def mean_accuracy(results, key="test_accuracy"):
    return 100 * float(np.mean([np.mean(r[key]) for r in results]))


def write_outputs(out, name, payload, table):
    with open(os.path.join(out, f"{name}.json"), "w") as f:
        json.dump(payload, f, indent=1)
    with open(os.path.join(out, f"{name}.md"), "w") as f:
        f.write(table + "\n")
    print(table, flush=True)


def pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


"""
## Figure 5: how much the order matters

One imposed order (M = 1, k = 1): test accuracy against the squared
Frobenius distance of its permutation matrix to the identity,
`||M_sigma - I||_F^2 = 2 (T - fixed points)`. For T = 3 every order is
trained; for larger T, `--orders-per-distance` orders per distance.
"""


def orders_by_distance(tasks, per_distance, seed=0):
    groups = {}
    for order in itertools.permutations(range(tasks)):
        distance = 2 * sum(int(o != i) for i, o in enumerate(order))
        groups.setdefault(distance, []).append(list(order))
    rng = np.random.default_rng(seed)
    chosen = []
    for distance in sorted(groups):
        group = groups[distance]
        if per_distance and len(group) > per_distance:
            picks = rng.choice(len(group), per_distance, replace=False)
            group = [group[i] for i in sorted(picks)]
        chosen.extend((distance, order) for order in group)
    return chosen


def fig5(args):
    task_counts = args.tasks or ([3, 4] if args.quick else [3, 4, 5])
    per_distance = args.orders_per_distance or (1 if args.quick else 2)
    settings = [
        (tasks, distance, order)
        for tasks in task_counts
        for distance, order in orders_by_distance(tasks, per_distance)
    ]
    results = cached_runs(args, [
        (f"fig5 T={tasks} order={order}", dict(head="imposed", order=order),
         tasks, seed)
        for tasks, _, order in settings for seed in range(args.seeds)
    ])
    rows, payload = [], {"runs": results}
    for i, (tasks, distance, order) in enumerate(settings):
        mine = results[i * args.seeds:(i + 1) * args.seeds]
        rows.append((tasks, distance, order, mean_accuracy(mine)))
    table = ["| T | distance | order | test accuracy (%) |", "|---|---|---|---|"]
    table += [f"| {t} | {d} | {o} | {a:.1f} |" for t, d, o, a in rows]
    payload["rows"] = rows
    write_outputs(args.out, "fig5", payload, "\n".join(table))
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(5, 3.5))
    for tasks in task_counts:
        points = [(d, a) for t, d, _, a in rows if t == tasks]
        distances = sorted({d for d, _ in points})
        means = [np.mean([a for d2, a in points if d2 == d]) for d in distances]
        ax.plot(distances, means, "o-", label=f"T = {tasks}")
    ax.set_xlabel(r"$\|M_\sigma - I\|_F^2$")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title("One imposed order (M = 1)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(os.path.join(args.out, "fig5.png"), dpi=120)
    return payload


"""
## Table 1: order selection mechanisms

T = 5, M = 120: hard selection, then MONET plain, with warm-up (n epochs of
frozen order logits), with order dropout (k of the M orders per example),
and with both. n and k are chosen on the validation split, as the paper
does: every candidate is trained on the first `--search-seeds` seeds and
the one of best mean validation accuracy is kept (n on warm-up alone, k on
dropout alone; the last row combines both choices). The search runs count
as those seeds' runs of the chosen settings (they were chosen on
validation data, never on the test split).
"""


def search(args, label, candidates, tasks):
    """Best spec of `candidates` by validation accuracy; records the search."""
    per_candidate = runs_per_setting(
        args, [(f"{label} {spec}", spec) for spec in candidates], tasks,
        range(args.search_seeds),
    )
    record = [
        dict(spec=spec, val_accuracy=mean_accuracy(results, "val_accuracy"))
        for spec, results in zip(candidates, per_candidate)
    ]
    best = max(record, key=lambda r: r["val_accuracy"])
    log(f"{label}: chose {best['spec']} (validation {best['val_accuracy']:.1f})")
    return best["spec"], record


def table1(args):
    tasks = (args.tasks or [5])[0]
    orders = args.orders or (math.factorial(tasks) if not args.quick else 24)
    orders = min(orders, math.factorial(tasks))
    n_grid = args.warmup_grid or ([2] if args.quick else [10, 25])
    k_grid = [k for k in (args.dropout_grid or ([12] if args.quick else [30, 100]))
              if k < orders] or [max(1, orders // 2)]
    base = dict(head="monet", orders=orders)
    if orders < math.factorial(tasks):
        base["include_identity"] = True
    plain = dict(base)
    warm, warm_search = search(
        args, "table1 warm-up search",
        [normalized(dict(base, n=n)) for n in n_grid], tasks,
    )
    drop, drop_search = search(
        args, "table1 dropout search",
        [normalized(dict(base, k=k)) for k in k_grid], tasks,
    )
    both = normalized(dict(base, n=warm.get("n", 0), k=drop.get("k")))
    rows = [
        ("hard selection",
         dict(base, head="hard", n=warm.get("n", 0))),
        ("plain", plain),
        ("warm-up", warm),
        ("dropout", drop),
        ("warm-up + dropout", both),
    ]
    payload = dict(
        tasks=tasks, orders=orders, epochs=args.epochs, seeds=args.seeds,
        search=dict(warmup=warm_search, dropout=drop_search,
                    search_seeds=args.search_seeds),
        rows={},
    )
    lines = [
        f"T = {tasks}, M = {orders}, {args.epochs} epochs, {args.seeds} seeds; "
        f"n = {warm.get('n', 0)}, k = {drop.get('k', orders)} (chosen on "
        "validation).",
        "",
        "| method | settings | mean test accuracy (%) | finds identity | "
        "per task | paper accuracy | paper finds identity |",
        "|---|---|---|---|---|---|---|",
    ]
    per_row = runs_per_setting(
        args, [(f"table1 {name}", spec) for name, spec in rows], tasks,
        range(args.seeds),
    )
    for (name, spec), results in zip(rows, per_row):
        found = sum(r["finds_identity"] for r in results)
        per_task = 100 * np.mean([r["test_accuracy"] for r in results], axis=0)
        payload["rows"][name] = dict(
            spec=spec, results=results, mean=mean_accuracy(results),
            finds_identity=found, per_task=per_task.tolist(),
            std=float(np.std([100 * np.mean(r["test_accuracy"]) for r in results])),
        )
        settings = ", ".join(f"{k}={v}" for k, v in spec.items() if k in ("n", "k"))
        paper = PAPER_TABLE1[name] if tasks == 5 else ("-", "-")
        lines.append(
            f"| {name} | {settings or '-'} | {mean_accuracy(results):.1f} "
            f"± {payload['rows'][name]['std']:.1f} | {found}/{len(results)} | "
            f"{' '.join(f'{a:.1f}' for a in per_task)} | {paper[0]} | {paper[1]} |"
        )
    write_outputs(args.out, "table1", payload, "\n".join(lines))
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 3.5))
    names = [name for name, _ in rows]
    ax.bar(names, [payload["rows"][n]["mean"] for n in names],
           yerr=[payload["rows"][n]["std"] for n in names], capsize=3)
    ax.set_ylim(50, 100)
    ax.set_ylabel("mean test accuracy (%)")
    ax.set_title(f"Order selection, T = {tasks}, M = {orders}")
    plt.setp(ax.get_xticklabels(), rotation=20, ha="right")
    fig.tight_layout()
    fig.savefig(os.path.join(args.out, "table1.png"), dpi=120)
    return payload


"""
## Table 2: MONET against the multi-task baselines

Per-task accuracy of VMNC, VMNS, MRNN (one random order per seed), MONET
(the warm-up + dropout setting of Table 1, chosen on validation) and the
oracle (MONET with the identity order only).
"""


def table2(args):
    tasks = (args.tasks or [5])[0]
    orders = min(args.orders or (120 if not args.quick else 24),
                 math.factorial(tasks))
    n = args.warmup if args.warmup is not None else None
    k = args.dropout
    if n is None or k is None:
        # Reuse Table 1's validation choice when it exists in --out.
        path = os.path.join(args.out, "table1.json")
        if os.path.exists(path):
            with open(path) as f:
                chosen = json.load(f)["rows"]["warm-up + dropout"]["spec"]
            n = chosen.get("n", 0) if n is None else n
            k = chosen.get("k", orders) if k is None else k
            log(f"table2: MONET uses Table 1's validation choice n={n}, k={k}")
        else:
            n = 2 if n is None and args.quick else (25 if n is None else n)
            k = (12 if args.quick else 100) if k is None else k
            log(f"table2: no table1.json in --out; MONET uses n={n}, k={k}")
    k = min(k, orders)
    # Batch normalisation's moving variance starts at 1 and decays by the
    # momentum once a step: Keras's 0.99 has forgotten it after the paper's
    # 4000 steps (500 epochs x 8), not after a few hundred. Shorter runs get
    # the momentum whose memory spans the same share of the training.
    steps = args.epochs * math.ceil(500 / PAPER["batch_size"])
    momentum = round(min(0.99, 0.01 ** (1.0 / (0.5 * steps))), 4)
    rows = [
        ("VMNC", dict(head="vmnc", momentum=momentum)),
        ("VMNS", dict(head="vmns", momentum=momentum)),
        ("MRNN", dict(head="mrnn")),
        ("MONET", dict(head="monet", orders=orders, n=n, k=k,
                       **({"include_identity": True}
                          if orders < math.factorial(tasks) else {}))),
        ("oracle", dict(head="oracle")),
    ]
    payload = dict(tasks=tasks, epochs=args.epochs, seeds=args.seeds, rows={})
    header = " | ".join(f"task {t + 1}" for t in range(tasks))
    lines = [
        f"T = {tasks}, {args.epochs} epochs, {args.seeds} seeds; MONET: "
        f"M = {orders}, n = {n}, k = {k}; VMNC / VMNS batch-norm momentum "
        f"{momentum}. Test accuracy (%), paper's in brackets.",
        "",
        f"| model | {header} | mean |",
        "|---|" + "---|" * (tasks + 1),
    ]
    per_row = runs_per_setting(
        args, [(f"table2 {name}", spec) for name, spec in rows], tasks,
        range(args.seeds),
    )
    for (name, spec), results in zip(rows, per_row):
        per_task = 100 * np.mean([r["test_accuracy"] for r in results], axis=0)
        mean = float(per_task.mean())
        payload["rows"][name] = dict(
            spec=spec, results=results, per_task=per_task.tolist(), mean=mean
        )
        paper = PAPER_TABLE2[name] if tasks == 5 else [None] * (tasks + 1)
        cells = [
            f"{a:.1f}" + (f" ({p})" if p is not None else "")
            for a, p in zip(list(per_task) + [mean], paper)
        ]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    write_outputs(args.out, "table2", payload, "\n".join(lines))
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 3.5))
    width = 0.16
    for i, (name, _) in enumerate(rows):
        ax.bar(np.arange(tasks) + (i - 2) * width,
               payload["rows"][name]["per_task"], width, label=name)
    ax.set_xticks(np.arange(tasks), [f"task {t + 1}" for t in range(tasks)])
    ax.set_ylim(40, 100)
    ax.set_ylabel("test accuracy (%)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(os.path.join(args.out, "table2.png"), dpi=120)
    return payload


"""
## Figure 6: does the soft order reach the identity?

The squared Frobenius distance of the soft order Omega to the identity,
epoch by epoch, without order dropout (k = M) and with it (k < M), both
without warm-up, so that the selection starts at once.
"""


def fig6(args):
    tasks = (args.tasks or [5])[0]
    orders = min(args.orders or (120 if not args.quick else 24),
                 math.factorial(tasks))
    ks = [orders] + [k for k in (args.dropout_grid or ([12] if args.quick else [100]))
                     if k < orders]
    payload = dict(tasks=tasks, orders=orders, epochs=args.epochs, curves={})
    lines = [
        f"T = {tasks}, M = {orders}, {args.epochs} epochs, no warm-up.",
        "",
        "| k | final ||Omega - I||_F^2 (mean) | first epoch below 0.1 (mean) | "
        "finds identity | mean test accuracy (%) |",
        "|---|---|---|---|---|",
    ]
    specs = []
    for k in ks:
        spec = dict(head="monet", orders=orders)
        if orders < math.factorial(tasks):
            spec["include_identity"] = True
        if k < orders:
            spec["k"] = k
        specs.append((f"fig6 k={k}", spec))
    per_k = runs_per_setting(args, specs, tasks, range(args.seeds))
    for k, results in zip(ks, per_k):
        curves = [r["distance_history"] for r in results]
        payload["curves"][str(k)] = curves
        found = sum(r["finds_identity"] for r in results)
        # How fast Omega reaches the identity: the first epoch it is near.
        reached = [next((e + 1 for e, d in enumerate(c) if d < 0.1), None)
                   for c in curves]
        first = ("never" if None in reached
                 else f"{np.mean(reached):.0f} ({min(reached)}-{max(reached)})")
        payload.setdefault("first_epoch_below_0.1", {})[str(k)] = reached
        lines.append(
            f"| {k} | {np.mean([c[-1] for c in curves]):.3f} | {first} | "
            f"{found}/{len(results)} | {mean_accuracy(results):.1f} |"
        )
    write_outputs(args.out, "fig6", payload, "\n".join(lines))
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(5, 3.5))
    for i, k in enumerate(ks):
        for j, curve in enumerate(payload["curves"][str(k)]):
            ax.plot(curve, color=f"C{i}", alpha=0.6,
                    label=f"k = {k}" if j == 0 else None)
    ax.set_xlabel("epoch")
    ax.set_ylabel(r"$\|\Omega - I\|_F^2$")
    ax.set_title(f"Soft order vs identity, T = {tasks}, M = {orders}")
    ax.legend()
    fig.tight_layout()
    fig.savefig(os.path.join(args.out, "fig6.png"), dpi=120)
    return payload


"""
## Single settings: the investigation

`run` trains MONET in one setting (n = `--warmup`, k = `--dropout`,
`--objective`, `--order-lr`) on each seed and reports the accuracy, the top
order and the distance of the soft order to the identity. It is how the
notes in docs/results.md probe why the selection can miss the identity.
"""


def run_command(args):
    tasks = (args.tasks or [5])[0]
    orders = min(args.orders or (120 if not args.quick else 24),
                 math.factorial(tasks))
    spec = dict(head="monet", orders=orders, n=args.warmup or 0,
                k=args.dropout)
    if args.imposed_order is not None:
        spec = dict(head="imposed", order=args.imposed_order)
    elif args.objective != "mixture":
        spec["objective"] = args.objective
    if args.order_lr is not None and spec["head"] == "monet":
        spec["order_lr"] = args.order_lr
    spec = normalized(spec)
    [results] = runs_per_setting(
        args, [(f"run {spec}", spec)], tasks,
        range(args.first_seed, args.first_seed + args.seeds),
    )
    name = "run_" + "_".join(
        f"{k}{v}" for k, v in sorted(spec.items()) if k != "head"
    ).replace(" ", "").replace(",", "-").strip("[]") + f"_e{args.epochs}"
    name = name.replace("[", "").replace("]", "")
    lines = [
        f"T = {tasks}, {args.epochs} epochs, {spec}.",
        "",
        "| seed | test accuracy per task (%) | mean | top order (pi) | "
        "final ||Omega - I||_F^2 |",
        "|---|---|---|---|---|",
    ]
    for r in results:
        top = r.get("top_orders", [[spec.get("order"), 1.0]])[0]
        distance = r.get("distance_history", [0.0])[-1]
        lines.append(
            f"| {r['seed']} | "
            f"{' '.join(f'{100 * a:.1f}' for a in r['test_accuracy'])} | "
            f"{100 * np.mean(r['test_accuracy']):.1f} | {top[0]} "
            f"({top[1]:.3f}) | {distance:.4f} |"
        )
    payload = dict(spec=spec, results=results, mean=mean_accuracy(results))
    write_outputs(args.out, name, payload, "\n".join(lines))
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(5, 3.5))
    for r in results:
        ax.plot(r.get("distance_history", [0.0] * r["epochs"]),
                label=f"seed {r['seed']}")
    ax.set_xlabel("epoch")
    ax.set_ylabel(r"$\|\Omega - I\|_F^2$")
    ax.legend()
    fig.tight_layout()
    fig.savefig(os.path.join(args.out, f"{name}.png"), dpi=120)
    return payload


"""
## Command line
"""


def int_list(text):
    return [int(v) for v in text.split(",") if v]


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[1])
    parser.add_argument(
        "command", choices=["fig5", "table1", "table2", "fig6", "run"]
    )
    parser.add_argument("--seeds", type=int, default=None,
                        help="runs per setting (paper: 10; quick: 2)")
    parser.add_argument("--epochs", type=int, default=None,
                        help="epochs per run (paper: 500; quick: 30)")
    parser.add_argument("--tasks", type=int_list, default=None,
                        help="T, comma-separated for fig5 (default 3,4,5)")
    parser.add_argument("--orders", type=int, default=None, help="M")
    parser.add_argument("--quick", action="store_true",
                        help="small settings that finish in minutes")
    parser.add_argument("--out", default="results/toy_study")
    parser.add_argument("--workers", type=int, default=1,
                        help="runs trained at once, one process each "
                             "(default 1; about one per 2 cores)")
    parser.add_argument("--search-seeds", type=int, default=1,
                        help="seeds of the validation search for n and k")
    parser.add_argument("--warmup-grid", type=int_list, default=None,
                        help="candidate warm-up lengths n (default 10,25)")
    parser.add_argument("--dropout-grid", type=int_list, default=None,
                        help="candidate order dropouts k < M (default 30,100)")
    parser.add_argument("--warmup", type=int, default=None,
                        help="table2: MONET's n (default: Table 1's choice)")
    parser.add_argument("--dropout", type=int, default=None,
                        help="table2: MONET's k (default: Table 1's choice)")
    parser.add_argument("--objective", default="mixture",
                        choices=["mixture", "expected"], help="run: MONET's")
    parser.add_argument("--order-lr", type=float, default=None,
                        help="run: the order optimizer's learning rate")
    parser.add_argument("--imposed-order", type=int_list, default=None,
                        help="run: train one imposed order (M = 1) instead")
    parser.add_argument("--first-seed", type=int, default=0,
                        help="run: seeds first-seed .. first-seed + seeds - 1")
    parser.add_argument("--orders-per-distance", type=int, default=None,
                        help="fig5: imposed orders per Frobenius distance")
    args = parser.parse_args(argv)
    if args.seeds is None:
        args.seeds = 2 if args.quick else 10
    if args.epochs is None:
        args.epochs = 30 if args.quick else PAPER["epochs"]
    for name in ("seeds", "epochs", "search_seeds", "workers"):
        if getattr(args, name) < 1:
            raise ValueError(
                f"`--{name.replace('_', '-')}` should be >= 1. Received: "
                f"{getattr(args, name)}."
            )
    args.search_seeds = min(args.search_seeds, args.seeds)
    if args.tasks and min(args.tasks) < 2:
        raise ValueError(f"`--tasks` should all be >= 2. Received: {args.tasks}.")
    return args


def main(argv=None):
    args = parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    start = time.time()
    log(f"{args.command}: seeds={args.seeds} epochs={args.epochs} "
        f"out={args.out}{' (quick)' if args.quick else ''}")
    result = {"fig5": fig5, "table1": table1, "table2": table2,
              "fig6": fig6, "run": run_command}[args.command](args)
    log(f"{args.command}: done in {time.time() - start:.0f}s")
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
