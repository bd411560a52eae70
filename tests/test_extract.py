"""The offline stage end to end: records equal the model's activations; bad input; restart;
locking."""

import csv
import dataclasses
import filecmp
import json
import os
import signal
import subprocess
import sys
import time

import keras
import ml_dtypes
import numpy as np
import pytest

from bottlenecks import cut
from bottlenecks import loading
from bottlenecks import registry
from pipeline import errors
from pipeline.config import offline as offline_config
from pipeline.offline import images
from pipeline.offline import job
from pipeline.offline import ladder
from pipeline.offline import progress as progress_lib
from tests import conftest
from tfrecords import codec
from tfrecords import manifest as manifest_lib
from tfrecords import writer


def _expected_activations(config, paths):
    """What the backbone computes for each image's branches, one image at a time."""
    keras.utils.set_random_seed(config.seed)
    backbone = registry.get_backbone(config.backbone)
    model = loading.build(backbone, config.weights, config.input_size)
    extractor = cut.extractor(model, backbone, config.nodes)
    expected = {}
    for path in paths:
        branches = ladder.branch_images(ladder.load_rgb(path), config.input_size, config.qualities)
        expected[path] = {node: value.numpy() for node, value in extractor(branches).items()}
    return expected


def _read_all(out_dir, node, split):
    records = {}
    for bottleneck, label, image_id in conftest.records_dataset(
        out_dir, node, split, batch_size=3, with_ids=True
    ):
        for one, one_label, one_id in zip(bottleneck.numpy(), label.numpy(), image_id.numpy()):
            records[one_id.decode()] = (one, int(one_label))
    return records


def test_records_hold_the_models_activations_of_every_branch(tmp_path, tiny_dataset, monkeypatch):
    config = dataclasses.replace(
        offline_config.tiny(str(tmp_path / "out"), tiny_dataset),
        validation_percent=30,
        test_percent=0,
    )
    # Random weights give about half zeros, which the default policy keeps dense: ask for sparse
    # wherever it saves bytes, so that both encodings are written and read back.
    monkeypatch.setattr(codec, "SPARSE_AT_MOST", 1.0)
    outcome = job.make_tfrecords(config)
    summary = outcome.summary
    with open(tmp_path / "out" / "manifest.json") as file:
        manifest = json.load(file)
    # The manifest the job returns is the one it wrote, its shard paths resolving as a read one's.
    assert outcome.manifest == manifest_lib.Manifest.read(str(tmp_path / "out"))
    assert outcome.manifest.shard_paths("pool", "train") == manifest_lib.Manifest.read(
        str(tmp_path / "out")
    ).shard_paths("pool", "train")
    assert manifest["nodes"]["pool"]["encoding"] == codec.SPARSE
    assert manifest["nodes"]["block_16_project_BN"]["encoding"] == codec.DENSE
    assert manifest["class_names"] == ["cat", "dog", "fox"]
    assert manifest["branches"] == ["original"] + [f"q{quality}" for quality in range(10, 101, 10)]
    assert manifest["nodes"]["pool"]["shape"] == [11, 1280]
    assert manifest["nodes"]["block_16_project_BN"]["shape"] == [11, 1, 1, 320]
    assert set(manifest["splits"]) == {"train", "validation"}
    assert (
        sum(split["num_records"] for split in manifest["splits"].values())
        == 12
        == summary["images_written"]
    )
    paths = {
        os.path.relpath(os.path.join(root, name), tiny_dataset): os.path.join(root, name)
        for root, _, names in os.walk(tiny_dataset)
        for name in names
    }
    expected = _expected_activations(config, sorted(paths.values()))
    for node in config.nodes:
        seen = {}
        for split in manifest["splits"]:
            seen.update(_read_all(str(tmp_path / "out"), node, split))
        assert set(seen) == set(paths)
        for image_id, (bottleneck, label) in seen.items():
            assert label == ["cat", "dog", "fox"].index(image_id.split("/")[0])
            np.testing.assert_allclose(
                bottleneck, expected[paths[image_id]][node], rtol=1e-4, atol=1e-5
            )


