"""Shared test set-up: two logical CPU devices, tiny generated datasets and the ../shared data."""

import os

import numpy as np
import PIL.Image
import pytest
import tensorflow as tf

# Two logical CPUs so MirroredStrategy runs with two replicas; must happen before TF initialises.
_cpus = tf.config.list_physical_devices("CPU")
tf.config.set_logical_device_configuration(
    _cpus[0], [tf.config.LogicalDeviceConfiguration(), tf.config.LogicalDeviceConfiguration()]
)

PROJECT_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED = os.path.join(os.path.dirname(PROJECT_ROOT), "shared")


def shared_path(*parts: str) -> str:
    """A file under ../shared: missing fails loudly in CI (CI=true) and skips elsewhere."""
    path = os.path.join(SHARED, *parts)
    if not os.path.exists(path):
        message = (
            f"{path} is missing: tests with real weights and photos need ../shared beside "
            "the project"
        )
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message)
        pytest.skip(message)
    return path


def write_random_images(
    root: str,
    classes=("cat", "dog", "fox"),
    per_class: int = 4,
    seed: int = 0,
    split_dirs: tuple[str, ...] = (),
) -> list[str]:
    """Random JPEGs of 32-75 px (varied sizes and qualities) in root/[split/]<class>/."""
    rng = np.random.default_rng(seed)
    paths = []
    for split in split_dirs or ("",):
        for class_index, class_name in enumerate(classes):
            directory = os.path.join(root, split, class_name)
            os.makedirs(directory, exist_ok=True)
            for number in range(per_class):
                height, width = rng.integers(32, 76, size=2)
                # A class-dependent colour cast so that a model can learn something.
                pixels = (
                    rng.integers(0, 160, size=(height, width, 3))
                    + 40 * np.eye(3)[class_index % 3] * 2
                )
                image = PIL.Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))
                path = os.path.join(directory, f"{class_name}_{number:03d}.jpg")
                image.save(path, quality=int(rng.integers(50, 96)))
                paths.append(path)
    return paths


def imagenette_subset(directory, per_split: dict) -> str:
    """Symlinks the first photos of each class of ../shared imagenette-mini: {"train": 3, "val":
    6}."""
    data = shared_path("data", "imagenette-mini")
    for split, count in per_split.items():
        for wnid in sorted(os.listdir(os.path.join(data, split))):
            os.makedirs(os.path.join(directory, split, wnid))
            for name in sorted(os.listdir(os.path.join(data, split, wnid)))[:count]:
                os.symlink(
                    os.path.join(data, split, wnid, name),
                    os.path.join(directory, split, wnid, name),
                )
    return str(directory)


TRAIN_STAGES = ("pool", "conv4_block6_out")
# In memory and one worker: the fastest DirectRunner set-up, and the one CI's two cores can afford.
BEAM_DIRECT_OPTIONS = "--runner=DirectRunner --direct_num_workers=1 --direct_running_mode=in_memory"


@pytest.fixture(scope="session")
def records(tmp_path_factory):
    """ResNet-50 V2 records (random weights, 32 px: its activations do not vanish) of 18 tiny
    images."""
    import dataclasses

    from pipeline.config import offline as offline_config
    from pipeline.offline import job

    root = tmp_path_factory.mktemp("train")
    data = str(root / "images")
    write_random_images(data, per_class=6)
    config = dataclasses.replace(
        offline_config.tiny(str(root / "records"), data),
        backbone="resnet50_v2",
        nodes=TRAIN_STAGES,
        validation_percent=30,
        test_percent=25,
    )
    job.make_tfrecords(config)
    return config.out_dir


@pytest.fixture
def tiny_dataset(tmp_path):
    root = str(tmp_path / "images")
    write_random_images(root)
    return root


