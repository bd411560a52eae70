"""Tests shard naming, train/validation assignment and shard planning, all without files."""

import random

import pytest

from tfrecords import shards

IDS = [f"class_{index % 3}/image_{index:03d}.jpg" for index in range(23)]


def test_shard_filename():
    assert shards.shard_filename("train", 3, 12) == "train-00003-of-00012.tfrecord"
    with pytest.raises(ValueError):
        shards.shard_filename("train", 12, 12)


def test_stable_hash_is_fixed():
    # A constant, so a change of hash (which would reshuffle every split) fails here.
    assert shards.stable_hash("abc") == int("ba7816bf8f01cfea", 16)


@pytest.mark.parametrize("num_shards", [1, 4, 5, 23, 100])
def test_plan_covers_every_index_once_with_near_equal_sizes(num_shards):
    plan = shards.plan_shards(IDS, num_shards)
    assert len(plan) == min(num_shards, len(IDS))
    assert sorted(index for shard in plan for index in shard) == list(range(len(IDS)))
    sizes = [len(shard) for shard in plan]
    assert min(sizes) >= 1 and max(sizes) - min(sizes) <= 1
    assert plan == shards.plan_shards(IDS, num_shards)


def test_plan_is_independent_of_input_order():
    shuffled = IDS[:]
    random.Random(0).shuffle(shuffled)

    def as_ids(ids, plan):
        return [[ids[index] for index in shard] for shard in plan]

    assert as_ids(IDS, shards.plan_shards(IDS, 4)) == as_ids(
        shuffled, shards.plan_shards(shuffled, 4)
    )


def test_plan_mixes_classes_across_shards():
    first_shard = [IDS[index] for index in shards.plan_shards(IDS, 4)[0]]
    assert len({image_id.split("/")[0] for image_id in first_shard}) > 1


def test_plan_edge_cases():
    assert shards.plan_shards([], 4) == []
    with pytest.raises(ValueError, match="at least 1"):
        shards.plan_shards(IDS, 0)
    with pytest.raises(ValueError, match="unique"):
        shards.plan_shards(["a", "a"], 1)


def test_split_for_is_stable_and_near_the_percent():
    ids = [f"image_{index}" for index in range(4000)]
    splits = [shards.split_for(image_id, 10) for image_id in ids]
    assert splits == [shards.split_for(image_id, 10) for image_id in ids]
    assert 0.08 < splits.count("validation") / len(ids) < 0.12
    assert {shards.split_for(image_id, 0) for image_id in ids} == {"train"}
    assert {shards.split_for(image_id, 100) for image_id in ids} == {"validation"}
    with pytest.raises(ValueError):
        shards.split_for("x", 101)


def test_num_shards_for():
    assert shards.num_shards_for(1000, 1e6, 200_000_000) == 5
    assert shards.num_shards_for(1000, 1e6, 10**12) == 1
    assert shards.num_shards_for(3, 1e9, 1) == 3
    assert shards.num_shards_for(0, 1e6, 1) == 1
    with pytest.raises(ValueError):
        shards.num_shards_for(10, 1.0, 0)
