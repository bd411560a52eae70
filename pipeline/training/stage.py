"""One stage of the block-by-block trainer: train from its starting point, evaluate, keep the best,
stop.

A stage starts from the previous stage's best checkpoint (stage 0 from the initial head), evaluates
on validation every so often, writes a new best to its best checkpoint and its resume point to its
latest one, and ends on a validation plateau or at its epoch cap. Rerun after a kill, it resumes at
its last resume point with its step, plateau state and input stream where they were.
"""

import time

import numpy as np
import tensorflow as tf
import tqdm

from pipeline import config as config_lib
from pipeline import errors
from pipeline import interrupt
from pipeline.training import checkpoints
from pipeline.training import distribute
from pipeline.training import prepare as prepare_lib
from pipeline.training import results as results_lib
from pipeline.training import run_directory
from pipeline.training import steps as steps_lib
from pipeline.training import topology
from tfrecords import reader

LOSS_MARGIN = 1e-3  # a validation-loss tie-break must lower the loss by this fraction of it


def _stage_state() -> dict:
    """What a resumed stage needs besides the weights: where it was and how its plateau stood."""
    return {
        "step": tf.Variable(0, dtype=tf.int64),
        "best_top1": tf.Variable(-1.0, dtype=tf.float64),
        "best_top5": tf.Variable(0.0, dtype=tf.float64),
        "best_loss": tf.Variable(0.0, dtype=tf.float64),
        "best_step": tf.Variable(0, dtype=tf.int64),
        "steps_since_best": tf.Variable(0, dtype=tf.int64),
        "last_eval_step": tf.Variable(0, dtype=tf.int64),
        "seconds": tf.Variable(0.0, dtype=tf.float64),
    }  # wall time of the stage, across resumes


