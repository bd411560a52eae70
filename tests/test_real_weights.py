"""Real ImageNet MobileNetV2 weights on real photos: the cached bottlenecks are the model's true
activations."""

import csv
import dataclasses
import os

import keras
import numpy as np
import pytest

from bottlenecks import cut
from bottlenecks import imagenet
from bottlenecks import loading
from bottlenecks import registry
from pipeline.config import offline as offline_config
from pipeline.config import training as training_config
from pipeline.offline import job
from pipeline.training import results as results_lib
from pipeline.training import train
from tests import conftest
from tests import test_train
from tfrecords import manifest as manifest_lib


@pytest.mark.slow
def test_branch_zero_at_pool_through_the_classifier_reproduces_the_stock_model(tmp_path):
    weights = conftest.shared_path("weights", "mobilenet_v2_1.0_224_imagenet.weights.h5")
    data = conftest.shared_path("data", "imagenette-mini")
    with open(os.path.join(data, "labels.csv")) as file:
        rows = [row for row in csv.DictReader(file) if row["split"] == "val"]
    labels_csv = str(tmp_path / "val.csv")
    with open(labels_csv, "w") as file:
        file.write("file,label,split\n")
        file.writelines(
            f"{os.path.join(data, row['file'])},{row['imagenet_class_index']},val\n" for row in rows
        )
    # One re-encoding keeps the test short; branch 0 is what this test is about.
    config = offline_config.ExtractConfig(
        out_dir=str(tmp_path / "out"),
        labels_csv=labels_csv,
        backbone="mobilenet_v2",
        weights=weights,
        nodes=("pool",),
        qualities=(50,),
        batch_size=16,
        progress=False,
    )
    job.make_tfrecords(config)

    backbone = registry.get_backbone("mobilenet_v2")
    stock = keras.applications.MobileNetV2(weights=weights)
    classifier = cut.classifier_layer(loading.build(backbone, weights))
    cached, labels, image_ids = [], [], []
    for bottleneck, label, image_id in conftest.records_dataset(
        config.out_dir, "pool", "test", 50, with_ids=True
    ):
        cached.append(classifier(bottleneck[:, 0]).numpy())
        labels.append(label.numpy())
        image_ids.extend(image_id.numpy().astype(str))
    cached, labels = np.concatenate(cached), np.concatenate(labels)
    assert len(image_ids) == len(rows) == 200

    pixels = np.stack([keras.utils.img_to_array(keras.utils.load_img(path)) for path in image_ids])
    expected = stock.predict(
        keras.applications.mobilenet_v2.preprocess_input(pixels), batch_size=50, verbose=0
    )
    np.testing.assert_array_equal(cached.argmax(axis=1), expected.argmax(axis=1))
    np.testing.assert_allclose(cached, expected, atol=2e-4)
    # Real weights, real photos: most of these easy classes are right (this is no random model).
    # The records number the CSV's ImageNet indices 0..K-1; the class names are the indices.
    class_names = manifest_lib.Manifest.read(config.out_dir).class_names
    imagenet_labels = np.asarray([int(class_names[label]) for label in labels])
    assert (cached.argmax(axis=1) == imagenet_labels).mean() > 0.7


@pytest.mark.slow
def test_baseline_head_init_starts_stage_zero_exactly_at_the_stock_model(tmp_path, monkeypatch):
    weights = conftest.shared_path("weights", "mobilenet_v2_1.0_224_imagenet.weights.h5")
    subset = tmp_path / "images"
    conftest.imagenette_subset(subset, {"train": 6, "val": 1})
    records = str(tmp_path / "records")
    job.make_tfrecords(
        offline_config.ExtractConfig(
            out_dir=records,
            data_dir=str(subset),
            backbone="mobilenet_v2",
            weights=weights,
            nodes=("pool",),
            qualities=(50,),
            batch_size=16,
            validation_percent=50,
            progress=False,
        )
    )
    logdir = tmp_path / "run"
    results = train.train_and_evaluate(
        training_config.TrainConfig(
            recipe="thesis",
            records_dir=records,
            logdir=str(logdir),
            stages=("pool",),
            head_init="baseline",
            batch_size=10,
            eval_every_steps=1,
            max_epochs_per_stage=1,
            export=False,
            progress=False,
        )
    )
    assert results.label_space == "imagenet"
    first = test_train._scalars(str(logdir / "stage0_pool" / "validation"), "top1")[0]
    # TensorBoard keeps float32.
    assert first[0] == 0 and first[1] == pytest.approx(results.baseline.top1, abs=1e-6)

    # The baseline is the stock Keras model on the original images, over all 1000 classes.
    stock = keras.applications.MobileNetV2(weights=weights)
    classes = [wnid for wnid, _ in imagenet.imagenet_classes()]
    batches = conftest.records_dataset(records, "pool", "validation", 50, with_ids=True)
    validation_ids = [image_id.decode() for _, _, ids in batches for image_id in ids.numpy()]
    paths = sorted(str(subset / image_id) for image_id in validation_ids)
    assert len(paths) >= 5
    pixels = np.stack([keras.utils.img_to_array(keras.utils.load_img(path)) for path in paths])
    predicted = stock.predict(
        keras.applications.mobilenet_v2.preprocess_input(pixels), verbose=0
    ).argmax(1)
    truth = [classes.index(os.path.basename(os.path.dirname(path))) for path in paths]
    assert results.baseline.top1 == pytest.approx(np.mean(predicted == np.asarray(truth)), abs=1e-9)

    # The same wnid records with --label-space dataset: a head over the dataset's own classes, no
    # baseline.
    config = training_config.TrainConfig(
        recipe="thesis",
        records_dir=records,
        logdir=str(tmp_path / "dataset"),
        stages=("pool",),
        label_space="dataset",
        batch_size=10,
        max_epochs_per_stage=1,
        export=False,
        progress=False,
    )
    setup = train.prepare(config)
    num_classes = len(os.listdir(subset / "train"))
    assert setup.label_map is None and setup.class_names == tuple(
        sorted(os.listdir(subset / "train"))
    )
    assert setup.head.units == num_classes < 1000
    dataset_results = train.train_and_evaluate(config)
    assert dataset_results.label_space == "dataset" and dataset_results.baseline is None
    with pytest.raises(
        ValueError, match="--head-init baseline needs the backbone's own ImageNet classes"
    ):
        train.prepare(dataclasses.replace(config, head_init="baseline"))

    # A learning-rate sweep scores the stock model once, for the run, not again for every candidate.
    calls = []
    monkeypatch.setattr(
        train,
        "evaluate_baseline",
        lambda setup: calls.append(1) or results_lib.Baseline(node="pool", top1=0.5, top5=0.5),
    )
    swept = train.train_and_evaluate(
        dataclasses.replace(
            config,
            logdir=str(tmp_path / "swept"),
            label_space="auto",
            learning_rate="auto",
            sweep_learning_rates=(0.01, 0.001),
            sweep_epochs=0.5,
        )
    )
    assert len(swept.learning_rate_sweep.candidates) == 2 and swept.baseline.top1 == 0.5
    assert calls == [1]
