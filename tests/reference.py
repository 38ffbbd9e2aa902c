"""Hand computations in numpy that the layers are checked against."""

import numpy as np
from keras import ops


def sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def recurrent_weights(layer):
    """The TaskwiseRecurrent weights as a dict of float64 numpy arrays."""
    names = (
        "label_kernel",
        "label_bias",
        "kernel",
        "recurrent_kernel",
        "input_bias",
        "recurrent_bias",
        "output_kernel",
        "output_bias",
    )
    return {
        name: ops.convert_to_numpy(getattr(layer, name)).astype("float64")
        for name in names
    }


def gru_step(w, task, h, label_input):
    """One step of task `task`'s standard GRU cell (reset_after, z r h)."""
    units = h.shape[-1]
    embedding = label_input @ w["label_kernel"] + w["label_bias"]
    x = embedding @ w["kernel"][task] + w["input_bias"][task]
    r_ = h @ w["recurrent_kernel"][task] + w["recurrent_bias"][task]
    z = sigmoid(x[:units] + r_[:units])
    r = sigmoid(x[units : 2 * units] + r_[units : 2 * units])
    candidate = np.tanh(x[2 * units :] + r * r_[2 * units :])
    return z * h + (1.0 - z) * candidate


def chain(w, h0, order, labels, known=None):
    """Teacher-forced logits of one order, by hand, in task order `[T]`."""
    tasks = len(order)
    h = np.asarray(h0, "float64")
    label_input = np.zeros(tasks)
    logits = np.zeros(tasks)
    for task in order:
        h = gru_step(w, task, h, label_input)
        logits[task] = h @ w["output_kernel"][task] + w["output_bias"][task]
        label_input = np.zeros(tasks)
        if known is None or known[task]:
            label_input[task] = 2.0 * labels[task] - 1.0
    return logits


def log_likelihood(labels, logits):
    """sum_t log p(y_t) for logits, -BCE with logits."""
    labels = np.asarray(labels, "float64")
    return float(
        np.sum(labels * np.log(sigmoid(logits)) + (1 - labels) * np.log(sigmoid(-logits)))
    )
