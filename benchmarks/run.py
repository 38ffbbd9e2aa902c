"""MONET's benchmark suite: one process, one run, one table.

    python benchmarks/run.py --quick          # under 5 minutes on 2 CPU cores
    python benchmarks/run.py                  # the full suite (docs/benchmarks.md)

Measures this machine's dense matmul rate, then for the toy, AU and large
shapes the XLA-compiled training-step time (median after warm-up), its peak
memory, the head's useful GRU FLOP rate as a share of the matmul rate and the
inference (L = 20) throughput, for MONET, the per-row-gather reference
(`benchmarks/reference.py`) and the baselines of `keras_monet.baselines`;
then the step time against k, M and T. See `benchmarks/suite.py` for what
is counted.
"""

import argparse
import json
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
if "--xnnpack" in sys.argv[1:]:
    # XLA's CPU flags are read once, before the first compilation.
    os.environ["XLA_FLAGS"] = (
        os.environ.get("XLA_FLAGS", "") + " --xla_cpu_use_xnnpack=true"
    ).strip()
# Run from the working tree alone: `python benchmarks/run.py` from anywhere.
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from benchmarks import suite  # noqa: E402


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick", action="store_true", help="fewer points, under 5 minutes"
    )
    parser.add_argument(
        "--repeats", type=int, default=None, help="timed steps per point"
    )
    parser.add_argument(
        "--shapes",
        default="toy,au,large",
        help="comma-separated shapes among toy, au, large",
    )
    parser.add_argument(
        "--reference-shapes",
        default=None,
        help="shapes for the per-row-gather reference "
        "(default au when --quick, else toy,au)",
    )
    parser.add_argument(
        "--baseline-shapes",
        default=None,
        help="shapes for the baselines (default au when --quick, else all)",
    )
    parser.add_argument("--no-scaling", action="store_true")
    parser.add_argument(
        "--block-size",
        default=None,
        help="MONETHead block_size: an integer, or 'auto' "
        "(TaskwiseRecurrent chooses); default: the head's default",
    )
    parser.add_argument(
        "--xnnpack",
        action="store_true",
        help="XLA on CPU: run dots through XNNPACK "
        "(XLA_FLAGS=--xla_cpu_use_xnnpack=true)",
    )
    parser.add_argument("--json", default=None, help="write results here")
    parser.add_argument(
        "--markdown", default=None, help="write the tables here (markdown)"
    )
    return parser.parse_args(argv)


def _split(text):
    return [name for name in (text or "").split(",") if name]


def log(message):
    print(message, file=sys.stderr, flush=True)


def main(argv=None):
    args = parse_args(argv)
    start = time.perf_counter()
    repeats = args.repeats or (3 if args.quick else 7)
    shapes = _split(args.shapes)
    reference_shapes = _split(
        args.reference_shapes
        if args.reference_shapes is not None
        else ("au" if args.quick else "toy,au")
    )
    baseline_shapes = _split(
        args.baseline_shapes
        if args.baseline_shapes is not None
        else ("au" if args.quick else "toy,au,large")
    )
    baselines = list(suite.baseline_classes())

    matmul = suite.matmul_rate()
    log(f"dense matmul: {matmul:.0f} GFLOP/s")
    results = {}
    for name in shapes:
        shape = suite.SHAPES[name]
        kinds = ["monet"]
        if name in reference_shapes:
            kinds.append("row_gather")
        if name in baseline_shapes:
            kinds += baselines
        results[name] = []
        for kind in kinds:
            log(f"{name}: {kind} ...")
            try:
                row = suite.measure(
                    kind,
                    shape,
                    repeats=repeats,
                    block_size=args.block_size,
                )
            except Exception as error:  # a failing point must not stop the run
                row = {"kind": kind, "error": f"{type(error).__name__}: "
                       f"{str(error).splitlines()[0][:120]}"}
            log(f"  {row}")
            results[name].append(row)
    # The matmul rate again at the end: the machine may be shared.
    matmul_end = suite.matmul_rate()
    matmul_best = max(matmul, matmul_end)

    points = []
    if not args.no_scaling:
        for varied, value, shape in suite.scaling_points(args.quick):
            log(f"scaling {varied}={value} ...")
            try:
                row = suite.measure(
                    "monet",
                    shape,
                    repeats=repeats,
                    inference=False,
                    block_size=args.block_size,
                )
            except Exception as error:
                row = {"kind": "monet", "error": str(error)[:120]}
            log(f"  {row}")
            points.append((varied, value, shape, row))

    lines = [
        "Command: `python benchmarks/run.py"
        + "".join(" " + a for a in (sys.argv[1:] if argv is None else argv))
        + "`",
        "",
        "Machine: " + suite.machine_line(matmul_best)
        + (", XLA_FLAGS=" + os.environ["XLA_FLAGS"]
           if os.environ.get("XLA_FLAGS") else "")
        + (f", block_size={args.block_size}" if args.block_size else "")
        + f" (matmul {matmul:.0f} at the start, {matmul_end:.0f} after the "
        "shapes).",
        "",
    ]
    lines += suite.table(results, matmul_best)
    lines += [""] + suite.ratio_lines(results)
    if points:
        lines += ["", "Scaling (around the AU shape, B = 16):", ""]
        lines += suite.scaling_table(points)
    lines += ["", f"Total time: {time.perf_counter() - start:.0f} s."]
    text = "\n".join(lines)
    print(text)
    if args.markdown:
        with open(args.markdown, "w") as f:
            f.write(text + "\n")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(
                {
                    "matmul_gflops": [matmul, matmul_end],
                    "results": results,
                    "scaling": [
                        {"varied": v, "value": x, "shape": s, **r}
                        for v, x, s, r in points
                    ],
                },
                f,
                indent=1,
                default=float,
            )
    return results, points


if __name__ == "__main__":
    main()
