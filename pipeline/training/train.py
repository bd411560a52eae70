"""The block-by-block trainer: one stage per node, plateau and ÷10 schedule, MirroredStrategy, resume.

LOGDIR/
  config.json                  the run's settings; a rerun must match them to resume
  results.json                 per stage: node, learning rate, steps, best top-1/top-5, checkpoint
  stage<k>_<node>/train|validation   TensorBoard runs, one per stage (the stage folder holds its hparams)
  stages/                      TensorBoard: best top-1 per stage, a sample's JPEG ladder
  events.out.tfevents.*        TensorBoard: the hparams experiment (best top-1 as its metric)
  checkpoints/stage<k>_<node>/latest   resume point (weights, optimizer, step, plateau state)
  checkpoints/stage<k>_<node>/best     the stage's best validation top-1
  export/                      the model that classifies raw images (see pipeline.training.export)
"""

import dataclasses
import math
import os
import time

import keras
import numpy as np
import tensorflow as tf
import tqdm

from bottlenecks import cut
from bottlenecks import registry
from pipeline import config as config_lib
from pipeline.training import topology
from pipeline.training import tensorboard_logs
from tfrecords import manifest as manifest_lib
from tfrecords import reader

RESULTS_NAME = "results.json"


@dataclasses.dataclass(frozen=True)
class Stage:
    index: int
    node: str
    learning_rate: float

    @property
    def name(self) -> str:
        return f"stage{self.index}_{self.node}"


@dataclasses.dataclass
class Setup:
    """What every stage shares: the records' description, the label space, the backbone and the head."""

    config: config_lib.TrainConfig
    manifest: dict
    backbone: registry.Backbone
    backbone_model: keras.Model
    head: keras.layers.Dense
    branches: tuple[int, ...]
    class_names: tuple[str, ...]
    label_map: np.ndarray | None  # dataset label -> ImageNet index, when the classes are ImageNet's
    stages: tuple[Stage, ...]
    strategy: tf.distribute.Strategy
    num_train: int
    num_validation: int

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def steps_per_epoch(self) -> int:
        return max(1, math.ceil(self.num_train / self.config.batch_size))


def make_strategy(devices) -> tf.distribute.Strategy:
    """The one place a strategy is made: MirroredStrategy over the given devices, all GPUs, or the CPU."""
    if devices:
        return tf.distribute.MirroredStrategy(devices=list(devices))
    if tf.config.list_logical_devices("GPU"):
        return tf.distribute.MirroredStrategy()
    return tf.distribute.MirroredStrategy(devices=["/cpu:0"])


def build_backbone(manifest: dict) -> keras.Model:
    """The backbone with the very weights the records were made with."""
    backbone = registry.get_backbone(manifest["backbone"])
    weights = manifest["weights"]
    if weights["kind"] == "none":
        keras.utils.set_random_seed(manifest["config"]["seed"])  # the offline stage's random weights
        source = "none"
    elif weights["kind"] == "file":
        source = weights["path"]
        if not os.path.isfile(source):
            raise FileNotFoundError(f"the records were made with weights {source}, which is gone; "
                                    f"put it back (its sha256 is {weights.get('sha256')})")
    else:
        source = "imagenet"
    return registry.build(backbone, source, manifest["input_size"])


