"""Views beside the ladder: object, part and mirror branches from the offline stage to the export,
branches by name, the family fusion, compare over branch sets and the localisation check."""

import csv
import dataclasses
import filecmp
import json
import os

import keras
import numpy as np
import pytest
import tensorflow as tf
from tensorboard.backend.event_processing import event_accumulator

from pipeline import branches
from pipeline import errors
from pipeline.analysis import compare
from pipeline.analysis import localisation
from pipeline.analysis import report
from pipeline.config import offline as offline_config
from pipeline.config import training as training_config
from pipeline.offline import job
from pipeline.offline import progress as progress_lib
from pipeline.offline import views
from pipeline.training import export
from pipeline.training import fusion
from pipeline.training import run_directory
from pipeline.training import serving
from pipeline.training import tensorboard_logs
from pipeline.training import train
from tests import conftest
from tfrecords import manifest as manifest_lib
from tools import make_tfrecords

VIEWS = ("object", "parts:2", "hflip", "tcm:10:90:8")
NAMES = branches.ladder_names((30, 70)) + ("object", "part1", "part2", "hflip", "tcm")
DIRECT_OPTIONS = conftest.BEAM_DIRECT_OPTIONS


@pytest.fixture(scope="module")
def view_records(tmp_path_factory):
    """Random-weight MobileNetV2 records at 64 px (2x2 maps) with every view, local and on Beam."""
    root = tmp_path_factory.mktemp("views")
    data = str(root / "images")
    conftest.write_random_images(data, per_class=6)
    local = dataclasses.replace(
        offline_config.tiny(str(root / "local"), data),
        nodes=("pool",),
        input_size=64,
        qualities=(30, 70),
        views=VIEWS,
        batch_size=3,
        validation_percent=30,
        test_percent=25,
    )
    on_beam = dataclasses.replace(
        local, out_dir=str(root / "beam"), runner="beam", beam_options=DIRECT_OPTIONS
    )
    job.make_tfrecords(local)
    job.make_tfrecords(on_beam)
    return local, on_beam


def _files(out_dir):
    return sorted(
        os.path.relpath(os.path.join(directory, name), out_dir)
        for directory, _, names in os.walk(out_dir)
        for name in names
        if name.endswith(".tfrecord") or name == views.VIEWS_CSV
    )


@pytest.mark.slow
def test_views_are_branches_after_the_ladder_with_their_boxes_in_the_manifest(view_records):
    local, _ = view_records
    manifest = manifest_lib.Manifest.read(local.out_dir)
    assert manifest.branches == NAMES
    assert manifest.node("pool").shape == (len(NAMES), 1280)
    block = manifest.views
    assert block["spec"] == list(VIEWS) and block["nodes"] == list(
        views.DEFAULT_VIEW_NODES["mobilenet_v2"]
    )
    with open(os.path.join(local.out_dir, views.VIEWS_CSV)) as file:
        rows = list(csv.reader(file))
    assert rows[0] == ["image_id"] + list(views.ViewSpec.parse(VIEWS).box_columns)
    total = sum(split.num_records for split in manifest.splits.values())
    assert len(rows) - 1 == block["csv"]["rows"] == block["box_statistics"]["images"] == total
    for row in rows[1:]:
        values = np.asarray(row[1:], np.float64).reshape(-1, 4)
        assert np.all((0 <= values) & (values <= 1))
        assert np.all(values[:, 2] > values[:, 0]) and np.all(values[:, 3] > values[:, 1])
        obj = values[0]  # every part lies inside the object box
        assert np.all(values[1:, :2] >= obj[:2] - 1e-6) and np.all(values[1:, 2:] <= obj[2:] + 1e-6)
    assert job.verify_output(local.out_dir).ok


@pytest.mark.slow
def test_verify_catches_a_changed_views_csv(view_records, tmp_path):
    local, _ = view_records
    copy = str(tmp_path / "copy")
    import shutil

    shutil.copytree(local.out_dir, copy)
    path = os.path.join(copy, views.VIEWS_CSV)
    with open(path) as file:
        text = file.read()
    with open(path, "w") as file:
        file.write(text.replace("0.0,", "0.1,", 1))
    report = job.verify_output(copy)
    assert not report.ok and report.bad[0].path == views.VIEWS_CSV


