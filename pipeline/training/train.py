"""The block-by-block trainer: one stage per node, plateau and ÷10 schedule, one machine or several, resume.

LOGDIR/
  config.json                  the run's settings; a rerun must match them to resume
  results.json                 per stage: node, learning rate, steps, best top-1/top-5, checkpoint, ended_by
  sweep/lr<rate>/              with --learning-rate auto: one short stage-0 run per candidate rate
  seed<k>/                     with --seeds N: one whole run per seed (results.json then holds mean ± sd)
  stage<k>_<node>/train|validation   TensorBoard runs, one per stage (the stage folder holds its hparams)
  stages/                      TensorBoard: best top-1 per stage, a sample's JPEG ladder
  events.out.tfevents.*        TensorBoard: the hparams experiment (best top-1 as its metric)
  checkpoints/                 per stage, its resume point and its best (see pipeline.training.checkpoints)
  export/                      the model that classifies raw images (see pipeline.training.export)
With --strategy multiworker every worker runs all of this; the chief alone writes LOGDIR (see
pipeline.training.distribute), and every worker reads from it where to resume.
"""

import dataclasses
import os
import time

import numpy as np
import tensorflow as tf
import tqdm

from bottlenecks import cut
from pipeline import config as config_lib
from pipeline import interrupt
from pipeline.training import checkpoints
from pipeline.training import distribute
from pipeline.training import export
from pipeline.training import heads
from pipeline.training import metrics
from pipeline.training import prepare as prepare_lib
from pipeline.training import steps as steps_lib
from pipeline.training import tensorboard_logs
from pipeline.training import topology
from tfrecords import fileio
from tfrecords import manifest as manifest_lib
from tfrecords import reader

RESULTS_NAME = "results.json"

prepare = prepare_lib.prepare


LOSS_MARGIN = 1e-3  # a validation-loss tie-break must lower the loss by this fraction of it
CAP_WARNING = "hit the epoch cap while still improving: raise --max-epochs-per-stage"
NO_CLASSIFIER_NOTE = ("no stock-model baseline: the backbone is an image feature vector model without an ImageNet "
                      "classifier; train the single-branch baseline with --branches 0")


def train_and_evaluate(config: config_lib.TrainConfig, stop: interrupt.StopRequests | None = None,
                       announce: bool = True) -> dict:
    """Runs (or resumes) every stage and returns results.json's content.

    With `stop` (see pipeline.interrupt), a SIGINT/SIGTERM stops training after the step in progress,
    with the stage's resume point saved, and raises interrupt.Interrupted; the same call resumes.
    """
    if config.strategy != "multiworker":
        return _train(config, stop, announce)
    # Before anything else: collective ops can only be set up before TensorFlow has run an op.
    strategy = distribute.make_strategy(config.strategy, collective_timeout=config.collective_timeout)
    try:
        if distribute.num_workers() > 1:
            config = _choose_input_sharding(config, strategy)
        return _train(config, stop, announce)
    except distribute.PEER_ERRORS as error:
        if not distribute.is_peer_failure(error):
            raise
        raise RuntimeError(distribute.peer_failure_message(error, config.logdir, config.collective_timeout)) \
            from None
    finally:
        distribute.remove_scratch()


def _choose_input_sharding(config: config_lib.TrainConfig, strategy: tf.distribute.Strategy
                           ) -> config_lib.TrainConfig:
    """The config with its input sharding resolved to data or file for this cluster, said in one line."""
    num_shards = manifest_lib.Manifest.read(config.records_dir).split("train").num_shards
    sharding, reason = distribute.choose_input_sharding(config.input_sharding, num_shards, distribute.num_workers(),
                                                        config.batch_size, strategy.num_replicas_in_sync)
    print(reason)
    return dataclasses.replace(config, input_sharding=sharding)


