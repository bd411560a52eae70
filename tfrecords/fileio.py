"""Every file access of the pipeline's storage, for local paths and any URL tf.io.gfile knows
(gs://, s3://, ...).

Local paths use os and open, so they behave exactly as plain files: whole-file writes go to a
temporary name in the same folder, are flushed to disk and renamed over the final name (atomic on
POSIX). URLs go through tf.io.gfile. Object stores have no atomic rename: tf.io.gfile.rename there
is a copy and a delete. The final name still only ever appears from a complete, verified temporary
(an object becomes visible whole), so a crash leaves at worst a stray temporary, never a
half-written final file: a shard's temporary is removed when the job starts again, any other is
overwritten when its file is next written.
"""

import atexit
import contextlib
import functools
import json
import os
import shutil
import tempfile

import tensorflow as tf

from tfrecords import errors


def is_remote(path: str) -> bool:
    return "://" in path


@functools.cache
def _has_filesystem(scheme: str) -> bool:
    if scheme in tf.io.gfile.get_registered_schemes():
        return True
    try:
        import tensorflow_io  # noqa: F401  (importing it registers s3://, hdfs://, az://, ... with TensorFlow)
    except (ImportError, tf.errors.NotFoundError):  # not installed, or built for another TensorFlow
        return False
    return scheme in tf.io.gfile.get_registered_schemes()


def check_scheme(path: str, name: str) -> None:
    """Raises ValueError, naming `name` (e.g. "--out-dir gs://b/x"), when path is a URL TensorFlow
    cannot open.

    Called before any other access, since tf.io.gfile.isdir says False for an unknown scheme, which
    would read as "no such directory". Also loads tensorflow-io's file systems, when installed, in
    this process.
    """
    if not is_remote(path):
        return
    scheme = path.split("://", 1)[0]
    if not _has_filesystem(scheme):
        known = ", ".join(
            f"{known}://" for known in sorted(tf.io.gfile.get_registered_schemes()) if known
        )
        raise errors.RecordsError(
            f"{name}: TensorFlow has no file system for {scheme}:// here (it has {known}); "
            "s3://, hdfs:// and az:// come with tensorflow-io, in the version made for this "
            "TensorFlow"
        )


def join(*parts: str) -> str:
    return (
        os.path.join(*parts)
        if not is_remote(parts[0])
        else "/".join(part.strip("/") for part in parts)
    )


def exists(path: str) -> bool:
    return os.path.exists(path) if not is_remote(path) else tf.io.gfile.exists(path)


def isdir(path: str) -> bool:
    return os.path.isdir(path) if not is_remote(path) else tf.io.gfile.isdir(path)


def isfile(path: str) -> bool:
    if not is_remote(path):
        return os.path.isfile(path)
    return tf.io.gfile.exists(path) and not tf.io.gfile.isdir(path)


def _names(listing) -> list[str]:
    # GCS lists a folder with a trailing slash ("cat/"); locally it is "cat".
    return [name.rstrip("/") for name in listing if name.rstrip("/")]


def listdir(path: str) -> list[str]:
    """The names in a folder, in no particular order."""
    return os.listdir(path) if not is_remote(path) else _names(tf.io.gfile.listdir(path))


def walk(top: str, followlinks: bool = False):
    """os.walk for a local path, tf.io.gfile.walk for a URL (an object store has no links): (folder,
    folders, files).

    As with os.walk, a caller may prune or reorder `folders` in place to choose what is walked next.
    """
    if not is_remote(top):
        yield from os.walk(top, followlinks=followlinks)
        return
    for root, folders, files in tf.io.gfile.walk(top):
        folders[:] = _names(folders)  # in place: the walk goes on into this very list
        yield root, folders, _names(files)


def relpath(path: str, start: str) -> str:
    """path relative to the folder start, "/"-separated."""
    if not is_remote(path):
        return os.path.relpath(path, start).replace(os.sep, "/")
    prefix = start.rstrip("/") + "/"
    if not path.startswith(prefix):
        raise ValueError(f"{path} is not inside {start}")
    return path[len(prefix) :]


def abspath(path: str) -> str:
    """A local path made absolute (what a file that records it needs, to be read from anywhere); a
    URL as it is."""
    return path if is_remote(path) else os.path.abspath(path)


