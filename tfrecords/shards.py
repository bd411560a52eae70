"""Shard naming, train/validation assignment and shard planning: pure functions of the image ids."""

import hashlib
import math
from collections.abc import Sequence


def shard_filename(split: str, index: int, num_shards: int) -> str:
    if not 0 <= index < num_shards:
        raise ValueError(
            f"shard index {index} is outside [0, {num_shards}): pass an index below num_shards"
        )
    return f"{split}-{index:05d}-of-{num_shards:05d}.tfrecord"


def stable_hash(text: str) -> int:
    """A 64-bit hash that, unlike hash(), is the same in every process and on every machine."""
    return int.from_bytes(hashlib.sha256(text.encode("utf-8")).digest()[:8], "big")


def split_for(image_id: str, validation_percent: float, test_percent: float = 0.0) -> str:
    """'test' for about test_percent % of ids, 'validation' for about validation_percent %, else
    'train'.

    Fixed by the id alone. The slices are disjoint and nested by hash, so asking for no test images
    keeps exactly the train/validation assignment a run without a test split had.
    """
    if not 0 <= validation_percent <= 100 or not 0 <= test_percent <= 100 - validation_percent:
        raise ValueError(
            f"validation_percent {validation_percent} and test_percent {test_percent}: pass "
            f"percentages between 0 and 100 that add up to at most 100"
        )
    bucket = stable_hash(image_id) % 10000
    if bucket < test_percent * 100:
        return "test"
    return "validation" if bucket < (test_percent + validation_percent) * 100 else "train"


def plan_shards(image_ids: Sequence[str], num_shards: int) -> list[list[int]]:
    """Indices into image_ids for each shard: hash order mixes classes, chunk sizes differ by at
    most 1.

    Returns min(num_shards, len(image_ids)) non-empty shards, and [] for no ids, so callers should
    name files after len(plan), not after the num_shards they asked for.
    """
    if num_shards < 1:
        raise ValueError(f"num_shards is {num_shards}: pass at least 1")
    if len(set(image_ids)) != len(image_ids):
        raise ValueError(
            "image ids are not unique: derive each id from something unique, such as the relative "
            "path"
        )
    if not image_ids:
        return []
    order = sorted(
        range(len(image_ids)), key=lambda index: (stable_hash(image_ids[index]), image_ids[index])
    )
    num_shards = min(num_shards, len(order))
    bounds = [shard * len(order) // num_shards for shard in range(num_shards + 1)]
    return [order[start:stop] for start, stop in zip(bounds[:-1], bounds[1:])]


def num_shards_for(num_images: int, bytes_per_image: float, target_shard_bytes: int) -> int:
    """Enough shards to keep each near target_shard_bytes, at least 1 and at most one per image."""
    if target_shard_bytes <= 0:
        raise ValueError(
            f"target_shard_bytes is {target_shard_bytes}: pass a positive size such as 200_000_000"
        )
    wanted = math.ceil(num_images * bytes_per_image / target_shard_bytes)
    return max(1, min(wanted, num_images))
