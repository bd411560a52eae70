"""The offline benchmark's figures of the job itself: the zero fraction of every post-ReLU node on
these photos (which picks the mostly-zero node), (a) make_tfrecords end to end against bare
`model.predict` of the same extractor, and (b) the stored bytes per image of each node, from the
job's own manifest, against raw float32."""

import time

import numpy as np

from bottlenecks import cut
from bottlenecks import registry
from pipeline.config import offline as offline_config
from pipeline.offline import job
from tfrecords import manifest as manifest_lib
from tools.benchmarks import offline_setup

# (b, first) which nodes are mostly zeros on these photos


def survey_zero_fractions(
    model, backbone, pixels: np.ndarray, num_branches: int
) -> dict[str, float]:
    """Zero fraction of every catalogued post-ReLU node (and pool), one image's branches per call.

    Batch norm and residual-add nodes are linear and never sparse, so only ReLU outputs are
    surveyed; one image per call keeps the early 112x112 nodes from filling memory.
    """
    nodes = [node for node in backbone.nodes if node.endswith("relu") or node == registry.POOL]
    survey_model = cut.extractor(model, backbone, nodes)
    zeros = dict.fromkeys(nodes, 0)
    totals = dict.fromkeys(nodes, 0)
    for start in range(0, len(pixels), num_branches):
        outputs = survey_model(pixels[start : start + num_branches], training=False)
        for node in nodes:
            values = outputs[node].numpy()
            zeros[node] += values.size - np.count_nonzero(values)
            totals[node] += values.size
    return {node: zeros[node] / totals[node] for node in nodes}


# ------------------------------------------------------------------------------------------
# (a) the job versus bare predict


def predict_seconds(extractor, pixels: np.ndarray, batch_size: int, num_branches: int) -> float:
    started = time.perf_counter()
    extractor.predict(pixels, batch_size=batch_size * num_branches, verbose=0)
    return time.perf_counter() - started


def run_job(
    labels_csv: str, out_dir: str, weights: str, nodes, batch_size: int
) -> tuple[dict, float]:
    """make_tfrecords as users run it, timed around the whole call (model building included)."""
    config = offline_config.ExtractConfig(
        out_dir=out_dir,
        labels_csv=labels_csv,
        backbone=offline_setup.BACKBONE,
        weights=weights,
        nodes=tuple(nodes),
        input_size=offline_setup.INPUT_SIZE,
        batch_size=batch_size,
        progress=False,
    )
    started = time.perf_counter()
    summary = job.make_tfrecords(config).summary
    return summary, time.perf_counter() - started


def job_versus_predict(
    model,
    backbone,
    nodes,
    pixels: np.ndarray,
    labels_csv: str,
    records_dir: str,
    weights: str,
    batch_size: int,
    num_branches: int,
    rounds: int,
) -> dict:
    """Alternates bare predict and the job (P J P J ... P); see speed_ratios for how they are
    compared."""
    num_images = len(pixels) // num_branches
    extractor = cut.extractor(model, backbone, nodes)
    extractor.predict(
        pixels[: batch_size * num_branches], batch_size=batch_size * num_branches, verbose=0
    )  # traces once, as the job does before its first batch
    predict_runs = [predict_seconds(extractor, pixels, batch_size, num_branches)]
    job_runs = []
    for _ in range(rounds):
        print(f"(a) bare predict: {num_images / predict_runs[-1]:.2f} images/s", flush=True)
        summary, seconds = run_job(
            labels_csv, offline_setup.fresh_directory(records_dir), weights, nodes, batch_size
        )
        job_runs.append(
            {"seconds": seconds, "extracting_seconds": summary.get("extracting_seconds") or 0.0}
        )
        print(f"(a) make_tfrecords: {num_images / seconds:.2f} images/s", flush=True)
        predict_runs.append(predict_seconds(extractor, pixels, batch_size, num_branches))
    print(f"(a) bare predict: {num_images / predict_runs[-1]:.2f} images/s", flush=True)
    return {
        "images": num_images,
        "rounds": rounds,
        "job_runs": job_runs,
        "predict_seconds": predict_runs,
        **speed_ratios(num_images, predict_runs, job_runs),
        "target": offline_setup.SPEED_TARGET,
    }


def speed_ratios(num_images: int, predict_seconds: list, job_runs: list) -> dict:
    """Each job run against the faster of the two predict passes around it; the median over rounds.

    A slow spell on a shared machine can halve one pass; comparing with the faster neighbour keeps
    such a spell from flattering the job (it can only make the job look worse).
    """
    predict_rates = [num_images / seconds for seconds in predict_seconds]
    references = [
        max(predict_rates[index], predict_rates[index + 1]) for index in range(len(job_runs))
    ]
    job_rates = [num_images / run["seconds"] for run in job_runs]
    # The job's own clock of its extraction loop, without model building and tracing.
    extracting_rates = [
        num_images / run["extracting_seconds"] if run["extracting_seconds"] else None
        for run in job_runs
    ]
    ratios = [rate / reference for rate, reference in zip(job_rates, references)]
    result = {
        "job_images_per_second": float(np.median(job_rates)),
        "predict_images_per_second": float(np.median(references)),
        "ratio": float(np.median(ratios)),
        "ratios_per_round": ratios,
    }
    if all(extracting_rates):
        result["job_extracting_images_per_second"] = float(np.median(extracting_rates))
        result["extracting_ratio"] = float(
            np.median([rate / reference for rate, reference in zip(extracting_rates, references)])
        )
    return result


def storage_figures(records_dir: str) -> dict:
    """(b) per node, from the job's own manifest: stored bytes per image against raw float32."""
    figures = {}
    for node, entry in manifest_lib.Manifest.read(records_dir).to_json()["nodes"].items():
        ratio = entry["bytes_per_image"] / entry["float32_bytes_per_image"]
        target = (
            offline_setup.SPARSE_STORAGE_TARGET
            if entry["zero_fraction"] >= offline_setup.SPARSE_ZERO_FRACTION
            else offline_setup.DENSE_STORAGE_TARGET
        )
        figures[node] = {
            key: entry[key]
            for key in ("encoding", "zero_fraction", "bytes_per_image", "float32_bytes_per_image")
        }
        figures[node].update(ratio=ratio, target=target, passed=ratio <= target)
    return figures
