"""The demo end to end: real photos and real weights on a tiny budget, and the synthetic default."""

import dataclasses
import json
import re

import pytest

from pipeline.analysis import comparison_render
from pipeline.config import demo as demo_config
from pipeline.demo import run as demo
from tests import conftest


def _stage_rows(report_text):
    """(node, best top-1 %, best top-5 %) from the report's stage table (its last column says how it
    ended)."""
    rows = re.findall(
        r"^\| (\d+) \| (\S+) \| [^|]+ \| [^|]+ \| \d+ \| \d+ \| ([\d.]+) \| ([\d.]+) \| [^|]+ \|$",
        report_text,
        flags=re.MULTILINE,
    )
    return [(node, float(top1), float(top5)) for _, node, top1, top5 in rows]


@pytest.mark.slow
def test_demo_on_real_photos_with_real_weights_tells_one_story(tmp_path):
    weights = conftest.shared_path("weights", "mobilenet_v2_1.0_224_imagenet.weights.h5")
    subset = tmp_path / "images"  # a tiny budget: 8 training and 6 validation photos per class
    conftest.imagenette_subset(subset, {"train": 8, "val": 6})
    training = dataclasses.replace(
        demo_config.demo_training(), max_epochs_per_stage=6.0, seeds=1, progress=False
    )
    outcome = demo.run_demo(
        demo_config.DemoConfig(
            out_dir=str(tmp_path / "demo"),
            data_dir=str(subset),
            extract=dataclasses.replace(
                demo_config.demo_extract(), backbone="mobilenet_v2", weights=weights, input_size=96
            ),
            training=training,
            fusions=("concat",),
        )
    )
    topology = tmp_path / "demo" / "compare" / "runs" / "concat" / "seed0"
    assert outcome["logdir"] == str(topology)
    results = json.loads((topology / "results.json").read_text())
    report_text = (tmp_path / "demo" / "report" / "report.md").read_text()
    numbers = json.loads((tmp_path / "demo" / "report" / "report.json").read_text())
    assert results["label_space"] == "imagenet" and "baseline" in results
    assert results["recipe"] == "converged" and "**converged** recipe" in report_text
    assert numbers["results"] == results
    assert _stage_rows(report_text) == [
        (stage["node"], round(100 * stage["best_top1"], 2), round(100 * stage["best_top5"], 2))
        for stage in results["stages"]
    ]
    assert f"top-1 {100 * results['baseline']['top1']:.2f} %" in report_text
    evaluation = json.loads((tmp_path / "demo" / "evaluation" / "evaluation.json").read_text())
    # The evaluation scores the held-out val/ photos (the test split); the trainer chose on
    # validation, carved from the training photos.
    assert evaluation["split"] == "test" and "selection_warning" not in evaluation
    assert evaluation["num_images"] == 60 and len(evaluation["branches"]) == 11
    # One story: the report's topology and baseline are the comparison's concat and baseline runs,
    # scored on the same test images.
    comparison = outcome["comparison"]
    assert evaluation["topology"]["top1"] == pytest.approx(comparison["arms"]["concat"]["top1"][0])
    assert evaluation["baseline"]["top1"] == pytest.approx(
        comparison["arms"]["baseline"]["top1"][0]
    )
    for name in (
        "best_top1_per_stage.png",
        "accuracy_per_quality.png",
        "nodes.png",
        "quality_histogram.png",
    ):
        assert (tmp_path / "demo" / "report" / name).stat().st_size > 5000, name
    assert numbers["quality_histogram"]["standard"] == {
        "75": 140
    }  # imagenette-mini is saved at quality 75


@pytest.mark.slow
def test_synthetic_demo_learns_and_states_the_comparisons_verdict(tmp_path, capsys):
    training = dataclasses.replace(demo_config.demo_training(), seeds=1, progress=False)
    config = demo_config.DemoConfig(
        out_dir=str(tmp_path / "demo"),
        images_per_class=24,
        training=training,
        fusions=("shared",),
    )
    outcome = demo.run_demo(config)
    printed = capsys.readouterr().out
    assert "SYNTHETIC" in printed and "tensorboard --logdir" in printed
    assert (tmp_path / "demo" / "report" / "report.md").exists()
    assert outcome["logdir"].endswith("shared/seed0")
    comparison = json.loads((tmp_path / "demo" / "compare" / "comparison.json").read_text())
    assert comparison == json.loads(json.dumps(outcome["comparison"]))
    assert comparison["split"] == "test" and comparison["num_images"] >= 15
    # Random-weight features of the textured, coloured classes are learnable: well above chance
    # (1/3).
    assert (
        comparison["arms"]["baseline"]["top1_mean"] > 0.5
        and comparison["arms"]["shared"]["top1_mean"] > 0.5
    )
    last_line = printed.strip().splitlines()[-1]
    assert (
        last_line.startswith("On SYNTHETIC images")
        and comparison_render.verdict(comparison).removeprefix("compare: ") in last_line
    )


def test_the_accuracy_per_quality_plot_draws_its_points_in_order_of_quality():
    from pipeline.analysis import report

    names = sorted(["original"] + [f"q{quality}" for quality in range(10, 101, 10)])
    assert names[:3] == ["original", "q10", "q100"]  # as evaluation.json lists them
    assert report.curves(names) == {"jpeg": list(range(10, 101, 10))}
