"""--strategy multiworker on two loopback worker processes: data and file input sharding, a lost
worker, resume."""

import dataclasses
import glob
import json
import os
import re
import socket
import subprocess
import sys
import time

import numpy as np
import pytest
import tensorflow as tf
from tensorboard.backend.event_processing import event_accumulator

from pipeline.config import offline as offline_config
from pipeline.offline import job
from pipeline.training import distribute
from pipeline.training import input_pipeline
from pipeline.training import train
from tests import conftest
from tools import train_block_by_block

STAGE = "stage0_pool"
# One short stage: 15 train records, global batch 4 -> 4 steps an epoch, 40 steps, a checkpoint
# every 2.
FLAGS = [
    "--recipe",
    "thesis",
    "--stages",
    "pool",
    "--batch-size",
    "4",
    "--eval-every-steps",
    "2",
    "--max-epochs-per-stage",
    "10",
    "--plateau-epochs",
    "100",
    "--no-progress",
]
MULTIWORKER = ["--strategy", "multiworker", "--collective-timeout", "120"]
# Only DATA sharding makes two workers train like one machine.
DATA_FLAGS = [*FLAGS, "--input-sharding", "data"]
# Measured: the two runs' weights differ by under 2e-9 (weights of about 1e-2); only the order of
# the sums in the gradient's all-reduce differs.
WEIGHTS_RTOL, WEIGHTS_ATOL = 1e-5, 1e-7


@pytest.fixture(scope="module")
def one_shard_records(tmp_path_factory):
    """Pooled ResNet-50 V2 features of 18 tiny images, one shard per split: fewer shards than
    workers."""
    root = tmp_path_factory.mktemp("multiworker_records")
    conftest.write_random_images(str(root / "images"), per_class=6)
    config = dataclasses.replace(
        offline_config.tiny(str(root / "records"), str(root / "images")),
        backbone="resnet50_v2",
        nodes=("pool",),
        num_shards=1,
        validation_percent=30,
        test_percent=0,
    )
    job.make_tfrecords(config)
    manifest = json.loads((root / "records" / "manifest.json").read_text())
    assert (
        manifest["splits"]["train"]["num_shards"]
        == manifest["splits"]["validation"]["num_shards"]
        == 1
    )
    return config.out_dir


def _free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    for each in sockets:
        each.bind(("localhost", 0))
    ports = [each.getsockname()[1] for each in sockets]
    for each in sockets:
        each.close()
    return ports


def _start_workers(records, logdir, tmp_path, flags) -> list[tuple[subprocess.Popen, str, str]]:
    """The trainer's command in two processes of one cluster, each with its own TMPDIR and log
    file."""
    cluster = {"worker": [f"localhost:{port}" for port in _free_ports(2)]}
    command = [
        sys.executable,
        "-m",
        "tools.train_block_by_block",
        "--records",
        records,
        "--logdir",
        str(logdir),
        *flags,
        *MULTIWORKER,
    ]
    workers = []
    for index in range(2):
        scratch = tmp_path / f"tmp{index}"
        scratch.mkdir(exist_ok=True)
        log = tmp_path / f"worker{index}-{time.monotonic_ns()}.log"
        environment = dict(
            os.environ,
            PYTHONPATH=conftest.PROJECT_ROOT,
            TMPDIR=str(scratch),
            TF_CONFIG=json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}}),
        )
        with open(log, "w") as output:
            process = subprocess.Popen(
                command,
                env=environment,
                cwd=conftest.PROJECT_ROOT,
                stdout=output,
                stderr=subprocess.STDOUT,
            )
        workers.append((process, str(log), str(scratch)))
    return workers


def _finish(workers) -> list[tuple[int, str]]:
    outcomes = []
    for process, log, _ in workers:
        try:
            process.wait(timeout=400)
        finally:
            process.kill()
        outcomes.append((process.returncode, open(log).read()))
    return outcomes


