"""Faults during training and evaluation: a damaged shard is named in one line (exit 2), and
SIGINT/SIGTERM stop the trainer after the step in progress with its resume point saved; the same
command resumes."""

import dataclasses
import glob
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from pipeline import interrupt
from pipeline.config import training as training_config
from pipeline.training import run_directory
from pipeline.training import train
from tests import conftest
from tools import evaluate as evaluate_tool
from tools import report as report_tool
from tools import train_block_by_block


def _train_flags(records: str, logdir: str, *extra: str) -> list[str]:
    return [
        "--records",
        records,
        "--logdir",
        logdir,
        "--recipe",
        "thesis",
        "--stages",
        "pool",
        "--batch-size",
        "4",
        "--eval-every-steps",
        "2",
        "--cache-mb",
        "0",
        "--no-progress",
        *extra,
    ]


def _one_error_line(text: str, program: str) -> str:
    lines = [line for line in text.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith(f"{program}: error: "), text
    assert "Traceback" not in text
    return lines[0]


@pytest.mark.slow
def test_a_damaged_shard_stops_training_and_evaluation_with_one_line_naming_it(
    records, tmp_path, capsys
):
    copy = str(tmp_path / "records")
    shutil.copytree(records, copy)
    logdir = str(tmp_path / "run")
    assert train_block_by_block.main(_train_flags(copy, logdir, "--max-epochs-per-stage", "1")) == 0
    # The command lines on healthy records: exit 0 and their files written.
    evaluation = str(tmp_path / "healthy")
    assert (
        evaluate_tool.main(
            ["--model", os.path.join(logdir, "export"), "--records", copy, "--out-dir", evaluation]
        )
        == 0
    )
    with open(os.path.join(evaluation, "evaluation.json")) as file:
        assert json.load(file)["split"] == "test"
    report_dir = tmp_path / "report"
    assert (
        report_tool.main(
            ["--logdir", logdir, "--evaluation", evaluation, "--out-dir", str(report_dir)]
        )
        == 0
    )
    assert "## Training stages" in (report_dir / "report.md").read_text()

    test_shard = sorted(glob.glob(os.path.join(copy, "pool", "test-*.tfrecord")))[0]
    conftest.flip_byte(test_shard)
    capsys.readouterr()
    status = evaluate_tool.main(
        [
            "--model",
            os.path.join(logdir, "export"),
            "--records",
            copy,
            "--out-dir",
            str(tmp_path / "evaluation"),
        ]
    )
    assert status == 2
    line = _one_error_line(capsys.readouterr().err, "evaluate")
    assert f"damaged shard {test_shard}" in line and f"jpeg-ladder-verify {copy}" in line
    assert not os.path.exists(tmp_path / "evaluation" / "evaluation.json")

    train_shard = sorted(glob.glob(os.path.join(copy, "pool", "train-*.tfrecord")))[0]
    conftest.flip_byte(train_shard)
    status = train_block_by_block.main(
        _train_flags(copy, str(tmp_path / "second"), "--max-epochs-per-stage", "1")
    )
    assert status == 2
    line = _one_error_line(capsys.readouterr().err, "train_block_by_block")
    assert f"damaged shard {train_shard}" in line and "rerun make-tfrecords" in line


class _StopAfter:
    """Stands in for interrupt.StopRequests: a SIGTERM 'arrives' once the trainer has asked `checks`
    times."""

    signal_number = signal.SIGTERM
    signal_name = "SIGTERM"

    def __init__(self, checks: int):
        self.checks = checks

    @property
    def requested(self) -> bool:
        self.checks -= 1
        return self.checks < 0


@pytest.mark.slow
def test_a_stopped_stage_resumes_to_the_same_result_as_an_unbroken_one(records, tmp_path):
    config = dataclasses.replace(
        training_config.tiny_training(records, str(tmp_path / "stopped")),
        stages=("pool",),
        eval_every_steps=3,
        max_epochs_per_stage=2.0,
        plateau_epochs=100.0,
        export=False,
    )
    with pytest.raises(interrupt.Interrupted) as stopped:
        # One check by the run before the stage, then one per step: stops after step 5, between
        # evaluations.
        train.train_and_evaluate(config, _StopAfter(checks=5))
    assert stopped.value.exit_status == 128 + signal.SIGTERM
    assert "stopped on SIGTERM after step 5 of stage0_pool, its resume point saved" in str(
        stopped.value
    )
    stage = train.prepare(config).config.schedule[0]
    run = run_directory.RunDirectory(config.logdir)
    latest = os.path.basename(run.latest_checkpoints(stage))
    assert latest in str(stopped.value)
    assert os.path.exists(os.path.join(run.latest_checkpoints(stage), "ckpt-5.index"))
    assert run.read_results() is None or not run.read_results().stages

    resumed = train.train_and_evaluate(config).stages[0]
    unbroken = train.train_and_evaluate(
        dataclasses.replace(config, logdir=str(tmp_path / "unbroken"))
    ).stages[0]
    for key in ("steps", "best_step", "ended_by"):
        assert getattr(resumed, key) == getattr(unbroken, key), key
    np.testing.assert_allclose(
        [resumed.best_top1, resumed.best_loss], [unbroken.best_top1, unbroken.best_loss], rtol=1e-5
    )


@pytest.mark.slow
def test_sigint_stops_the_trainer_and_says_how_to_resume(records, tmp_path):
    logdir = str(tmp_path / "run")
    argv = _train_flags(
        records, logdir, "--max-epochs-per-stage", "1000", "--plateau-epochs", "1000"
    )
    job = subprocess.Popen(
        [sys.executable, "-m", "tools.train_block_by_block", *argv],
        cwd=conftest.PROJECT_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    resume_points = os.path.join(logdir, "checkpoints", "stage0_pool", "latest")
    deadline = time.monotonic() + 120
    while not glob.glob(os.path.join(resume_points, "ckpt-*.index")):  # training has begun
        assert job.poll() is None and time.monotonic() < deadline, job.communicate()
        time.sleep(0.2)
    job.send_signal(signal.SIGINT)
    _, error = job.communicate(timeout=120)
    assert job.returncode == 128 + signal.SIGINT, error
    assert "SIGINT received: stopping after the step in progress" in error
    assert "To resume, run the same command: train-block-by-block --records" in error
    assert "Traceback" not in error
    assert glob.glob(os.path.join(resume_points, "ckpt-*.index"))
