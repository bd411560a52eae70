"""The Beam runner (DirectRunner) against the local runner: the same records, manifest, quarantine
and resume.

Also on URLs: TensorFlow's in-process ram:// file system stands in for gs:// (the DirectRunner runs
in this process, so its workers see the same files), and the output there is checked as the local
one is.
"""

import dataclasses
import filecmp
import json
import os
import signal

import numpy as np
import pytest
import tensorflow as tf

from pipeline import interrupt
from pipeline.config import offline as offline_config
from pipeline.offline import beam
from pipeline.offline import job
from pipeline.offline import progress as progress_lib
from tests import conftest
from tfrecords import codec
from tfrecords import fileio
from tfrecords import writer
from tools import make_tfrecords
from tools import verify as verify_tool

DIRECT_OPTIONS = conftest.BEAM_DIRECT_OPTIONS
BAD_IMAGE = "dog/broken.jpg"
RAM = "ram://test_beam"


@pytest.fixture(scope="module")
def both_runners(tmp_path_factory):
    """One tiny dataset (with one unreadable file) extracted by the local runner and by Beam."""
    root = tmp_path_factory.mktemp("beam")
    data = str(root / "images")
    conftest.write_random_images(data, per_class=3)
    with open(os.path.join(data, BAD_IMAGE), "wb") as file:
        file.write(b"\xff\xd8\xff\xe0 a JPEG header and nothing else")
    # batch_size 2 over 5 images per shard: full and partial batches, one with the bad image in it.
    local = dataclasses.replace(
        offline_config.tiny(str(root / "local"), data),
        batch_size=2,
        validation_percent=30,
        test_percent=0,
    )
    on_beam = dataclasses.replace(
        local, out_dir=str(root / "beam"), runner="beam", beam_options=DIRECT_OPTIONS
    )
    with pytest.MonkeyPatch.context() as patch:
        # Random weights give about half zeros, which the reading-speed policy keeps dense: store
        # every node that sparse storage shrinks at all as sparse, so that both encodings are
        # compared.
        patch.setattr(codec, "SPARSE_AT_MOST", 1.0)
        return (
            local,
            on_beam,
            job.make_tfrecords(local).summary,
            job.make_tfrecords(on_beam).summary,
        )


def _shard_files(out_dir):
    return sorted(
        os.path.relpath(os.path.join(directory, name), out_dir)
        for directory, _, names in os.walk(out_dir)
        for name in names
        if name.endswith(".tfrecord")
    )


def _records(path):
    return [record.numpy() for record in tf.data.TFRecordDataset(path)]


def _read_json(path):
    with open(path) as file:
        return json.load(file)


def test_beam_writes_the_local_runners_records_record_by_record(both_runners):
    local, on_beam, local_summary, beam_summary = both_runners
    files = _shard_files(local.out_dir)
    assert len(files) == 3 * len(local.nodes)  # per node: two train shards, one validation shard
    assert _shard_files(on_beam.out_dir) == files
    for name in files:
        local_records = _records(os.path.join(local.out_dir, name))
        assert local_records, name
        assert _records(os.path.join(on_beam.out_dir, name)) == local_records, name
        assert filecmp.cmp(
            os.path.join(local.out_dir, name), os.path.join(on_beam.out_dir, name), shallow=False
        )
    assert beam_summary["images_written"] == local_summary["images_written"] == 9
    encodings = _read_json(os.path.join(local.out_dir, progress_lib.PROGRESS_DIR, "encodings.json"))
    assert encodings == {"block_16_project_BN": codec.DENSE, "pool": codec.SPARSE}
    assert beam_summary["images_skipped"] == local_summary["images_skipped"] == 1


def test_beam_manifest_and_shard_results_match_apart_from_the_runner(both_runners):
    local, on_beam, _, _ = both_runners
    local_manifest = _read_json(os.path.join(local.out_dir, "manifest.json"))
    beam_manifest = _read_json(os.path.join(on_beam.out_dir, "manifest.json"))
    assert local_manifest["config"].pop("runner") == "local"
    assert beam_manifest["config"].pop("runner") == "beam"
    assert local_manifest["config"].pop("beam_options") == ""
    assert beam_manifest["config"].pop("beam_options") == DIRECT_OPTIONS
    assert beam_manifest == local_manifest
    progress = os.path.join(local.out_dir, progress_lib.PROGRESS_DIR)
    names = sorted(name for name in os.listdir(progress) if name.endswith(".tfrecord.json"))
    assert len(names) == 3
    for name in names + ["encodings.json", "job.json"]:
        assert _read_json(
            os.path.join(on_beam.out_dir, progress_lib.PROGRESS_DIR, name)
        ) == _read_json(os.path.join(progress, name)), name