def write_odd_inputs(directory: str) -> dict[str, str | None]:
    """One file of each awkward kind; maps file name -> the quarantine reason fragment, or None if
    usable."""
    os.makedirs(directory, exist_ok=True)
    rng = np.random.default_rng(1)
    rgb = PIL.Image.fromarray(rng.integers(0, 256, size=(40, 48, 3), dtype=np.uint8))
    rgb.save(os.path.join(directory, "good.jpg"), quality=90)
    open(os.path.join(directory, "zero_bytes.jpg"), "wb").close()
    with open(os.path.join(directory, "good.jpg"), "rb") as file:
        data = file.read()
    with open(os.path.join(directory, "truncated.jpg"), "wb") as file:
        file.write(data[: len(data) // 2])
    with open(os.path.join(directory, "text.jpg"), "w") as file:
        file.write("this is not an image\n")
    rgb.convert("CMYK").save(os.path.join(directory, "cmyk.jpg"), quality=90)
    rgb.convert("L").save(os.path.join(directory, "grayscale.jpg"), quality=90)
    rgb.save(os.path.join(directory, "png_named.jpg"), format="PNG")
    palette = rgb.convert("P", palette=PIL.Image.Palette.ADAPTIVE, colors=16)
    palette.info["transparency"] = 0
    palette.save(os.path.join(directory, "palette.gif"), transparency=0)
    rgba = rgb.convert("RGBA")
    rgba.putalpha(128)
    rgba.save(os.path.join(directory, "alpha.png"))
    return {
        "good.jpg": None,
        "zero_bytes.jpg": "empty",
        "truncated.jpg": "unreadable",
        "text.jpg": "not an image",
        "cmyk.jpg": None,
        "grayscale.jpg": None,
        "png_named.jpg": None,
        "palette.gif": None,
        "alpha.png": None,
    }


def write_more_odd_inputs(directory: str) -> dict[str, str | None]:
    """Six further awkward kinds (EXIF-rotated, 1x1, 16-bit, animated, progressive, bad Huffman
    table); maps file name -> the quarantine reason fragment, or None if usable."""
    import io

    os.makedirs(directory, exist_ok=True)
    rng = np.random.default_rng(2)
    rgb = PIL.Image.fromarray(rng.integers(0, 256, size=(40, 48, 3), dtype=np.uint8))
    exif = PIL.Image.Exif()
    exif[0x0112] = (
        6  # Orientation: the stored pixels must be turned 90 degrees clockwise to be upright
    )
    rgb.save(os.path.join(directory, "exif_rotated.jpg"), quality=90, exif=exif)
    PIL.Image.new("RGB", (1, 1), (200, 30, 60)).save(os.path.join(directory, "one_pixel.png"))
    deep = (rng.integers(0, 65536, size=(36, 44))).astype(np.uint16)
    PIL.Image.fromarray(deep).save(os.path.join(directory, "sixteen_bit.png"))
    frames = [
        PIL.Image.new("RGB", (30, 34), color) for color in ((255, 0, 0), (0, 0, 255), (0, 255, 0))
    ]
    frames[0].save(
        os.path.join(directory, "animated.gif"),
        save_all=True,
        append_images=frames[1:],
        duration=100,
    )
    rgb.save(os.path.join(directory, "progressive.jpg"), quality=85, progressive=True)
    buffer = io.BytesIO()
    rgb.save(buffer, format="JPEG", quality=90)
    data = bytearray(buffer.getvalue())
    table = data.find(
        b"\xff\xc4"
    )  # the first Huffman table: marker, length (2), class/id, 16 code counts
    data[table + 5 : table + 21] = (
        b"\xff" * 16
    )  # more codes than any table can hold; headers still parse
    with open(os.path.join(directory, "bad_huffman.jpg"), "wb") as file:
        file.write(bytes(data))
    return {
        "exif_rotated.jpg": None,
        "one_pixel.png": None,
        "sixteen_bit.png": None,
        "animated.gif": None,
        "progressive.jpg": None,
        "bad_huffman.jpg": "unreadable",
    }


def flip_byte(path: str) -> None:
    """Flips one bit in the middle of a shard: inside a record's data, which its CRC covers."""
    with open(path, "r+b") as file:
        file.seek(os.path.getsize(path) // 2)
        value = file.read(1)[0]
        file.seek(-1, os.SEEK_CUR)
        file.write(bytes([value ^ 0x01]))


def copy_to_url(local_root: str, url: str) -> None:
    """Copies a local folder tree to url (ram:// in tests, standing in for gs://)."""
    for root, _, names in os.walk(local_root):
        relative = os.path.relpath(root, local_root)
        target = url if relative == "." else f"{url}/{relative}"
        tf.io.gfile.makedirs(
            target
        )  # ram:// lists only folders made explicitly, as a bucket lists prefixes
        for name in names:
            tf.io.gfile.copy(os.path.join(root, name), f"{target}/{name}")


def records_dataset(records_dir: str, node: str, split: str, batch_size: int, **options):
    """reader.make_dataset on the records in records_dir (their manifest read here)."""
    from tfrecords import manifest as manifest_lib
    from tfrecords import reader

    return reader.make_dataset(
        manifest_lib.Manifest.read(records_dir), node, split, batch_size, **options
    )


def num_records(records_dir: str, split: str) -> int:
    from tfrecords import manifest as manifest_lib

    return manifest_lib.Manifest.read(records_dir).num_records(split)


def assert_nested_close(
    got, expected, rel: float = 1e-5, abs_: float = 1e-7, path: str = ""
) -> None:
    """got == expected for nested dicts and lists, floats compared up to rounding."""
    if isinstance(expected, dict):
        assert isinstance(got, dict) and set(got) == set(expected), path
        for key in expected:
            assert_nested_close(got[key], expected[key], rel, abs_, f"{path}/{key}")
    elif isinstance(expected, (list, tuple)):
        assert isinstance(got, (list, tuple)) and len(got) == len(expected), path
        for index, (left, right) in enumerate(zip(got, expected)):
            assert_nested_close(left, right, rel, abs_, f"{path}[{index}]")
    elif isinstance(expected, float):
        assert got == pytest.approx(expected, rel=rel, abs=abs_), path
    else:
        assert got == expected, path


def predict_records(setup, stage, checkpoint_path: str, split: str = "validation") -> dict:
    """Class probabilities per image id, from the cached bottlenecks of `stage` with a stage
    checkpoint: what the trainer's own model computes, to hold an export against."""
    from pipeline.training import checkpoints
    from tfrecords import reader

    model = setup.build_model(stage.node)  # built first, so that every weight exists to be restored
    checkpoints.restore(setup.trainable_objects(stage.node), checkpoint_path)
    probabilities = {}
    for bottlenecks, _, image_ids in reader.make_dataset(
        setup.manifest,
        stage.node,
        split,
        setup.config.batch_size,
        branches=setup.branches,
        with_ids=True,
    ):
        batch = tf.nn.softmax(model(bottlenecks, training=False)["logits"]).numpy()
        probabilities.update(zip(image_ids.numpy().astype(str), batch))
    return probabilities


FEATURE_SIZE = (
    1280  # MobileNetV2's pool: records of it train (and export) with a random MobileNetV2
)


def write_feature_records(
    directory: str, features: dict, labels: dict, class_names=("a", "b", "c"), branch_names=None
) -> str:
    """A records directory whose node `pool` holds the given features, as the offline stage would
    have written them for a random MobileNetV2 at 32 px: features[split] is [N, branches, 1280],
    labels[split] [N]. For tests that need data whose answer is known (a head that fits them, a
    branch that is right for one class only)."""
    from tfrecords import example
    from tfrecords import manifest as manifest_lib
    from tfrecords import shards
    from tfrecords import writer

    os.makedirs(os.path.join(directory, "pool"), exist_ok=True)
    splits = {}
    for split, values in features.items():
        name = f"pool/{shards.shard_filename(split, 0, 1)}"
        with writer.ShardWriter(os.path.join(directory, name)) as shard:
            for index, (label, value) in enumerate(zip(labels[split], values)):
                shard.write(
                    example.serialize(
                        f"{split}/{index:05d}", int(label), np.asarray(value, np.float32), "dense"
                    )
                )
        info = shard.close()
        files = {"pool": manifest_lib.FileInfo(name, info.sha256, info.num_bytes)}
        splits[split] = manifest_lib.SplitInfo(
            len(values), (manifest_lib.ShardInfo(0, len(values), files),)
        )
    num_branches = next(iter(features.values())).shape[1]
    manifest_lib.Manifest(
        nodes={"pool": manifest_lib.NodeInfo(shape=(num_branches, FEATURE_SIZE), encoding="dense")},
        splits=splits,
        backbone="mobilenet_v2",
        weights={"kind": "none"},
        input_size=32,
        qualities=tuple(range(10, 10 * num_branches, 10)),
        branches=tuple(
            branch_names or ("original",) + tuple(f"q{q}" for q in range(10, 10 * num_branches, 10))
        ),
        class_names=tuple(class_names),
        config={"seed": 0, "validation_percent": 20.0, "test_percent": 20.0},
    ).write(directory)
    return directory


def separable_features(
    sizes: dict, num_branches: int = 2, noise: float = 1.0, seed: int = 0, num_classes: int = 3
) -> tuple[dict, dict]:
    """Features around one random direction per class (the same in every branch), plus noise:
    a linear head separates them, more or less well as the noise says."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(num_classes, FEATURE_SIZE)).astype(np.float32)
    features, labels = {}, {}
    for split, count in sizes.items():
        labels[split] = rng.integers(0, num_classes, count)
        values = centres[labels[split]][:, None, :] + noise * rng.normal(
            size=(count, num_branches, FEATURE_SIZE)
        )
        features[split] = np.maximum(values, 0).astype(np.float32)  # after a ReLU, as pool is
    return features, labels


def quick_compare(records_dir: str, out_dir: str, branch_sets, fusions=("family",)):
    """A compare over branch sets at its smallest: one seed, the thesis's rule at a fixed rate, one
    epoch a stage."""
    import dataclasses

    from pipeline.config import analysis as analysis_config

    rule = dataclasses.replace(
        analysis_config.compare_training(),
        recipe="thesis",
        seeds=1,
        learning_rate=0.01,
        batch_size=4,
        eval_every_steps=2,
        max_epochs_per_stage=1.0,
        progress=False,
    )
    return analysis_config.CompareConfig(
        records_dir=records_dir,
        out_dir=out_dir,
        fusions=tuple(fusions),
        branch_sets=tuple(tuple(tokens) for tokens in branch_sets),
        training=rule,
        cost_images=0,
    )


def assert_export_reads_images_as_records(export_dir: str, records_config, atol: float = 2e-4):
    """The export's predictions on the test images, from their raw files and from the records, are
    the same; returns those from the records."""
    from pipeline.analysis import predictions as predictions_lib
    from pipeline.offline import job
    from tfrecords import manifest as manifest_lib

    manifest = manifest_lib.Manifest.read(records_config.out_dir)
    from_records = predictions_lib.from_records(export_dir, manifest, None, "test")
    index = job.index_images(records_config)
    from_images = predictions_lib.from_images(export_dir, index, None, "test")
    assert sorted(from_images.image_ids) == sorted(from_records.image_ids)
    np.testing.assert_allclose(
        from_images.topology[np.argsort(from_images.image_ids)],
        from_records.topology[np.argsort(from_records.image_ids)],
        atol=atol,
    )
    return from_records


def assert_serving_answers_as_classify(export_dir: str, paths, atol: float = 2e-4):
    """serving_default, sent the files' bytes as predict sends them (with the coded branches'
    pixels where the export reads any), answers each file as classify does; returns the export."""
    from pipeline.training import export
    from pipeline.training import predict

    classifier = export.ExportedClassifier(export_dir)
    answers = predict.classify_files(classifier, list(paths))
    for path, answer in zip(paths, answers):
        assert not isinstance(answer, str), f"{path}: {answer}"
        np.testing.assert_allclose(answer, classifier.classify_file(path), atol=atol, err_msg=path)
    return classifier