def _losses(path) -> dict[int, float]:
    accumulator = event_accumulator.EventAccumulator(str(path), size_guidance={"tensors": 0})
    accumulator.Reload()
    return {
        event.step: float(tf.make_ndarray(event.tensor_proto))
        for event in accumulator.Tensors("loss")
    }


def _weights(logdir) -> dict[str, np.ndarray]:
    reader = tf.train.load_checkpoint(
        tf.train.latest_checkpoint(os.path.join(logdir, "checkpoints", STAGE, "latest"))
    )
    return {
        name: reader.get_tensor(name)
        for name in reader.get_variable_to_shape_map()
        if name.startswith("head/")
    }


def _assert_rerun_continues(logdir, events_before, resume_step, straight_logdir):
    """The rerun's losses start after the last checkpoint and match, with its results and weights,
    the unbroken run."""
    train_logs = logdir / STAGE / "train"
    (rerun_events,) = set(glob.glob(str(train_logs / "events.out.tfevents.*"))) - events_before
    rerun_losses = _losses(rerun_events)
    assert min(rerun_losses) == resume_step + 2, (
        "the rerun starts at the last checkpoint, not from scratch"
    )
    straight_losses = _losses(straight_logdir / STAGE / "train")
    for step, loss in rerun_losses.items():
        assert loss == pytest.approx(straight_losses[step], rel=1e-5), step
    resumed = json.loads((logdir / "results.json").read_text())
    straight = json.loads((straight_logdir / "results.json").read_text())
    assert _stage_outcome(resumed) == pytest.approx(_stage_outcome(straight), rel=1e-6)
    _assert_same_weights(str(logdir), str(straight_logdir))


def _assert_same_weights(logdir, expected_logdir) -> None:
    got, expected = _weights(logdir), _weights(expected_logdir)
    assert sorted(got) == sorted(expected) and got
    for name, value in expected.items():
        np.testing.assert_allclose(
            got[name], value, rtol=WEIGHTS_RTOL, atol=WEIGHTS_ATOL, err_msg=name
        )


def _stage_outcome(results: dict) -> tuple:
    stage = results["stages"][0]
    return stage["steps"], stage["best_step"], stage["best_top1"], stage["best_loss"]


@pytest.fixture(scope="module")
def two_workers(one_shard_records, tmp_path_factory):
    """An uninterrupted run of two workers."""
    tmp_path = tmp_path_factory.mktemp("two_workers")
    workers = _start_workers(one_shard_records, tmp_path / "run", tmp_path, DATA_FLAGS)
    for returncode, log in _finish(workers):
        assert returncode == 0, log[-3000:]
    return tmp_path / "run", [scratch for _, _, scratch in workers]


@pytest.mark.slow
def test_two_workers_reach_the_weights_of_one_machine_and_only_the_chief_writes(
    one_shard_records, two_workers, tmp_path
):
    logdir, scratches = two_workers
    single = dataclasses.replace(
        train_block_by_block.parse_flags(
            [
                "--records",
                one_shard_records,
                "--logdir",
                str(tmp_path / "single"),
                "--devices",
                "/cpu:0",
                *FLAGS,
            ]
        ),
        export=False,
    )
    reference = train.train_and_evaluate(single).to_json()
    results = json.loads((logdir / "results.json").read_text())
    assert (results["workers"], results["replicas"], reference["replicas"]) == (2, 2, 1)
    assert results["global_batch_size"] == reference["global_batch_size"] == 4
    assert _stage_outcome(results) == pytest.approx(_stage_outcome(reference), rel=1e-6)
    assert results["stages"][0]["steps"] == 40
    _assert_same_weights(str(logdir), single.logdir)
    losses, reference_losses = (
        _losses(logdir / STAGE / "train"),
        _losses(tmp_path / "single" / STAGE / "train"),
    )
    assert sorted(losses) == sorted(reference_losses) == list(range(2, 41, 2))
    np.testing.assert_allclose(
        [losses[step] for step in sorted(losses)],
        [reference_losses[step] for step in sorted(losses)],
        rtol=1e-5,
    )

    # The chief alone wrote LOGDIR: one events file per TensorBoard run; the other worker's copies
    # are gone.
    for run in ("", "stages", STAGE, f"{STAGE}/train", f"{STAGE}/validation"):
        assert len(glob.glob(str(logdir / run / "events.out.tfevents.*"))) == 1, run
    assert os.path.isfile(logdir / "export" / "saved_model.pb")
    for scratch in scratches:
        assert not glob.glob(os.path.join(scratch, "jpeg-ladder-*")), scratch