def test_bad_files_are_quarantined_and_the_job_goes_on(tmp_path, tiny_dataset):
    expected = conftest.write_odd_inputs(os.path.join(tiny_dataset, "dog"))
    os.remove(os.path.join(tiny_dataset, "dog", "good.jpg"))  # keep the listing simple below
    summary = job.make_tfrecords(offline_config.tiny(str(tmp_path / "out"), tiny_dataset)).summary
    with open(tmp_path / "out" / "quarantine.csv") as file:
        rows = list(csv.DictReader(file))
    bad = {name: reason for name, reason in expected.items() if reason is not None}
    assert sorted(os.path.basename(row["path"]) for row in rows) == sorted(bad)
    for row in rows:
        assert bad[os.path.basename(row["path"])] in row["reason"]
    usable = 12 + len(expected) - 1 - len(bad)
    assert summary["images_written"] == usable and summary["images_skipped"] == len(bad)
    assert f"{len(bad)} skipped" in summary["text"]


def _tree(out_dir):
    """Every output file that must not depend on the job having been interrupted."""
    return sorted(
        os.path.relpath(os.path.join(root, name), out_dir)
        for root, directories, names in os.walk(out_dir)
        for name in names
        if not (root.endswith(".progress") or name in (".lock", "timings.json"))
    )


