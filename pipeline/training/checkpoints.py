"""Stages and their checkpoints: names, paths and what a checkpoint holds; read by the stage loop and the export.

LOGDIR/checkpoints/stage<k>_<node>/latest   resume point (weights, optimizer, step, plateau state)
LOGDIR/checkpoints/stage<k>_<node>/best     the stage's best validation top-1
"""

import dataclasses
import os

import keras
import tensorflow as tf

from bottlenecks import cut


@dataclasses.dataclass(frozen=True)
class Stage:
    index: int
    node: str
    learning_rate: float

    @property
    def name(self) -> str:
        return f"stage{self.index}_{self.node}"


def stage_directory(logdir: str, stage: Stage) -> str:
    return os.path.join(logdir, "checkpoints", stage.name)


def best_path(logdir: str, stage: Stage) -> str:
    return os.path.join(stage_directory(logdir, stage), "best", "ckpt")


def latest_directory(logdir: str, stage: Stage) -> str:
    return os.path.join(stage_directory(logdir, stage), "latest")


def trainable_objects(backbone_model: keras.Model, node: str, head: keras.layers.Layer) -> dict:
    """What a stage changes: the head and the backbone layers after `node`, keyed by graph position.

    Keys are positions in the backbone, not Keras's session-dependent layer names, and the frozen
    front of the backbone (its pretrained weights) is not copied into every checkpoint.
    """
    tail_layers = {id(layer) for layer in cut.tail(backbone_model, node).layers}
    objects = {f"layer{position:04d}": layer for position, layer in enumerate(backbone_model.layers)
               if id(layer) in tail_layers and layer.weights}
    return {"head": head, **objects}


def restore(objects: dict, path: str) -> None:
    """Loads a stage checkpoint into `objects`, failing if any of them is missing from it."""
    tf.train.Checkpoint(**objects).read(path).assert_existing_objects_matched()