def test_beam_quarantines_the_bad_image_as_the_local_runner_does(both_runners):
    local, on_beam, _, _ = both_runners
    with open(os.path.join(on_beam.out_dir, job.QUARANTINE_NAME)) as file:
        quarantine = file.read()
    with open(os.path.join(local.out_dir, job.QUARANTINE_NAME)) as file:
        assert quarantine == file.read()
    assert quarantine.count("\n") == 2 and BAD_IMAGE in quarantine


def test_beam_rerun_redoes_only_the_deleted_shard(both_runners):
    local, on_beam, _, _ = both_runners
    files = _shard_files(on_beam.out_dir)
    deleted = os.path.join(on_beam.out_dir, "pool", "train-00001-of-00002.tfrecord")
    kept = {name: os.stat(os.path.join(on_beam.out_dir, name)).st_mtime_ns for name in files}
    os.remove(deleted)
    summary = job.make_tfrecords(on_beam).summary
    assert summary["shards_redone"] == 1
    redone = _read_json(
        os.path.join(
            on_beam.out_dir, progress_lib.PROGRESS_DIR, "train-00001-of-00002.tfrecord.json"
        )
    )
    assert (
        summary["images_processed"]
        == redone["num_records"] + len(redone["quarantine"])
        == len(_records(deleted)) + len(redone["quarantine"])
    )
    for name in files:
        assert filecmp.cmp(
            os.path.join(local.out_dir, name), os.path.join(on_beam.out_dir, name), shallow=False
        )
        if (
            "train-00001-of-00002" not in name
        ):  # a shard is redone for every node, the rest is left alone
            assert os.stat(os.path.join(on_beam.out_dir, name)).st_mtime_ns == kept[name], name


def test_runner_flags_reach_the_config_and_beam_options_need_the_beam_runner(tmp_path, capsys):
    common = ["--data-dir", str(tmp_path), "--out-dir", str(tmp_path / "out")]
    config = make_tfrecords.parse_flags(
        common + ["--runner", "beam", f"--beam-options={DIRECT_OPTIONS}"]
    )
    assert (config.runner, config.beam_options) == ("beam", DIRECT_OPTIONS)
    assert make_tfrecords.parse_flags(common).runner == "local"
    with pytest.raises(SystemExit):
        make_tfrecords.parse_flags(common + [f"--beam-options={DIRECT_OPTIONS}"])
    assert "--beam-options needs --runner beam" in capsys.readouterr().err


def test_without_beam_installed_the_runner_names_the_extra(tmp_path, monkeypatch):
    monkeypatch.setattr(beam, "apache_beam", None)
    config = offline_config.ExtractConfig(
        out_dir=str(tmp_path / "out"), data_dir=str(tmp_path), runner="beam"
    )
    with pytest.raises(ValueError, match=r'pip install -e "\.\[beam\]"'):
        job.make_tfrecords(config)
    assert not os.path.exists(tmp_path / "out")


@pytest.mark.slow
def test_beam_writes_the_local_runners_records_in_a_reduced_storage_dtype(tmp_path):
    data = str(tmp_path / "images")
    conftest.write_random_images(data, per_class=2)
    local = dataclasses.replace(
        offline_config.tiny(str(tmp_path / "local"), data),
        storage_dtype="float16",
        validation_percent=0,
        test_percent=0,
    )
    on_beam = dataclasses.replace(
        local, out_dir=str(tmp_path / "beam"), runner="beam", beam_options=DIRECT_OPTIONS
    )
    job.make_tfrecords(local)
    job.make_tfrecords(on_beam)
    files = _shard_files(local.out_dir)
    assert len(files) == 2 * len(local.nodes) and _shard_files(on_beam.out_dir) == files
    for name in files:
        assert filecmp.cmp(
            os.path.join(local.out_dir, name), os.path.join(on_beam.out_dir, name), shallow=False
        )
    local_manifest = _read_json(os.path.join(local.out_dir, "manifest.json"))
    beam_manifest = _read_json(os.path.join(on_beam.out_dir, "manifest.json"))
    assert {entry["dtype"] for entry in beam_manifest["nodes"].values()} == {"float16"}
    for manifest in (local_manifest, beam_manifest):
        del manifest["config"]["runner"], manifest["config"]["beam_options"]
    assert beam_manifest == local_manifest