def prepare(config: config_lib.TrainConfig) -> Setup:
    """Checks the run against its records and builds what all stages share."""
    manifest = manifest_lib.read_manifest(config.records_dir)
    backbone = registry.get_backbone(manifest["backbone"])
    num_record_branches = manifest["nodes"][next(iter(manifest["nodes"]))]["shape"][0]
    branches = tuple(range(num_record_branches)) if config.branches is None else tuple(config.branches)
    bad = [branch for branch in branches if not 0 <= branch < num_record_branches]
    if bad:
        raise ValueError(f"--branches {bad} do not exist: the records hold branches 0..{num_record_branches - 1} "
                         f"({', '.join(manifest['branches'])})")
    stage_nodes = config.stages or backbone.default_stages
    registry.check_nodes(backbone, stage_nodes)
    depths = [backbone.nodes.index(node) for node in stage_nodes]
    if len(set(stage_nodes)) != len(stage_nodes) or depths != sorted(depths, reverse=True):
        raise ValueError(f"--stages {','.join(stage_nodes)}: each stage must read an earlier node than the one "
                         f"before it, so that every stage unfreezes one more block (e.g. "
                         f"{','.join(backbone.default_stages)})")
    missing = [node for node in stage_nodes if node not in manifest["nodes"]]
    if missing:
        raise ValueError(f"the records in {config.records_dir} lack the node(s) {', '.join(missing)} "
                         f"(they hold {', '.join(manifest['nodes'])}); rerun make_tfrecords with "
                         f"--nodes {','.join(stage_nodes)}")
    for split in ("train", "validation"):
        if not manifest["splits"].get(split, {}).get("num_records"):
            raise ValueError(f"the records in {config.records_dir} have no {split} images; rerun make_tfrecords "
                             f"with --validation-percent above 0 or a train/val folder layout")
    strategy = make_strategy(config.devices)
    with strategy.scope():
        backbone_model = build_backbone(manifest)
        for node in stage_nodes:
            try:
                topology.check_stage(backbone, backbone_model, node)
            except ValueError as error:
                raise ValueError(f"stage {node!r}: {error}") from None
        indices = registry.imagenet_indices(manifest["class_names"], config.imagenet_labels)
        if indices is not None:  # the backbone's own classes: train and evaluate over all 1000
            class_names = tuple(name for _, name in registry.imagenet_classes())
            label_map = np.asarray(indices, np.int32)
        else:
            if config.head_init == "baseline":
                raise ValueError("--head-init baseline needs the backbone's own ImageNet classes (class folders "
                                 "named by wnid, or integer labels with --imagenet-labels); use --head-init random")
            class_names, label_map = tuple(manifest["class_names"]), None
        head = topology.decision_layer(len(class_names), seed=config.seed)
    stages = tuple(Stage(index, node, config.stage_learning_rate(index)) for index, node in enumerate(stage_nodes))
    return Setup(config, manifest, backbone, backbone_model, head, branches, class_names, label_map, stages,
                 strategy, reader.dataset_size(config.records_dir, "train"),
                 reader.dataset_size(config.records_dir, "validation"))


def stage_dataset(setup: Setup, node: str, split: str, *, training: bool, seed: int = 0, start_batch: int = 0,
             branches=None):
    config = setup.config
    branches = branches or setup.branches
    example_shape = setup.manifest["nodes"][node]["shape"]
    decoded_mb = (setup.num_train if split == "train" else setup.num_validation) * len(branches) * \
        math.prod(example_shape[1:]) * 4 / 2**20
    dataset = reader.make_dataset(
        config.records_dir, node, split, config.batch_size, shuffle=training, seed=seed, repeat=training,
        drop_remainder=training, branches=branches, shuffle_buffer=config.shuffle_buffer,
        start_batch=start_batch, cache_decoded=decoded_mb <= config.cache_mb)
    num_classes = setup.num_classes
    label_map = None if setup.label_map is None else tf.constant(setup.label_map)

    def labels_in_head_space(bottlenecks, labels):
        if label_map is not None:
            labels = tf.gather(label_map, labels)
        check = tf.debugging.assert_less(labels, num_classes, message=(
            "a record's label is beyond the decision layer's classes: the records and the run disagree"))
        with tf.control_dependencies([check]):
            return bottlenecks, tf.identity(labels)

    return dataset.map(labels_in_head_space, num_parallel_calls=tf.data.AUTOTUNE)


