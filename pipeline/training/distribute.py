"""The one place a distribution strategy is made."""

import tensorflow as tf


def make_strategy(devices) -> tf.distribute.Strategy:
    """MirroredStrategy over the given devices, else over all GPUs, else on the CPU."""
    if devices:
        return tf.distribute.MirroredStrategy(devices=list(devices))
    if tf.config.list_logical_devices("GPU"):
        return tf.distribute.MirroredStrategy()
    return tf.distribute.MirroredStrategy(devices=["/cpu:0"])
