"""Codecs as ladders: JPEG 2000, WebP and AVIF re-encodings beside JPEG's, from the offline stage
(local and on Beam, byte for byte) to the export, the report and compare's branch sets."""

import dataclasses
import filecmp
import io
import os

import numpy as np
import PIL.features
import PIL.Image
import pytest
import tensorflow as tf
from tensorboard.backend.event_processing import event_accumulator

from pipeline import backbones
from pipeline import branches
from pipeline import errors
from pipeline.analysis import compare
from pipeline.analysis import evaluate
from pipeline.analysis import report
from pipeline.config import analysis as analysis_config
from pipeline.config import offline as offline_config
from pipeline.config import training as training_config
from pipeline.offline import codecs
from pipeline.offline import job
from pipeline.offline import ladder
from pipeline.training import export
from pipeline.training import run_directory
from pipeline.training import train
from tests import conftest
from tfrecords import fileio
from tfrecords import manifest as manifest_lib
from tools import make_tfrecords

CODECS = ("jpeg", "jpeg2000", "webp", "avif")
QUALITIES = (("webp", (20, 80)), ("jpeg", (30,)), ("jpeg2000", (50,)), ("avif", (40,)))
NAMES = ("original", "q30", "jpeg200050", "webp20", "webp80", "avif40", "hflip")


@pytest.fixture(scope="module")
def codec_records(tmp_path_factory):
    """Random-weight MobileNetV2 records at 32 px with every codec and the mirror, local and on
    Beam."""
    root = tmp_path_factory.mktemp("codecs")
    data = str(root / "images")
    conftest.write_random_images(data, per_class=6)
    local = dataclasses.replace(
        offline_config.tiny(str(root / "local"), data),
        nodes=("pool",),
        codecs=CODECS,
        qualities=QUALITIES,
        views=("hflip",),
        batch_size=3,
        validation_percent=30,
        test_percent=25,
    )
    on_beam = dataclasses.replace(
        local, out_dir=str(root / "beam"), runner="beam", beam_options=conftest.BEAM_DIRECT_OPTIONS
    )
    job.make_tfrecords(local)
    job.make_tfrecords(on_beam)
    return local, on_beam


