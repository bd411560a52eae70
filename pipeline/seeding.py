"""Seeding Keras's unseeded randomness for one build or fit, leaving no global seed behind."""

import contextlib

import keras
import tensorflow as tf


@contextlib.contextmanager
def seeded(seed: int):
    """keras.utils.set_random_seed(seed) inside, TensorFlow's global seed unset again after.

    A global seed left behind changes the seeds of every later op that has its own (TensorFlow
    combines the two), so a training run's shuffle would depend on what the process did before:
    the same run gave other results after a random-weight backbone had been built.
    """
    keras.utils.set_random_seed(seed)
    try:
        yield
    finally:
        tf.random.set_seed(None)