def _train(config: config_lib.TrainConfig, stop: interrupt.StopRequests | None, announce: bool = True,
           baseline: bool = True) -> dict:
    if config.seeds > 1:
        return _train_seeds(config, stop)
    nodes = prepare_lib.stage_nodes(config)  # bad flags fail here, before anything is recorded or swept
    sweep = learning_rate_sweep(config, nodes[0], stop)
    setup = prepare(config, sweep["chosen"])
    _check_config(config)
    results_path = os.path.join(config.logdir, RESULTS_NAME)
    results = fileio.read_json(results_path) or _new_results(setup)
    results["learning_rate_sweep"] = sweep
    logs = tensorboard_logs.RunLogs(distribute.writable(config.logdir))
    if baseline and "baseline" not in results and setup.label_map is not None:
        results["baseline"] = evaluate_baseline(setup)
        fileio.write_json_atomic(distribute.writable(results_path), results)
    logs.sample_ladder(setup.manifest, config.records_dir)
    done = {stage["node"] for stage in results["stages"]}
    for stage in setup.stages:
        if stage.node in done:
            continue
        outcome = _StageRun(setup, stage, logs, stop).run()
        results["stages"].append(outcome)
        fileio.write_json_atomic(distribute.writable(results_path), results)
        logs.stage_summary(stage, outcome, config, setup)
    if config.export and setup.manifest.codes:
        results["export_skipped"] = ("the records hold autoencoder codes: a raw-image model would need the "
                                     "encoder, so no export/ is written")
        fileio.write_json_atomic(distribute.writable(results_path), results)
    elif config.export and not (results.get("export") and os.path.isdir(results["export"]["path"])):
        best = results["stages"][-1]["checkpoint"]
        results["export"] = export.export_model(setup, setup.stages[-1], best,
                                                distribute.writable(os.path.join(config.logdir, "export")))
        fileio.write_json_atomic(distribute.writable(results_path), results)
    if announce:
        print(summary_text(results))
    return results


def _new_results(setup: prepare_lib.Setup) -> dict:
    config = setup.config
    return {"records": fileio.abspath(config.records_dir), "backbone": setup.backbone.name,
            "branches": [setup.manifest.branches[branch] for branch in setup.branches],
            "branch_indices": list(setup.branches), "fusion": config.fusion, "optimizer": config.optimizer,
            "head": heads.description(config.head, config.hidden_units, config.activation, config.dropout),
            "seed": config.seed,
            "label_space": "imagenet" if setup.label_map is not None else "dataset",
            "global_batch_size": setup.config.batch_size, "replicas": setup.strategy.num_replicas_in_sync,
            **({} if setup.backbone.has_classifier else {"baseline_note": NO_CLASSIFIER_NOTE}),
            "workers": distribute.num_workers(),
            **({"input_sharding": config.input_sharding} if distribute.num_workers() > 1 else {}),
            "stages": []}


def learning_rate_sweep(config: config_lib.TrainConfig, first_node: str,
                        stop: interrupt.StopRequests | None = None) -> dict:
    """The first stage's learning rate: the given one, or with "auto" the best on validation of a sweep.

    Each candidate trains the first stage from the same start for sweep_epochs under the same plateau
    rule; the highest validation top-1 wins, ties going to the lower validation loss. Finished
    candidates are kept, so a rerun resumes the sweep.
    """
    if not isinstance(config.learning_rate, str):
        return {"chosen": float(config.learning_rate), "candidates": []}
    directory = config.sweep_dir or os.path.join(config.logdir, "sweep")
    seed = config.seed if config.sweep_seed is None else config.sweep_seed
    candidates = []
    for rate in config.sweep_rates:
        trial = dataclasses.replace(
            config, logdir=os.path.join(directory, f"lr{rate:g}"), stages=(first_node,), learning_rate=rate,
            max_epochs_per_stage=config.sweep_epochs, seed=seed, sweep_dir=None, sweep_seed=None, export=False)
        # A candidate is judged by its own validation top-1: the stock model's, the same for every
        # candidate, is left to the run itself.
        stage = _train(trial, stop, announce=False, baseline=False)["stages"][0]
        candidates.append({"learning_rate": rate, "validation_top1": stage["best_top1"],
                           "validation_loss": stage["best_loss"], "ended_by": stage["ended_by"]})
    best = max(candidates, key=lambda row: (row["validation_top1"], -row["validation_loss"]))
    tried = ", ".join(f"{row['learning_rate']:g} ({100 * row['validation_top1']:.2f} %, loss "
                      f"{row['validation_loss']:.4f})" for row in candidates)
    print(f"learning-rate sweep ({config.sweep_epochs:g} epochs each at {first_node}; validation top-1, loss): "
          f"{tried}; chose {best['learning_rate']:g}")
    sweep = {"chosen": best["learning_rate"], "candidates": candidates, "node": first_node,
             "epochs": config.sweep_epochs, "directory": directory}
    fileio.write_json_atomic(distribute.writable(os.path.join(directory, "sweep.json")), sweep)
    return sweep


