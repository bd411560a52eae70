"""What a stage checkpoint holds (the head and the backbone layers the stage trains) and restoring
one.

Where checkpoints live is the run directory's to say (pipeline.training.run_directory).
"""

import keras
import tensorflow as tf

from bottlenecks import cut


def trainable_objects(backbone_model: keras.Model, node: str, head: keras.layers.Layer) -> dict:
    """What a stage changes: the head and the backbone layers after `node`, keyed by graph position.

    Keys are positions in the backbone, not Keras's session-dependent layer names, and the frozen
    front of the backbone (its pretrained weights) is not copied into every checkpoint.
    """
    tail_layers = {id(layer) for layer in cut.tail(backbone_model, node).layers}
    objects = {
        f"layer{position:04d}": layer
        for position, layer in enumerate(backbone_model.layers)
        if id(layer) in tail_layers and layer.weights
    }
    return {"head": head, **objects}


def restore(objects: dict, path: str) -> None:
    """Loads a stage checkpoint into `objects`, failing if any of them is missing from it."""
    tf.train.Checkpoint(**objects).read(path).assert_existing_objects_matched()
