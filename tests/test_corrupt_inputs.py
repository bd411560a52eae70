"""Awkward inputs beyond the basic eight: each is converted, quarantined with its reason, or skipped
with a warning."""

import csv
import dataclasses
import os

import numpy as np
import PIL.Image
import pytest
import tensorflow as tf
from tensorflow.python.lib.io import file_io

from pipeline.config import offline as offline_config
from pipeline.offline import images
from pipeline.offline import job
from pipeline.offline import ladder
from tests import conftest


@pytest.fixture
def odd(tmp_path):
    directory = str(tmp_path / "odd")
    return directory, conftest.write_more_odd_inputs(directory)


def test_exif_orientation_is_applied(odd):
    directory, _ = odd
    decoded = ladder.load_rgb(os.path.join(directory, "exif_rotated.jpg"))
    with PIL.Image.open(os.path.join(directory, "exif_rotated.jpg")) as image:
        stored = np.asarray(image.convert("RGB"))
    assert stored.shape == (40, 48, 3) and decoded.shape == (48, 40, 3)  # upright: turned a quarter
    np.testing.assert_array_equal(
        decoded, np.rot90(stored, k=-1)
    )  # orientation 6: 90 degrees clockwise


def test_odd_formats_decode_to_rgb(odd):
    directory, _ = odd
    one = ladder.load_rgb(os.path.join(directory, "one_pixel.png"))
    assert one.shape == (1, 1, 3) and one[0, 0].tolist() == [200, 30, 60]
    assert ladder.branch_images(one, 32, (10, 90)).shape == (3, 32, 32, 3)
    deep = ladder.load_rgb(os.path.join(directory, "sixteen_bit.png"))
    with PIL.Image.open(os.path.join(directory, "sixteen_bit.png")) as image:
        expected = np.rint(np.asarray(image, np.float64) * 255 / 65535).astype(np.uint8)
    np.testing.assert_array_equal(deep[..., 0], expected)  # scaled to 8 bits, not clipped
    first = ladder.load_rgb(os.path.join(directory, "animated.gif"))
    assert first.shape == (34, 30, 3) and (first == [255, 0, 0]).all()  # the first frame, red
    progressive = ladder.load_rgb(os.path.join(directory, "progressive.jpg"))
    assert progressive.shape == (40, 48, 3)
    with pytest.raises(ladder.BadImage, match="unreadable"):
        ladder.load_rgb(os.path.join(directory, "bad_huffman.jpg"))
    with PIL.Image.open(os.path.join(directory, "bad_huffman.jpg")) as image:
        assert image.size == (48, 40)  # only a full decode finds the damage


def test_the_job_converts_quarantines_or_skips_each_and_finishes(
    tmp_path, tiny_dataset, monkeypatch
):
    expected = conftest.write_more_odd_inputs(os.path.join(tiny_dataset, "dog"))
    os.symlink(
        os.path.join(tiny_dataset, "dog"), os.path.join(tiny_dataset, "dog", "loop")
    )  # a folder loop
    os.symlink("b.jpg", os.path.join(tiny_dataset, "cat", "a.jpg"))  # a link loop between two names
    os.symlink("a.jpg", os.path.join(tiny_dataset, "cat", "b.jpg"))
    vanishing = os.path.join(tiny_dataset, "fox", "fox_000.jpg")
    index_images = job.index_images

    def index_then_delete(config):
        index = index_images(config)
        os.remove(vanishing)  # gone between indexing and reading
        return index

    monkeypatch.setattr(job, "index_images", index_then_delete)
    with pytest.warns(UserWarning, match="loop: it links to a folder already listed"):
        summary = job.make_tfrecords(
            dataclasses.replace(
                offline_config.tiny(str(tmp_path / "out"), tiny_dataset), qualities=(50,)
            )
        ).summary
    with open(tmp_path / "out" / "quarantine.csv") as file:
        reasons = {
            os.path.relpath(row["path"], tiny_dataset): row["reason"]
            for row in csv.DictReader(file)
        }
    assert set(reasons) == {"dog/bad_huffman.jpg", "cat/a.jpg", "cat/b.jpg", "fox/fox_000.jpg"}
    assert "unreadable image: broken data stream" in reasons["dog/bad_huffman.jpg"]
    assert "Too many levels of symbolic links" in reasons["cat/a.jpg"]
    assert "deleted or moved after the dataset was indexed" in reasons["fox/fox_000.jpg"]
    usable = 12 - 1 + sum(reason is None for reason in expected.values())
    assert summary["images_written"] == usable and summary["images_skipped"] == 4


def test_walking_a_folder_with_a_link_loop_ends(tmp_path):
    conftest.write_random_images(str(tmp_path / "data"), classes=("cat",), per_class=2)
    os.makedirs(tmp_path / "data" / "cat" / "inner")
    os.symlink(str(tmp_path / "data" / "cat"), str(tmp_path / "data" / "cat" / "inner" / "up"))
    with pytest.warns(UserWarning, match="up: it links to a folder already listed"):
        index = images.index_directory(str(tmp_path / "data"), 0)
    assert sorted(item.image_id for item in index.items) == ["cat/cat_000.jpg", "cat/cat_001.jpg"]


def test_a_tree_at_a_url_is_indexed_as_the_same_tree_on_disk(tmp_path, monkeypatch):
    data = str(tmp_path / "data")
    conftest.write_random_images(
        data, classes=("cat", "dog"), per_class=2, split_dirs=("train", "val")
    )
    os.makedirs(os.path.join(data, "train", "cat", "more"))
    os.makedirs(os.path.join(data, "train", "dog", ".hidden"))
    for name in (
        "train/cat/more/deeper.jpg",
        "train/cat/.DS_Store",
        "train/dog/.hidden/skipped.jpg",
    ):
        with open(os.path.join(data, name), "wb") as file:
            file.write(b"any bytes: the content decides later")
    with open(os.path.join(data, "labels.csv"), "w") as file:
        file.write(
            "file,label,split\ntrain/cat/cat_000.jpg,cat,train\n./val/dog/../dog/dog_001.jpg,dog,val\n"
        )
    url = "ram://test_index/data"
    conftest.copy_to_url(data, url)
    # GCS lists a folder as "cat/", where ram:// and a local disk say "cat".
    list_directory = file_io.list_directory
    monkeypatch.setattr(
        file_io,
        "list_directory",
        lambda path: [  # what tf.io.gfile.walk lists with
            f"{name}/" if tf.io.gfile.isdir(f"{path.rstrip('/')}/{name}") else name
            for name in list_directory(path)
        ],
    )
    monkeypatch.setattr(tf.io.gfile, "listdir", file_io.list_directory)
    assert "train/" in tf.io.gfile.listdir(url)
    try:
        for local, remote in (
            (images.index_directory(data, 30), images.index_directory(url + "/", 30)),
            (
                images.index_csv(os.path.join(data, "labels.csv"), 30),
                images.index_csv(f"{url}/labels.csv", 30),
            ),
        ):
            assert remote.class_names == local.class_names
            assert [(item.image_id, item.label, item.split) for item in remote.items] == [
                (item.image_id, item.label, item.split) for item in local.items
            ]
            assert [item.path for item in remote.items] == [
                f"{url}/{item.image_id}" for item in local.items
            ]
        assert len(local.items) == 2 and len(images.index_directory(data, 30).items) == 9
    finally:
        tf.io.gfile.rmtree("ram://test_index")
