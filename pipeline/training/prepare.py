"""What every stage of a training run shares, checked against the records: backbone, head, label
space, data."""

import dataclasses
import math

import keras
import numpy as np
import tensorflow as tf

from bottlenecks import imagenet
from bottlenecks import registry
from pipeline import backbones
from pipeline import branches as branches_lib
from pipeline import errors
from pipeline.config import training as training_config
from pipeline.training import checkpoints
from pipeline.training import distribute
from pipeline.training import fbsd
from pipeline.training import features as features_lib
from pipeline.training import fusion as fusion_lib
from pipeline.training import heads
from pipeline.training import input_pipeline
from pipeline.training import selection
from pipeline.training import solved
from pipeline.training import topology
from tfrecords import manifest as manifest_lib


@dataclasses.dataclass
class Setup:
    """What every stage shares: the resolved config (its schedule), the records, the label space,
    the backbone and the head."""

    config: training_config.TrainConfig
    manifest: manifest_lib.Manifest
    backbone: registry.Backbone
    backbone_model: keras.Model
    head: keras.layers.Layer
    combiner: keras.layers.Layer | None  # the fusion's branch weights or gate, if it learns any
    branches: tuple[int, ...]
    class_names: tuple[str, ...]
    label_map: np.ndarray | None  # dataset label -> ImageNet index, when the classes are ImageNet's
    strategy: tf.distribute.Strategy
    num_train: int
    # Why the first stage trains by SGD although the recipe solves linear heads (None: it is solved,
    # or the recipe never solves); see pipeline.training.solved.
    solver_note: str | None = None
    solved_first: bool = False
    # Nodes' records already in memory (pipeline.training.features), from the caller (compare) or
    # loaded once by the first stage that needs them.
    features: dict = dataclasses.field(default_factory=dict)
    # What the run is to the selection that made it: a fold, a replay, or (the default) its own.
    role: selection.Role = dataclasses.field(default_factory=selection.Role)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def schedule(self) -> tuple[training_config.Stage, ...]:
        """The stages in order: a solved first stage has no learning rate, and the rate (the first
        trained stage's) is divided by the divisor at each later stage."""
        if not self.solved_first:
            return self.config.schedule
        rate, divisor = self.config.learning_rate, self.config.learning_rate_divisor
        return tuple(
            training_config.Stage(index, node, None, solved=True)
            if index == 0
            else training_config.Stage(index, node, rate / divisor ** (index - 1))
            for index, node in enumerate(self.config.stages)
        )

    def stage_features(self, node: str):
        """The node's records in memory (every split the records hold but test), read once."""
        if node not in self.features:
            self.features[node] = features_lib.Features.load(
                self.manifest, node, [split for split in self.manifest.splits if split != "test"]
            )
        return self.features[node]

    @property
    def branch_names(self) -> tuple[str, ...]:
        return tuple(self.manifest.branch_names[branch] for branch in self.branches)

    @property
    def family_ids(self) -> tuple[int, ...]:
        """Each trained branch's family, numbered (see pipeline.branches)."""
        return branches_lib.family_ids(self.branch_names)

    @property
    def steps_per_epoch(self) -> int:
        return max(1, math.ceil(self.num_train / self.config.batch_size))

    @property
    def multi_level(self) -> bool:
        """Whether the head reads several nodes' maps (--head fbsd): the run is one stage on
        them, with the backbone frozen."""
        return self.config.head == "fbsd"

    def stage_nodes(self, node: str) -> tuple[str, ...]:
        """The nodes whose records the stage reading `node` takes: the head's under fbsd."""
        return tuple(self.config.head_nodes) if self.multi_level else (node,)

    def trainable_objects(self, node: str) -> dict:
        if self.multi_level:
            objects = {"head": self.head}
        else:
            objects = checkpoints.trainable_objects(self.backbone_model, node, self.head)
        return objects if self.combiner is None else {**objects, "fusion": self.combiner}

    def build_model(self, node: str) -> keras.Model:
        """The stage model reading `node` (see topology.build), or under fbsd its head's nodes
        (topology.build_multi_level)."""
        if self.multi_level:
            return topology.build_multi_level(
                self.head,
                self.node_shapes(self.stage_nodes(node)),
                len(self.branches),
                self.config.fusion,
                self.combiner,
                self.family_ids,
            )
        feature_size = self.manifest.node(node).shape[-1] if self.manifest.codes else None
        return topology.build(
            self.backbone_model,
            node,
            len(self.branches),
            self.head,
            self.config.fusion,
            self.combiner,
            feature_size,
            self.family_ids,
        )

    def node_shapes(self, nodes) -> dict[str, tuple[int, ...]]:
        return node_shapes(self.manifest, nodes)


def node_shapes(manifest: manifest_lib.Manifest, nodes) -> dict[str, tuple[int, ...]]:
    """{node: one branch's record shape}, in the given order."""
    return {node: tuple(manifest.node(node).shape[1:]) for node in nodes}


