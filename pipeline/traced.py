"""Graph functions traced once, however many graphs call them."""

import functools

import tensorflow as tf


def graph_function(*signature):
    """A decorator: the function as a graph function of the given input signature, traced at its
    first call and its concrete function called from then on. Saving a SavedModel traces its
    endpoints again, and a process may export many times: large graphs (the in-graph image
    decoding, a backbone) are then built once, and stored once in the SavedModel."""

    def wrap(function):
        traced = tf.function(function, input_signature=signature, autograph=False)
        concrete = functools.cache(traced.get_concrete_function)

        @functools.wraps(function)
        def call(*arguments):
            return concrete()(*arguments)

        return call

    return wrap
