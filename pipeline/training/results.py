"""results.json of a training run, typed: the run's set-up, and per stage its node, steps and best
scores.

    Results            records, backbone, branches, fusion, head, recipe, ...; stages; the
                       learning-rate sweep; the stock model's baseline; the export; the refit; over
                       --seeds N also the seeds and their runs
      stages: [StageResult]   node, learning rate, steps, best validation top-1/top-5/loss,
                              checkpoint, seconds, ended_by (plateau | max_epochs | replay), the
                              phases at each rate; over seeds, the mean with each metric's sd and
                              per-seed values

Code that reads a run asks `results.stages[0].best_top1`; `to_json`/`from_json` keep the file's
shape.
"""

import dataclasses

import numpy as np

from pipeline.config import training as training_config

CAP_WARNING = "hit the epoch cap while still improving: raise --max-epochs-per-stage"
# How a stage ended: a plateau of its validation metric, its epoch cap while still improving, the
# end of a replayed schedule (--refit, --folds: no validation to end on), or its layer solved
# (pipeline.training.solved).
PLATEAU, MAX_EPOCHS, REPLAY, SOLVED = "plateau", "max_epochs", "replay", "solved"
# What a stage over several seeds reports as mean, sd and per-seed values.
SEED_METRICS = ("best_top1", "best_top5", "steps", "seconds")


def _drop_none(entry: dict) -> dict:
    return {key: value for key, value in entry.items() if value is not None}


@dataclasses.dataclass(frozen=True)
class StageResult:
    """One stage: the node it read, how long it trained, its best validation scores and how it
    ended."""

    stage: int
    node: str
    thesis_block: str
    learning_rate: float | None  # None for a solved stage
    steps: float  # training steps, or a solved stage's solver iterations
    best_top1: float | None  # None for a replay, which has no validation images
    best_top5: float | None
    checkpoint: str  # the best checkpoint (of the first seed, over seeds)
    seconds: float
    ended_by: str  # plateau, max_epochs (the cap came while still improving) or replay
    epochs: float | None = None
    best_step: int | None = None
    best_loss: float | None = None
    # The stretches at each learning rate that led to the best checkpoint: what a replay trains.
    phases: tuple[training_config.Phase, ...] = ()
    combiner: dict | None = None  # weighted and gated, stacked: how the branch weights were learnt
    # A solved stage: the method, the chosen L2 strength, the path (pipeline.training.solved).
    solver: dict | None = None
    # Over --seeds N (the metrics above are then means): each metric's sd and per-seed values.
    std: dict = dataclasses.field(default_factory=dict)
    per_seed: dict = dataclasses.field(default_factory=dict)
    ended_by_per_seed: tuple[str, ...] = ()

    @property
    def capped(self) -> bool:
        """Whether the stage hit its epoch cap while still improving: its scores understate the
        stage."""
        return self.ended_by == MAX_EPOCHS

    def to_json(self) -> dict:
        entry = _drop_none(
            {
                "stage": self.stage,
                "node": self.node,
                "thesis_block": self.thesis_block,
                "learning_rate": self.learning_rate,
                "steps": self.steps,
                "best_top1": self.best_top1,
                "best_top5": self.best_top5,
                "checkpoint": self.checkpoint,
                "seconds": self.seconds,
                "ended_by": self.ended_by,
                "epochs": self.epochs,
                "best_step": self.best_step,
                "best_loss": self.best_loss,
                "combiner": self.combiner,
                "solver": self.solver,
            }
        )
        if self.phases:
            entry["phases"] = [dataclasses.asdict(phase) for phase in self.phases]
        entry.update({f"{metric}_std": value for metric, value in self.std.items()})
        entry.update(
            {f"{metric}_per_seed": list(values) for metric, values in self.per_seed.items()}
        )
        if self.ended_by_per_seed:
            entry["ended_by_per_seed"] = list(self.ended_by_per_seed)
        return entry

    @classmethod
    def from_json(cls, entry: dict) -> "StageResult":
        names = {field.name for field in dataclasses.fields(cls)} - {
            "std",
            "per_seed",
            "ended_by_per_seed",
            "phases",
        }
        return cls(
            phases=tuple(training_config.Phase(**phase) for phase in entry.get("phases", ())),
            # A replay's scores and a solved stage's learning rate are None, which to_json leaves
            # out.
            **{"best_top1": None, "best_top5": None, "learning_rate": None}
            | {key: value for key, value in entry.items() if key in names},
            std={
                key[: -len("_std")]: value for key, value in entry.items() if key.endswith("_std")
            },
            per_seed={
                key[: -len("_per_seed")]: tuple(value)
                for key, value in entry.items()
                if key.endswith("_per_seed") and key != "ended_by_per_seed"
            },
            ended_by_per_seed=tuple(entry.get("ended_by_per_seed", ())),
        )

    @classmethod
    def over_seeds(cls, per_seed: list["StageResult"]) -> "StageResult":
        """One stage of N seeded runs: mean, sd and per-seed values; capped when any seed was."""
        first = per_seed[0]
        means, spreads, values = {}, {}, {}
        for metric in SEED_METRICS:
            if any(getattr(stage, metric) is None for stage in per_seed):  # replays: no validation
                means[metric] = None
                continue
            array = np.asarray([getattr(stage, metric) for stage in per_seed], np.float64)
            means[metric], spreads[metric], values[metric] = (
                float(array.mean()),
                float(array.std(ddof=1)),
                tuple(array.tolist()),
            )
        ended = tuple(stage.ended_by for stage in per_seed)
        return cls(
            stage=first.stage,
            node=first.node,
            thesis_block=first.thesis_block,
            learning_rate=first.learning_rate,
            checkpoint=first.checkpoint,
            ended_by=MAX_EPOCHS
            if MAX_EPOCHS in ended
            else (ended[0] if len(set(ended)) == 1 else PLATEAU),
            phases=first.phases,
            solver=first.solver,
            std=spreads,
            per_seed=values,
            ended_by_per_seed=ended,
            **means,
        )