def _check_classifier_use(config: training_config.TrainConfig, backbone: registry.Backbone) -> None:
    """Refuses the flags that need the backbone's ImageNet classifier when it has none."""
    wanted = [
        flag
        for flag, used in (
            ("--head-init baseline", config.head_init == "baseline"),
            ("--imagenet-labels", config.imagenet_labels),
            ("--label-space imagenet", config.label_space == "imagenet"),
        )
        if used
    ]
    if wanted and not backbone.has_classifier:
        need, them = ("needs", "it") if len(wanted) == 1 else ("need", "them")
        raise errors.UserError(
            f"{' and '.join(wanted)} {need} the backbone's ImageNet classifier, and "
            f"{backbone.name} is an image feature vector model without one: leave {them} out (the "
            "decision layer learns the "
            f"records' own classes, and --branches 0 trains the single-branch baseline)"
        )


def _check_head_nodes(config, manifest, backbone) -> tuple[str, ...]:
    """--head fbsd's nodes, ordered shallow to deep: catalogued, held by the records, maps."""
    registry.check_nodes(backbone, config.head_nodes)
    missing = [node for node in config.head_nodes if node not in manifest.nodes]
    if missing:
        raise errors.UserError(
            f"the records in {config.records_dir} lack the node(s) {', '.join(missing)} "
            f"(they hold {', '.join(manifest.nodes)}); rerun make_tfrecords with "
            f"--nodes {','.join(config.head_nodes)} or choose --head-nodes among those"
        )
    flat = [node for node in config.head_nodes if len(manifest.node(node).shape) != 4]
    if flat:
        raise errors.UserError(
            f"--head fbsd reads maps [height, width, channels]; {', '.join(flat)} "
            f"{'is' if len(flat) == 1 else 'are'} not: choose block outputs (e.g. "
            f"{', '.join(node for node in manifest.nodes if len(manifest.node(node).shape) == 4)})"
        )
    return tuple(sorted(config.head_nodes, key=backbone.nodes.index))


def _head_stage(config, head_nodes: tuple[str, ...]) -> tuple[str]:
    """--head fbsd's one stage: the head on the cached maps, named after the deepest of them."""
    deepest = head_nodes[-1]
    if config.stages is not None and tuple(config.stages) != (deepest,):
        raise errors.UserError(
            f"--head fbsd trains one stage, the head on the cached maps of --head-nodes "
            f"(named after {deepest}): drop --stages"
        )
    return (deepest,)


def _check_stages(config, manifest, backbone) -> tuple[str, ...]:
    stage_nodes = config.stages or backbone.default_stages
    registry.check_nodes(backbone, stage_nodes)
    depths = [backbone.nodes.index(node) for node in stage_nodes]
    if len(set(stage_nodes)) != len(stage_nodes) or depths != sorted(depths, reverse=True):
        raise errors.UserError(
            f"--stages {','.join(stage_nodes)}: each stage must read an earlier node than the one "
            f"before it, so that every stage unfreezes one more block (e.g. "
            f"{','.join(backbone.default_stages)})"
        )
    missing = [node for node in stage_nodes if node not in manifest.nodes]
    if missing:
        raise errors.UserError(
            f"the records in {config.records_dir} lack the node(s) {', '.join(missing)} "
            f"(they hold {', '.join(manifest.nodes)}); rerun make_tfrecords with "
            f"--nodes {','.join(stage_nodes)}"
        )
    return tuple(stage_nodes)


def resolve_stages(
    config: training_config.TrainConfig, manifest: manifest_lib.Manifest
) -> training_config.TrainConfig:
    """The config with its stages named (the backbone's default schedule unless given) and
    checked."""
    backbone = registry.get_backbone(manifest.backbone, manifest.input_range)
    if config.head == "fbsd":
        head_nodes = _check_head_nodes(config, manifest, backbone)
        return dataclasses.replace(
            config, stages=_head_stage(config, head_nodes), head_nodes=head_nodes
        )
    return dataclasses.replace(config, stages=_check_stages(config, manifest, backbone))


