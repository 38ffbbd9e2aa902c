#!/usr/bin/env bash
# MONET's benchmark suite on a machine with an NVIDIA GPU, offline.
#
#   bash benchmarks/gpu.sh            # the full suite (about 10-20 minutes)
#   bash benchmarks/gpu.sh --quick    # a few minutes
#
# Runs from the working tree alone (no install, no network): it puts the
# repository on PYTHONPATH and runs benchmarks/run.py with whatever Python has
# TensorFlow (preferred) or JAX installed, writing the same tables as the CPU
# run, with XLA-on-GPU times, to $OUT/benchmarks-gpu.md and .json ($OUT
# defaults to the current directory). Extra arguments go to run.py.
#
# Backends:
#   - TensorFlow (with GPU support): everything, as on CPU. Peak memory is
#     TensorFlow's allocator peak on GPU:0.
#   - JAX only (KERAS_BACKEND=jax, chosen automatically when TensorFlow is
#     absent): everything too; the training step is Keras's jitted JAX step
#     (through train_on_batch). Peak memory is JAX's device peak_bytes_in_use.
#   Set KERAS_BACKEND yourself to force one; PYTHON to choose the interpreter.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(dirname "$here")"
py="${PYTHON:-python3}"
out="${OUT:-.}"
mkdir -p "$out"

export PYTHONPATH="$root${PYTHONPATH:+:$PYTHONPATH}"
export TF_CPP_MIN_LOG_LEVEL="${TF_CPP_MIN_LOG_LEVEL:-2}"
# Allocate on demand, so that the measured peaks are the steps' own.
export TF_FORCE_GPU_ALLOW_GROWTH="${TF_FORCE_GPU_ALLOW_GROWTH:-true}"
export XLA_PYTHON_CLIENT_PREALLOCATE="${XLA_PYTHON_CLIENT_PREALLOCATE:-false}"

if [ -z "${KERAS_BACKEND:-}" ]; then
    if "$py" -c "import tensorflow" >/dev/null 2>&1; then
        export KERAS_BACKEND=tensorflow
    elif "$py" -c "import jax" >/dev/null 2>&1; then
        export KERAS_BACKEND=jax
        echo "TensorFlow not found: using JAX." >&2
    else
        echo "Neither TensorFlow nor JAX is importable by $py." >&2
        exit 1
    fi
fi

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader \
    >&2 || echo "nvidia-smi not found" >&2

"$py" - <<'EOF' >&2
import os
backend = os.environ["KERAS_BACKEND"]
if backend == "tensorflow":
    import tensorflow as tf
    gpus = tf.config.list_physical_devices("GPU")
    print("TensorFlow", tf.__version__, "GPUs:", gpus)
else:
    import jax
    gpus = [d for d in jax.devices() if d.platform == "gpu"]
    print("JAX", jax.__version__, "devices:", jax.devices())
if not gpus:
    print("WARNING: no GPU visible to", backend, "- measuring on CPU.")
EOF

exec "$py" "$root/benchmarks/run.py" \
    --markdown "$out/benchmarks-gpu.md" --json "$out/benchmarks-gpu.json" "$@"