@pytest.mark.slow
def test_beam_writes_the_same_views_records_and_a_rerun_redoes_a_lost_shard(view_records):
    local, on_beam = view_records
    names = _files(local.out_dir)
    assert views.VIEWS_CSV in names and _files(on_beam.out_dir) == names
    for name in names:
        assert filecmp.cmp(
            os.path.join(local.out_dir, name), os.path.join(on_beam.out_dir, name), shallow=False
        ), name
    # A shard lost with its progress (as a kill mid-shard leaves it) is redone to the same bytes.
    before = {name: open(os.path.join(local.out_dir, name), "rb").read() for name in names}
    progress = os.path.join(local.out_dir, progress_lib.PROGRESS_DIR)
    lost = sorted(name for name in os.listdir(progress) if name.startswith("train-"))[0]
    os.remove(os.path.join(progress, lost))
    shard = next(name for name in names if os.path.basename(name).startswith(lost[: -len(".json")]))
    os.remove(os.path.join(local.out_dir, shard))
    summary = job.make_tfrecords(local).summary
    assert summary["shards_redone"] == 1
    for name in names:
        with open(os.path.join(local.out_dir, name), "rb") as file:
            assert file.read() == before[name], name


@pytest.mark.slow
def test_a_rerun_with_other_views_is_refused_and_views_need_a_keras_backbone(view_records):
    local, _ = view_records
    with pytest.raises(ValueError, match="different job.*views"):
        job.make_tfrecords(dataclasses.replace(local, views=("object",)))
    with pytest.raises(errors.UserError, match="only pooled features"):
        dataclasses.replace(local, backbone="savedmodel:/somewhere", weights=None)
    with pytest.raises(errors.UserError, match="--qualities"):
        dataclasses.replace(local, qualities=(), views=())


def test_views_flags_parse_and_bad_ones_are_one_line(tmp_path, capsys):
    argv = ["--data-dir", str(tmp_path), "--out-dir", str(tmp_path / "o")]
    with pytest.raises(SystemExit):
        make_tfrecords.main(argv + ["--views", "object,parts"])
    assert "--views" in capsys.readouterr().err
    assert offline_config.view_list("object,parts:3,hflip") == ("object", "parts:3", "hflip")
    assert offline_config.qualities_or_none("none") == ()


@pytest.mark.slow
def test_the_original_and_its_object_alone(tmp_path):
    data = str(tmp_path / "images")
    conftest.write_random_images(data, per_class=2)
    config = dataclasses.replace(
        offline_config.tiny(str(tmp_path / "records"), data),
        nodes=("pool",),
        input_size=64,
        qualities=(),
        views=("object",),
        validation_percent=0,
        test_percent=0,
    )
    job.make_tfrecords(config)
    manifest = manifest_lib.Manifest.read(config.out_dir)
    assert manifest.branches == ("original", "object")
    assert manifest.node("pool").shape[0] == 2


def test_branches_resolve_by_name_family_and_index():
    assert branches.resolve(("ladder", "object"), NAMES) == (0, 1, 2, 3)
    assert branches.resolve(("original", "hflip"), NAMES) == (0, 6)
    assert branches.resolve(("parts",), NAMES) == (4, 5)
    assert branches.resolve(("0", 2), NAMES) == (0, 2)
    assert branches.resolve(None, NAMES) == tuple(range(len(NAMES)))
    assert branches.family_ids(NAMES) == (0, 0, 0, 1, 2, 2, 3, 4)
    assert sorted(
        ["hflip", "q70", "tcm", "part2", "object", "original", "q30", "part1"], key=branches.order
    ) == list(NAMES)
    with pytest.raises(errors.UserError, match="families: ladder, object, parts, hflip, tcm"):
        branches.resolve(("crop",), NAMES)
    assert branches.parse_sets("ladder;original,object") == (("ladder",), ("original", "object"))