@dataclasses.dataclass(frozen=True)
class SweepCandidate:
    """One learning rate of a sweep: its first stage's best validation scores, the mean over the
    sweep's seeds (or folds), and each one's loss."""

    learning_rate: float
    validation_top1: float
    validation_loss: float
    ended_by: str
    validation_loss_per_run: tuple[float, ...] = ()

    @classmethod
    def from_json(cls, entry: dict) -> "SweepCandidate":
        return cls(
            **{**entry, "validation_loss_per_run": tuple(entry.get("validation_loss_per_run", ()))}
        )


@dataclasses.dataclass(frozen=True)
class Sweep:
    """The first stage's learning rate: given (no candidates), or chosen on validation among
    candidates."""

    chosen: float | None  # None: no stage trains by SGD (every one is solved)
    candidates: tuple[SweepCandidate, ...] = ()
    node: str | None = None
    epochs: float | None = None
    directory: str | None = None
    chosen_by: str | None = None  # what decided, on how many images

    def to_json(self) -> dict:
        return {
            "chosen": self.chosen,
            "candidates": [dataclasses.asdict(row) for row in self.candidates],
            **_drop_none(
                {
                    "node": self.node,
                    "epochs": self.epochs,
                    "directory": self.directory,
                    "chosen_by": self.chosen_by,
                }
            ),
        }

    @classmethod
    def from_json(cls, entry: dict) -> "Sweep":
        return cls(
            chosen=entry["chosen"],
            candidates=tuple(SweepCandidate.from_json(row) for row in entry["candidates"]),
            node=entry.get("node"),
            epochs=entry.get("epochs"),
            directory=entry.get("directory"),
            chosen_by=entry.get("chosen_by"),
        )


@dataclasses.dataclass(frozen=True)
class Baseline:
    """The stock backbone on the original images (validation split)."""

    node: str
    top1: float
    top5: float


