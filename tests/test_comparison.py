"""comparison.json's figures and words: the oracle gap, the winner, what each added family gives,
and a verdict that never credits the ladder for a view's gain."""

import numpy as np
import pytest

from pipeline.analysis import comparison
from pipeline.analysis import comparison_render


class _Stage:
    ended_by, seconds, solver = "solved", 1.0, {"l2": 0.01}


class _Results:
    stages = (_Stage(),)
    learning_rate_sweep = None


class _Predictions:
    """What Scores.add reads of a Predictions: right (label 1) or wrong (label 0)."""

    def __init__(self, right):
        self.image_ids = [f"image{index:03d}" for index in range(len(right))]
        self.labels = np.ones(len(right), np.int64)
        self.topology = np.where(np.asarray(right)[:, None], [[0.1, 0.9]], [[0.9, 0.1]])


def _scores(right: dict) -> comparison.Scores:
    scores = comparison.Scores()
    for arm, per_seed in right.items():
        for seed_right in per_seed:
            scores.add(arm, _Predictions(seed_right), _Results())
    return scores


def _right(count_right: int, total: int = 20, offset: int = 0) -> list[bool]:
    right = np.zeros(total, bool)
    right[offset : offset + count_right] = True
    return right.tolist()


LADDER = ["original"] + [f"q{quality}" for quality in range(10, 101, 10)]
VIEW_ARMS = {
    "baseline": ("concat", ["original"]),
    "family[ladder]": ("family", LADDER),
    "family[original,object]": ("family", ["original", "object"]),
    "family[ladder,object]": ("family", LADDER + ["object"]),
}


def test_the_oracle_gap_share_reads_sensibly_when_an_arm_beats_the_oracle():
    scores = _scores(
        {
            "baseline": [_right(6, 10)],  # 60 %
            "half": [_right(7, 10)],  # 70 %: half of the gap to an 80 % oracle
            "above": [_right(9, 10)],  # 90 %: 10 points beyond the oracle
        }
    )
    result = comparison.summarise(scores, 0.8, "test")
    arms = result["arms"]
    assert arms["half"]["oracle_gap_closed"] == pytest.approx(0.5)
    assert arms["half"]["beyond_oracle"] == 0
    assert arms["above"]["oracle_gap_closed"] == 1.0
    assert arms["above"]["beyond_oracle"] == pytest.approx(0.1)
    table = comparison_render.markdown(result)
    assert "| 50 % |" in table and "100 % and 10.00 points beyond the oracle" in table
    assert "250 %" not in table and "solved, L2 0.01" in table


def test_the_ablation_gives_each_added_family_against_the_set_without_it():
    # 20 test images; the baseline gets 8 right, the ladder 9, original+object 14, both 15.
    scores = _scores(
        {
            "baseline": [_right(8)],
            "family[ladder]": [_right(9)],
            "family[original,object]": [_right(14)],
            "family[ladder,object]": [_right(15)],
        }
    )
    result = comparison.summarise(scores, 0.9, "test", VIEW_ARMS)
    rows = {(row["added"], row["to"]): row for row in result["ablation"]}
    assert set(rows) == {
        ("object", "ladder"),
        ("ladder", "original,object"),
    }
    object_row = rows[("object", "ladder")]
    assert (object_row["arm"], object_row["over"]) == ("family[ladder,object]", "family[ladder]")
    assert object_row["difference_mean"] == pytest.approx((15 - 9) / 20)
    assert (object_row["wins"], object_row["losses"]) == (6, 0)
    ladder_row = rows[("ladder", "original,object")]
    assert ladder_row["difference_mean"] == pytest.approx((15 - 14) / 20)
    assert ladder_row["ci95"][0] <= 0.05 <= ladder_row["ci95"][1]
    # Against the baseline every arm is already in versus_baseline.
    assert result["versus_baseline"]["family[ladder,object]"]["difference_mean"] == pytest.approx(
        (15 - 8) / 20
    )


def test_the_verdict_names_the_views_set_that_won_and_never_credits_the_ladder():
    total = 200
    scores = _scores(
        {
            "baseline": [_right(100, total)],
            "family[ladder]": [_right(102, total)],
            "family[original,object]": [_right(130, total)],
            "family[ladder,object]": [_right(132, total)],
        }
    )
    result = comparison.summarise(scores, 0.9, "test", VIEW_ARMS)
    assert result["question"] == "Which branches help?"
    assert result["winner"]["arm"] == "family[ladder,object]"
    assert result["winner"]["families"] == ["ladder", "object"]
    sentence = comparison_render.verdict(result)
    assert "the ladder helps" not in sentence.lower()
    assert sentence.startswith(
        "compare: family[ladder,object] (branches: ladder, object) wins: it beats the baseline "
        "(the original alone) by +16.00 points"
    )
    assert "15.00 points from object over ladder" in sentence
    assert "1.00 points from ladder over original,object" in sentence
    markdown = comparison_render.markdown(result)
    assert markdown.startswith("# Which branches help?")
    assert "## What each family adds" in markdown


def test_the_original_beside_a_view_is_named_the_original_not_the_ladder():
    total = 200
    scores = _scores(
        {
            "baseline": [_right(100, total)],
            "family[ladder]": [_right(100, total)],
            "family[original,object]": [_right(130, total)],
            "family[ladder,object]": [_right(110, total)],
        }
    )
    result = comparison.summarise(scores, 0.9, "test", VIEW_ARMS)
    assert result["winner"]["arm"] == "family[original,object]"
    assert result["winner"]["families"] == ["original", "object"]
    sentence = comparison_render.verdict(result)
    assert sentence.startswith(
        "compare: family[original,object] (branches: original, object) wins: it beats the "
        "baseline (the original alone) by +15.00 points"
    )
    assert "ladder" not in sentence.split(" wins:")[0]


def test_adding_the_original_alone_to_a_view_is_credited_to_the_original():
    arms = {
        "baseline": ("concat", ["original"]),
        "shared[object]": ("shared", ["object"]),
        "shared[original,object]": ("shared", ["original", "object"]),
        "shared[original]": ("shared", ["original"]),
    }
    scores = _scores(
        {
            "baseline": [_right(100, 200)],
            "shared[object]": [_right(110, 200)],
            "shared[original,object]": [_right(120, 200)],
            "shared[original]": [_right(130, 200)],
        }
    )
    result = comparison.summarise(scores, 0.9, "test", arms)
    rows = {(row["added"], row["to"]) for row in result["ablation"]}
    assert ("original", "object") in rows and not any(added == "ladder" for added, _ in rows)
    # An arm of the original alone is not the ladder: the verdict names its branches.
    assert comparison_render.verdict(result).startswith(
        "compare: shared[original] (branches: original) wins"
    )


def test_a_ladder_only_comparison_keeps_its_question_and_credits_the_ladder():
    arms = {
        "baseline": ("concat", ["original"]),
        "shared": ("shared", ["original", "q10", "q50"]),
    }
    scores = _scores({"baseline": [_right(100, 200)], "shared": [_right(130, 200)]})
    result = comparison.summarise(scores, 0.9, "test", arms)
    assert result["question"] == "Does the JPEG ladder help?" and result["ablation"] == []
    assert comparison_render.verdict(result).startswith(
        "compare: the ladder helps: shared beats the baseline by +15.00 points"
    )