def prepare(
    config: training_config.TrainConfig,
    manifest: manifest_lib.Manifest,
    features: dict | None = None,
    role: selection.Role | None = None,
) -> Setup:
    """Checks a resolved run (see resolve_stages; its learning rate a number) against its records
    and builds what all stages share; features and role as Setup holds them.

    Training reads only the train and validation splits: the test split is left to the evaluation.
    """
    backbone = registry.get_backbone(manifest.backbone, manifest.input_range)
    _check_classifier_use(config, backbone)
    branches = branches_lib.resolve(config.branches, manifest.branch_names)
    config = resolve_stages(config, manifest)
    for split in ("train", "validation"):
        if not manifest.num_records(split):
            raise errors.UserError(
                f"the records in {config.records_dir} have no {split} images; rerun "
                f"make_tfrecords with --validation-percent above 0 or a train/val folder layout"
            )
    strategy = distribute.make_strategy(config.strategy, config.devices, config.collective_timeout)
    with strategy.scope():
        _, backbone_model = backbones.from_manifest(manifest)
        for node in config.stages:
            try:
                topology.check_stage(backbone, backbone_model, node)
            except ValueError as error:
                raise errors.UserError(f"stage {node!r}: {error}") from None
        # A feature vector model has no ImageNet classifier: its label space is the records' own
        # classes.
        indices = _imagenet_indices(config, manifest) if backbone.has_classifier else None
        if indices is not None:  # the backbone's own classes: train and evaluate over all 1000
            class_names = tuple(name for _, name in imagenet.imagenet_classes())
            label_map = np.asarray(indices, np.int32)
        else:
            if config.head_init == "baseline":
                raise errors.UserError(
                    "--head-init baseline needs the backbone's own ImageNet classes (class "
                    "folders named by wnid, or integer labels with --imagenet-labels); use "
                    "--head-init random"
                )
            class_names, label_map = tuple(manifest.class_names), None
        if config.head == "fbsd":
            if config.fusion == "concat" and len(branches) > 1:
                raise errors.UserError(
                    "--head fbsd scores each branch by itself: use --fusion shared, family, "
                    "weighted or gated (concat joins pooled features under one linear layer)"
                )
            shapes = node_shapes(manifest, config.head_nodes)
            head = fbsd.build(
                shapes,
                len(class_names),
                channels=config.hidden_units,
                seed=config.seed,
                **fbsd.fitted(shapes),
            )
        else:
            head = heads.build_head(
                config.head,
                len(class_names),
                hidden_units=config.hidden_units,
                activation=config.activation,
                dropout=config.dropout,
                seed=config.seed,
            )
        combiner = fusion_lib.combiner(
            config.fusion,
            len(branches),
            seed=config.seed,
            stacked=config.rule.stacked_combiner,
            family_ids=branches_lib.family_ids(
                [manifest.branch_names[branch] for branch in branches]
            ),
        )
    reason = solved.not_solved_because(config, manifest, config.stages[0], 0, len(branches))
    solved_first = reason is None
    if isinstance(config.learning_rate, str) and not (solved_first and len(config.stages) == 1):
        raise ValueError(
            "--learning-rate auto is resolved by the trainer's sweep before the stages are made"
        )
    return Setup(
        config,
        manifest,
        backbone,
        backbone_model,
        head,
        combiner,
        branches,
        class_names,
        label_map,
        strategy,
        input_pipeline.num_examples(role or selection.Role(), manifest, "train"),
        solver_note=reason if config.rule.solves_linear and config.solver != "sgd" else None,
        solved_first=solved_first,
        features=dict(features or {}),
        role=role or selection.Role(),
    )


def _imagenet_indices(
    config: training_config.TrainConfig, manifest: manifest_lib.Manifest
) -> list[int] | None:
    """Each class's index among the backbone's 1000 when the head is to predict those, else None."""
    if config.label_space == "dataset" or manifest.codes:
        if config.label_space == "imagenet":
            raise errors.UserError(
                f"--label-space imagenet: {config.records_dir} holds autoencoder codes, which the "
                f"backbone's own classifier cannot read; use --label-space dataset"
            )
        return None
    indices = imagenet.imagenet_indices(manifest.class_names, config.imagenet_labels)
    if indices is None and config.label_space == "imagenet":
        raise errors.UserError(
            "--label-space imagenet needs classes that are ImageNet's (folders named by wnid "
            "such as n01440764, or integer labels with --imagenet-labels); the records' classes "
            f"are {', '.join(manifest.class_names[:5])}"
            f"{', ...' if len(manifest.class_names) > 5 else ''}; "
            f"use --label-space dataset"
        )
    return indices


def make_optimizer(
    config: training_config.TrainConfig, learning_rate: float
) -> keras.optimizers.Optimizer:
    if config.optimizer == "adam":
        return keras.optimizers.Adam(learning_rate=learning_rate)
    return keras.optimizers.SGD(learning_rate=learning_rate, momentum=config.momentum_value)


def stage_model(setup: Setup, stage: training_config.Stage):
    """The stage's model, with the layers after its node unfrozen, and a fresh optimizer.

    A stacked combiner (see pipeline.training.fusion) is frozen while the stage trains its head.
    """
    with setup.strategy.scope():
        if setup.multi_level:
            setup.backbone_model.trainable = False  # the head reads cached maps: nothing to tune
        else:
            topology.unfreeze_tail(setup.backbone_model, stage.node, setup.config.train_batchnorm)
        if setup.combiner is not None:
            setup.combiner.trainable = not setup.config.rule.stacked_combiner
        model = setup.build_model(stage.node)
        optimizer = make_optimizer(setup.config, stage.learning_rate)
        optimizer.build(model.trainable_variables)
    return model, optimizer