@pytest.mark.slow
def test_killed_job_resumes_to_output_identical_to_an_uninterrupted_run(tmp_path):
    data = str(tmp_path / "images")
    conftest.write_random_images(data, per_class=12)
    command = [
        sys.executable,
        "-m",
        "tools.make_tfrecords",
        "--data-dir",
        data,
        "--backbone",
        "mobilenet_v2",
        "--weights",
        "none",
        "--input-size",
        "64",
        "--nodes",
        "block_16_project_BN,pool",
        "--num-shards",
        "12",
        "--validation-percent",
        "0",
        "--test-percent",
        "0",
        "--batch-size",
        "2",
        # the object view's extra pass and its views.csv must resume exactly too
        "--views",
        "object,hflip",
        "--no-progress",
    ]
    environment = dict(os.environ, PYTHONPATH=conftest.PROJECT_ROOT)
    killed = str(tmp_path / "killed")
    process = subprocess.Popen(
        command + ["--out-dir", killed],
        env=environment,
        cwd=conftest.PROJECT_ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    progress = os.path.join(killed, progress_lib.PROGRESS_DIR)
    deadline = time.time() + 120
    while process.poll() is None and time.time() < deadline:
        if os.path.isdir(progress) and any(
            name.startswith("train-") for name in os.listdir(progress)
        ):
            process.send_signal(
                signal.SIGSTOP
            )  # freeze it, then look, then kill it without warning
            break
        time.sleep(0.002)
    done_at_kill = [name for name in os.listdir(progress) if name.startswith("train-")]
    process.kill()
    process.wait()
    assert 1 <= len(done_at_kill) < 12, "the job must be killed part-way through"
    assert not os.path.exists(os.path.join(killed, "manifest.json"))

    resumed = subprocess.run(
        command + ["--out-dir", killed],
        env=environment,
        cwd=conftest.PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert resumed.returncode == 0, resumed.stderr
    assert f"{12 - len(done_at_kill)} shards redone" in resumed.stdout
    straight = str(tmp_path / "straight")
    subprocess.run(
        command + ["--out-dir", straight],
        env=environment,
        cwd=conftest.PROJECT_ROOT,
        check=True,
        capture_output=True,
        timeout=300,
    )
    assert _tree(killed) == _tree(straight)
    assert "views.csv" in _tree(straight)
    assert not [name for name in _tree(killed) if name.endswith(".tmp")]
    for name in _tree(straight):
        assert filecmp.cmp(
            os.path.join(killed, name), os.path.join(straight, name), shallow=False
        ), name


def test_a_second_job_on_the_same_output_is_refused(tmp_path, tiny_dataset):
    out_dir = str(tmp_path / "out")
    os.makedirs(out_dir)
    with writer.OutputLock(out_dir):
        with pytest.raises(writer.JobAlreadyRunning, match="another job"):
            job.make_tfrecords(offline_config.tiny(out_dir, tiny_dataset))


def test_rerun_is_a_no_op_and_other_settings_are_refused(tmp_path, tiny_dataset):
    config = offline_config.tiny(str(tmp_path / "out"), tiny_dataset)
    job.make_tfrecords(config)
    before = os.path.getmtime(tmp_path / "out" / "pool" / "train-00000-of-00002.tfrecord")
    assert job.make_tfrecords(config).summary["shards_redone"] == 0
    assert os.path.getmtime(tmp_path / "out" / "pool" / "train-00000-of-00002.tfrecord") == before
    with pytest.raises(ValueError, match="different job.*qualities"):
        job.make_tfrecords(dataclasses.replace(config, qualities=(50, 90)))


def test_labels_csv_with_splits_and_integer_labels(tmp_path, tiny_dataset):
    rows = [
        ("cat/cat_000.jpg", 7, "train"),
        ("dog/dog_001.jpg", 2, "val"),
        ("fox/fox_002.jpg", 7, "val"),
    ]
    csv_path = os.path.join(tiny_dataset, "labels.csv")
    with open(csv_path, "w") as file:
        file.write("file,label,split\n" + "".join(f"{a},{b},{c}\n" for a, b, c in rows))
    config = dataclasses.replace(
        offline_config.tiny(str(tmp_path / "out"), tiny_dataset),
        data_dir=None,
        labels_csv=csv_path,
        qualities=(30, 60),
    )
    job.make_tfrecords(config)
    held_out = _read_all(
        str(tmp_path / "out"), "pool", "test"
    )  # the CSV's val rows are the test split
    # Integer ids (sparse, as 2 and 7 here, or 4780) are numbered 0..K-1 in numeric order: a head
    # of K outputs, the ids kept as the class names.
    assert {image_id: label for image_id, (_, label) in held_out.items()} == {
        "dog/dog_001.jpg": 0,
        "fox/fox_002.jpg": 1,
    }
    assert next(iter(held_out.values()))[0].shape == (3, 1280)
    with open(tmp_path / "out" / "manifest.json") as file:
        assert json.load(file)["class_names"] == ["2", "7"]
    assert images.index_csv(csv_path, 0).class_names == ("2", "7")
    with open(csv_path, "a") as file:
        file.write("cat/cat_001.jpg,4780,train\ncat/cat_002.jpg,12,train\n")
    index = images.index_csv(csv_path, 0)
    assert index.class_names == ("2", "7", "12", "4780")
    assert [item.label for item in index.items] == [1, 0, 1, 3, 2]


def test_a_labels_csv_header_names_its_columns_and_the_others_are_left_out(tmp_path):
    path = tmp_path / "labels.csv"
    path.write_text(
        "file,imagenet_class_index,wnid,class_name\n"
        'a.jpg,65,n01751748,sea snake\nb.jpg,57,n01735189,"garter snake, grass snake"\n'
    )
    index = images.index_csv(str(path), 0)
    assert index.class_names == ("57", "65")
    assert [(item.image_id, item.label) for item in index.items] == [("a.jpg", 1), ("b.jpg", 0)]
    path.write_text("path,class_name,split,label\na.jpg,cat,val,3\nb.jpg,dog,train,4\n")
    index = images.index_csv(str(path), 0)
    assert [(item.label, item.split) for item in index.items] == [(0, "test"), (1, "train")]
    path.write_text("a.jpg,1,train,extra\n")  # without a header, still file,label[,split]
    with pytest.raises(errors.UserError, match="do not have file,label"):
        images.index_csv(str(path), 0)


def test_presplit_directory_holds_out_its_val_folder_as_test_and_carves_validation_from_train(
    tmp_path,
):
    data = str(tmp_path / "images")
    conftest.write_random_images(data, per_class=4, split_dirs=("train", "val"))
    job.make_tfrecords(
        dataclasses.replace(offline_config.tiny(str(tmp_path / "out"), data), validation_percent=40)
    )
    held_out = _read_all(str(tmp_path / "out"), "pool", "test")
    assert sorted(held_out) == sorted(
        f"val/{name}/{name}_{number:03d}.jpg"
        for name in ("cat", "dog", "fox")
        for number in range(4)
    )
    validation = _read_all(str(tmp_path / "out"), "pool", "validation")
    train = _read_all(str(tmp_path / "out"), "pool", "train")
    assert (
        validation
        and train
        and all(image_id.startswith("train/") for image_id in [*validation, *train])
    )
    assert len(validation) + len(train) == 12 and not set(validation) & set(train)


def test_command_line_errors_are_one_clear_line(tmp_path, tiny_dataset, capsys):
    from tools import make_tfrecords

    code = make_tfrecords.main(
        [
            "--data-dir",
            tiny_dataset,
            "--out-dir",
            str(tmp_path / "out"),
            "--backbone",
            "mobilenet_v2",
            "--weights",
            "none",
            "--nodes",
            "mixed7",
        ]
    )
    assert code == 2
    assert "valid nodes are: expanded_conv_project_BN" in capsys.readouterr().err
    code = make_tfrecords.main(
        ["--data-dir", str(tmp_path / "nowhere"), "--out-dir", str(tmp_path / "o")]
    )
    assert code == 2 and "no such directory" in capsys.readouterr().err


@pytest.mark.slow
def test_storage_dtype_is_recorded_read_back_as_float32_and_a_rerun_with_another_is_refused(
    tmp_path, tiny_dataset
):
    lossless = offline_config.tiny(str(tmp_path / "float32"), tiny_dataset)
    halved = dataclasses.replace(
        lossless, out_dir=str(tmp_path / "bfloat16"), storage_dtype="bfloat16"
    )
    job.make_tfrecords(lossless)
    summary = job.make_tfrecords(halved).summary
    with open(tmp_path / "bfloat16" / "manifest.json") as file:
        manifest = json.load(file)
    assert manifest["format_version"] == 2 and manifest["config"]["storage_dtype"] == "bfloat16"
    assert "bfloat16" in summary["text"]
    with open(tmp_path / "float32" / "manifest.json") as file:
        assert json.load(file)["format_version"] == 1
    for node in halved.nodes:
        entry = manifest["nodes"][node]
        assert entry["dtype"] == "bfloat16"
        assert (
            entry["encoding"] == codec.DENSE
        )  # about half zeros: sparse would not save enough to pay its decoding
        assert entry["bytes_per_image"] < 0.6 * entry["float32_bytes_per_image"]
        exact = _read_all(lossless.out_dir, node, "train")
        rounded = _read_all(halved.out_dir, node, "train")
        assert set(rounded) == set(exact)
        for image_id, (bottleneck, label) in rounded.items():
            assert bottleneck.dtype == np.float32 and label == exact[image_id][1]
            np.testing.assert_array_equal(
                bottleneck, exact[image_id][0].astype(ml_dtypes.bfloat16).astype(np.float32)
            )
    # The float32 job's identity has no dtype in it, so jobs written before dtypes existed resume.
    with open(tmp_path / "float32" / progress_lib.PROGRESS_DIR / "job.json") as file:
        assert "storage_dtype" not in json.load(file)
    for config, other in ((halved, "float16"), (lossless, "bfloat16"), (halved, "float32")):
        with pytest.raises(ValueError, match="different job.*storage_dtype"):
            job.make_tfrecords(dataclasses.replace(config, storage_dtype=other))
