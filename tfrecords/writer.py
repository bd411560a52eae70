"""Writes shards atomically: temporary file, read-back verification, checksum, rename; one job per output."""

import dataclasses
import fcntl
import hashlib
import os

import tensorflow as tf

COMPRESSIONS = ("", "GZIP", "ZLIB")
LOCK_NAME = ".lock"


class JobAlreadyRunning(RuntimeError):
    """Another process holds the output directory's lock."""


class OutputLock:
    """Exclusive lock on out_dir for the life of a job.

    flock, unlike a pid file, is released by the OS when the holder dies, so a killed job never blocks
    its own restart.
    """

    def __init__(self, out_dir: str):
        self.out_dir = out_dir
        self.path = os.path.join(out_dir, LOCK_NAME)
        self._descriptor = None

    def __enter__(self) -> "OutputLock":
        os.makedirs(self.out_dir, exist_ok=True)
        descriptor = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(descriptor, 64).decode("ascii", "replace").strip() or "unknown"
            os.close(descriptor)
            raise JobAlreadyRunning(
                f"another job (pid {holder}) is writing to {self.out_dir}; "
                "wait for it to finish or choose another --out-dir") from None
        os.ftruncate(descriptor, 0)
        os.write(descriptor, f"{os.getpid()}\n".encode("ascii"))
        self._descriptor = descriptor
        return self

    def __exit__(self, *exception_info) -> None:
        # The file stays: deleting it would let a third job lock a new inode while a second holds the old one.
        fcntl.flock(self._descriptor, fcntl.LOCK_UN)
        os.close(self._descriptor)
        self._descriptor = None


@dataclasses.dataclass(frozen=True)
class ShardInfo:
    path: str
    num_records: int
    sha256: str
    num_bytes: int


def file_sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for chunk in iter(lambda: file.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _check_compression(compression: str | None) -> str:
    compression = compression or ""
    if compression not in COMPRESSIONS:
        raise ValueError(f"unknown compression {compression!r}: use one of {COMPRESSIONS} (or None)")
    return compression


def count_records(path: str, compression: str | None) -> int:
    """Reads every record back, which checks each one's CRC, and returns the count.

    Counted inside one graph: eager iteration pays Python overhead on every record.
    """
    dataset = tf.data.TFRecordDataset(path, compression_type=_check_compression(compression))
    return int(dataset.reduce(tf.constant(0, tf.int64), lambda count, _: count + 1))


def _fsync_directory(directory: str) -> None:
    descriptor = os.open(directory or ".", os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def temporary_path(final_path: str) -> str:
    directory, name = os.path.split(final_path)
    return os.path.join(directory, f".{name}.tmp")


class ShardWriter:
    """Writes one shard under a temporary name; close() verifies it and renames it into place.

    Used as a context manager, an exception aborts (deletes the temporary file) and a clean exit closes.
    """

    def __init__(self, final_path: str, compression: str | None = None):
        self.final_path = final_path
        self.compression = _check_compression(compression)
        self.temporary_path = temporary_path(final_path)
        self._writer = tf.io.TFRecordWriter(
            self.temporary_path, tf.io.TFRecordOptions(compression_type=self.compression))
        self._num_written = 0
        self.info = None

    def write(self, serialized: bytes) -> None:
        self._writer.write(serialized)
        self._num_written += 1

    def close(self) -> ShardInfo:
        if self.info is not None:
            return self.info
        try:
            self._writer.close()
            num_read = count_records(self.temporary_path, self.compression)
            if num_read != self._num_written:
                raise RuntimeError(
                    f"shard {self.final_path} failed verification: wrote {self._num_written} records, "
                    f"read back {num_read}; check free disk space and rerun to redo this shard")
            with open(self.temporary_path, "rb") as file:
                os.fsync(file.fileno())
            info = ShardInfo(self.final_path, num_read, file_sha256(self.temporary_path),
                             os.path.getsize(self.temporary_path))
        except BaseException:
            self.abort()
            raise
        os.replace(self.temporary_path, self.final_path)
        _fsync_directory(os.path.dirname(self.final_path))
        self.info = info
        return info

    def abort(self) -> None:
        self._writer.close()
        if os.path.exists(self.temporary_path):
            os.remove(self.temporary_path)

    def __enter__(self) -> "ShardWriter":
        return self

    def __exit__(self, exception_type, exception, traceback) -> None:
        if exception_type is None:
            self.close()
        elif self.info is None:
            self.abort()


def remove_temporaries(directory: str) -> list[str]:
    """Deletes the .*.tmp files a killed job left anywhere under directory; call it only holding the lock."""
    removed = []
    for root, _, names in os.walk(directory):
        for name in names:
            if name.startswith(".") and name.endswith(".tmp"):
                path = os.path.join(root, name)
                os.remove(path)
                removed.append(path)
    return sorted(removed)