class Steps:
    """Distributed train and evaluation steps of one stage model."""

    def __init__(self, setup: Setup, model: keras.Model, optimizer):
        self.strategy = setup.strategy
        self.model = model
        self.optimizer = optimizer
        self.global_batch = setup.config.batch_size

        def train_replica(bottlenecks, labels):
            with tf.GradientTape() as tape:
                logits = model(bottlenecks, training=True)
                per_example = keras.losses.sparse_categorical_crossentropy(labels, logits, from_logits=True)
                loss = tf.nn.compute_average_loss(per_example, global_batch_size=self.global_batch)
            variables = model.trainable_variables
            optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables))
            return loss, self._correct(labels, logits, 1)

        def evaluate_replica(bottlenecks, labels):
            logits = model(bottlenecks, training=False)
            per_example = keras.losses.sparse_categorical_crossentropy(labels, logits, from_logits=True)
            return (tf.reduce_sum(per_example), self._correct(labels, logits, 1),
                    self._correct(labels, logits, 5), tf.cast(tf.shape(labels)[0], tf.float32))

        @tf.function
        def train(iterator):
            loss, correct = self.strategy.run(train_replica, args=next(iterator))
            return (self.strategy.reduce("SUM", loss, axis=None), self.strategy.reduce("SUM", correct, axis=None))

        @tf.function
        def evaluate(dataset):
            # The loop runs inside one graph: no retracing for the smaller last batch of every pass.
            totals = tf.zeros([4])
            for batch in dataset:
                sums = self.strategy.run(evaluate_replica, args=batch)
                totals += tf.stack([self.strategy.reduce("SUM", value, axis=None) for value in sums])
            return totals

        self.train = train
        self._evaluate = evaluate

    @staticmethod
    def _correct(labels, logits, k):
        k = min(k, int(logits.shape[-1]))
        return tf.reduce_sum(tf.cast(tf.math.in_top_k(tf.cast(labels, tf.int32), logits, k), tf.float32))

    def evaluate(self, dataset) -> dict:
        loss, top1, top5, count = (float(value) for value in self._evaluate(dataset))
        return {"loss": loss / count, "top1": top1 / count, "top5": top5 / count}


def _stage_state():
    """What a resumed stage needs besides the weights: where it was and how its plateau stood."""
    return {"step": tf.Variable(0, dtype=tf.int64), "best_top1": tf.Variable(-1.0, dtype=tf.float64),
            "best_top5": tf.Variable(0.0, dtype=tf.float64), "best_step": tf.Variable(0, dtype=tf.int64),
            "steps_since_best": tf.Variable(0, dtype=tf.int64), "last_eval_step": tf.Variable(0, dtype=tf.int64),
            "seconds": tf.Variable(0.0, dtype=tf.float64)}  # wall time of the stage, across resumes


def _check_config(config: config_lib.TrainConfig) -> None:
    os.makedirs(config.logdir, exist_ok=True)
    settings = {key: list(value) if isinstance(value, tuple) else value
                for key, value in dataclasses.asdict(config).items()
                # Resuming on other devices (or without a progress bar) is still the same run.
                if key not in ("progress", "export", "devices")}
    path = os.path.join(config.logdir, "config.json")
    stored = manifest_lib.read_json(path)
    if stored is None:
        manifest_lib.write_json_atomic(path, settings)
    elif stored != settings:
        changed = sorted(key for key in settings if settings.get(key) != stored.get(key))
        raise ValueError(f"{config.logdir} holds a run with other settings (differing in: {', '.join(changed)}); "
                         f"rerun with the same flags to resume it, or choose another --logdir")


def train_and_evaluate(config: config_lib.TrainConfig) -> dict:
    """Runs (or resumes) every stage and returns results.json's content."""
    setup = prepare(config)  # first, so a run refused for bad flags does not record them
    _check_config(config)
    results_path = os.path.join(config.logdir, RESULTS_NAME)
    results = manifest_lib.read_json(results_path) or {
        "records": os.path.abspath(config.records_dir), "backbone": setup.backbone.name,
        "branches": [setup.manifest["branches"][branch] for branch in setup.branches],
        "branch_indices": list(setup.branches), "label_space": "imagenet" if setup.label_map is not None
        else "dataset", "global_batch_size": config.batch_size,
        "replicas": setup.strategy.num_replicas_in_sync, "stages": []}
    logs = tensorboard_logs.RunLogs(config.logdir)
    if "baseline" not in results and setup.label_map is not None:
        results["baseline"] = evaluate_baseline(setup)
        manifest_lib.write_json_atomic(results_path, results)
    logs.sample_ladder(setup.manifest, config.records_dir)
    done = {stage["node"] for stage in results["stages"]}
    for stage in setup.stages:
        if stage.node in done:
            continue
        outcome = _train_stage(setup, stage, logs)
        results["stages"].append(outcome)
        manifest_lib.write_json_atomic(results_path, results)
        logs.stage_summary(stage, outcome, config, setup)
    if config.export:
        from pipeline.training import export

        best = results["stages"][-1]["checkpoint"]
        results["export"] = export.export_model(setup, setup.stages[-1], best,
                                                os.path.join(config.logdir, "export"))
        manifest_lib.write_json_atomic(results_path, results)
    print(summary_text(results))
    return results