@pytest.mark.slow
def test_a_lost_worker_stops_the_run_with_a_clear_message_and_a_rerun_resumes(
    one_shard_records, two_workers, tmp_path
):
    logdir = tmp_path / "run"
    workers = _start_workers(one_shard_records, logdir, tmp_path, DATA_FLAGS)
    marker = logdir / "checkpoints" / STAGE / "latest" / "checkpoint"
    deadline = time.time() + 300
    while not (marker.exists() and "ckpt-2" in marker.read_text()) and time.time() < deadline:
        assert workers[0][0].poll() is None, open(workers[0][1]).read()[-3000:]
        time.sleep(0.01)
    workers[1][0].kill()
    (chief_returncode, chief_log), _ = _finish(workers)
    last_line = chief_log.strip().splitlines()[-1]
    assert chief_returncode == 2, chief_log[-3000:]
    assert re.fullmatch(
        r"train_block_by_block: error: lost worker 1 at localhost:\d+ \(\w+Error at a collective "
        r"op on worker 0 at localhost:\d+, the chief\); the 2 workers cannot go on without each "
        r"other: start every worker again with "
        r"the same command and TF_CONFIG, and the run resumes from the last checkpoint in "
        + re.escape(str(logdir)),
        last_line,
    ), last_line
    resume_step = int(
        re.search(r'model_checkpoint_path: "ckpt-(\d+)"', marker.read_text()).group(1)
    )
    assert 2 <= resume_step < 40 and not (logdir / "results.json").exists(), (
        "stopped inside the stage"
    )

    train_logs = logdir / STAGE / "train"
    before = set(glob.glob(str(train_logs / "events.out.tfevents.*")))
    for returncode, log in _finish(_start_workers(one_shard_records, logdir, tmp_path, DATA_FLAGS)):
        assert returncode == 0, log[-3000:]
    _assert_rerun_continues(logdir, before, resume_step, two_workers[0])


@pytest.fixture(scope="module")
def three_shard_records(tmp_path_factory):
    """Two nodes of 18 tiny images, the train split in 3 shards: over 2 workers, one reads 2 and the
    other 1."""
    root = tmp_path_factory.mktemp("file_sharding_records")
    conftest.write_random_images(str(root / "images"), per_class=6)
    config = dataclasses.replace(
        offline_config.tiny(str(root / "records"), str(root / "images")),
        backbone="resnet50_v2",
        nodes=conftest.TRAIN_STAGES,
        num_shards=3,
        validation_percent=30,
        test_percent=0,
    )
    job.make_tfrecords(config)
    train_split = json.loads((root / "records" / "manifest.json").read_text())["splits"]["train"]
    counts = [shard["num_records"] for shard in train_split["shards"]]
    assert len(counts) == 3 and counts[0] + counts[2] != counts[1], (
        "the workers hold different numbers of records"
    )
    return config.out_dir


FILE_CHOICE = "input sharding: file (3 train shards over 2 workers: each reads its own 1 or 2)"


