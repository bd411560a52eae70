"""The Beam runner (DirectRunner) against the local runner: the same records, manifest, quarantine and resume."""

import dataclasses
import filecmp
import json
import os

import pytest
import tensorflow as tf

from pipeline import config as config_lib
from pipeline.offline import beam
from pipeline.offline import extract
from tests import conftest
from tfrecords import codec
from tools import make_tfrecords

# In memory and one worker: the fastest DirectRunner set-up, and the one CI's two cores can afford.
DIRECT_OPTIONS = "--runner=DirectRunner --direct_num_workers=1 --direct_running_mode=in_memory"
BAD_IMAGE = "dog/broken.jpg"


@pytest.fixture(scope="module")
def both_runners(tmp_path_factory):
    """One tiny dataset (with one unreadable file) extracted by the local runner and by Beam."""
    root = tmp_path_factory.mktemp("beam")
    data = str(root / "images")
    conftest.write_random_images(data, per_class=3)
    with open(os.path.join(data, BAD_IMAGE), "wb") as file:
        file.write(b"\xff\xd8\xff\xe0 a JPEG header and nothing else")
    # batch_size 2 over 5 images per shard: full and partial batches, one with the bad image in it.
    local = dataclasses.replace(config_lib.tiny(str(root / "local"), data), batch_size=2, validation_percent=30,
                                test_percent=0)
    on_beam = dataclasses.replace(local, out_dir=str(root / "beam"), runner="beam", beam_options=DIRECT_OPTIONS)
    with pytest.MonkeyPatch.context() as patch:
        # Random weights give about half zeros, which the reading-speed policy keeps dense: store every node
        # that sparse storage shrinks at all as sparse, so that both encodings are compared.
        patch.setattr(codec, "SPARSE_AT_MOST", 1.0)
        return local, on_beam, extract.make_tfrecords(local), beam.make_tfrecords(on_beam)


def _shard_files(out_dir):
    return sorted(os.path.relpath(os.path.join(directory, name), out_dir)
                  for directory, _, names in os.walk(out_dir) for name in names if name.endswith(".tfrecord"))


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
        assert filecmp.cmp(os.path.join(local.out_dir, name), os.path.join(on_beam.out_dir, name), shallow=False)
    assert beam_summary["images_written"] == local_summary["images_written"] == 9
    encodings = _read_json(os.path.join(local.out_dir, extract.PROGRESS_DIR, "encodings.json"))
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
    progress = os.path.join(local.out_dir, extract.PROGRESS_DIR)
    names = sorted(name for name in os.listdir(progress) if name.endswith(".tfrecord.json"))
    assert len(names) == 3
    for name in names + ["encodings.json", "job.json"]:
        assert _read_json(os.path.join(on_beam.out_dir, extract.PROGRESS_DIR, name)) == \
            _read_json(os.path.join(progress, name)), name


def test_beam_quarantines_the_bad_image_as_the_local_runner_does(both_runners):
    local, on_beam, _, _ = both_runners
    with open(os.path.join(on_beam.out_dir, extract.QUARANTINE_NAME)) as file:
        quarantine = file.read()
    with open(os.path.join(local.out_dir, extract.QUARANTINE_NAME)) as file:
        assert quarantine == file.read()
    assert quarantine.count("\n") == 2 and BAD_IMAGE in quarantine


def test_beam_rerun_redoes_only_the_deleted_shard(both_runners):
    local, on_beam, _, _ = both_runners
    files = _shard_files(on_beam.out_dir)
    deleted = os.path.join(on_beam.out_dir, "pool", "train-00001-of-00002.tfrecord")
    kept = {name: os.stat(os.path.join(on_beam.out_dir, name)).st_mtime_ns for name in files}
    os.remove(deleted)
    summary = beam.make_tfrecords(on_beam)
    assert summary["shards_redone"] == 1
    redone = _read_json(os.path.join(on_beam.out_dir, extract.PROGRESS_DIR, "train-00001-of-00002.tfrecord.json"))
    assert summary["images_processed"] == redone["num_records"] + len(redone["quarantine"]) == \
        len(_records(deleted)) + len(redone["quarantine"])
    for name in files:
        assert filecmp.cmp(os.path.join(local.out_dir, name), os.path.join(on_beam.out_dir, name), shallow=False)
        if "train-00001-of-00002" not in name:  # a shard is redone for every node, the rest is left alone
            assert os.stat(os.path.join(on_beam.out_dir, name)).st_mtime_ns == kept[name], name


def test_runner_flags_reach_the_config_and_beam_options_need_the_beam_runner(tmp_path, capsys):
    common = ["--data-dir", str(tmp_path), "--out-dir", str(tmp_path / "out")]
    config = make_tfrecords.parse_flags(common + ["--runner", "beam", f"--beam-options={DIRECT_OPTIONS}"])
    assert (config.runner, config.beam_options) == ("beam", DIRECT_OPTIONS)
    assert make_tfrecords.parse_flags(common).runner == "local"
    with pytest.raises(SystemExit):
        make_tfrecords.parse_flags(common + [f"--beam-options={DIRECT_OPTIONS}"])
    assert "--beam-options needs --runner beam" in capsys.readouterr().err


def test_without_beam_installed_the_runner_names_the_extra(tmp_path, monkeypatch):
    monkeypatch.setattr(beam, "apache_beam", None)
    config = config_lib.ExtractConfig(out_dir=str(tmp_path / "out"), data_dir=str(tmp_path), runner="beam")
    with pytest.raises(ValueError, match=r'pip install -e "\.\[beam\]"'):
        beam.make_tfrecords(config)
    assert not os.path.exists(tmp_path / "out")


def test_beam_refuses_urls_it_would_take_for_local_paths(tmp_path):
    config = config_lib.ExtractConfig(out_dir="gs://bucket/records", data_dir=str(tmp_path), runner="beam")
    with pytest.raises(ValueError, match="--out-dir gs://bucket/records: URLs are not supported"):
        beam.make_tfrecords(config)
    assert not os.path.exists("gs:")


def test_beam_writes_the_local_runners_records_in_a_reduced_storage_dtype(tmp_path):
    data = str(tmp_path / "images")
    conftest.write_random_images(data, per_class=2)
    local = dataclasses.replace(config_lib.tiny(str(tmp_path / "local"), data), storage_dtype="float16",
                                validation_percent=0, test_percent=0)
    on_beam = dataclasses.replace(local, out_dir=str(tmp_path / "beam"), runner="beam", beam_options=DIRECT_OPTIONS)
    extract.make_tfrecords(local)
    beam.make_tfrecords(on_beam)
    files = _shard_files(local.out_dir)
    assert len(files) == 2 * len(local.nodes) and _shard_files(on_beam.out_dir) == files
    for name in files:
        assert filecmp.cmp(os.path.join(local.out_dir, name), os.path.join(on_beam.out_dir, name), shallow=False)
    local_manifest = _read_json(os.path.join(local.out_dir, "manifest.json"))
    beam_manifest = _read_json(os.path.join(on_beam.out_dir, "manifest.json"))
    assert {entry["dtype"] for entry in beam_manifest["nodes"].values()} == {"float16"}
    for manifest in (local_manifest, beam_manifest):
        del manifest["config"]["runner"], manifest["config"]["beam_options"]
    assert beam_manifest == local_manifest