def checkpoint_objects(setup: Setup, node: str) -> dict:
    """What a stage changes: the head and the backbone layers after `node`, keyed by graph position.

    Keys are positions in the backbone, not Keras's session-dependent layer names, and the frozen
    front of the backbone (its pretrained weights) is not copied into every checkpoint.
    """
    tail_layers = {id(layer) for layer in cut.tail(setup.backbone_model, node).layers}
    objects = {f"layer{position:04d}": layer for position, layer in enumerate(setup.backbone_model.layers)
               if id(layer) in tail_layers and layer.weights}
    return {"head": setup.head, **objects}


def stage_model(setup: Setup, stage: Stage):
    """The stage's model, with the layers after its node unfrozen, and a fresh SGD optimizer."""
    with setup.strategy.scope():
        topology.unfreeze_tail(setup.backbone_model, stage.node, setup.config.train_batchnorm)
        model = topology.build(setup.backbone_model, stage.node, len(setup.branches), setup.head)
        optimizer = keras.optimizers.SGD(learning_rate=stage.learning_rate, momentum=setup.config.momentum)
        optimizer.build(model.trainable_variables)
    return model, optimizer


def _train_stage(setup: Setup, stage: Stage, logs) -> dict:
    config = setup.config
    directory = os.path.join(config.logdir, "checkpoints", stage.name)
    model, optimizer = stage_model(setup, stage)
    with setup.strategy.scope():
        state = _stage_state()
        latest = tf.train.Checkpoint(optimizer=optimizer, **state, **checkpoint_objects(setup, stage.node))
        manager = tf.train.CheckpointManager(latest, os.path.join(directory, "latest"), max_to_keep=1)
        best = tf.train.Checkpoint(**checkpoint_objects(setup, stage.node))
        best_path = os.path.join(directory, "best", "ckpt")
        if manager.latest_checkpoint:
            latest.restore(manager.latest_checkpoint).assert_existing_objects_matched()
        else:
            _start_stage(setup, stage)
    steps = Steps(setup, model, optimizer)
    validation = setup.strategy.experimental_distribute_dataset(
        stage_dataset(setup, stage.node, "validation", training=False))
    steps_per_epoch = setup.steps_per_epoch
    eval_every = min(config.eval_every_steps, steps_per_epoch)
    plateau_steps = max(1, round(config.plateau_epochs * steps_per_epoch))
    max_steps = max(1, round(config.max_epochs_per_stage * steps_per_epoch))
    writers = logs.stage_writers(stage, config, setup)
    step = int(state["step"].numpy())
    seconds_before, started = float(state["seconds"].numpy()), time.perf_counter()

    def save(number):
        state["seconds"].assign(seconds_before + time.perf_counter() - started)
        manager.save(checkpoint_number=number)

    if step == 0 and state["best_top1"].numpy() < 0:  # the stage's starting point counts as a candidate
        metrics = steps.evaluate(validation)
        _record_evaluation(state, metrics, 0, best, best_path)
        writers.validation(0, {**metrics, "best_top1": float(state["best_top1"].numpy())}, stage.learning_rate)
        save(0)
    train = iter(setup.strategy.experimental_distribute_dataset(
        stage_dataset(setup, stage.node, "train", training=True, seed=config.seed + stage.index, start_batch=step)))
    interval_loss = interval_correct = 0.0
    interval_steps = 0
    with tqdm.tqdm(total=max_steps, initial=step, unit="step", disable=not config.progress,
                   desc=f"{stage.name} lr={stage.learning_rate:g}") as bar:
        while step < max_steps and int(state["steps_since_best"].numpy()) < plateau_steps:
            loss, correct = steps.train(train)
            step += 1
            interval_loss += float(loss)
            interval_correct += float(correct)
            interval_steps += 1
            bar.update(1)
            if step % eval_every == 0 or step == max_steps:
                state["step"].assign(step)
                writers.train(step, {"loss": interval_loss / interval_steps,
                                     "top1": interval_correct / (interval_steps * config.batch_size)},
                              stage.learning_rate)
                interval_loss = interval_correct = 0.0
                interval_steps = 0
                metrics = steps.evaluate(validation)
                _record_evaluation(state, metrics, step, best, best_path)
                writers.validation(step, {**metrics, "best_top1": float(state["best_top1"].numpy())},
                                   stage.learning_rate)
                save(step)
                bar.set_postfix(top1=f"{metrics['top1']:.4f}", best=f"{float(state['best_top1'].numpy()):.4f}")
    writers.close()
    return {"stage": stage.index, "node": stage.node,
            "thesis_block": setup.backbone.thesis_block_names.get(stage.node, stage.node),
            "learning_rate": stage.learning_rate, "steps": step, "epochs": step / steps_per_epoch,
            "best_step": int(state["best_step"].numpy()),
            "best_top1": float(state["best_top1"].numpy()), "best_top5": float(state["best_top5"].numpy()),
            "checkpoint": best_path, "seconds": seconds_before + time.perf_counter() - started,
            "ended_by": "plateau" if int(state["steps_since_best"].numpy()) >= plateau_steps else "max_epochs"}


