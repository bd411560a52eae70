"""Whole-file writes that readers never see half done, and JSON, for local paths and object stores alike.

Local paths are written to a temporary name in the same folder, flushed to disk and renamed over the
final name (atomic on POSIX). Remote paths (gs://, s3://, ...) go through tf.io.gfile: object stores
have no rename that is atomic, but an object only becomes visible once it is complete, which gives
readers the same guarantee.
"""

import json
import os

import tensorflow as tf


def is_remote(path: str) -> bool:
    return "://" in path


def join(*parts: str) -> str:
    return os.path.join(*parts) if not is_remote(parts[0]) else "/".join(part.strip("/") for part in parts)


def exists(path: str) -> bool:
    return os.path.exists(path) if not is_remote(path) else tf.io.gfile.exists(path)


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


def size(path: str) -> int:
    return tf.io.gfile.stat(path).length if is_remote(path) else os.path.getsize(path)


def rename_into_place(temporary: str, final_path: str) -> None:
    """Renames a finished temporary file over its final name, durably on a local disk."""
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
        with tf.io.gfile.GFile(temporary, "wb") as file:
            file.write(data)
        tf.io.gfile.rename(temporary, path, overwrite=True)
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
