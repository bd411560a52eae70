"""Tests writing shards and reading them back: bit-identical values, compression, restart and
locking."""

import hashlib
import json
import os
import pathlib
import signal
import subprocess
import sys

import ml_dtypes
import numpy as np
import pytest
import tensorflow as tf

from tests import conftest
from tfrecords import codec
from tfrecords import errors
from tfrecords import example
from tfrecords import fileio
from tfrecords import manifest
from tfrecords import reader
from tfrecords import shards
from tfrecords import writer

NODES = {"mixed7": ((11, 3, 3, 4), codec.SPARSE), "pool": ((11, 6), codec.DENSE)}
NUM_IMAGES = 8
REPOSITORY = pathlib.Path(__file__).resolve().parents[1]


def _bottleneck(shape, seed):
    generator = np.random.default_rng(seed)
    array = np.maximum(generator.normal(size=shape), 0).astype(np.float32)
    flat = array.reshape(-1)
    flat[[1, -2]] = [-0.0, np.nan]  # values a value-based codec would corrupt
    flat[-1] = 2.5  # the last element is where the thesis's encoder lost data
    return array


IMAGES = {f"class_{index % 2}/image_{index}.jpg": index % 2 for index in range(NUM_IMAGES)}
BOTTLENECKS = {
    node: {image_id: _bottleneck(shape, seed) for seed, image_id in enumerate(IMAGES)}
    for node, (shape, _) in NODES.items()
}


def _bits(array):
    return np.asarray(array, np.float32).view(np.uint32)


def _write_records(out_dir, compression="", num_shards=3, dtype="float32"):
    image_ids = sorted(IMAGES)
    plan = shards.plan_shards(image_ids, num_shards)
    shard_entries = []
    for index, indices in enumerate(plan):
        files = {}
        for node, (_, encoding) in NODES.items():
            relative = os.path.join(node, shards.shard_filename("train", index, len(plan)))
            os.makedirs(out_dir / node, exist_ok=True)
            with writer.ShardWriter(str(out_dir / relative), compression) as shard_writer:
                for image_index in indices:
                    image_id = image_ids[image_index]
                    shard_writer.write(
                        example.serialize(
                            image_id, IMAGES[image_id], BOTTLENECKS[node][image_id], encoding, dtype
                        )
                    )
            info = shard_writer.info
            files[node] = {"path": relative, "sha256": info.sha256, "num_bytes": info.num_bytes}
        shard_entries.append({"index": index, "num_records": len(indices), "files": files})
    fileio.write_json_atomic(
        str(out_dir / manifest.MANIFEST_NAME),
        {
            "format_version": 1,
            "compression": compression,
            "nodes": {
                node: {"shape": list(shape), "dtype": dtype, "encoding": encoding}
                for node, (shape, encoding) in NODES.items()
            },
            "splits": {"train": {"num_records": NUM_IMAGES, "shards": shard_entries}},
        },
    )
    return out_dir


def _check_batches(batches, node, branches=slice(None)):
    seen = []
    for bottleneck, label, image_ids in batches:
        assert bottleneck.dtype == tf.float32 and label.dtype == tf.int32
        for row, image_label, image_id in zip(bottleneck.numpy(), label.numpy(), image_ids.numpy()):
            image_id = image_id.decode()
            np.testing.assert_array_equal(_bits(row), _bits(BOTTLENECKS[node][image_id][branches]))
            assert image_label == IMAGES[image_id]
            seen.append(image_id)
    return seen


@pytest.mark.parametrize("node", NODES)
def test_parse_batch_is_bit_identical_eagerly_and_in_dataset_map(node):
    shape, encoding = NODES[node]
    image_ids = sorted(IMAGES)
    serialized = [
        example.serialize(image_id, IMAGES[image_id], BOTTLENECKS[node][image_id], encoding)
        for image_id in image_ids
    ]
    eager = example.parse_batch(tf.constant(serialized), shape, encoding)
    mapped = (
        tf.data.Dataset.from_tensor_slices(serialized)
        .batch(3)
        .map(lambda batch: example.parse_batch(batch, shape, encoding))
    )
    mapped_bottlenecks = np.concatenate([batch["bottleneck"].numpy() for batch in mapped])
    expected = np.stack([BOTTLENECKS[node][image_id] for image_id in image_ids])
    for bottleneck in (eager["bottleneck"].numpy(), mapped_bottlenecks):
        assert bottleneck.shape == (NUM_IMAGES, *shape)
        np.testing.assert_array_equal(_bits(bottleneck), _bits(expected))
    assert eager["label"].numpy().tolist() == [IMAGES[image_id] for image_id in image_ids]
    assert [image_id.decode() for image_id in eager["image_id"].numpy()] == image_ids


