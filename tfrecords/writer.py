"""Writes shards atomically: temporary file, read-back verification, checksum, rename; one job per
output."""

import contextlib
import dataclasses
import fcntl
import hashlib
import os

import tensorflow as tf

from tfrecords import errors
from tfrecords import fileio

COMPRESSIONS = ("", "GZIP", "ZLIB")
LOCK_NAME = ".lock"


class JobAlreadyRunning(errors.RecordsError):
    """Another process holds the output directory's lock."""


class WriteFailed(errors.RecordsError):
    """The file system refused a write (no space, read-only, quota); no partial file is left under a
    final name."""


# What a full disk, a read-only folder or a lost mount raise: Python's own file calls or
# TensorFlow's.
WRITE_ERRORS = (OSError, tf.errors.OpError)


def write_failure(path: str, error: BaseException) -> WriteFailed:
    """A one-line WriteFailed for a TensorFlow or OS error met while writing path."""
    if isinstance(error, tf.errors.OpError):
        detail = error.message.rsplit("; ", 1)[
            -1
        ]  # TensorFlow puts the (temporary) file's path first
    elif isinstance(error, OSError):
        detail = error.strerror or str(error)
    else:
        detail = str(error)
    return WriteFailed(f"could not write {path}: {detail}")


class OutputLock:
    """Exclusive lock on out_dir for the life of a job, on a local filesystem only.

    flock, unlike a pid file, is released by the OS when the holder dies, so a killed job never
    blocks its own restart. Object stores (gs://, s3://) have no such lock: there, keeping one job
    per output directory is up to whoever starts the jobs.
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
                "wait for it to finish or choose another --out-dir"
            ) from None
        os.ftruncate(descriptor, 0)
        os.write(descriptor, f"{os.getpid()}\n".encode("ascii"))
        self._descriptor = descriptor
        return self

    def __exit__(self, *exception_info) -> None:
        # The file stays: deleting it would let a third job lock a new inode while a second holds
        # the old one.
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
    with fileio.open_binary(path) as file:
        for chunk in iter(lambda: file.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _check_compression(compression: str | None) -> str:
    compression = compression or ""
    if compression not in COMPRESSIONS:
        raise ValueError(
            f"unknown compression {compression!r}: use one of {COMPRESSIONS} (or None)"
        )
    return compression


def count_records(path: str, compression: str | None) -> int:
    """Reads every record back, which checks each one's CRC, and returns the count.

    Counted inside one graph: eager iteration pays Python overhead on every record.
    """
    dataset = tf.data.TFRecordDataset(path, compression_type=_check_compression(compression))
    return int(dataset.reduce(tf.constant(0, tf.int64), lambda count, _: count + 1))


def open_record_writer(path: str, compression: str) -> tf.io.TFRecordWriter:
    """The file layer under ShardWriter, kept in one function so that a test can make its writes
    fail."""
    return tf.io.TFRecordWriter(path, tf.io.TFRecordOptions(compression_type=compression))


class ShardWriter:
    """Writes one shard under a temporary name; close() verifies it and renames it into place.

    Used as a context manager, an exception aborts (deletes the temporary file) and a clean exit
    closes.
    """

    def __init__(self, final_path: str, compression: str | None = None):
        self.final_path = final_path
        self.compression = _check_compression(compression)
        self.temporary_path = fileio.temporary_path(final_path)
        self._num_written = 0
        self.info = None
        self._writer = None
        try:
            self._writer = open_record_writer(self.temporary_path, self.compression)
        except WRITE_ERRORS as error:
            self.abort()
            raise write_failure(final_path, error) from None

    def write(self, serialized: bytes) -> None:
        try:
            self._writer.write(serialized)
        except WRITE_ERRORS as error:
            self.abort()
            raise write_failure(self.final_path, error) from None
        self._num_written += 1

    def close(self) -> ShardInfo:
        if self.info is not None:
            return self.info
        try:
            self._writer.close()
            num_read = count_records(self.temporary_path, self.compression)
            if num_read != self._num_written:
                raise errors.RecordsError(
                    f"shard {self.final_path} failed verification: wrote {self._num_written} "
                    f"records, read back {num_read}; check free disk space and rerun to redo this "
                    "shard"
                )
            info = ShardInfo(
                self.final_path,
                num_read,
                file_sha256(self.temporary_path),
                fileio.size(self.temporary_path),
            )
            fileio.rename_into_place(self.temporary_path, self.final_path)
        except WRITE_ERRORS as error:
            self.abort()
            raise write_failure(self.final_path, error) from None
        except BaseException:
            self.abort()
            raise
        self.info = info
        return info

    def abort(self) -> None:
        """Closes and deletes the temporary file; safe to call twice and after a failed write."""
        if self._writer is not None:
            with contextlib.suppress(
                *WRITE_ERRORS
            ):  # the file is deleted next: its last bytes do not matter
                self._writer.close()
            self._writer = None
        # What cannot be deleted now (a read-only folder) goes at the next start, in
        # remove_temporaries.
        with contextlib.suppress(*WRITE_ERRORS):
            fileio.remove(self.temporary_path)

    def __enter__(self) -> "ShardWriter":
        return self

    def __exit__(self, exception_type, exception, traceback) -> None:
        if exception_type is None:
            self.close()
        elif self.info is None:
            self.abort()


def remove_temporaries(directory: str) -> list[str]:
    """Deletes the .*.tmp files a killed job left anywhere under directory (local or a URL).

    Call it only holding the lock, or, on an object store, which has none, with no other job on the
    directory.
    """
    removed = []
    for root, _, names in fileio.walk(directory):
        for name in names:
            if name.startswith(".") and name.endswith(".tmp"):
                path = fileio.join(root, name)
                fileio.remove(path)
                removed.append(path)
    return sorted(removed)
