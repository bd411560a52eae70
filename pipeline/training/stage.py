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

from pipeline import errors
from pipeline import interrupt
from pipeline.config import recipes
from pipeline.config import training as training_config
from pipeline.training import checkpoints
from pipeline.training import distribute
from pipeline.training import fusion as fusion_lib
from pipeline.training import input_pipeline
from pipeline.training import plateau as plateau_lib
from pipeline.training import prepare as prepare_lib
from pipeline.training import results as results_lib
from pipeline.training import run_directory
from pipeline.training import stacking
from pipeline.training import steps as steps_lib
from pipeline.training import topology
from tfrecords import reader


def _stage_state(learning_rate: float, phases: int) -> dict:
    """What a resumed stage needs besides the weights: where it was, how its plateau stood, its
    learning rate and the phases it has been through."""
    return {
        "step": tf.Variable(0, dtype=tf.int64),
        "best_top1": tf.Variable(-1.0, dtype=tf.float64),
        "best_top5": tf.Variable(0.0, dtype=tf.float64),
        "best_loss": tf.Variable(0.0, dtype=tf.float64),
        "best_step": tf.Variable(0, dtype=tf.int64),
        "steps_since_best": tf.Variable(0, dtype=tf.int64),
        "last_eval_step": tf.Variable(0, dtype=tf.int64),
        # wall time of the stage, across resumes
        "seconds": tf.Variable(0.0, dtype=tf.float64),
        "learning_rate": tf.Variable(learning_rate, dtype=tf.float64),
        "reductions": tf.Variable(0, dtype=tf.int64),
        "phase_start": tf.Variable(0, dtype=tf.int64),
        "phase_epochs": tf.Variable(np.zeros(phases), dtype=tf.float64),
    }