REDUCED = {"float16": np.float16, "bfloat16": ml_dtypes.bfloat16}


def _rounded(array, dtype):
    return np.asarray(array, np.float32).astype(REDUCED[dtype]).astype(np.float32)


@pytest.mark.parametrize("dtype", REDUCED)
@pytest.mark.parametrize("node", NODES)
def test_parse_batch_widens_reduced_dtypes_to_float32_eagerly_and_in_dataset_map(node, dtype):
    shape, encoding = NODES[node]
    image_ids = sorted(IMAGES)
    serialized = [
        example.serialize(image_id, IMAGES[image_id], BOTTLENECKS[node][image_id], encoding, dtype)
        for image_id in image_ids
    ]
    eager = example.parse_batch(tf.constant(serialized), shape, encoding, dtype)[
        "bottleneck"
    ].numpy()
    mapped = np.concatenate(
        [
            batch["bottleneck"].numpy()
            for batch in tf.data.Dataset.from_tensor_slices(serialized)
            .batch(3)
            .map(lambda batch: example.parse_batch(batch, shape, encoding, dtype))
        ]
    )
    expected = _rounded(np.stack([BOTTLENECKS[node][image_id] for image_id in image_ids]), dtype)
    for bottleneck in (eager, mapped):
        assert bottleneck.dtype == np.float32 and bottleneck.shape == (NUM_IMAGES, *shape)
        np.testing.assert_array_equal(_bits(bottleneck), _bits(expected))  # -0.0 and NaN included

    def stored(record, key):
        return tf.train.Example.FromString(record).features.feature[key].bytes_list.value[0]

    float32_record = example.serialize("x", 0, BOTTLENECKS[node][image_ids[0]], encoding)
    assert 2 * len(stored(serialized[0], example.VALUES_KEY)) == len(
        stored(float32_record, example.VALUES_KEY)
    )
    if encoding == codec.SPARSE:  # the same positions
        assert stored(serialized[0], example.GAPS_KEY) == stored(float32_record, example.GAPS_KEY)


# sha256 of records written before storage dtypes existed: float32 records must stay byte for byte
# the same.
FLOAT32_RECORD_SHA256 = {
    codec.SPARSE: "b0b55a93915305736086e6fc039af21f401c1b9e97b982b77b55ef67b17f8263",
    codec.DENSE: "1c2dbd98a4256a5c85dc115438b543d515b607cb84706aec44579064885f63f2",
}


@pytest.mark.parametrize("encoding", codec.ENCODINGS)
def test_float32_records_are_byte_identical_to_the_format_before_storage_dtypes(encoding):
    array = np.maximum(np.random.default_rng(7).normal(size=(11, 4, 4, 8)), 0).astype(np.float32)
    array.reshape(-1)[[1, -2]] = [-0.0, np.nan]
    for record in (
        example.serialize("cat/cat_000.jpg", 3, array, encoding),
        example.serialize("cat/cat_000.jpg", 3, array, encoding, "float32"),
    ):
        assert hashlib.sha256(record).hexdigest() == FLOAT32_RECORD_SHA256[encoding]


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_sparse_records_of_very_different_lengths_decode_in_one_batch(dtype):
    shape = (11, 40)
    full = (
        np.random.default_rng(3).normal(size=shape).astype(np.float32)
    )  # no zero: as long as it gets
    far = np.zeros(shape, np.float32)
    far[-1, -1] = -0.0  # one stored value, after a run of fillers
    arrays = [np.zeros(shape, np.float32), full, far, np.zeros(shape, np.float32)]
    serialized = tf.constant(
        [example.serialize("x", 0, array, codec.SPARSE, dtype) for array in arrays]
    )
    for chosen in (
        slice(None),
        slice(None, None, 3),
    ):  # the second holds only records without a stored value
        decoded = example.parse_batch(serialized[chosen], shape, codec.SPARSE, dtype)[
            "bottleneck"
        ].numpy()
        expected = [
            codec.decode(*codec.encode(array, codec.SPARSE, dtype), array.size, codec.SPARSE, dtype)
            for array in arrays[chosen]
        ]
        np.testing.assert_array_equal(
            _bits(decoded), _bits(np.stack(expected).reshape(decoded.shape))
        )


