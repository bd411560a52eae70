"""LOGDIR of a training run as an object: where each of its files lives, and writes only the chief
keeps.

LOGDIR/
  config.json                  the run's settings; a rerun must match them to resume
  results.json                 pipeline.training.results.Results
  sweep/lr<rate>/              with --learning-rate auto: one short stage-0 run per candidate rate
  seed<k>/                     with --seeds N: one whole run per seed (results.json then holds mean
                               ± sd)
  stage<k>_<node>/train|validation   TensorBoard runs, one per stage (the stage folder holds its
                                     hparams)
  stages/                      TensorBoard: best top-1 per stage, a sample's JPEG ladder
  checkpoints/stage<k>_<node>/latest   the stage's resume point (weights, optimizer, step, plateau
                                       state)
  checkpoints/stage<k>_<node>/best     the stage's best checkpoint
  export/                      the model that classifies raw images (see pipeline.training.export)
With --strategy multiworker every worker writes the same files, and the chief's alone are kept (see
pipeline.training.distribute): every write goes through `writable`.
"""

import os

from pipeline import errors
from pipeline.config import training as training_config
from pipeline.training import distribute
from pipeline.training import results as results_lib
from tfrecords import fileio

CONFIG_NAME = "config.json"
RESULTS_NAME = "results.json"
EXPORT_NAME = "export"
SWEEP_NAME = "sweep"


class RunDirectory:
    """One training run's folder."""

    def __init__(self, logdir: str):
        self.logdir = logdir

    def path(self, *parts: str) -> str:
        return os.path.join(self.logdir, *parts)

    @property
    def results_path(self) -> str:
        return self.path(RESULTS_NAME)

    @property
    def export_dir(self) -> str:
        return self.path(EXPORT_NAME)

    @property
    def sweep_dir(self) -> str:
        return self.path(SWEEP_NAME)

    def seed_logdir(self, index: int) -> str:
        return self.path(f"seed{index}")

    def stage_logs(self, stage: training_config.Stage) -> str:
        """The stage's TensorBoard folder."""
        return self.path(stage.name)

    def best_checkpoint(self, stage: training_config.Stage) -> str:
        return self.path("checkpoints", stage.name, "best", "ckpt")

    def latest_checkpoints(self, stage: training_config.Stage) -> str:
        """The folder of the stage's resume point."""
        return self.path("checkpoints", stage.name, "latest")

    @staticmethod
    def writable(path: str) -> str:
        """Where this process writes `path`: itself on the chief, a scratch copy on every other
        worker."""
        return distribute.writable(path)

    def makedirs(self) -> None:
        os.makedirs(self.writable(self.logdir), exist_ok=True)

    def read_results(self) -> results_lib.Results | None:
        entry = fileio.read_json(self.results_path)
        return None if entry is None else results_lib.Results.from_json(entry)

    def write_results(self, results: results_lib.Results) -> None:
        self.makedirs()
        fileio.write_json_atomic(self.writable(self.results_path), results.to_json())

    def check_settings(self, settings: dict) -> None:
        """Records the run's settings, or refuses to resume a run made with other ones."""
        self.makedirs()
        path = self.path(CONFIG_NAME)
        stored = fileio.read_json(path)
        if stored is None:
            fileio.write_json_atomic(self.writable(path), settings)
        elif stored != settings:
            changed = sorted(key for key in settings if settings.get(key) != stored.get(key))
            raise errors.UserError(
                f"{self.logdir} holds a run with other settings (differing in: "
                f"{', '.join(changed)}); rerun with the same flags to resume it, or choose "
                f"another --logdir"
            )


def read(logdir: str) -> results_lib.Results:
    """The results of a finished (or stopped) training run, failing in one line when there are
    none."""
    results = RunDirectory(logdir).read_results()
    if results is None:
        raise errors.UserError(
            f"no {RESULTS_NAME} in {logdir}: pass the --logdir of a training run"
        )
    return results