@dataclasses.dataclass(frozen=True)
class Results:
    """A training run: what it trained on and with, and what each stage reached."""

    records: str
    backbone: str
    branches: tuple[str, ...]  # names, e.g. original, q10
    branch_indices: tuple[int, ...]
    fusion: str
    optimizer: str
    head: dict  # heads.description()
    label_space: str  # imagenet (the backbone's 1000 classes) or dataset
    global_batch_size: int
    replicas: int
    workers: int
    stages: tuple[StageResult, ...] = ()
    seed: int | None = None
    learning_rate_sweep: Sweep | None = None
    baseline: Baseline | None = None
    baseline_note: str | None = None
    input_sharding: str | None = None
    export: dict | None = None  # {"path", "node"} of LOGDIR/export
    export_skipped: str | None = None
    seeds: tuple[int, ...] | None = None  # over --seeds N
    seed_logdirs: tuple[str, ...] | None = None
    recipe: str | None = None  # converged or thesis (None: made before recipes existed: thesis)
    # How many images each choice (learning rate, stopping point) rests on, in words.
    selection: str | None = None
    # --refit: the model trained again on train + validation with the selected schedule,
    # {"logdir", "export"}; its own results.json is in its logdir.
    refit: dict | None = None
    # Why the first stage trained by SGD although the recipe solves linear heads (e.g. its features
    # exceed --solver-memory-mb); see pipeline.training.solved.
    solver_note: str | None = None

    def stage(self, node: str) -> StageResult | None:
        return next((stage for stage in self.stages if stage.node == node), None)

    def with_stage(self, stage: StageResult) -> "Results":
        return dataclasses.replace(self, stages=self.stages + (stage,))

    def to_json(self) -> dict:
        entry = {field.name: getattr(self, field.name) for field in dataclasses.fields(self)}
        entry.update(
            branches=list(self.branches),
            branch_indices=list(self.branch_indices),
            stages=[stage.to_json() for stage in self.stages],
            learning_rate_sweep=self.learning_rate_sweep and self.learning_rate_sweep.to_json(),
            baseline=self.baseline and dataclasses.asdict(self.baseline),
            seeds=self.seeds and list(self.seeds),
            seed_logdirs=self.seed_logdirs and list(self.seed_logdirs),
        )
        return _drop_none(entry)

    @classmethod
    def from_json(cls, entry: dict) -> "Results":
        names = {field.name for field in dataclasses.fields(cls)}
        known = {key: value for key, value in entry.items() if key in names}
        known.update(
            branches=tuple(entry["branches"]),
            branch_indices=tuple(entry["branch_indices"]),
            stages=tuple(StageResult.from_json(stage) for stage in entry.get("stages", ())),
        )
        if entry.get("learning_rate_sweep"):
            known["learning_rate_sweep"] = Sweep.from_json(entry["learning_rate_sweep"])
        if entry.get("baseline"):
            known["baseline"] = Baseline(**entry["baseline"])
        for key in ("seeds", "seed_logdirs"):
            if entry.get(key) is not None:
                known[key] = tuple(entry[key])
        return cls(**known)

    def summary(self) -> str:
        """The run in one paragraph: every stage's best validation scores, against the stock
        model's."""

        def spread(stage, metric):
            return f" ± {100 * stage.std[metric]:.2f}" if metric in stage.std else ""

        def scores(stage):
            if stage.best_top1 is None:
                return "replayed on train + validation (nothing left to validate on)"
            return (
                f"validation top-1 {100 * stage.best_top1:.2f}{spread(stage, 'best_top1')} %, "
                f"top-5 {100 * stage.best_top5:.2f} %"
            )

        def how(stage):
            if stage.solver is not None:
                return f"solved, L2 {stage.solver['l2']:.3g}, {stage.steps:.0f} iterations"
            return f"lr {stage.learning_rate:g}, {stage.steps:.0f} steps"

        stages = "; ".join(
            f"{stage.node} ({how(stage)}, {stage.seconds:.0f} s): {scores(stage)}"
            + (f" (WARNING: {CAP_WARNING})" if stage.capped else "")
            for stage in self.stages
        )
        seeds = f" Mean ± sd over seeds {list(self.seeds)}." if self.seeds else ""
        versus = ""
        if self.baseline:
            versus = (
                " Baseline (the stock model on the original images): top-1 "
                f"{100 * self.baseline.top1:.2f} %, "
                f"top-5 {100 * self.baseline.top5:.2f} %."
            )
        elif self.baseline_note:
            versus = f" Note: {self.baseline_note}."
        recipe = f", recipe {self.recipe}" if self.recipe else ""
        selection = f" {self.selection}." if self.selection else ""
        refit = f" Refit on train + validation: {self.refit['logdir']}." if self.refit else ""
        refit += f" Trained by SGD, not solved: {self.solver_note}." if self.solver_note else ""
        return (
            f"train_block_by_block: {len(self.stages)} stages on {len(self.branches)} branches "
            f"({', '.join(self.branches)}), fusion {self.fusion}{recipe}. {stages}."
            f"{versus}{seeds}{selection}{refit}"
        )