class StageRun:
    """One stage: train from its starting point, evaluate every so often, keep the best, stop on a
    plateau."""

    def __init__(
        self,
        setup: prepare_lib.Setup,
        stage: config_lib.Stage,
        logs,
        stop: interrupt.StopRequests | None = None,
    ):
        self.setup, self.stage, self.config, self.stop = setup, stage, setup.config, stop
        run = run_directory.RunDirectory(self.config.logdir)
        model, optimizer = prepare_lib.stage_model(setup, stage)
        with setup.strategy.scope():
            self.state = _stage_state()
            objects = setup.trainable_objects(stage.node)
            latest = tf.train.Checkpoint(optimizer=optimizer, **self.state, **objects)
            # Every worker resumes from the chief's checkpoints, and saves its own (see
            # distribute.writable).
            latest_directory = run.latest_checkpoints(stage)
            self.manager = tf.train.CheckpointManager(
                latest, run.writable(latest_directory), max_to_keep=1
            )
            self.best = tf.train.Checkpoint(**objects)
            self.best_path = run.best_checkpoint(stage)
            resume_point = tf.train.latest_checkpoint(latest_directory)
            if resume_point:
                latest.restore(resume_point).assert_existing_objects_matched()
            else:
                start_stage(setup, stage)
        distribute.check_agreement(
            setup.strategy,
            "the stage and step to resume at",
            (stage.index, int(self.state["step"].numpy())),
        )
        self.steps = steps_lib.Steps(
            setup.strategy, model, optimizer, self.config.batch_size, self.config.fusion
        )
        self.validation = distribute.distribute_dataset(
            setup.strategy,
            prepare_lib.stage_dataset(setup, stage.node, "validation", training=False),
        )
        self.writers = logs.stage_writers(stage, setup)
        self.seconds_before, self.started = (
            float(self.state["seconds"].numpy()),
            time.perf_counter(),
        )

    def run(self) -> results_lib.StageResult:
        config, state, stage = self.config, self.state, self.stage
        steps_per_epoch = self.setup.steps_per_epoch
        eval_every = min(config.eval_every_steps, steps_per_epoch)
        plateau_steps = max(1, round(config.plateau_epochs * steps_per_epoch))
        max_steps = max(1, round(config.max_epochs_per_stage * steps_per_epoch))
        step = int(state["step"].numpy())
        if (
            step == 0 and state["best_top1"].numpy() < 0
        ):  # the stage's starting point counts as a candidate
            self._evaluate_and_save(0)
        train = iter(
            distribute.distribute_training_dataset(
                self.setup.strategy,
                self._training_stream,
                config.batch_size,
                step,
                by_files=distribute.num_workers() > 1 and config.input_sharding == "file",
            )
        )
        interval = np.zeros(3)  # loss, correct, steps since the last evaluation
        with (
            tqdm.tqdm(
                total=max_steps,
                initial=step,
                unit="step",
                disable=not config.progress,
                desc=f"{stage.name} lr={stage.learning_rate:g}",
            ) as bar,
            reader.explained_data_loss(config.records_dir, stage.node, "train"),
        ):
            while step < max_steps and int(state["steps_since_best"].numpy()) < plateau_steps:
                loss, correct = self.steps.train(train)
                step += 1
                interval += (float(loss), float(correct), 1)
                bar.update(1)
                if self.stop is not None and self.stop.requested:
                    self._stop_at(step)
                if step % eval_every == 0 or step == max_steps:
                    state["step"].assign(step)
                    self.writers.train(
                        step,
                        {
                            "loss": interval[0] / interval[2],
                            "top1": interval[1] / (interval[2] * config.batch_size),
                        },
                        stage.learning_rate,
                    )
                    interval[:] = 0
                    top1 = self._evaluate_and_save(step)
                    bar.set_postfix(
                        top1=f"{top1:.4f}", best=f"{float(state['best_top1'].numpy()):.4f}"
                    )
        self.writers.close()
        # Also a barrier: no worker starts the next stage from this one's best before the chief has
        # written it.
        distribute.check_agreement(
            self.setup.strategy, "where the stage ended", (stage.index, step)
        )
        plateau = int(state["steps_since_best"].numpy()) >= plateau_steps
        return results_lib.StageResult(
            stage=stage.index,
            node=stage.node,
            thesis_block=self.setup.backbone.thesis_block_names.get(stage.node, stage.node),
            learning_rate=stage.learning_rate,
            steps=step,
            epochs=step / steps_per_epoch,
            best_step=int(state["best_step"].numpy()),
            best_top1=float(state["best_top1"].numpy()),
            best_top5=float(state["best_top5"].numpy()),
            best_loss=float(state["best_loss"].numpy()),
            checkpoint=self.best_path,
            seconds=self._seconds(),
            ended_by=results_lib.PLATEAU if plateau else results_lib.MAX_EPOCHS,
        )

    def _training_stream(
        self, batch_size: int, start_batch: int, file_shard: tuple[int, int] | None
    ):
        return prepare_lib.stage_dataset(
            self.setup,
            self.stage.node,
            "train",
            training=True,
            seed=self.config.seed + self.stage.index,
            start_batch=start_batch,
            batch_size=batch_size,
            file_shard=file_shard,
        )

    def _seconds(self) -> float:
        return self.seconds_before + time.perf_counter() - self.started

    def _stop_at(self, step: int) -> None:
        """Saves the resume point at `step` (the plateau bookkeeping carries on from it) and
        stops."""
        self.state["step"].assign(step)
        self.state["seconds"].assign(self._seconds())
        self.manager.save(checkpoint_number=step)
        self.writers.close()
        raise interrupt.Interrupted(
            f"stopped on {self.stop.signal_name} after step {step} of {self.stage.name}, "
            f"its resume point saved in {self.manager.directory}",
            self.stop.signal_number,
        )

    def _evaluate_and_save(self, step: int) -> float:
        """Validation metrics at `step`; a new best is written to the best checkpoint; then the
        resume point."""
        state = self.state
        with reader.explained_data_loss(self.config.records_dir, self.stage.node, "validation"):
            metrics_now = self.steps.evaluate(self.validation)
        steps_since_last = step - int(state["last_eval_step"].numpy())
        state["last_eval_step"].assign(step)
        best_top1 = float(state["best_top1"].numpy())
        # The plateau counts from the last higher top-1; a tie at a lower loss only replaces the
        # best checkpoint.
        if metrics_now["top1"] > best_top1:
            state["steps_since_best"].assign(0)
        else:
            state["steps_since_best"].assign_add(steps_since_last)
        if improves(metrics_now, best_top1, float(state["best_loss"].numpy())):
            state["best_top1"].assign(metrics_now["top1"])
            state["best_top5"].assign(metrics_now["top5"])
            state["best_loss"].assign(metrics_now["loss"])
            state["best_step"].assign(step)
            self.best.write(run_directory.RunDirectory.writable(self.best_path))
        self.writers.validation(
            step,
            {**metrics_now, "best_top1": float(state["best_top1"].numpy())},
            self.stage.learning_rate,
        )
        state["seconds"].assign(self._seconds())
        self.manager.save(checkpoint_number=step)
        return metrics_now["top1"]


def improves(metrics_now: dict, best_top1: float, best_loss: float) -> bool:
    """Whether a checkpoint beats the best: a higher validation top-1, or the same top-1 at a
    clearly lower loss.

    On a small or saturated validation split top-1 ties are common (59 images: 1.7 points each);
    breaking them by loss, as the learning-rate sweep does, keeps the better-fitting checkpoint. The
    relative margin keeps float noise from counting. Only a higher top-1 restarts the plateau count:
    the loss of a saturated split keeps falling long after accuracy stopped changing.
    """
    if metrics_now["top1"] != best_top1:
        return metrics_now["top1"] > best_top1
    return metrics_now["loss"] < best_loss - LOSS_MARGIN * abs(best_loss)


def start_stage(setup: prepare_lib.Setup, stage: config_lib.Stage) -> None:
    """Stage 0 initialises the head; every later stage starts from the previous stage's best."""
    if stage.index == 0:
        if setup.config.head_init == "baseline":
            if 0 not in setup.branches:
                raise errors.UserError(
                    "--head-init baseline needs the original branch 0 among --branches"
                )
            topology.init_head_from_classifier(
                setup.head,
                setup.backbone_model,
                np.arange(setup.num_classes),
                setup.branches.index(0),
                len(setup.branches),
            )
        return
    previous = setup.config.schedule[stage.index - 1]
    checkpoints.restore(
        setup.trainable_objects(previous.node),
        run_directory.RunDirectory(setup.config.logdir).best_checkpoint(previous),
    )
