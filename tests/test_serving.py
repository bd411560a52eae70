"""Serving: serving_default's encoded images in and named answers out (each row as classify answers
it, a bad row flagged), the documented REST request, predict through it, its cost beside the
accuracy, and real photos with real weights."""

import base64
import dataclasses
import json
import os
import re

import numpy as np
import PIL.Image
import pytest
import tensorflow as tf

from pipeline import errors
from pipeline.analysis import evaluate
from pipeline.analysis import serving_cost
from pipeline.config import analysis as analysis_config
from pipeline.config import offline as offline_config
from pipeline.config import training as training_config
from pipeline.offline import job
from pipeline.offline import views
from pipeline.training import export
from pipeline.training import predict
from pipeline.training import run_directory
from pipeline.training import serving
from pipeline.training import train
from tests import conftest
from tests import test_decode_graph
from tfrecords import manifest as manifest_lib
from tools import flags as flags_lib

DOCS = os.path.join(conftest.PROJECT_ROOT, "docs", "serving.md")


def test_the_plan_counts_backbone_passes():
    spec = views.ViewSpec.parse(("object", "parts:2", "hflip"))

    def passes(names, shared=False):
        return serving.Plan(tuple(names), spec, 32, shared_maps=shared).passes

    ladder_names = ("original",) + tuple(f"q{quality}" for quality in range(10, 101, 10))
    assert passes(["original"]) == 1
    assert passes(ladder_names) == 11
    # Finding the object is a pass over the original, shared where the backbone is the offline one.
    assert passes(["original", "object"]) == 3
    assert passes(["original", "object"], shared=True) == 2
    assert passes(["object"], shared=True) == 2
    # The parts are found in the object crop's maps: its own pass, unless the object branch gives
    # them.
    assert passes(["original", "object", "part2"], shared=True) == 3
    assert passes(["original", "part1", "part2"], shared=True) == 4
    assert passes(["original", "hflip"]) == 2


@pytest.fixture(scope="module")
def serving_inputs(tmp_path_factory):
    return test_decode_graph.write_serving_inputs(str(tmp_path_factory.mktemp("serving_inputs")))


@pytest.fixture(scope="module")
def trained(records, tmp_path_factory):
    """The export of a one-stage ladder run on the tiny records the tests share, their images,
    and the export loaded."""
    config = dataclasses.replace(
        training_config.tiny_training(records, str(tmp_path_factory.mktemp("serving") / "run")),
        stages=("pool",),
    )
    train.train_and_evaluate(config)
    data_dir = manifest_lib.Manifest.read(records).config["data_dir"]
    photos = sorted(
        os.path.join(root, name) for root, _, names in os.walk(data_dir) for name in names
    )
    export_dir = run_directory.RunDirectory(config.logdir).export_dir
    return export_dir, photos, export.ExportedClassifier(export_dir)


def test_serving_default_answers_each_row_as_classify_and_flags_the_bad_ones(
    trained, serving_inputs
):
    _, photos, classifier = trained
    signature = classifier.signatures["serving_default"]
    assert signature.structured_input_signature[1] == {
        "image_bytes": tf.TensorSpec([None], tf.string, name="image_bytes")
    }
    by_name = {os.path.basename(path): path for path in serving_inputs}
    good = [photos[0], photos[1], by_name["orientation6.png"], by_name["cmyk.jpg"]]
    bad = {
        "zero_bytes.jpg": "empty",
        "truncated.jpg": "corrupt or truncated JPEG",
        "text.jpg": "a format serving does not decode",
    }
    paths = good[:2] + [by_name[name] for name in bad] + good[2:]
    answer = classifier.serve([open(path, "rb").read() for path in paths])
    names = np.asarray(classifier.class_names)
    assert answer["valid"].tolist() == [True, True, False, False, False, True, True]
    for row, path in enumerate(paths):
        if not answer["valid"][row]:
            fragment = bad[os.path.basename(path)]
            assert fragment in answer["error"][row].decode()
            assert not answer["probabilities"][row].any() and not answer["scores"][row].any()
            assert answer["classes"][row].tolist() == [b""] * 3
            continue
        expected = classifier.classify_file(path)
        np.testing.assert_allclose(answer["probabilities"][row], expected, rtol=1e-4, atol=1e-6)
        order = np.argsort(-answer["probabilities"][row], kind="stable")
        assert answer["classes"][row].astype(str).tolist() == names[order].tolist()
        np.testing.assert_allclose(answer["scores"][row], answer["probabilities"][row][order])
        assert answer["error"][row] == b""
    # A good batch is answered alike; an empty one is answered with empty outputs.
    alone = classifier.serve([open(path, "rb").read() for path in good])
    assert alone["valid"].all()
    np.testing.assert_allclose(alone["probabilities"], answer["probabilities"][[0, 1, 5, 6]], 1e-5)
    assert classifier.serve([])["probabilities"].shape == (0, 3)
    refused = classifier.serve([b"", b"not an image"])
    assert not refused["valid"].any() and refused["probabilities"].shape == (2, 3)
    assert classifier.serving["backbone_passes"] == 11