@pytest.fixture(scope="module")
def file_sharded_run(three_shard_records, tmp_path_factory):
    """An uninterrupted run of two workers that each read their own train shards (auto picks
    file)."""
    tmp_path = tmp_path_factory.mktemp("file_sharded")
    outcomes = _finish(_start_workers(three_shard_records, tmp_path / "run", tmp_path, FLAGS))
    for returncode, log in outcomes:
        assert returncode == 0, log[-3000:]
    return tmp_path / "run", [log for _, log in outcomes]


@pytest.mark.slow
def test_file_sharding_trains_each_worker_on_its_own_shards(
    three_shard_records, file_sharded_run, tmp_path, monkeypatch
):
    logdir, logs = file_sharded_run
    for log in logs:
        assert FILE_CHOICE in log.splitlines(), log[-3000:]
    results = json.loads((logdir / "results.json").read_text())
    assert (results["workers"], results["replicas"], results["input_sharding"]) == (2, 2, "file")
    assert results["stages"][0]["steps"] == 40

    # One machine fed, at every step, worker 0's next 2 records of shards 0 and 2 beside worker 1's
    # next 2 of shard 1 (each stream seeded and repeated on its own) trains as the two workers did.
    # Every worker reading every shard, or both the same ones, or DATA sharding would each give
    # other batches.
    original = input_pipeline.stage_dataset

    def two_workers_streams(setup, node, split, *, training, seed=0, start_batch=0, **options):
        if split != "train":
            return original(
                setup, node, split, training=training, seed=seed, start_batch=start_batch, **options
            )
        assert start_batch == 0
        workers = [
            original(
                setup, node, split, training=True, seed=seed, batch_size=2, file_shard=(2, index)
            )
            for index in (0, 1)
        ]
        return tf.data.Dataset.zip(*workers).map(
            lambda first, second: tuple(tf.concat(parts, axis=0) for parts in zip(first, second))
        )

    monkeypatch.setattr(input_pipeline, "stage_dataset", two_workers_streams)
    single = dataclasses.replace(
        train_block_by_block.parse_flags(
            [
                "--records",
                three_shard_records,
                "--logdir",
                str(tmp_path / "single"),
                "--devices",
                "/cpu:0",
                *FLAGS,
            ]
        ),
        export=False,
    )
    reference = train.train_and_evaluate(single).to_json()
    assert _stage_outcome(results) == pytest.approx(_stage_outcome(reference), rel=1e-6)
    _assert_same_weights(str(logdir), single.logdir)
    losses, reference_losses = (
        _losses(logdir / STAGE / "train"),
        _losses(tmp_path / "single" / STAGE / "train"),
    )
    assert sorted(losses) == sorted(reference_losses) == list(range(2, 41, 2))
    np.testing.assert_allclose(
        [losses[step] for step in sorted(losses)],
        [reference_losses[step] for step in sorted(losses)],
        rtol=1e-5,
    )


@pytest.mark.slow
def test_a_file_sharded_run_killed_on_every_worker_resumes_exactly(
    three_shard_records, file_sharded_run, tmp_path
):
    logdir = tmp_path / "run"
    workers = _start_workers(three_shard_records, logdir, tmp_path, FLAGS)
    marker = logdir / "checkpoints" / STAGE / "latest" / "checkpoint"
    deadline = time.time() + 300
    while (
        not (marker.exists() and re.search(r'"ckpt-([2-9]|1\d)"', marker.read_text()))
        and time.time() < deadline
    ):
        assert all(process.poll() is None for process, _, _ in workers), open(workers[0][1]).read()[
            -3000:
        ]
        time.sleep(0.01)
    for process, _, _ in workers:
        process.kill()
    _finish(workers)
    resume_step = int(
        re.search(r'model_checkpoint_path: "ckpt-(\d+)"', marker.read_text()).group(1)
    )
    assert 2 <= resume_step < 40 and not (logdir / "results.json").exists(), (
        "killed inside the stage"
    )

    train_logs = logdir / STAGE / "train"
    before = set(glob.glob(str(train_logs / "events.out.tfevents.*")))
    for returncode, log in _finish(_start_workers(three_shard_records, logdir, tmp_path, FLAGS)):
        assert returncode == 0 and FILE_CHOICE in log.splitlines(), log[-3000:]
    _assert_rerun_continues(logdir, before, resume_step, file_sharded_run[0])