def _start_stage(setup: Setup, stage: Stage) -> None:
    """Stage 0 initialises the head; every later stage starts from the previous stage's best."""
    if stage.index == 0:
        if setup.config.head_init == "baseline":
            if 0 not in setup.branches:
                raise ValueError("--head-init baseline needs the original branch 0 among --branches")
            topology.init_head_from_classifier(setup.head, setup.backbone_model, np.arange(setup.num_classes),
                                               setup.branches.index(0), len(setup.branches))
        return
    previous = setup.stages[stage.index - 1]
    path = os.path.join(setup.config.logdir, "checkpoints", previous.name, "best", "ckpt")
    tf.train.Checkpoint(**checkpoint_objects(setup, previous.node)).read(path).assert_existing_objects_matched()


def _record_evaluation(state, metrics, step, best, best_path) -> None:
    steps_since_last = step - int(state["last_eval_step"].numpy())
    state["last_eval_step"].assign(step)
    if metrics["top1"] > state["best_top1"].numpy():
        state["best_top1"].assign(metrics["top1"])
        state["best_top5"].assign(metrics["top5"])
        state["best_step"].assign(step)
        state["steps_since_best"].assign(0)
        best.write(best_path)
    else:
        state["steps_since_best"].assign_add(steps_since_last)


def evaluate_baseline(setup: Setup) -> dict:
    """The stock backbone's top-1/top-5 on the original images, from the first stage's records."""
    node = setup.stages[0].node
    tail = cut.tail(setup.backbone_model, node)
    classifier = cut.classifier_layer(setup.backbone_model)
    totals = np.zeros(3)
    for bottlenecks, labels in stage_dataset(setup, node, "validation", training=False, branches=(0,)):
        probabilities = classifier(tail(bottlenecks[:, 0], training=False))
        labels = tf.cast(labels, tf.int32)
        totals += [float(tf.reduce_sum(tf.cast(tf.math.in_top_k(labels, probabilities, k), tf.float32)))
                   for k in (1, 5)] + [float(labels.shape[0])]
    return {"node": node, "top1": totals[0] / totals[2], "top5": totals[1] / totals[2]}


def predict_records(setup: Setup, stage: Stage, checkpoint_path: str, split: str = "validation") -> dict:
    """Class probabilities per image id, from the cached bottlenecks of `stage` with a stage checkpoint."""
    tf.train.Checkpoint(**checkpoint_objects(setup, stage.node)).read(checkpoint_path).assert_existing_objects_matched()
    model = topology.build(setup.backbone_model, stage.node, len(setup.branches), setup.head)
    probabilities = {}
    for bottlenecks, _, image_ids in reader.make_dataset(setup.config.records_dir, stage.node, split,
                                                         setup.config.batch_size, branches=setup.branches,
                                                         with_ids=True):
        batch = tf.nn.softmax(model(bottlenecks, training=False)).numpy()
        probabilities.update(zip(image_ids.numpy().astype(str), batch))
    return probabilities


def summary_text(results: dict) -> str:
    stages = "; ".join(f"{stage['node']} (lr {stage['learning_rate']:g}, {stage['steps']} steps, "
                       f"{stage['seconds']:.0f} s): top-1 {100 * stage['best_top1']:.2f} %, "
                       f"top-5 {100 * stage['best_top5']:.2f} %" for stage in results["stages"])
    baseline = results.get("baseline")
    versus = (f" Baseline (the stock model on the original images): top-1 {100 * baseline['top1']:.2f} %, "
              f"top-5 {100 * baseline['top5']:.2f} %.") if baseline else ""
    return (f"train_block_by_block: {len(results['stages'])} stages on {len(results['branches'])} branches "
            f"({', '.join(results['branches'])}). {stages}.{versus}")