def _train_seeds(config: config_lib.TrainConfig, stop: interrupt.StopRequests | None) -> dict:
    """N independent runs (seeded initialisation and shuffling) sharing one sweep; results as mean ± sd."""
    runs = []
    for index in range(config.seeds):
        run = dataclasses.replace(config, logdir=os.path.join(config.logdir, f"seed{index}"), seeds=1,
                                  seed=config.seed + index,
                                  sweep_dir=config.sweep_dir or os.path.join(config.logdir, "sweep"),
                                  sweep_seed=config.seed if config.sweep_seed is None else config.sweep_seed)
        runs.append(_train(run, stop))
    stages = []
    for position, first in enumerate(runs[0]["stages"]):
        per_seed = [run["stages"][position] for run in runs]
        entry = {key: first[key] for key in ("stage", "node", "thesis_block", "learning_rate")}
        for metric in ("best_top1", "best_top5", "steps", "seconds"):
            values = np.asarray([stage[metric] for stage in per_seed], np.float64)
            entry[metric] = float(values.mean())
            entry[f"{metric}_std"] = float(values.std(ddof=1))
            entry[f"{metric}_per_seed"] = values.tolist()
        entry["ended_by"] = "max_epochs" if any(stage["ended_by"] == "max_epochs" for stage in per_seed) \
            else "plateau"
        entry["ended_by_per_seed"] = [stage["ended_by"] for stage in per_seed]
        entry["checkpoint"] = first["checkpoint"]
        stages.append(entry)
    results = {**{key: value for key, value in runs[0].items() if key not in ("stages", "export", "seed")},
               "seeds": [run["seed"] for run in runs], "seed_logdirs": [os.path.join(config.logdir, f"seed{index}")
                                                                         for index in range(config.seeds)],
               "stages": stages}
    os.makedirs(distribute.writable(config.logdir), exist_ok=True)
    fileio.write_json_atomic(distribute.writable(os.path.join(config.logdir, RESULTS_NAME)), results)
    print(summary_text(results))
    return results


def _check_config(config: config_lib.TrainConfig) -> None:
    os.makedirs(distribute.writable(config.logdir), exist_ok=True)
    settings = {key: list(value) if isinstance(value, tuple) else value
                for key, value in dataclasses.asdict(config).items()
                # Resuming on other devices or machines, with another input sharding (or without a progress bar)
                # is still the same run.
                if key not in ("progress", "export", "devices", "strategy", "collective_timeout", "input_sharding")}
    path = os.path.join(config.logdir, "config.json")
    stored = fileio.read_json(path)
    if stored is None:
        fileio.write_json_atomic(distribute.writable(path), settings)
    elif stored != settings:
        changed = sorted(key for key in settings if settings.get(key) != stored.get(key))
        raise ValueError(f"{config.logdir} holds a run with other settings (differing in: {', '.join(changed)}); "
                         f"rerun with the same flags to resume it, or choose another --logdir")