def _photo(seed: int = 0, size=(37, 45)) -> np.ndarray:
    """A smooth photo-like picture (noise compresses to nothing useful)."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (5, 6, 3), dtype=np.uint8)
    return np.asarray(PIL.Image.fromarray(small).resize(size[::-1], PIL.Image.BICUBIC))


def test_each_codec_decodes_what_pillow_encodes_at_its_quality():
    image = _photo()
    for codec, fmt, options in (
        ("webp", "WEBP", {"quality": 20}),
        ("avif", "AVIF", {"quality": 20}),
    ):
        buffer = io.BytesIO()
        PIL.Image.fromarray(image).save(buffer, fmt, **options)
        expected = np.asarray(PIL.Image.open(buffer).convert("RGB"))
        coded = codecs.reencode(image, codec, 20)
        assert coded.shape == image.shape and coded.dtype == np.uint8
        np.testing.assert_array_equal(coded, expected)
        assert np.abs(coded.astype(int) - image).mean() > 0.5  # lossy: not the photo itself
    # Lower qualities cost fewer bytes and lose more.
    for codec in ("webp", "avif", "jpeg2000"):
        sizes = [len(codecs.encoded(image, codec, quality)) for quality in (10, 90)]
        errors_ = [
            np.abs(codecs.reencode(image, codec, q).astype(int) - image).mean() for q in (10, 90)
        ]
        assert sizes[0] < sizes[1] and errors_[0] > errors_[1], codec


def test_jpeg2000_is_coded_in_the_bytes_jpeg_spends_at_the_same_quality():
    image = _photo(1, (96, 128))
    for quality in (10, 50):
        jpeg_bytes = len(tf.io.encode_jpeg(image, quality=quality).numpy())
        assert codecs.jpeg_ratio(image, quality) == pytest.approx(image.size / jpeg_bytes)
        # OpenJPEG meets the rate from below, headers included, within a few percent
        assert (
            0.8 * jpeg_bytes <= len(codecs.encoded(image, "jpeg2000", quality)) <= 1.05 * jpeg_bytes
        )


def test_codec_pixels_are_the_decoded_re_encodings_resized_as_the_ladder_resizes():
    image = _photo(2)
    ladders = (("webp", (30,)), ("jpeg2000", (40, 80)))
    pixels = codecs.coded_pixels(image, ladders, 16)
    assert pixels.shape == (3, 16, 16, 3) and pixels.dtype == np.float32
    expected = ladder.resize_for_backbone(
        tf.constant(codecs.reencode(image, "jpeg2000", 80)[None]), 16
    ).numpy()
    np.testing.assert_array_equal(pixels[2], expected[0])
    # the same inside a traced function (as tf.data runs it), and every time (fixed settings)
    traced = tf.function(lambda photo: codecs.coded_pixels_op(photo, ladders, 16, 1.0))
    np.testing.assert_array_equal(traced(tf.constant(image)).numpy(), pixels)
    assert codecs.coded_images(image, ladders).shape == (3,) + image.shape
    # the stand-in of a quarantined image, and tiny photos, still encode
    assert codecs.coded_pixels(np.zeros((8, 8, 3), np.uint8), ladders, 16).shape == (3, 16, 16, 3)
    assert codecs.coded_pixels(np.zeros((1, 1, 3), np.uint8), ladders, 16).shape == (3, 16, 16, 3)


@pytest.mark.slow
def test_codecs_are_ladders_named_by_codec_and_quality_and_the_same_on_beam(codec_records):
    local, on_beam = codec_records
    manifest = manifest_lib.Manifest.read(local.out_dir)
    assert manifest.branches == NAMES
    assert manifest.qualities == (30,)
    assert manifest.codecs == {"jpeg2000": [50], "webp": [20, 80], "avif": [40]}
    assert manifest.node("pool").shape == (len(NAMES), 1280)
    assert job.verify_output(local.out_dir).ok
    # every branch is its own picture: no two branches' bottlenecks are equal
    batch = next(iter(conftest.records_dataset(local.out_dir, "pool", "train", 1)))
    values = batch[0].numpy()[0]
    for first in range(len(NAMES)):
        for second in range(first + 1, len(NAMES)):
            assert not np.array_equal(values[first], values[second]), (first, second)
    names = sorted(
        os.path.relpath(os.path.join(folder, name), local.out_dir)
        for folder, _, files in os.walk(local.out_dir)
        for name in files
        if name.endswith(".tfrecord")
    )
    assert names
    for name in names:
        assert filecmp.cmp(
            os.path.join(local.out_dir, name), os.path.join(on_beam.out_dir, name), shallow=False
        ), name


@pytest.mark.slow
def test_the_jpeg_only_job_is_todays_and_other_codecs_are_another_job(codec_records, tmp_path):
    local, _ = codec_records
    plain = offline_config.tiny(str(tmp_path / "plain"), local.data_dir)
    assert plain.ladders == {"jpeg": offline_config.QUALITIES} and plain.other_codecs == ()
    backbone = backbones.spec(plain)
    identity = job.identity(plain, backbone, plain.nodes, 32, job.index_images(plain))
    assert "codecs" not in identity and identity["qualities"] == list(offline_config.QUALITIES)
    with pytest.raises(ValueError, match="different job.*codecs"):
        job.make_tfrecords(dataclasses.replace(local, qualities=(("webp", (20,)),)))


def test_codec_flags_parse_and_every_mistake_is_one_line(tmp_path, capsys):
    parse = offline_config.quality_lists
    assert parse("10,30") == (10, 30) and parse("none") == ()
    assert parse("webp:10,30; jpeg2000:20") == (("webp", (10, 30)), ("jpeg2000", (20,)))
    config = offline_config.ExtractConfig(
        out_dir="o", data_dir="d", codecs=("jpeg", "webp"), qualities=(("webp", (10, 30)),)
    )
    assert config.ladders == {"jpeg": offline_config.QUALITIES, "webp": (10, 30)}
    one_list = dataclasses.replace(config, qualities=(20, 40))
    assert one_list.ladders == {"jpeg": (20, 40), "webp": (20, 40)}
    webp_alone = dataclasses.replace(config, codecs=("webp",), qualities=(20,))
    assert webp_alone.jpeg_qualities == () and webp_alone.other_codecs == (("webp", (20,)),)
    for changes, message in (
        ({"codecs": ("jpeg", "gif")}, "--codecs must list distinct values of jpeg, jpeg2000"),
        ({"codecs": ("webp", "webp")}, "--codecs must list distinct"),
        ({"qualities": (("avif", (10,)),)}, "only codecs of --codecs"),
        ({"qualities": (("webp", (0, 10)),)}, "1..100, got webp:0,10"),
        ({"qualities": (("webp", ()),)}, "--codecs webp has no qualities"),
        ({"codecs": ("jpeg",), "qualities": ()}, "add --views"),
    ):
        with pytest.raises(errors.UserError, match=message):
            dataclasses.replace(config, **changes)
    argv = ["--data-dir", str(tmp_path), "--out-dir", str(tmp_path / "o")]
    with pytest.raises(SystemExit):
        make_tfrecords.main(argv + ["--codecs", "jpeg,bmp"])
    assert "--codecs" in capsys.readouterr().err


def test_a_pillow_without_the_codec_is_named_with_the_fix(monkeypatch):
    monkeypatch.setattr(PIL.features, "check", lambda feature: feature != "avif")
    codecs.check_available(("jpeg", "webp"))
    with pytest.raises(errors.UserError, match=r"--codecs avif: .*pillow>=11.3"):
        codecs.check_available(("webp", "avif"))


def test_codec_tokens_pick_each_codecs_ladder_and_families_follow_the_set():
    names = NAMES[:-1]
    assert branches.resolve(("jpeg",), names) == (0, 1) == branches.resolve(("ladder",), names)
    assert branches.resolve(("webp",), names) == (0, 3, 4)
    assert branches.resolve(("jpeg", "webp"), names) == (0, 1, 3, 4)
    assert branches.resolve(("jpeg2000", "avif"), names) == (0, 2, 5)
    assert branches.coded("webp80") == ("webp", 80) and branches.coded("q30") == ("jpeg", 30)
    assert branches.coded("original") is None and branches.quality("webp80") is None
    # the original is in its codec's family: alone with WebP it is WebP's photo
    assert branches.family_ids(("original", "webp20", "webp80")) == (0, 0, 0)
    assert branches.family_ids(("original", "q30", "webp20", "webp80")) == (0, 0, 1, 1)
    assert branches.family_ids(("original", "jpeg200050", "avif40")) == (0, 0, 1)
    assert branches.other_codecs(NAMES) == (
        ("jpeg2000", (50,)),
        ("webp", (20, 80)),
        ("avif", (40,)),
    )
    assert sorted(reversed(NAMES), key=branches.order) == list(NAMES)
    with pytest.raises(errors.UserError, match="families: ladder, jpeg2000, webp, avif"):
        branches.resolve(("png",), names)


@pytest.mark.slow
def test_the_export_makes_the_codec_branches_as_the_records_hold_them(codec_records, tmp_path):
    local, _ = codec_records
    config = dataclasses.replace(
        training_config.tiny_training(local.out_dir, str(tmp_path / "run")),
        stages=("pool",),
        branches=("jpeg", "webp", "avif", "hflip"),
        fusion="family",
    )
    results = train.train_and_evaluate(config)
    assert results.branches == ("original", "q30", "webp20", "webp80", "avif40", "hflip")
    export_dir = run_directory.RunDirectory(config.logdir).export_dir
    predictions = conftest.assert_export_reads_images_as_records(export_dir, local)
    classifier = export.ExportedClassifier(export_dir)
    assert classifier.description["record_branches"] == list(NAMES)
    path = job.index_images(local).items[0].path
    pixels = classifier.file_branch_pixels(path)
    image = ladder.load_rgb(path)
    np.testing.assert_array_equal(
        pixels[2:6], codecs.coded_pixels(image, branches.other_codecs(NAMES), 32)
    )
    # TensorBoard shows the sample photo through every codec
    accumulator = event_accumulator.EventAccumulator(
        str(tmp_path / "run" / "stages"), size_guidance={"tensors": 0}
    )
    accumulator.Reload()
    (event,) = accumulator.Tensors("jpeg_ladder")
    assert len(event.tensor_proto.string_val) == 2 + 6  # width, height, then one per ladder branch
    # The report draws one curve per codec, with the numbers in report.json.
    # Per-branch scores come from a baseline model (the stock classifier on ImageNet's classes,
    # or --baseline): stand-ins here, through the same evaluation.
    scores = np.random.default_rng(0).random(
        (len(predictions.labels), len(NAMES), len(predictions.class_names))
    )
    evaluation = evaluate.evaluate(
        dataclasses.replace(predictions, branches=scores, branch_names=list(NAMES))
    )
    os.makedirs(tmp_path / "evaluation")
    fileio.write_json_atomic(str(tmp_path / "evaluation" / "evaluation.json"), evaluation)
    numbers = report.build_report(
        config.logdir, str(tmp_path / "evaluation"), str(tmp_path / "report")
    )
    per_codec = numbers["accuracy_per_codec"]
    assert list(per_codec) == ["jpeg", "jpeg2000", "webp", "avif"]
    assert list(per_codec["webp"]) == ["20", "80"]
    assert per_codec["webp"]["80"]["top1"] == evaluation["branches"]["webp80"]["top1"]
    assert os.path.isfile(tmp_path / "report" / "accuracy_per_quality.png")


@pytest.mark.slow
def test_serving_default_takes_the_coded_branches_beside_the_bytes(codec_records, tmp_path):
    local, _ = codec_records
    config = dataclasses.replace(
        training_config.tiny_training(local.out_dir, str(tmp_path / "run")),
        stages=("pool",),
        branches=("jpeg", "webp", "avif", "hflip"),
        fusion="family",
    )
    train.train_and_evaluate(config)
    paths = [item.path for item in job.index_images(local).items[:6]]
    export_dir = run_directory.RunDirectory(config.logdir).export_dir
    classifier = conftest.assert_serving_answers_as_classify(export_dir, paths)
    assert classifier.serving["inputs"] == ["image_bytes", "coded_pixels"]
    assert classifier.serving["coded_branches"] == ["webp20", "webp80", "avif40"]
    assert classifier.serving["backbone_passes"] == 6


@pytest.mark.slow
def test_compare_takes_codec_families_as_branch_sets(codec_records, tmp_path):
    local, _ = codec_records
    config = conftest.quick_compare(
        local.out_dir, str(tmp_path / "out"), analysis_config.branch_sets("webp;jpeg,webp")
    )
    result = compare.compare(config)
    assert set(result["arms"]) == {"baseline", "family[webp]", "family[jpeg,webp]"}
    sets = result["branch_sets"]
    assert sets["webp"]["branches"] == ["original", "webp20", "webp80"]
    assert sets["jpeg,webp"]["branches"] == ["original", "q30", "webp20", "webp80"]