def dirname(path: str) -> str:
    """The folder holding path: made absolute for a local path, as it is for a URL."""
    if not is_remote(path):
        return os.path.dirname(os.path.abspath(path))
    return path.rstrip("/").rsplit("/", 1)[0]


def makedirs(path: str) -> None:
    if is_remote(path):
        tf.io.gfile.makedirs(path)
    else:
        os.makedirs(path, exist_ok=True)


def remove(path: str) -> None:
    """Deletes a file if it is there."""
    if is_remote(path):
        if tf.io.gfile.exists(path):
            tf.io.gfile.remove(path)
    elif os.path.exists(path):
        os.remove(path)


def open_binary(path: str):
    """A file object for reading bytes, local or remote."""
    return tf.io.gfile.GFile(path, "rb") if is_remote(path) else open(path, "rb")


def open_text(path: str):
    """A file object for reading UTF-8 text with line endings as they are (what the csv module
    wants)."""
    return (
        tf.io.gfile.GFile(path, "r")
        if is_remote(path)
        else open(path, encoding="utf-8", newline="")
    )


def read_bytes(path: str) -> bytes:
    with open_binary(path) as file:
        return file.read()


@functools.cache
def local_copy(path: str) -> str:
    """A local copy of a remote file, made once per process; a local path as it is.

    For libraries that open only local files (Keras's load_weights): the copy keeps the file's name,
    whose extension tells them the format, and is deleted when the process exits.
    """
    if not is_remote(path):
        return path
    directory = tempfile.mkdtemp(prefix="jpeg-ladder-")
    atexit.register(shutil.rmtree, directory, ignore_errors=True)
    local = os.path.join(directory, path.rstrip("/").rsplit("/", 1)[-1])
    tf.io.gfile.copy(path, local, overwrite=True)
    return local


def size(path: str) -> int:
    return tf.io.gfile.stat(path).length if is_remote(path) else os.path.getsize(path)


def rename_into_place(temporary: str, final_path: str) -> None:
    """Renames a finished temporary file over its final name, durably on a local disk.

    On an object store the rename is a copy and a delete (see the module docstring).
    """
    if is_remote(final_path):
        tf.io.gfile.rename(temporary, final_path, overwrite=True)
        return
    with open(temporary, "rb") as file:
        os.fsync(file.fileno())
    os.replace(temporary, final_path)
    fsync_directory(os.path.dirname(final_path))


def temporary_path(final_path: str) -> str:
    """The hidden name a file is written under before it is renamed into place."""
    directory, name = os.path.split(final_path)
    return os.path.join(directory, f".{name}.tmp")


def fsync_directory(directory: str) -> None:
    """Makes a rename inside a local directory durable."""
    descriptor = os.open(directory or ".", os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def write_bytes_atomic(path: str, data: bytes) -> None:
    """Writes data so that readers see either the old file or the new one, never part of one."""
    temporary = temporary_path(path)
    if is_remote(path):
        try:
            with tf.io.gfile.GFile(temporary, "wb") as file:
                file.write(data)
            tf.io.gfile.rename(temporary, path, overwrite=True)
        except BaseException:
            with contextlib.suppress(
                tf.errors.OpError
            ):  # the write's own error is the one to report
                remove(temporary)
            raise
        return
    try:
        with open(temporary, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        if os.path.exists(temporary):
            os.remove(temporary)
        raise


def write_text_atomic(path: str, text: str) -> None:
    write_bytes_atomic(path, text.encode("utf-8"))


def write_json_atomic(path: str, obj) -> None:
    """obj as sorted, indented JSON: the same content always gives the same bytes."""
    write_text_atomic(path, json.dumps(obj, sort_keys=True, indent=2) + "\n")


def read_text(path: str) -> str | None:
    """The file's text, or None when there is no such file (yet)."""
    try:
        if is_remote(path):
            with tf.io.gfile.GFile(path, "r") as file:
                return file.read()
        with open(path, encoding="utf-8") as file:
            return file.read()
    except (FileNotFoundError, tf.errors.NotFoundError):
        return None


def read_json(path: str):
    """The JSON content of path, or None when there is no such file (yet)."""
    text = read_text(path)
    return None if text is None else json.loads(text)
