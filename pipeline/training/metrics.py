"""Top-k accuracy, computed one way everywhere: ties are ranked as argmax ranks them (lower class
first)."""

import numpy as np
import tensorflow as tf

TOP_KS = (1, 5, 10)  # what every evaluation reports


def ranks(scores, labels) -> tf.Tensor:
    """1-based rank of each label among its row's scores [N, classes]; a tie goes to the lower class
    index."""
    scores = tf.convert_to_tensor(scores)
    labels = tf.cast(labels, tf.int32)
    label_scores = tf.gather(scores, labels[:, None], batch_dims=1)
    classes = tf.range(tf.shape(scores)[-1])[None, :]
    ahead = (scores > label_scores) | ((scores == label_scores) & (classes < labels[:, None]))
    return 1 + tf.reduce_sum(tf.cast(ahead, tf.int32), axis=-1)


def correct_in_top_k(scores, labels, k: int) -> tf.Tensor:
    """How many rows have their label among the top k scores (a float32 count)."""
    return tf.reduce_sum(tf.cast(ranks(scores, labels) <= k, tf.float32))


def top_k_accuracy(scores, labels, ks=TOP_KS) -> dict:
    """{"top1": fraction, "top5": ..., ...}: how often the label ranks within the top k of its row's
    scores."""
    label_ranks = ranks(scores, labels).numpy()
    return {f"top{k}": float(np.mean(label_ranks <= k)) for k in ks}


def percent_cells(row: dict, splits=("validation", "test")) -> str:
    """A result row's top-k accuracies ("<split>_top<k>" keys, every split and TOP_KS) as Markdown
    table cells in percent, " | "-joined."""
    return " | ".join(f"{100 * row[f'{split}_top{k}']:.2f}" for split in splits for k in TOP_KS)