def _stage_state() -> dict:
    """What a resumed stage needs besides the weights: where it was and how its plateau stood."""
    return {"step": tf.Variable(0, dtype=tf.int64), "best_top1": tf.Variable(-1.0, dtype=tf.float64),
            "best_top5": tf.Variable(0.0, dtype=tf.float64), "best_loss": tf.Variable(0.0, dtype=tf.float64),
            "best_step": tf.Variable(0, dtype=tf.int64),
            "steps_since_best": tf.Variable(0, dtype=tf.int64), "last_eval_step": tf.Variable(0, dtype=tf.int64),
            "seconds": tf.Variable(0.0, dtype=tf.float64)}  # wall time of the stage, across resumes


class _StageRun:
    """One stage: train from its starting point, evaluate every so often, keep the best, stop on a plateau."""

    def __init__(self, setup: prepare_lib.Setup, stage: checkpoints.Stage, logs,
                 stop: interrupt.StopRequests | None = None):
        self.setup, self.stage, self.config, self.stop = setup, stage, setup.config, stop
        model, optimizer = prepare_lib.stage_model(setup, stage)
        with setup.strategy.scope():
            self.state = _stage_state()
            objects = setup.trainable_objects(stage.node)
            latest = tf.train.Checkpoint(optimizer=optimizer, **self.state, **objects)
            # Every worker resumes from the chief's checkpoints, and saves its own (see distribute.writable).
            latest_directory = checkpoints.latest_directory(self.config.logdir, stage)
            self.manager = tf.train.CheckpointManager(latest, distribute.writable(latest_directory), max_to_keep=1)
            self.best = tf.train.Checkpoint(**objects)
            self.best_path = checkpoints.best_path(self.config.logdir, stage)
            resume_point = tf.train.latest_checkpoint(latest_directory)
            if resume_point:
                latest.restore(resume_point).assert_existing_objects_matched()
            else:
                _start_stage(setup, stage)
        distribute.check_agreement(setup.strategy, "the stage and step to resume at",
                                   (stage.index, int(self.state["step"].numpy())))
        self.steps = steps_lib.Steps(setup.strategy, model, optimizer, self.config.batch_size, self.config.fusion)
        self.validation = distribute.distribute_dataset(
            setup.strategy, prepare_lib.stage_dataset(setup, stage.node, "validation", training=False))
        self.writers = logs.stage_writers(stage, self.config, setup)
        self.seconds_before, self.started = float(self.state["seconds"].numpy()), time.perf_counter()

    def run(self) -> dict:
        config, state, stage = self.config, self.state, self.stage
        steps_per_epoch = self.setup.steps_per_epoch
        eval_every = min(config.eval_every_steps, steps_per_epoch)
        plateau_steps = max(1, round(config.plateau_epochs * steps_per_epoch))
        max_steps = max(1, round(config.max_epochs_per_stage * steps_per_epoch))
        step = int(state["step"].numpy())
        if step == 0 and state["best_top1"].numpy() < 0:  # the stage's starting point counts as a candidate
            self._evaluate_and_save(0)
        train = iter(distribute.distribute_training_dataset(
            self.setup.strategy, self._training_stream, config.batch_size, step,
            by_files=distribute.num_workers() > 1 and config.input_sharding == "file"))
        interval = np.zeros(3)  # loss, correct, steps since the last evaluation
        with tqdm.tqdm(total=max_steps, initial=step, unit="step", disable=not config.progress,
                       desc=f"{stage.name} lr={stage.learning_rate:g}") as bar, \
                reader.explained_data_loss(config.records_dir, stage.node, "train"):
            while step < max_steps and int(state["steps_since_best"].numpy()) < plateau_steps:
                loss, correct = self.steps.train(train)
                step += 1
                interval += (float(loss), float(correct), 1)
                bar.update(1)
                if self.stop is not None and self.stop.requested:
                    self._stop_at(step)
                if step % eval_every == 0 or step == max_steps:
                    state["step"].assign(step)
                    self.writers.train(step, {"loss": interval[0] / interval[2],
                                              "top1": interval[1] / (interval[2] * config.batch_size)},
                                       stage.learning_rate)
                    interval[:] = 0
                    top1 = self._evaluate_and_save(step)
                    bar.set_postfix(top1=f"{top1:.4f}", best=f"{float(state['best_top1'].numpy()):.4f}")
        self.writers.close()
        # Also a barrier: no worker starts the next stage from this one's best before the chief has written it.
        distribute.check_agreement(self.setup.strategy, "where the stage ended", (stage.index, step))
        ended_by = "plateau" if int(state["steps_since_best"].numpy()) >= plateau_steps else "max_epochs"
        return {"stage": stage.index, "node": stage.node,
                "thesis_block": self.setup.backbone.thesis_block_names.get(stage.node, stage.node),
                "learning_rate": stage.learning_rate, "steps": step, "epochs": step / steps_per_epoch,
                "best_step": int(state["best_step"].numpy()),
                "best_top1": float(state["best_top1"].numpy()), "best_top5": float(state["best_top5"].numpy()),
                "best_loss": float(state["best_loss"].numpy()), "checkpoint": self.best_path,
                "seconds": self._seconds(), "ended_by": ended_by}

    def _training_stream(self, batch_size: int, start_batch: int, file_shard: tuple[int, int] | None):
        return prepare_lib.stage_dataset(self.setup, self.stage.node, "train", training=True,
                                         seed=self.config.seed + self.stage.index, start_batch=start_batch,
                                         batch_size=batch_size, file_shard=file_shard)

    def _seconds(self) -> float:
        return self.seconds_before + time.perf_counter() - self.started

    def _stop_at(self, step: int) -> None:
        """Saves the resume point at `step` (the plateau bookkeeping carries on from it) and stops."""
        self.state["step"].assign(step)
        self.state["seconds"].assign(self._seconds())
        self.manager.save(checkpoint_number=step)
        self.writers.close()
        raise interrupt.Interrupted(f"stopped on {self.stop.signal_name} after step {step} of {self.stage.name}, "
                                    f"its resume point saved in {self.manager.directory}", self.stop.signal_number)

    def _evaluate_and_save(self, step: int) -> float:
        """Validation metrics at `step`; a new best is written to the best checkpoint; then the resume point."""
        state = self.state
        with reader.explained_data_loss(self.config.records_dir, self.stage.node, "validation"):
            metrics_now = self.steps.evaluate(self.validation)
        steps_since_last = step - int(state["last_eval_step"].numpy())
        state["last_eval_step"].assign(step)
        best_top1 = float(state["best_top1"].numpy())
        # The plateau counts from the last higher top-1; a tie at a lower loss only replaces the best checkpoint.
        if metrics_now["top1"] > best_top1:
            state["steps_since_best"].assign(0)
        else:
            state["steps_since_best"].assign_add(steps_since_last)
        if _improves(metrics_now, best_top1, float(state["best_loss"].numpy())):
            state["best_top1"].assign(metrics_now["top1"])
            state["best_top5"].assign(metrics_now["top5"])
            state["best_loss"].assign(metrics_now["loss"])
            state["best_step"].assign(step)
            self.best.write(distribute.writable(self.best_path))
        self.writers.validation(step, {**metrics_now, "best_top1": float(state["best_top1"].numpy())},
                                self.stage.learning_rate)
        state["seconds"].assign(self._seconds())
        self.manager.save(checkpoint_number=step)
        return metrics_now["top1"]