@pytest.mark.slow
def test_two_stages_and_two_seeds_across_workers(three_shard_records, tmp_path):
    """The converged recipe across workers: the first stage's layer solved on every worker alike,
    the second trained by SGD from it."""
    stages = ",".join(conftest.TRAIN_STAGES)
    flags = [
        "--stages",
        stages,
        "--learning-rate",
        "0.001",
        "--seeds",
        "2",
        "--branches",
        "0",
        "--batch-size",
        "4",
        "--eval-every-steps",
        "2",
        "--max-epochs-per-stage",
        "1",
        "--plateau-epochs",
        "100",
        "--no-export",
        "--no-progress",
    ]
    outcomes = _finish(_start_workers(three_shard_records, tmp_path / "run", tmp_path, flags))
    summaries = []
    for returncode, log in outcomes:
        # Both got past every stage's agreement check (where it resumed, where it ended), or neither
        # would exit 0.
        assert returncode == 0 and FILE_CHOICE in log.splitlines(), log[-3000:]
        summary = [line for line in log.splitlines() if line.startswith("train_block_by_block:")][
            -1
        ]
        summaries.append(re.sub(r", \d+ s\)", ")", summary))  # all but the wall time
    assert summaries[0] == summaries[1] and "Mean ± sd over seeds [0, 1]" in summaries[0], summaries
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    assert [stage["node"] for stage in results["stages"]] == list(conftest.TRAIN_STAGES)
    assert all(len(stage["best_top1_per_seed"]) == 2 for stage in results["stages"])
    for seed in (0, 1):
        per_seed = json.loads((tmp_path / "run" / f"seed{seed}" / "results.json").read_text())
        assert [stage["node"] for stage in per_seed["stages"]] == list(conftest.TRAIN_STAGES), seed
        assert [stage["ended_by"] for stage in per_seed["stages"]][0] == "solved"
        assert per_seed["stages"][1]["steps"] == 4 and per_seed["workers"] == 2
        assert per_seed["stages"][1]["learning_rate"] == 0.001


@pytest.mark.slow
def test_auto_reads_every_record_on_every_worker_when_shards_are_fewer_than_workers(
    one_shard_records, tmp_path
):
    flags = [*FLAGS, "--max-epochs-per-stage", "0.5"]
    for returncode, log in _finish(
        _start_workers(one_shard_records, tmp_path / "run", tmp_path, flags)
    ):
        assert returncode == 0, log[-3000:]
        assert (
            "input sharding: data (1 train shard for 2 workers: every worker reads every record; "
            "make-tfrecords --num-shards >= 2 lets each read only its own)"
        ) in log.splitlines(), log[-3000:]
    assert json.loads((tmp_path / "run" / "results.json").read_text())["stages"][0]["steps"] == 2


@pytest.mark.slow
def test_file_sharding_with_fewer_shards_than_workers_is_one_line(one_shard_records, tmp_path):
    outcomes = _finish(
        _start_workers(
            one_shard_records, tmp_path / "run", tmp_path, [*FLAGS, "--input-sharding", "file"]
        )
    )
    for returncode, log in outcomes:
        last_line = log.strip().splitlines()[-1]
        assert returncode == 2 and last_line == (
            "train_block_by_block: error: --input-sharding file gives each worker its own shards, "
            "and the records hold 1 train shard for 2 workers: rerun make-tfrecords with "
            "--num-shards 2 or more, or use "
            "--input-sharding data"
        ), log[-3000:]
    assert not (tmp_path / "run" / "results.json").exists()