def test_a_sparse_record_that_repeats_a_position_is_refused():
    record = tf.train.Example(
        features=tf.train.Features(
            feature={
                example.IMAGE_ID_KEY: tf.train.Feature(bytes_list=tf.train.BytesList(value=[b"x"])),
                example.LABEL_KEY: tf.train.Feature(int64_list=tf.train.Int64List(value=[0])),
                example.VALUES_KEY: tf.train.Feature(
                    bytes_list=tf.train.BytesList(value=[np.array([1, 2, 3], "<f4").tobytes()])
                ),
                example.GAPS_KEY: tf.train.Feature(
                    bytes_list=tf.train.BytesList(value=[bytes([0, 2, 0])])
                ),
            }
        )
    )
    with pytest.raises(tf.errors.InvalidArgumentError, match="repeats a position"):
        example.parse_batch(tf.constant([record.SerializeToString()]), (8,), codec.SPARSE)


@pytest.mark.parametrize("node", NODES)
def test_parse_batch_rejects_a_record_of_another_shape(node):
    shape, encoding = NODES[node]
    serialized = example.serialize("x", 0, BOTTLENECKS[node]["class_0/image_0.jpg"], encoding)
    smaller = (shape[0] - 1, *shape[1:])
    with pytest.raises(tf.errors.InvalidArgumentError):
        example.parse_batch(tf.constant([serialized]), smaller, encoding)


@pytest.mark.parametrize("compression", ["", "GZIP"])
@pytest.mark.parametrize("node", NODES)
def test_make_dataset_reads_every_record_bit_identical(tmp_path, node, compression):
    records_dir = str(_write_records(tmp_path, compression))
    dataset = conftest.records_dataset(records_dir, node, "train", batch_size=3, with_ids=True)
    assert sorted(_check_batches(dataset, node)) == sorted(IMAGES)
    assert conftest.num_records(records_dir, "train") == NUM_IMAGES
    with open(os.path.join(records_dir, manifest.MANIFEST_NAME)) as file:
        first_file = json.load(file)["splits"]["train"]["shards"][0]["files"][node]
    assert writer.file_sha256(os.path.join(records_dir, first_file["path"])) == first_file["sha256"]


@pytest.mark.parametrize("dtype", REDUCED)
def test_make_dataset_reads_reduced_dtype_records_as_float32_and_the_manifest_says_so(
    tmp_path, dtype
):
    records_dir = str(_write_records(tmp_path, dtype=dtype))
    records = manifest.Manifest.read(records_dir)
    assert records.node("mixed7").dtype == records.node("pool").dtype == dtype
    # Written again, the manifest states the format version that has reduced dtypes; float32 ones
    # stay at 1.
    assert records.to_json()["format_version"] == manifest.REDUCED_DTYPE_VERSION == 2
    assert (
        manifest.Manifest.read(str(_write_records(tmp_path / "f32"))).to_json()["format_version"]
        == 1
    )
    for node in NODES:
        dataset = conftest.records_dataset(records_dir, node, "train", batch_size=3, with_ids=True)
        assert dataset.element_spec[0].dtype == tf.float32
        seen = []
        for bottleneck, _, image_ids in dataset:
            for row, image_id in zip(bottleneck.numpy(), image_ids.numpy()):
                np.testing.assert_array_equal(
                    _bits(row), _bits(_rounded(BOTTLENECKS[node][image_id.decode()], dtype))
                )
                seen.append(image_id)
        assert len(seen) == NUM_IMAGES


def test_a_storage_dtype_this_reader_does_not_know_is_refused_by_name(tmp_path):
    records_dir = str(_write_records(tmp_path))
    path = os.path.join(records_dir, manifest.MANIFEST_NAME)
    with open(path) as file:
        data = json.load(file)
    data["nodes"]["pool"]["dtype"] = "int8"
    fileio.write_json_atomic(path, data)
    with pytest.raises(
        ValueError, match="'pool' is stored as int8, this reader reads float32, float16, bfloat16"
    ):
        conftest.records_dataset(records_dir, "pool", "train", batch_size=2)