def _improves(metrics_now: dict, best_top1: float, best_loss: float) -> bool:
    """Whether a checkpoint beats the best: a higher validation top-1, or the same top-1 at a clearly lower loss.

    On a small or saturated validation split top-1 ties are common (59 images: 1.7 points each);
    breaking them by loss, as the learning-rate sweep does, keeps the better-fitting checkpoint. The
    relative margin keeps float noise from counting. Only a higher top-1 restarts the plateau count:
    the loss of a saturated split keeps falling long after accuracy stopped changing.
    """
    if metrics_now["top1"] != best_top1:
        return metrics_now["top1"] > best_top1
    return metrics_now["loss"] < best_loss - LOSS_MARGIN * abs(best_loss)


def _start_stage(setup: prepare_lib.Setup, stage: checkpoints.Stage) -> None:
    """Stage 0 initialises the head; every later stage starts from the previous stage's best."""
    if stage.index == 0:
        if setup.config.head_init == "baseline":
            if 0 not in setup.branches:
                raise ValueError("--head-init baseline needs the original branch 0 among --branches")
            topology.init_head_from_classifier(setup.head, setup.backbone_model, np.arange(setup.num_classes),
                                               setup.branches.index(0), len(setup.branches))
        return
    previous = setup.stages[stage.index - 1]
    checkpoints.restore(setup.trainable_objects(previous.node), checkpoints.best_path(setup.config.logdir, previous))


