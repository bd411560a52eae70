"""Shard integrity: verify names each damaged shard, a rerun rewrites only those, a read error names
the fix."""

import dataclasses
import os

import pytest
import tensorflow as tf

from pipeline.config import offline as offline_config
from pipeline.offline import job
from tests import conftest
from tfrecords import reader
from tfrecords import verify
from tools import make_tfrecords
from tools import verify as verify_tool


@pytest.mark.slow
def test_a_flipped_byte_is_found_explained_and_rewritten_alone(tmp_path, tiny_dataset, capsys):
    out_dir = str(tmp_path / "out")
    config = dataclasses.replace(
        offline_config.tiny(out_dir, tiny_dataset), validation_percent=0, qualities=(50,)
    )
    job.make_tfrecords(config)
    assert verify.verify_records(out_dir).ok and verify_tool.main([out_dir]) == 0
    damaged = os.path.join(out_dir, "pool", "train-00001-of-00002.tfrecord")
    kept = os.path.join(out_dir, "pool", "train-00000-of-00002.tfrecord")
    kept_mtime = os.path.getmtime(kept)
    conftest.flip_byte(damaged)
    capsys.readouterr()

    report = verify.verify_records(out_dir)
    assert [shard.path for shard in report.bad] == ["pool/train-00001-of-00002.tfrecord"]
    assert (
        "sha256 differs" in report.bad[0].reason
        and "unreadable record data" in report.bad[0].reason
    )
    assert verify_tool.main([out_dir]) == 1
    assert f"bad shard: {damaged}" in capsys.readouterr().out
    assert make_tfrecords.main(["--verify", out_dir]) == 1

    with pytest.raises(tf.errors.DataLossError) as raised:
        for _ in conftest.records_dataset(out_dir, "pool", "train", batch_size=4):
            pass
    message = reader.explain_data_loss(raised.value, out_dir, "pool", "train")
    assert "\n" not in message and damaged in message
    assert f"jpeg-ladder-verify {out_dir}" in message and "rerun make-tfrecords" in message

    summary = job.make_tfrecords(config).summary  # the original command
    assert summary["shards_redone"] == 1
    assert os.path.getmtime(kept) == kept_mtime
    assert verify.verify_records(out_dir).ok and make_tfrecords.main(["--verify", out_dir]) == 0

    os.remove(kept)
    os.truncate(damaged, 100)
    reasons = {shard.path: shard.reason for shard in verify.verify_records(out_dir).bad}
    assert reasons == {
        "pool/train-00000-of-00002.tfrecord": "missing",
        "pool/train-00001-of-00002.tfrecord": reasons["pool/train-00001-of-00002.tfrecord"],
    }
    assert reasons["pool/train-00001-of-00002.tfrecord"].startswith("100 bytes, the manifest says")
    assert job.make_tfrecords(config).summary["shards_redone"] == 2


def test_verify_without_a_manifest_is_a_user_error(tmp_path, capsys):
    assert verify_tool.main([str(tmp_path)]) == 2
    error = capsys.readouterr().err
    assert (
        error.count("\n") == 1
        and "no manifest.json in" in error
        and error.startswith("jpeg-ladder-verify: error")
    )
    assert make_tfrecords.main(["--verify", str(tmp_path / "nowhere")]) == 2