def test_make_dataset_selects_branches(tmp_path):
    records_dir = str(_write_records(tmp_path))
    dataset = conftest.records_dataset(
        records_dir, "mixed7", "train", batch_size=4, branches=(0, 10), with_ids=True
    )
    assert dataset.element_spec[0].shape.as_list() == [None, 2, 3, 3, 4]
    assert len(_check_batches(dataset, "mixed7", branches=[0, 10])) == NUM_IMAGES
    with pytest.raises(ValueError, match="subset of 0..10"):
        conftest.records_dataset(records_dir, "mixed7", "train", batch_size=4, branches=(11,))


def test_shuffle_and_repeat_yield_every_record(tmp_path):
    records_dir = str(_write_records(tmp_path))
    dataset = conftest.records_dataset(
        records_dir,
        "pool",
        "train",
        batch_size=4,
        shuffle=True,
        seed=1,
        repeat=True,
        drop_remainder=True,
        with_ids=True,
        shuffle_buffer=8,
    )
    seen = _check_batches(dataset.take(4), "pool")
    assert sorted(seen[:NUM_IMAGES]) == sorted(IMAGES) == sorted(seen[NUM_IMAGES:])
    unshuffled = _check_batches(
        conftest.records_dataset(records_dir, "pool", "train", batch_size=4, with_ids=True), "pool"
    )
    assert seen[:NUM_IMAGES] != unshuffled


def test_the_shuffle_buffer_is_bounded_in_bytes(tmp_path):
    records_dir = str(_write_records(tmp_path, num_shards=1))
    records = manifest.Manifest.read(records_dir)
    record_bytes = records.split("train").shards[0].files["mixed7"].num_bytes / NUM_IMAGES
    assert reader.shuffle_records(records, "mixed7", "train", 1000, None) == 1000
    assert reader.shuffle_records(records, "mixed7", "train", 1000, 5.5 * record_bytes) == 5
    assert reader.shuffle_records(records, "mixed7", "train", 3, 5.5 * record_bytes) == 3
    assert reader.shuffle_records(records, "mixed7", "train", 1000, 1.0) == 1  # never empty
    assert reader.shuffle_records(records, "mixed7", "train", 1000, 4000, decoded_bytes=1000) == 4

    def first_epoch(buffer_bytes):
        return _check_batches(
            conftest.records_dataset(
                records_dir,
                "mixed7",
                "train",
                batch_size=NUM_IMAGES,
                shuffle=True,
                seed=3,
                with_ids=True,
                shuffle_buffer=1000,
                shuffle_buffer_bytes=buffer_bytes,
            ).take(1),
            "mixed7",
        )

    # One shard: a buffer of one record keeps the file's order, a buffer of every record shuffles
    # it.
    in_file_order = _check_batches(
        conftest.records_dataset(records_dir, "mixed7", "train", NUM_IMAGES, with_ids=True),
        "mixed7",
    )
    assert first_epoch(record_bytes) == in_file_order
    assert sorted(first_epoch(1e9)) == sorted(in_file_order) and first_epoch(1e9) != in_file_order


def test_the_loaded_allocator_is_read_from_the_memory_map(tmp_path):
    maps = tmp_path / "maps"
    assert reader.loaded_allocator(str(maps)) is None  # unknowable
    maps.write_text("7f0 r-xp 00000000 08:01 1 /usr/lib/x86_64-linux-gnu/libc.so.6\n")
    assert reader.loaded_allocator(str(maps)) == "malloc"
    maps.write_text(
        "7f0 r-xp 00000000 08:01 2 /usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4.5.10\n"
    )
    assert reader.loaded_allocator(str(maps)) == "tcmalloc"
    assert reader.loaded_allocator() in (None, "malloc", "tcmalloc", "jemalloc")