def test_the_documented_rest_request_is_answered_as_the_signature_answers(trained):
    _, photos, classifier = trained
    text = open(DOCS, encoding="utf-8").read()
    # The body the docs build with printf, for one image, then for two as their Python builds it.
    template = re.search(r"printf '([^']*)' \"\$\(base64 -w0 ", text).group(1)
    encoded = [base64.b64encode(open(path, "rb").read()).decode() for path in photos[:2]]
    body = json.loads(template.replace("%s", encoded[0]))
    assert body == {"signature_name": "serving_default", "instances": [{"b64": encoded[0]}]}
    body["instances"].append({"b64": encoded[1]})
    # Decoded as TensorFlow Serving's REST API decodes a request: each {"b64": ...} is bytes, the
    # instances are the batch of the signature's one input.
    request = json.loads(json.dumps(body))
    batch = tf.constant([base64.b64decode(instance["b64"]) for instance in request["instances"]])
    outputs = classifier.signatures[request["signature_name"]](image_bytes=batch)
    # The answer as the server writes it: one prediction per instance, strings as text.
    columns = {name: _json_values(value.numpy()) for name, value in outputs.items()}
    predictions = [{name: values[row] for name, values in columns.items()} for row in range(2)]
    for row, path in enumerate(photos[:2]):
        expected = classifier.classify_file(path)
        np.testing.assert_allclose(predictions[row]["probabilities"], expected, atol=1e-6)
        assert predictions[row]["classes"][0] == classifier.class_names[expected.argmax()]
        assert predictions[row]["valid"] is True


def _json_values(array: np.ndarray) -> list:
    if array.dtype == object:
        return np.char.decode(array.astype(bytes)).tolist()
    return array.tolist()


def test_predict_sends_pillow_only_formats_as_png_and_names_what_it_skips(
    trained, serving_inputs, tmp_path
):
    _, photos, classifier = trained
    by_name = {os.path.basename(path): path for path in serving_inputs}
    # Pillow reads these, the graph does not: predict sends the PNG of the offline decoding.
    PIL.Image.open(photos[3]).save(tmp_path / "photo.tiff")
    PIL.Image.open(photos[4]).convert("P").save(tmp_path / "palette.bmp")
    paths = [
        photos[0],
        by_name["text.jpg"],
        str(tmp_path / "photo.tiff"),
        str(tmp_path / "missing.jpg"),
        str(tmp_path / "palette.bmp"),
    ]
    answers = predict.classify_files(classifier, paths)
    assert answers[1] == "not an image: no known image format in its content"
    assert answers[3] == "file not found"
    for index in (0, 2, 4):
        expected = classifier.classify_file(paths[index])
        np.testing.assert_allclose(answers[index], expected, rtol=1e-4, atol=1e-6)
    flags = ["--model", "m", "x.jpg", "--batch-size", "2"]
    assert flags_lib.parse(analysis_config.PredictConfig, flags).batch_size == 2
    assert flags_lib.parse(analysis_config.PredictConfig, flags[:3]).batch_size == 32
    with pytest.raises(errors.UserError, match="--batch-size"):
        analysis_config.PredictConfig(model="m", images=("x.jpg",), batch_size=0)


def test_evaluate_times_serving_default_beside_the_accuracy(
    trained, records, tmp_path, monkeypatch
):
    export_dir, _, _ = trained
    out_dir = tmp_path / "evaluation"
    monkeypatch.setattr(serving_cost, "BATCH_SIZES", (1, 4))  # 1 and 32 outside tests
    evaluate.run(
        analysis_config.EvaluateConfig(
            model=export_dir, out_dir=str(out_dir), records_dir=records, cost_images=4
        )
    )
    cost = json.loads((out_dir / "evaluation.json").read_text())["cost"]
    assert cost["backbone_passes"] == 11 and cost["timed_images"] == {"1": 4, "4": 4}
    assert cost["images"] == min(4, conftest.num_records(records, "test"))  # the test split's
    assert all(ms > 0 for ms in cost["ms_per_image"].values())
    assert cost["images_per_second"]["4"] == pytest.approx(1000 / cost["ms_per_image"]["4"])
    text = (out_dir / "evaluation.md").read_text()
    assert "## Serving cost" in text and "11 backbone passes per image" in text


@pytest.mark.slow
def test_real_photos_through_serving_default_with_the_object_view(tmp_path):
    weights = conftest.shared_path("weights", "mobilenet_v2_1.0_224_imagenet.weights.h5")
    subset = conftest.imagenette_subset(tmp_path / "images", {"train": 4, "val": 2})
    records = offline_config.ExtractConfig(
        out_dir=str(tmp_path / "records"),
        data_dir=subset,
        backbone="mobilenet_v2",
        weights=weights,
        nodes=("pool",),
        qualities=(50,),
        views=("object",),
        batch_size=16,
        progress=False,
    )
    job.make_tfrecords(records)
    config = dataclasses.replace(
        training_config.tiny_training(records.out_dir, str(tmp_path / "run")),
        stages=("pool",),
        branches=("original", "object"),
    )
    train.train_and_evaluate(config)
    export_dir = run_directory.RunDirectory(config.logdir).export_dir
    paths = [item.path for item in job.index_images(records).split("test")]
    classifier = conftest.assert_serving_answers_as_classify(export_dir, paths)
    # The frozen backbone's pass over the original finds the object: two passes, not three.
    assert classifier.serving["backbone_passes"] == 2
    cost = serving_cost.cost(export_dir, paths, batch_sizes=(1, 8), timed_images=8)
    assert cost["backbone_passes"] == 2 and cost["ms_per_image"]["8"] > 0
