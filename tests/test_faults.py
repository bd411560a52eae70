"""Faults during the offline job: a full disk or read-only folder mid-shard, and SIGINT/SIGTERM;
each resumes."""

import os
import signal
import subprocess
import sys
import threading
import time

import pytest
import tensorflow as tf

from pipeline.offline import progress as progress_lib
from tests import conftest
from tfrecords import verify
from tfrecords import writer
from tools import make_tfrecords


def _tiny_command(data: str, out_dir: str, num_shards: int = 2) -> list[str]:
    return [
        "--data-dir",
        data,
        "--out-dir",
        out_dir,
        "--backbone",
        "mobilenet_v2",
        "--weights",
        "none",
        "--input-size",
        "32",
        "--nodes",
        "block_16_project_BN,pool",
        "--qualities",
        "50",
        "--num-shards",
        str(num_shards),
        "--validation-percent",
        "0",
        "--test-percent",
        "0",
        "--batch-size",
        "2",
        "--no-progress",
    ]


def _files(out_dir: str) -> list[str]:
    return sorted(
        os.path.relpath(os.path.join(root, name), out_dir)
        for root, _, names in os.walk(out_dir)
        for name in names
        if not root.endswith(progress_lib.PROGRESS_DIR) and name != ".lock"
    )


def _full_disk(path):
    # A real ENOSPC from the kernel: the temporary file is a link to /dev/full.
    os.symlink("/dev/full", path)
    return tf.io.TFRecordWriter(path)


def _read_only(path):
    raise tf.errors.PermissionDeniedError(None, None, f"{path}; Read-only file system")


@pytest.mark.parametrize(
    "fault, message",
    [(_full_disk, "No space left on device"), (_read_only, "Read-only file system")],
)
def test_a_write_failure_mid_job_keeps_finished_shards_and_a_rerun_resumes(
    tmp_path, tiny_dataset, monkeypatch, capsys, fault, message
):
    out_dir = str(tmp_path / "out")
    argv = _tiny_command(tiny_dataset, out_dir)
    opened = []
    real_open = writer.open_record_writer

    def failing_third_file(path, compression):
        opened.append(path)
        return (
            fault(path) if len(opened) == 3 else real_open(path, compression)
        )  # shard 1's first node

    monkeypatch.setattr(writer, "open_record_writer", failing_third_file)
    assert make_tfrecords.main(argv) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and message in error
    assert "train-00001-of-00002.tfrecord" in error and "rerun the same command to resume" in error
    assert _files(out_dir) == [
        "block_16_project_BN/train-00000-of-00002.tfrecord",
        "pool/train-00000-of-00002.tfrecord",
    ]  # no manifest, no partial, no .tmp
    monkeypatch.setattr(writer, "open_record_writer", real_open)  # space freed
    assert make_tfrecords.main(argv) == 0
    assert "1 shards redone" in capsys.readouterr().out
    assert verify.verify_records(out_dir).ok


def _start(tmp_path, out_dir):
    data = str(tmp_path / "images")
    conftest.write_random_images(data, per_class=8)
    argv = _tiny_command(data, out_dir, num_shards=12)
    job = subprocess.Popen(
        [sys.executable, "-m", "tools.make_tfrecords"] + argv,
        cwd=conftest.PROJECT_ROOT,
        env=dict(os.environ, PYTHONPATH=conftest.PROJECT_ROOT),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    progress = os.path.join(out_dir, progress_lib.PROGRESS_DIR)
    deadline = time.time() + 120
    while job.poll() is None and time.time() < deadline:
        if os.path.isdir(progress) and any(
            name.startswith("train-") for name in os.listdir(progress)
        ):
            break
        time.sleep(0.005)
    return job, argv


@pytest.mark.slow
def test_a_signal_stops_after_the_shard_in_progress_and_says_how_to_resume(tmp_path, capsys):
    out_dir = str(tmp_path / "out")
    job, argv = _start(tmp_path, out_dir)
    job.send_signal(signal.SIGTERM)
    _, error = job.communicate(timeout=120)
    assert job.returncode == 128 + signal.SIGTERM, error
    assert "SIGTERM received: stopping after the shard in progress" in error
    assert "To resume, run the same command: make-tfrecords --data-dir" in error
    done = [
        name
        for name in os.listdir(os.path.join(out_dir, progress_lib.PROGRESS_DIR))
        if name.startswith("train-")
    ]
    assert 1 <= len(done) < 12
    assert not os.path.exists(os.path.join(out_dir, "manifest.json"))
    assert not [name for name in _files(out_dir) if name.endswith(".tmp")]
    assert len(_files(out_dir)) == 2 * len(
        done
    )  # every finished shard, both nodes, and nothing else
    assert make_tfrecords.main(argv) == 0
    assert f"{12 - len(done)} shards redone" in capsys.readouterr().out


@pytest.mark.slow
def test_a_second_signal_stops_at_once(tmp_path):
    out_dir = str(tmp_path / "out")
    job, _ = _start(tmp_path, out_dir)
    # Python runs a signal's handler once however many of that signal arrive while the job is
    # inside one call into TensorFlow: the second goes only once the first has been acknowledged.
    lines = []
    reader = threading.Thread(target=lambda: lines.extend(job.stderr), daemon=True)
    reader.start()
    job.send_signal(signal.SIGINT)
    deadline = time.time() + 60
    while not any("SIGINT received" in line for line in lines) and time.time() < deadline:
        time.sleep(0.005)
    job.send_signal(signal.SIGINT)
    job.wait(timeout=60)
    reader.join(timeout=60)
    error = "".join(lines)
    assert job.returncode == 128 + signal.SIGINT, error
    assert (
        "stopped at once on a second SIGINT" in error and "To resume, run the same command" in error
    )
    assert "Traceback" not in error
    assert not [name for name in _files(out_dir) if name.endswith(".tmp")]
