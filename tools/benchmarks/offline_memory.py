"""The offline benchmark's figure (d): the job's peak resident memory for N and 4N images, each run
through make-tfrecords's command line in a fresh interpreter that reports its own peak."""

import json
import os
import subprocess
import sys
import time

from tools.benchmarks import offline_setup

# Runs the job's real command line in a fresh interpreter, then reports that process's own peak RSS.
# VmHWM, not getrusage: Linux carries the parent's peak over into a spawned child's ru_maxrss (the
# memory image replaced at exec counts), so a child of this 4 GB benchmark would report 4 GB.
CHILD_JOB = """
import json, sys
from tools import make_tfrecords
status = make_tfrecords.main(sys.argv[1:])
with open("/proc/self/status") as file:
    peak_kib = next(int(line.split()[1]) for line in file if line.startswith("VmHWM:"))
print(json.dumps({"status": status, "peak_rss_kib": peak_kib}))
"""


# ------------------------------------------------------------------------------------------
# (d) peak memory in a fresh process


def job_peak_rss(labels_csv: str, out_dir: str, weights: str, nodes, batch_size: int) -> dict:
    offline_setup.fresh_directory(out_dir)
    command = [
        sys.executable,
        "-c",
        CHILD_JOB,
        "--labels-csv",
        labels_csv,
        "--out-dir",
        out_dir,
        "--backbone",
        offline_setup.BACKBONE,
        "--weights",
        weights,
        "--nodes",
        ",".join(nodes),
        "--input-size",
        str(offline_setup.INPUT_SIZE),
        "--batch-size",
        str(batch_size),
        "--no-progress",
    ]
    environment = dict(
        os.environ,
        PYTHONPATH=os.pathsep.join(
            [offline_setup.PROJECT_ROOT]
            + [path for path in os.environ.get("PYTHONPATH", "").split(os.pathsep) if path]
        ),
    )
    started = time.perf_counter()
    completed = subprocess.run(
        command, env=environment, capture_output=True, text=True, cwd=offline_setup.PROJECT_ROOT
    )
    seconds = time.perf_counter() - started
    lines = completed.stdout.strip().splitlines()
    if completed.returncode != 0 or not lines or not lines[-1].startswith("{"):
        raise RuntimeError(
            f"the job in a fresh process failed ({completed.returncode}):\n"
            f"{completed.stdout[-2000:]}\n{completed.stderr[-4000:]}"
        )
    result = json.loads(lines[-1])
    if result["status"] != 0:
        raise RuntimeError(
            f"make_tfrecords exited with {result['status']}:\n{completed.stderr[-4000:]}"
        )
    return {"peak_rss_mib": result["peak_rss_kib"] / 1024, "seconds": seconds}


def memory_figures(
    images: list[dict], out: str, weights: str, nodes, batch_size: int, count: int
) -> dict:
    """(d) the job's peak RSS on the first N and the first 4N images."""
    runs = []
    for num_images in (count, 4 * count):
        labels_csv = offline_setup.write_labels_csv(
            images[:num_images], os.path.join(out, f"bench_memory_{num_images}.csv")
        )
        run = job_peak_rss(
            labels_csv, os.path.join(out, f"bench_memory_{num_images}"), weights, nodes, batch_size
        )
        run["images"] = num_images
        print(
            f"(d) {num_images} images: peak RSS {run['peak_rss_mib']:.0f} MiB "
            f"({run['seconds']:.0f} s)",
            flush=True,
        )
        runs.append(run)
    return {
        "runs": runs,
        "ratio": runs[1]["peak_rss_mib"] / runs[0]["peak_rss_mib"],
        "target": offline_setup.MEMORY_GROWTH_TARGET,
    }