@pytest.mark.parametrize(
    "requested, shards, batch, expected",
    [
        (
            "auto",
            8,
            4,
            ("file", "input sharding: file (8 train shards over 2 workers: each reads its own 4)"),
        ),
        (
            "file",
            3,
            4,
            (
                "file",
                "input sharding: file (3 train shards over 2 workers: each reads its own 1 or 2)",
            ),
        ),
        (
            "auto",
            1,
            4,
            (
                "data",
                "input sharding: data (1 train shard for 2 workers: every worker reads every "
                "record; make-tfrecords --num-shards >= 2 lets each read only its own)",
            ),
        ),
        (
            "auto",
            8,
            5,
            (
                "data",
                "input sharding: data (--batch-size 5 does not split evenly over 2 replicas: every "
                "worker reads every record)",
            ),
        ),
        (
            "data",
            8,
            4,
            (
                "data",
                "input sharding: data (as asked: every worker reads every record and keeps its "
                "replicas' part)",
            ),
        ),
    ],
)
def test_the_input_sharding_choice_says_why(requested, shards, batch, expected):
    assert distribute.choose_input_sharding(requested, shards, 2, batch, 2) == expected


def test_explicit_file_sharding_that_cannot_be_names_the_fix(capsys):
    with pytest.raises(
        ValueError,
        match=r"--batch-size 5 is not a multiple of the 2 replicas: pass a multiple of 2, "
        r"or use --input-sharding data$",
    ):
        distribute.choose_input_sharding("file", 8, 2, 5, 2)
    with pytest.raises(SystemExit):
        train_block_by_block.parse_flags(
            ["--records", "r", "--logdir", "l", "--input-sharding", "file"]
        )
    assert "--input-sharding is for --strategy multiworker" in capsys.readouterr().err


@pytest.mark.parametrize(
    "tf_config, message",
    [
        (
            None,
            "--strategy multiworker reads the cluster from the TF_CONFIG environment variable, "
            "which is not set; set it on every worker as docs/training.md (multi-worker training) "
            "shows",
        ),
        ("{not json", "TF_CONFIG must be JSON with a cluster and a task"),
        (
            '{"cluster": {"worker": ["localhost:1"], "ps": ["localhost:2"]}, "task": {"type": '
            '"worker", "index": 0}}',
            "TF_CONFIG's cluster holds jobs ['ps', 'worker']: --strategy multiworker takes chief "
            "and worker tasks only",
        ),
        (
            '{"cluster": {"worker": ["localhost:1", "localhost:2"]}, "task": {"type": "worker", '
            '"index": 2}}',
            "TF_CONFIG's task {'type': 'worker', 'index': 2} is not in its cluster",
        ),
        # A valid cluster, but TensorFlow has already run in this process: collective ops can no
        # longer be set up.
        (
            '{"cluster": {"worker": ["localhost:1"]}, "task": {"type": "worker", "index": 0}}',
            "--strategy multiworker must start before TensorFlow runs anything else in the process",
        ),
    ],
)
def test_multiworker_start_up_errors_are_one_line(
    tmp_path, monkeypatch, capsys, tf_config, message
):
    tf.config.list_logical_devices()  # TensorFlow is running here, whatever ran before this test
    if tf_config is None:
        monkeypatch.delenv("TF_CONFIG", raising=False)
    else:
        monkeypatch.setenv("TF_CONFIG", tf_config)
    flags = [
        "--records",
        str(tmp_path / "records"),
        "--logdir",
        str(tmp_path / "run"),
        *FLAGS,
        *MULTIWORKER,
    ]
    assert train_block_by_block.main(flags) == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith(f"train_block_by_block: error: {message}") and "\n" not in error, error
    assert not (tmp_path / "run").exists()
    with pytest.raises(SystemExit):
        train_block_by_block.parse_flags(flags + ["--devices", "/cpu:0"])
    assert "--devices is for --strategy mirrored" in capsys.readouterr().err