@pytest.fixture(scope="module")
def on_urls(both_runners):
    """The local runner's dataset copied to ram:// and extracted there by Beam: (local config,
    ram:// config)."""
    local = both_runners[0]
    conftest.copy_to_url(local.data_dir, f"{RAM}/images")
    remote = dataclasses.replace(
        local,
        data_dir=f"{RAM}/images",
        out_dir=f"{RAM}/records",
        runner="beam",
        beam_options=DIRECT_OPTIONS,
    )
    try:
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(codec, "SPARSE_AT_MOST", 1.0)  # as in both_runners
            job.make_tfrecords(remote)
        yield local, remote
    finally:
        tf.io.gfile.rmtree(RAM)


def _remote_shard_files(out_dir):
    return sorted(
        fileio.relpath(fileio.join(root, name), out_dir)
        for root, _, names in fileio.walk(out_dir)
        for name in names
        if name.endswith(".tfrecord")
    )


def _without_data_dir(text: str, config) -> str:
    return text.replace(config.data_dir, "DATA")


@pytest.mark.slow
def test_beam_on_urls_writes_the_local_runners_records_manifest_and_quarantine(on_urls):
    local, remote = on_urls
    files = _shard_files(local.out_dir)
    assert _remote_shard_files(remote.out_dir) == files
    for name in files:
        local_path, remote_path = (
            os.path.join(local.out_dir, name),
            fileio.join(remote.out_dir, name),
        )
        assert _records(remote_path) == _records(local_path), name
        assert writer.file_sha256(remote_path) == writer.file_sha256(local_path), name
    local_manifest = _read_json(os.path.join(local.out_dir, "manifest.json"))
    remote_manifest = fileio.read_json(fileio.join(remote.out_dir, "manifest.json"))
    for manifest, config in ((local_manifest, local), (remote_manifest, remote)):
        for key, value in (
            ("data_dir", config.data_dir),
            ("runner", config.runner),
            ("beam_options", config.beam_options),
        ):
            assert manifest["config"].pop(key) == value
    assert remote_manifest == local_manifest
    local_quarantine = fileio.read_bytes(os.path.join(local.out_dir, job.QUARANTINE_NAME)).decode()
    remote_quarantine = fileio.read_bytes(fileio.join(remote.out_dir, job.QUARANTINE_NAME)).decode()
    assert f"{RAM}/images/{BAD_IMAGE}" in remote_quarantine
    assert _without_data_dir(remote_quarantine, remote) == _without_data_dir(
        local_quarantine, local
    )


@pytest.mark.slow
def test_the_verifier_and_the_trainers_reader_read_records_at_urls(on_urls, capsys):
    local, remote = on_urls
    assert verify_tool.main([remote.out_dir]) == 0
    assert (
        f"verify: all 6 shard files in {remote.out_dir} match manifest.json"
        in capsys.readouterr().out
    )
    for node in local.nodes:
        local_batches = list(
            conftest.records_dataset(local.out_dir, node, "train", 4, with_ids=True)
        )
        remote_batches = list(
            conftest.records_dataset(remote.out_dir, node, "train", 4, with_ids=True)
        )
        assert len(remote_batches) == len(local_batches) > 0
        for local_batch, remote_batch in zip(local_batches, remote_batches):
            for local_part, remote_part in zip(local_batch, remote_batch):
                np.testing.assert_array_equal(remote_part.numpy(), local_part.numpy())


@pytest.mark.slow
def test_beam_rerun_on_urls_redoes_only_the_shard_whose_progress_is_gone(on_urls, monkeypatch):
    local, remote = on_urls
    shard = "train-00001-of-00002.tfrecord"
    tf.io.gfile.remove(fileio.join(remote.out_dir, progress_lib.PROGRESS_DIR, shard + ".json"))
    opened = []
    open_record_writer = writer.open_record_writer
    monkeypatch.setattr(
        writer,
        "open_record_writer",
        lambda path, compression: opened.append(path) or open_record_writer(path, compression),
    )
    summary = job.make_tfrecords(remote).summary
    assert summary["shards_redone"] == 1
    assert sorted(opened) == sorted(
        fileio.temporary_path(fileio.join(remote.out_dir, node, shard)) for node in remote.nodes
    )
    for name in _shard_files(local.out_dir):
        assert writer.file_sha256(fileio.join(remote.out_dir, name)) == writer.file_sha256(
            os.path.join(local.out_dir, name)
        ), name
    assert not [
        name
        for root, _, names in fileio.walk(remote.out_dir)
        for name in names
        if name.endswith(".tmp")
    ]