def test_the_family_fusion_is_the_mean_over_families_of_the_mean_within_each():
    head = keras.layers.Dense(3, kernel_initializer=keras.initializers.GlorotUniform(seed=1))
    family_ids = branches.family_ids(("original", "q30", "q70", "object"))
    features = np.random.default_rng(0).normal(size=(4, 4, 5)).astype(np.float32)
    inputs = keras.Input(shape=(4, 5))
    model = keras.Model(inputs, fusion.outputs("family", inputs, head, None, 4, family_ids))
    out = model(features)
    probabilities = tf.nn.softmax(head(features)).numpy()
    expected = 0.5 * probabilities[:, :3].mean(axis=1) + 0.5 * probabilities[:, 3]
    np.testing.assert_allclose(np.exp(out["logits"]), expected, rtol=1e-5)
    # weighted and gated start at the family fusion's weights and learn one weight per family
    for name in ("weighted", "gated"):
        combiner = fusion.combiner(name, 4, family_ids=family_ids)
        model = keras.Model(inputs, fusion.outputs(name, inputs, head, combiner, 4, family_ids))
        np.testing.assert_allclose(np.exp(model(features)["logits"]), expected, rtol=1e-5)
    assert combiner.prior.shape == (2,)


@pytest.mark.slow
@pytest.mark.parametrize("fusion_name", training_config.FUSIONS)
def test_view_records_train_under_every_fusion(view_records, tmp_path, fusion_name):
    local, _ = view_records
    config = dataclasses.replace(
        training_config.tiny_training(local.out_dir, str(tmp_path / "run")),
        stages=("pool",),
        branches=("ladder", "object"),
        fusion=fusion_name,
        export=False,
    )
    results = train.train_and_evaluate(config)
    assert results.branches == ("original", "q30", "q70", "object")
    assert results.branch_indices == (0, 1, 2, 3)
    assert 0 <= results.stages[0].best_top1 <= 1
    if fusion_name == "concat":  # TensorBoard shows a few images with their boxes, the tcm mask
        accumulator = event_accumulator.EventAccumulator(
            str(tmp_path / "run" / "stages"), size_guidance={"tensors": 0}
        )
        accumulator.Reload()
        assert {"views_boxes", "tcm_mask"} <= set(accumulator.Tags()["tensors"])
        (event,) = accumulator.Tensors("views_boxes")
        assert len(event.tensor_proto.string_val) == 2 + tensorboard_logs.SAMPLE_BOXES
        # The report shows the same mask.
        numbers = report.build_report(config.logdir, None, str(tmp_path / "report"))
        assert 0 <= numbers["tcm_sample"]["high_share"] <= 1
        assert os.path.isfile(tmp_path / "report" / "tcm_mask.png")
        assert (
            "## The content-adaptive branch (tcm)"
            in (tmp_path / "report" / "report.md").read_text()
        )


@pytest.mark.slow
def test_the_export_computes_the_views_from_a_raw_image_as_the_records_hold_them(
    view_records, tmp_path
):
    local, _ = view_records
    config = dataclasses.replace(
        training_config.tiny_training(local.out_dir, str(tmp_path / "run")),
        stages=("pool",),
        branches=("original", "object", "part2", "hflip", "tcm"),
        fusion="family",
    )
    train.train_and_evaluate(config)
    export_dir = run_directory.RunDirectory(config.logdir).export_dir
    conftest.assert_export_reads_images_as_records(export_dir, local)
    description = export.ExportedClassifier(export_dir).description
    assert description["record_branches"] == list(NAMES) and description["views"] == list(VIEWS)