def evaluate_baseline(setup: prepare_lib.Setup) -> dict:
    """The stock backbone's top-1/top-5 on the original images, from the first stage's records."""
    node = setup.stages[0].node
    tail = cut.tail(setup.backbone_model, node)
    classifier = cut.classifier_layer(setup.backbone_model)
    totals = np.zeros(3)
    with reader.explained_data_loss(setup.config.records_dir, node, "validation"):
        for bottlenecks, labels in prepare_lib.stage_dataset(setup, node, "validation", training=False,
                                                             branches=(0,)):
            probabilities = classifier(tail(bottlenecks[:, 0], training=False))
            totals += [float(metrics.correct_in_top_k(probabilities, labels, k)) for k in (1, 5)] + [len(labels)]
    return {"node": node, "top1": totals[0] / totals[2], "top5": totals[1] / totals[2]}


def predict_records(setup: prepare_lib.Setup, stage: checkpoints.Stage, checkpoint_path: str,
                    split: str = "validation") -> dict:
    """Class probabilities per image id, from the cached bottlenecks of `stage` with a stage checkpoint."""
    model = setup.build_model(stage.node)  # built first, so that every weight exists to be restored
    checkpoints.restore(setup.trainable_objects(stage.node), checkpoint_path)
    probabilities = {}
    with reader.explained_data_loss(setup.config.records_dir, stage.node, split):
        for bottlenecks, _, image_ids in reader.make_dataset(setup.config.records_dir, stage.node, split,
                                                             setup.config.batch_size, branches=setup.branches,
                                                             with_ids=True):
            batch = tf.nn.softmax(model(bottlenecks, training=False)["logits"]).numpy()
            probabilities.update(zip(image_ids.numpy().astype(str), batch))
    return probabilities


def summary_text(results: dict) -> str:
    def spread(stage, metric):
        return f" ± {100 * stage[metric + '_std']:.2f}" if metric + "_std" in stage else ""

    stages = "; ".join(f"{stage['node']} (lr {stage['learning_rate']:g}, {stage['steps']:.0f} steps, "
                       f"{stage['seconds']:.0f} s): validation top-1 {100 * stage['best_top1']:.2f}"
                       f"{spread(stage, 'best_top1')} %, top-5 {100 * stage['best_top5']:.2f} %"
                       + (f" (WARNING: {CAP_WARNING})" if stage["ended_by"] == "max_epochs" else "")
                       for stage in results["stages"])
    seeds = f" Mean ± sd over seeds {results['seeds']}." if "seeds" in results else ""
    baseline = results.get("baseline")
    versus = (f" Baseline (the stock model on the original images): top-1 {100 * baseline['top1']:.2f} %, "
              f"top-5 {100 * baseline['top5']:.2f} %.") if baseline else ""
    if not baseline and results.get("baseline_note"):
        versus = f" Note: {results['baseline_note']}."
    return (f"train_block_by_block: {len(results['stages'])} stages on {len(results['branches'])} branches "
            f"({', '.join(results['branches'])}), fusion {results.get('fusion', 'concat')}. {stages}.{versus}"
            f"{seeds}")