@pytest.mark.parametrize("cache_decoded", [False, True])
def test_a_resumed_stream_continues_the_same_batches(tmp_path, cache_decoded):
    records_dir = str(_write_records(tmp_path))

    def stream(start_batch):
        return conftest.records_dataset(
            records_dir,
            "mixed7",
            "train",
            batch_size=3,
            shuffle=True,
            seed=5,
            repeat=True,
            drop_remainder=True,
            with_ids=True,
            shuffle_buffer=8,
            start_batch=start_batch,
            cache_decoded=cache_decoded,
            branches=(0, 3),
        )

    whole = _check_batches(stream(0).take(7), "mixed7", branches=[0, 3])
    resumed = _check_batches(stream(4).take(3), "mixed7", branches=[0, 3])
    assert resumed == whole[12:]  # bit-identical batches, in the same order
    assert sorted(whole[:NUM_IMAGES]) == sorted(IMAGES) and sorted(
        whole[NUM_IMAGES : 2 * NUM_IMAGES]
    ) == sorted(IMAGES)
    assert whole[:NUM_IMAGES] != whole[NUM_IMAGES : 2 * NUM_IMAGES]  # reshuffled every epoch


def test_a_file_shard_reads_its_own_shards_only_seeded_and_resumable(tmp_path):
    records_dir = str(_write_records(tmp_path))  # 8 records in 3 shards of 2, 3 and 3
    image_ids = sorted(IMAGES)
    plan = shards.plan_shards(image_ids, 3)
    own = [
        sorted(image_ids[index] for shard in plan[reader_index::2] for index in shard)
        for reader_index in (0, 1)
    ]
    assert [len(ids) for ids in own] == [5, 3]
    for reader_index in (0, 1):
        seen = _check_batches(
            conftest.records_dataset(
                records_dir,
                "pool",
                "train",
                batch_size=2,
                with_ids=True,
                file_shard=(2, reader_index),
            ),
            "pool",
        )
        assert sorted(seen) == own[reader_index]

    def stream(start_batch):
        return conftest.records_dataset(
            records_dir,
            "pool",
            "train",
            batch_size=2,
            shuffle=True,
            seed=5,
            repeat=True,
            drop_remainder=True,
            with_ids=True,
            shuffle_buffer=8,
            start_batch=start_batch,
            file_shard=(2, 0),
        )

    whole = _check_batches(stream(0).take(6), "pool")
    assert (
        _check_batches(stream(0).take(6), "pool") == whole
    )  # seeded: the same stream on every build
    assert (
        _check_batches(stream(3).take(3), "pool") == whole[6:]
    )  # a resume continues the same batches
    assert sorted(whole[:5]) == own[0] == sorted(whole[5:10])
    with pytest.raises(
        ValueError, match=r"file_shard \(4, 0\) needs 0 <= index < readers <= the 3 shards"
    ):
        conftest.records_dataset(records_dir, "pool", "train", batch_size=2, file_shard=(4, 0))


def test_manifest_errors_name_the_fix(tmp_path):
    with pytest.raises(errors.RecordsError, match="run make_tfrecords first"):
        conftest.records_dataset(str(tmp_path), "pool", "train", batch_size=2)
    records_dir = str(_write_records(tmp_path))
    with pytest.raises(ValueError, match=r"available nodes: \['mixed7', 'pool'\]"):
        conftest.records_dataset(records_dir, "mixed6", "train", batch_size=2)
    with pytest.raises(ValueError, match=r"available splits: \['train'\]"):
        conftest.records_dataset(records_dir, "pool", "validation", batch_size=2)


def test_failed_verification_leaves_no_file(tmp_path, monkeypatch):
    final_path = tmp_path / "train-00000-of-00001.tfrecord"
    monkeypatch.setattr(writer, "count_records", lambda path, compression: 0)
    shard_writer = writer.ShardWriter(str(final_path), "GZIP")
    shard_writer.write(example.serialize("x", 0, np.ones(3, np.float32), codec.DENSE))
    with pytest.raises(errors.RecordsError, match="failed verification"):
        shard_writer.close()
    assert os.listdir(tmp_path) == []


def test_exception_while_writing_leaves_no_file(tmp_path):
    with pytest.raises(KeyboardInterrupt):
        with writer.ShardWriter(str(tmp_path / "train-00000-of-00001.tfrecord")) as shard_writer:
            shard_writer.write(b"not even an Example")
            raise KeyboardInterrupt
    assert os.listdir(tmp_path) == []


def test_output_lock_is_exclusive_and_reusable(tmp_path):
    with writer.OutputLock(str(tmp_path)):
        with pytest.raises(writer.JobAlreadyRunning, match=f"pid {os.getpid()}"):
            with writer.OutputLock(str(tmp_path)):
                pass
    with writer.OutputLock(str(tmp_path)):
        pass