@pytest.mark.slow
def test_serving_default_makes_the_views_from_bytes_as_classify_does(
    view_records, tmp_path, monkeypatch
):
    local, _ = view_records
    config = dataclasses.replace(
        training_config.tiny_training(local.out_dir, str(tmp_path / "run")),
        stages=("pool",),
        branches=("original", "object", "part2", "hflip", "tcm"),
        fusion="family",
    )
    train.train_and_evaluate(config)
    paths = [item.path for item in job.index_images(local).items[:6]]
    export_dir = run_directory.RunDirectory(config.logdir).export_dir
    classifier = conftest.assert_serving_answers_as_classify(export_dir, paths)
    # The backbone is frozen: the original's own pass finds the object, the object's its parts.
    assert classifier.serving["backbone_passes"] == 5
    # Where the model's backbone is not the offline stage's, each search takes a pass of its own.
    monkeypatch.setattr(serving, "same_maps", lambda model, fresh: False)
    config = dataclasses.replace(config, logdir=str(tmp_path / "apart"))
    train.train_and_evaluate(config)
    export_dir = run_directory.RunDirectory(config.logdir).export_dir
    classifier = conftest.assert_serving_answers_as_classify(export_dir, paths)
    assert classifier.serving["backbone_passes"] == 7


def test_compare_over_branch_sets_keys_arms_by_fusion_and_set(view_records, tmp_path):
    local, _ = view_records
    config = conftest.quick_compare(
        local.out_dir, str(tmp_path / "out"), (("ladder",), ("original", "object"))
    )
    result = compare.compare(config)
    assert set(result["arms"]) == {"baseline", "family[ladder]", "family[original,object]"}
    sets = result["branch_sets"]
    assert sets["original,object"]["branches"] == ["original", "object"]
    assert sets["ladder"]["branches"] == ["original", "q30", "q70"]
    # each set's oracle is at least the baseline's and at most every branch's
    for entry in sets.values():
        assert result["arms"]["baseline"]["top1_mean"] <= entry["oracle_top1"] + 1e-9
        assert entry["oracle_top1"] <= result["oracle_top1"] + 1e-9
    run = tmp_path / "out" / "runs" / compare.arm_directory("family[original,object]")
    results = json.loads((run / "seed0" / "results.json").read_text())
    assert results["branches"] == ["original", "object"] and results["fusion"] == "family"


@pytest.mark.slow
def test_localisation_scores_the_object_boxes_against_ground_truth(view_records, tmp_path):
    local, _ = view_records
    manifest = manifest_lib.Manifest.read(local.out_dir)
    found = localisation.read_object_boxes(manifest)
    truth = tmp_path / "boxes.csv"
    rows = ["image,x,y,w,h"]
    for number, (image_id, box) in enumerate(sorted(found.items())):
        from pipeline.offline import ladder

        height, width = ladder.load_rgb(os.path.join(local.data_dir, image_id)).shape[:2]
        y0, x0, y1, x1 = localisation.in_pixels(box, height, width, 1.0)
        if number % 2:  # every other box moved off the object entirely
            y0, y1 = y0 + height, y1 + height
        rows.append(f"{image_id},{x0},{y0},{x1 - x0},{y1 - y0}")
    truth.write_text("\n".join(rows) + "\n")
    result = localisation.localisation(manifest, str(truth))
    assert result["images"] == len(found)
    assert result["iou_at_least_0.5"] == pytest.approx((len(found) + 1) // 2 / len(found))
    assert localisation.iou((0, 0, 2, 2), (1, 1, 3, 3)) == pytest.approx(1 / 7)


def test_cubs_own_space_separated_boxes_are_read_through_images_txt(tmp_path):
    (tmp_path / "images.txt").write_text("1 001.Albatross/a_1.jpg\n2 002.Auklet/b_2.jpg\n")
    (tmp_path / "bounding_boxes.txt").write_text("1 60.0 27.0 325.0 304.0\n2 1 2 3 4\n")
    boxes = localisation.read_ground_truth(str(tmp_path / "bounding_boxes.txt"))
    assert boxes == {
        "001.Albatross/a_1.jpg": (60.0, 27.0, 325.0, 304.0),
        "002.Auklet/b_2.jpg": (1.0, 2.0, 3.0, 4.0),
    }
    (tmp_path / "bad.csv").write_text("image,x,y,w,h\na.jpg,1,2,3\n")
    with pytest.raises(errors.UserError, match="image,x,y,w,h"):
        localisation.read_ground_truth(str(tmp_path / "bad.csv"))