class StageRun:
    """One stage: train from its starting point, evaluate every so often, keep the best, end on a
    plateau (after the recipe's reductions of the learning rate) or at the epoch cap.

    A replay (its role's: --refit, --folds) trains the stage's phases again, each at its rate for
    its epochs, on the train and validation images, and keeps where it ends: nothing is chosen.
    """

    def __init__(
        self,
        setup: prepare_lib.Setup,
        stage: training_config.Stage,
        logs,
        stop: interrupt.StopRequests | None = None,
    ):
        self.setup, self.stage, self.config, self.stop = setup, stage, setup.config, stop
        run = run_directory.RunDirectory(self.config.logdir)
        self.model, self.optimizer = prepare_lib.stage_model(setup, stage)
        self.role = setup.role
        self.replay = None if self.role.replay is None else self.role.replay[stage.index]
        phases = len(self.replay) if self.replay is not None else self.config.lr_reductions + 1
        with setup.strategy.scope():
            self.state = _stage_state(stage.learning_rate, phases)
            objects = setup.trainable_objects(stage.node)
            latest = tf.train.Checkpoint(optimizer=self.optimizer, **self.state, **objects)
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
                self.optimizer.learning_rate.assign(float(self.state["learning_rate"].numpy()))
            else:
                start_stage(setup, stage)
        distribute.check_agreement(
            setup.strategy,
            "the stage and step to resume at",
            (stage.index, int(self.state["step"].numpy())),
        )
        self.steps = steps_lib.Steps(
            setup.strategy,
            self.model,
            self.optimizer,
            self.config.batch_size,
            self.config.fusion,
            joint=not self.config.rule.stacked_combiner,
        )
        self.validation = None
        if self.replay is None:
            self.validation = distribute.distribute_dataset(
                setup.strategy,
                input_pipeline.stage_dataset(setup, stage.node, "validation", training=False),
            )
        self.writers = logs.stage_writers(stage, setup)
        self.seconds_before, self.started = (
            float(self.state["seconds"].numpy()),
            time.perf_counter(),
        )

    @property
    def learning_rate(self) -> float:
        return float(self.state["learning_rate"].numpy())

    def run(self) -> results_lib.StageResult:
        config, state, stage = self.config, self.state, self.stage
        steps_per_epoch = self.setup.steps_per_epoch
        eval_every = min(config.eval_every_steps, steps_per_epoch)
        if self.replay is not None:
            boundaries = np.cumsum([round(phase.epochs * steps_per_epoch) for phase in self.replay])
            max_steps, rule = int(boundaries[-1]), None
        else:
            rule = self.plateau_rule
            max_steps = max(1, round(config.max_epochs_per_stage * steps_per_epoch))
        step = int(state["step"].numpy())
        if self.replay is None and step == 0 and state["best_top1"].numpy() < 0:
            self._evaluate_and_save(0)  # the stage's starting point counts as a candidate
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
        plateau = False
        with (
            tqdm.tqdm(
                total=max_steps,
                initial=step,
                unit="step",
                disable=not config.progress,
                desc=stage.name,
            ) as bar,
            reader.explained_data_loss(
                config.records_dir, self.setup.stage_nodes(stage.node), "train"
            ),
        ):
            while step < max_steps:
                decision = self._decision(rule)
                if decision == plateau_lib.REDUCE:
                    self._reduce(step)
                    continue
                if decision == plateau_lib.STOP:
                    plateau = True
                    break
                if self.replay is not None:
                    self._set_phase(int(np.searchsorted(boundaries, step, side="right")))
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
                        self.learning_rate,
                    )
                    interval[:] = 0
                    if self.replay is not None:
                        self._save_resume_point(step)
                        continue
                    top1 = self._evaluate_and_save(step)
                    bar.set_postfix(
                        lr=f"{self.learning_rate:g}",
                        top1=f"{top1:.4f}",
                        best=f"{float(state['best_top1'].numpy()):.4f}",
                    )
        plateau = plateau or self._decision(rule) != plateau_lib.CONTINUE
        combiner = None
        if self.replay is not None:
            if config.rule.stacked_combiner and config.fusion in fusion_lib.COMBINED:
                combiner = self._copy_combiner()
            self.best.write(run_directory.RunDirectory.writable(self.best_path))  # where it ends
        elif config.rule.stacked_combiner and config.fusion in fusion_lib.COMBINED:
            combiner = self._stack()
        self.writers.close()
        # Also a barrier: no worker starts the next stage from this one's best before the chief has
        # written it.
        distribute.check_agreement(
            self.setup.strategy, "where the stage ended", (stage.index, step)
        )
        return self._result(step, plateau, combiner)

    def _result(self, step: int, plateau: bool, combiner: dict | None) -> results_lib.StageResult:
        state, stage = self.state, self.stage
        steps_per_epoch = self.setup.steps_per_epoch
        evaluated = self.replay is None
        phases = self.replay or self._phases(step)
        return results_lib.StageResult(
            stage=stage.index,
            node=stage.node,
            thesis_block=self.setup.backbone.thesis_block_names.get(stage.node, stage.node),
            learning_rate=stage.learning_rate,
            steps=step,
            epochs=step / steps_per_epoch,
            best_step=int(state["best_step"].numpy()) if evaluated else step,
            best_top1=float(state["best_top1"].numpy()) if evaluated else None,
            best_top5=float(state["best_top5"].numpy()) if evaluated else None,
            best_loss=float(state["best_loss"].numpy()) if evaluated else None,
            checkpoint=self.best_path,
            seconds=self._seconds(),
            ended_by=results_lib.REPLAY
            if not evaluated
            else (results_lib.PLATEAU if plateau else results_lib.MAX_EPOCHS),
            phases=tuple(phases),
            combiner=combiner,
        )

    def _phases(self, step: int) -> list[training_config.Phase]:
        """The stretches of the stage at each rate that led to its best checkpoint, which a replay
        trains again: each from where the previous one's best was restored to its own best."""
        state = self.state
        steps_per_epoch = self.setup.steps_per_epoch
        reductions = int(state["reductions"].numpy())
        epochs = state["phase_epochs"].numpy()[: reductions + 1].tolist()
        epochs[reductions] = (
            max(0, int(state["best_step"].numpy()) - int(state["phase_start"].numpy()))
            / steps_per_epoch
        )
        first = self.stage.learning_rate
        return [
            training_config.Phase(first / recipes.REDUCTION_FACTOR**index, float(value))
            for index, value in enumerate(epochs)
        ]

    @property
    def plateau_rule(self) -> plateau_lib.Rule:
        """The recipe's plateau rule, its patience in steps: the config's epochs, or the data
        size's."""
        steps_per_epoch = self.setup.steps_per_epoch
        return plateau_lib.Rule(
            self.config.rule.plateau_metric,
            max(1, round(self.config.patience_epochs(steps_per_epoch) * steps_per_epoch)),
            self.config.lr_reductions,
        )

    def _decision(self, rule: plateau_lib.Rule | None) -> str:
        """Where the stage stands on its plateau rule (a replay has none: it continues)."""
        if rule is None:
            return plateau_lib.CONTINUE
        state = self.state
        return rule.decide(int(state["steps_since_best"].numpy()), int(state["reductions"].numpy()))

    def _set_learning_rate(self, value: float) -> None:
        self.state["learning_rate"].assign(value)
        self.optimizer.learning_rate.assign(value)

    def _set_phase(self, index: int) -> None:
        """In a replay: the learning rate of phase `index`."""
        value = self.replay[min(index, len(self.replay) - 1)].learning_rate
        if value != self.learning_rate:
            self._set_learning_rate(value)

    def _reduce(self, step: int) -> None:
        """A plateau the recipe meets with a lower rate: from the best checkpoint, the rate / 10."""
        state = self.state
        reductions = int(state["reductions"].numpy())
        gained = max(0, int(state["best_step"].numpy()) - int(state["phase_start"].numpy()))
        epochs = state["phase_epochs"].numpy()
        epochs[reductions] = gained / self.setup.steps_per_epoch
        state["phase_epochs"].assign(epochs)
        state["reductions"].assign(reductions + 1)
        with self.setup.strategy.scope():
            self.best.read(self.best_path).assert_existing_objects_matched()
        self._set_learning_rate(self.learning_rate / recipes.REDUCTION_FACTOR)
        state["steps_since_best"].assign(0)
        state["phase_start"].assign(step)
        state["step"].assign(step)
        self._save_resume_point(step)

    def _stack(self) -> dict:
        """weighted and gated: the best checkpoint's combiner learnt from held-out branch
        predictions (see pipeline.training.stacking), written back into the best checkpoint."""
        with self.setup.strategy.scope():
            self.best.read(self.best_path).assert_existing_objects_matched()
        held_out = stacking.held_out_predictions(self.setup, self.stage.node, self.model)
        outcome = stacking.fit(self.setup.combiner, held_out, seed=self.config.seed)
        self.best.write(run_directory.RunDirectory.writable(self.best_path))
        return outcome

    def _copy_combiner(self) -> dict:
        """A replay's combiner: the one its source run learnt for this stage."""
        source = run_directory.RunDirectory(self.role.combiner_source).best_checkpoint(self.stage)
        with self.setup.strategy.scope():
            tf.train.Checkpoint(fusion=self.setup.combiner).read(source).expect_partial()
        return {"kept": f"the combiner learnt by {self.role.combiner_source}"}

    def _training_stream(
        self, batch_size: int, start_batch: int, file_shard: tuple[int, int] | None
    ):
        return input_pipeline.stage_dataset(
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

    def _save_resume_point(self, step: int) -> None:
        self.state["seconds"].assign(self._seconds())
        self.manager.save(checkpoint_number=step)

    def _stop_at(self, step: int) -> None:
        """Saves the resume point at `step` (the plateau bookkeeping carries on from it) and
        stops."""
        self.state["step"].assign(step)
        self._save_resume_point(step)
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
        with reader.explained_data_loss(
            self.config.records_dir, self.setup.stage_nodes(self.stage.node), "validation"
        ):
            metrics_now = self.steps.evaluate(self.validation)
        steps_since_last = step - int(state["last_eval_step"].numpy())
        state["last_eval_step"].assign(step)
        best_top1, best_loss = float(state["best_top1"].numpy()), float(state["best_loss"].numpy())
        judgement = self.plateau_rule.judge(metrics_now, best_top1, best_loss)
        if judgement.restarts:
            state["steps_since_best"].assign(0)
        else:
            state["steps_since_best"].assign_add(steps_since_last)
        if judgement.replaces:
            state["best_top1"].assign(metrics_now["top1"])
            state["best_top5"].assign(metrics_now["top5"])
            state["best_loss"].assign(metrics_now["loss"])
            state["best_step"].assign(step)
            self.best.write(run_directory.RunDirectory.writable(self.best_path))
        self.writers.validation(
            step,
            {**metrics_now, "best_top1": float(state["best_top1"].numpy())},
            self.learning_rate,
        )
        self._save_resume_point(step)
        return metrics_now["top1"]


def start_stage(setup: prepare_lib.Setup, stage: training_config.Stage) -> None:
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
    previous = setup.schedule[stage.index - 1]
    checkpoints.restore(
        setup.trainable_objects(previous.node),
        run_directory.RunDirectory(setup.config.logdir).best_checkpoint(previous),
    )