def test_the_local_runner_reads_and_writes_urls_too(both_runners):
    local = both_runners[0]
    url = f"{RAM}_local"
    try:
        conftest.copy_to_url(local.data_dir, f"{url}/images")
        remote = dataclasses.replace(local, data_dir=f"{url}/images", out_dir=f"{url}/records")
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(codec, "SPARSE_AT_MOST", 1.0)
            summary = job.make_tfrecords(remote).summary
        assert (summary["images_written"], summary["images_skipped"]) == (9, 1)
        for name in _shard_files(local.out_dir):
            assert writer.file_sha256(fileio.join(remote.out_dir, name)) == writer.file_sha256(
                os.path.join(local.out_dir, name)
            ), name
    finally:
        tf.io.gfile.rmtree(url)


def test_no_lock_is_taken_on_an_object_store_and_the_user_is_told(tmp_path, capsys):
    assert isinstance(job.output_lock(str(tmp_path)), writer.OutputLock)
    assert capsys.readouterr().err == ""
    job.output_lock(f"{RAM}/records")
    error = capsys.readouterr().err
    assert (
        error.count("\n") == 1 and "up to you" in error and f"{RAM}/records is not locked" in error
    )


@pytest.mark.parametrize(
    "flags, message",
    [
        (
            ["--data-dir", f"{RAM}_missing/images", "--out-dir", f"{RAM}_missing/records"],
            f"--data-dir {RAM}_missing/images: no such directory",
        ),
        (
            ["--data-dir", f"{RAM}_missing/images", "--out-dir", "nowhere://bucket/records"],
            "--out-dir nowhere://bucket/records: TensorFlow has no file system for nowhere://",
        ),
    ],
)
def test_a_bad_url_is_one_line(flags, message, capsys):
    assert (
        make_tfrecords.main(flags + ["--runner", "beam", f"--beam-options={DIRECT_OPTIONS}"]) == 2
    )
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and message in error, error
    assert not tf.io.gfile.exists(f"{RAM}_missing")


class _SubmittedJob:
    """A PipelineResult whose wait is interrupted, as by Ctrl-C while a Dataflow job runs."""

    def __init__(self, interruption: BaseException, cancel_error: Exception | None = None):
        self.interruption = interruption
        self.cancel_error = cancel_error
        self.cancelled = False

    def wait_until_finish(self, duration=None):
        raise self.interruption

    def cancel(self):
        self.cancelled = True
        if self.cancel_error is not None:
            raise self.cancel_error


def test_an_interrupted_launcher_cancels_its_job(both_runners, tmp_path, monkeypatch, capsys):
    local = both_runners[0]
    submitted = _SubmittedJob(KeyboardInterrupt())
    monkeypatch.setattr(
        beam.apache_beam.Pipeline, "run", lambda pipeline, *args, **kwargs: submitted
    )
    config = dataclasses.replace(
        local, out_dir=str(tmp_path / "out"), runner="beam", beam_options=DIRECT_OPTIONS
    )
    with pytest.raises(KeyboardInterrupt):
        job.make_tfrecords(config)
    assert submitted.cancelled
    assert "make_tfrecords: the Beam job was cancelled" in capsys.readouterr().err
    assert not _shard_files(config.out_dir)


@pytest.mark.parametrize(
    "interruption, cancel_error, said",
    [
        (interrupt.Interrupted("stopped", signal.SIGTERM), None, "the Beam job was cancelled"),
        (
            KeyboardInterrupt(),
            NotImplementedError(),
            "",
        ),  # a runner that cannot cancel: nothing to say
        (
            KeyboardInterrupt(),
            OSError("the service did not answer"),
            "could not cancel the Beam job (OSError",
        ),
    ],
)
def test_the_interruption_is_raised_again_whatever_the_cancel_does(
    interruption, cancel_error, said, capsys
):
    submitted = _SubmittedJob(interruption, cancel_error)
    with pytest.raises(type(interruption)):
        beam.wait_for(submitted)
    assert submitted.cancelled
    error = capsys.readouterr().err
    assert (said in error and error.count("\n") == 1) if said else error == ""