KILLED_JOB = """
import sys
import numpy as np
from tfrecords import codec, example, writer
with writer.OutputLock(sys.argv[1]):
    shard_writer = writer.ShardWriter(sys.argv[1] + "/train-00000-of-00001.tfrecord", None)
    shard_writer.write(example.serialize("x", 0, np.ones(3, np.float32), codec.DENSE))
    print("ready", flush=True)
    sys.stdin.readline()
"""


@pytest.mark.slow
def test_killed_job_leaves_only_a_temporary_file_and_releases_its_lock(tmp_path):
    environment = dict(os.environ, PYTHONPATH=str(REPOSITORY), TF_CPP_MIN_LOG_LEVEL="3")
    job = subprocess.Popen(
        [sys.executable, "-c", KILLED_JOB, str(tmp_path)],
        env=environment,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert job.stdout.readline().strip() == "ready"
        with pytest.raises(writer.JobAlreadyRunning, match=f"another job \\(pid {job.pid}\\)"):
            with writer.OutputLock(str(tmp_path)):
                pass
    finally:
        job.send_signal(signal.SIGKILL)
        job.wait()
    with writer.OutputLock(str(tmp_path)):
        assert sorted(os.listdir(tmp_path)) == [".lock", ".train-00000-of-00001.tfrecord.tmp"]
        assert writer.remove_temporaries(str(tmp_path)) == [
            str(tmp_path / ".train-00000-of-00001.tfrecord.tmp")
        ]
    assert os.listdir(tmp_path) == [".lock"]


def test_file_helpers_treat_a_url_as_a_url_and_a_path_as_before(tmp_path):
    url = "ram://test_fileio/records"
    try:
        assert fileio.join(url + "/", "pool", "a.tfrecord") == f"{url}/pool/a.tfrecord"
        assert fileio.relpath(f"{url}/pool/a.tfrecord", url + "/") == "pool/a.tfrecord"
        assert fileio.abspath(url) == url and fileio.abspath("records") == os.path.abspath(
            "records"
        )
        assert fileio.dirname(f"{url}/labels.csv") == url and fileio.dirname("x.csv") == os.getcwd()
        fileio.makedirs(f"{url}/pool")
        fileio.write_text_atomic(f"{url}/pool/a.json", "{}")
        assert (
            fileio.isdir(f"{url}/pool"),
            fileio.isfile(f"{url}/pool"),
            fileio.isfile(f"{url}/pool/a.json"),
        ) == (True, False, True)
        assert fileio.listdir(url) == ["pool"] and fileio.read_bytes(f"{url}/pool/a.json") == b"{}"
        assert list(fileio.walk(url)) == [(url, ["pool"], []), (f"{url}/pool", [], ["a.json"])]
        copy = fileio.local_copy(f"{url}/pool/a.json")
        assert copy.endswith("/a.json") and fileio.local_copy(f"{url}/pool/a.json") == copy
        with open(copy, "rb") as file:
            assert file.read() == b"{}"
        assert fileio.local_copy(str(tmp_path)) == str(tmp_path)
        with pytest.raises(
            ValueError, match="--out-dir nowhere://b: TensorFlow has no file system for nowhere://"
        ):
            fileio.check_scheme("nowhere://b", "--out-dir nowhere://b")
        fileio.check_scheme(url, "--out-dir")
    finally:
        tf.io.gfile.rmtree("ram://test_fileio")


def test_mirrored_strategy_distributes_the_dataset(tmp_path):
    records_dir = str(_write_records(tmp_path))
    devices = [device.name for device in tf.config.list_logical_devices("CPU")]
    strategy = tf.distribute.MirroredStrategy(devices)
    dataset = conftest.records_dataset(records_dir, "mixed7", "train", batch_size=4, with_ids=True)
    seen = []
    for batch in strategy.experimental_distribute_dataset(dataset):
        local = [tf.concat(strategy.experimental_local_results(part), axis=0) for part in batch]
        seen += _check_batches([local], "mixed7")
    assert sorted(seen) == sorted(IMAGES)


def test_make_dataset_given_a_folder_says_in_one_line_to_pass_its_manifest(tmp_path):
    with pytest.raises(TypeError) as raised:
        reader.make_dataset(str(tmp_path), "pool", "train", 4)
    message = str(raised.value)
    assert message.count("\n") == 0
    assert f"Manifest.read('{tmp_path}')" in message
