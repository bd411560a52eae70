"""ImageNet on paper's projection and tables: from per-image costs measured elsewhere, the storage
of each node and the offline wall time for ImageNet on N workers with K GPUs and C cores each (pure
arithmetic, under the assumptions imagenet_on_paper states), rendered as Markdown tables."""

import dataclasses
import math

IMAGENET_IMAGES = {"train": 1_281_167, "validation": 50_000}
TERABYTE = 1e12

# What the thesis reports of Inception V3's zeros: 53-90 % over mixed_1...mixed_9 and about 90 % at
# mixed7 (its per-node table is not at hand), as (low, high) per node.
THESIS_ZEROS = {
    "inception_v3": {"mixed7": (0.90, 0.90), "mixed8": (0.53, 0.90), "mixed9": (0.53, 0.90)}
}
SPARSE_BYTES_PER_VALUE = 5  # float32 value + one-byte gap (fillers for gaps over 255 not counted)


@dataclasses.dataclass(frozen=True)
class Worker:
    """One Beam worker shape: GPUs (0: the CNN runs on the cores) and CPU cores."""

    workers: int
    gpus: int
    cores: int

    @classmethod
    def parse(cls, text: str) -> "Worker":
        try:
            workers, gpus, cores = (int(part) for part in text.lower().split("x"))
        except ValueError:
            raise ValueError(
                f"--configs entry {text!r}: write workers x GPUs x cores, e.g. 16x1x8"
            ) from None
        if workers < 1 or gpus < 0 or cores < 1:
            raise ValueError(
                f"--configs entry {text!r}: needs at least 1 worker and 1 core, GPUs >= 0"
            )
        return cls(workers, gpus, cores)

    def label(self) -> str:
        return (
            f"{self.workers} x ({self.gpus} GPU, {self.cores} cores)"
            if self.gpus
            else f"{self.workers} x ({self.cores} cores, no GPU)"
        )


# ------------------------------------------------------------------------------------------
# The projection (pure functions)


def imagenet_images() -> int:
    return sum(IMAGENET_IMAGES.values())


def storage_terabytes(bytes_per_image: float, images: int) -> float:
    return bytes_per_image * images / TERABYTE


def sparse_bytes_per_image(elements_per_image: int, zero_fraction: float) -> float:
    """The codec's payload at a given zero fraction: 5 bytes per non-zero (fillers not counted)."""
    return SPARSE_BYTES_PER_VALUE * (1 - zero_fraction) * elements_per_image


def wall_seconds(
    images: int,
    cpu_s: float,
    branches: int,
    worker: Worker,
    gpu_rate: float | None = None,
    cnn_cpu_s_per_branch: float | None = None,
) -> float:
    """images x max(cpu_s / (N*C), branches / (N*K*R)); with K = 0, the CNN shares the cores."""
    cores = worker.workers * worker.cores
    if worker.gpus == 0:
        return images * (cpu_s + branches * cnn_cpu_s_per_branch) / cores
    return images * max(cpu_s / cores, branches / (worker.workers * worker.gpus * gpu_rate))


def break_even_rate(cpu_s: float, branches: int, worker: Worker) -> float:
    """The GPU rate (branch passes/s) above which the cores, not the GPUs, set the wall time."""
    return branches * worker.cores / (worker.gpus * cpu_s)


# ------------------------------------------------------------------------------------------
# Tables


def duration(seconds: float) -> str:
    hours = seconds / 3600
    if hours >= 10:
        return f"{hours:.0f} h"
    if hours >= 1:
        return f"{hours:.1f} h"
    return f"{seconds / 60:.0f} min" if seconds >= 60 else "< 1 min"


def markdown(headers, rows) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def costs_table(results, num_images: int, timing_images: int, branches: int) -> str:
    rows = [
        (
            result["backbone"],
            f"{result['weights']}, {result['input_size']} px",
            f"{result['ladder_cpu_s'] * 1000:.0f}",
            f"{result['serialize_cpu_s'] * 1000:.0f}",
            f"{(result['ladder_cpu_s'] + result['serialize_cpu_s']) * 1000:.0f}",
            f"{result['cnn_cpu_s_per_branch'] * 1000:.0f}",
            f"{branches * result['cnn_cpu_s_per_branch']:.2f}",
        )
        for result in results
    ]
    return markdown(
        (
            "backbone",
            "weights, input",
            f"ladder ms/img ({num_images} photos)",
            f"serialize ms/img ({timing_images})",
            "cores' work ms/img",
            f"CNN ms/branch ({timing_images})",
            f"CNN s/img ({branches} branches)",
        ),
        rows,
    )


def storage_table(results, branches: int) -> str:
    images = imagenet_images()
    rows = []
    for result in results:
        for node, figures in result["nodes"].items():
            per_image = figures["bytes_per_image"]
            branch_zeros = figures["branch_zero_fractions"]
            shape = "x".join(map(str, figures["shape"][1:]))
            rows.append(
                (
                    f"{result['backbone']} ({result['weights']})",
                    node,
                    shape,
                    figures["encoding"],
                    f"{100 * figures['zero_fraction']:.1f} ({100 * branch_zeros[0]:.0f} / "
                    f"{100 * branch_zeros[1]:.0f})",
                    f"{per_image / branches / 1024:.1f}",
                    f"{per_image / 1024:.0f}",
                    f"{per_image / figures['float32_bytes_per_image']:.2f}",
                    f"{storage_terabytes(per_image, IMAGENET_IMAGES['train']):.3f}",
                    f"{storage_terabytes(per_image, images):.3f}",
                    thesis_storage(
                        THESIS_ZEROS.get(result["backbone"], {}).get(node), figures["shape"]
                    ),
                )
            )
    return markdown(
        (
            "backbone (weights)",
            "node",
            "shape",
            "stored",
            "zeros % (original / q10)",
            "KiB/img/branch",
            f"KiB/img ({branches} br.)",
            "x float32",
            "TB train",
            "TB train+val",
            "thesis's zeros -> TB train",
        ),
        rows,
    )


def thesis_storage(zeros, shape) -> str:
    """The codec's payload for the training set at the thesis's zero fraction (or range), or '-'."""
    if zeros is None:
        return "-"
    low, high = zeros
    most, least = (
        storage_terabytes(
            sparse_bytes_per_image(math.prod(shape), fraction), IMAGENET_IMAGES["train"]
        )
        for fraction in (low, high)
    )
    if low == high:
        return f"{100 * low:.0f} % -> {least:.2f}"
    return f"{100 * low:.0f}-{100 * high:.0f} % -> {least:.2f}-{most:.2f}"


def wall_table(results, configs, gpu_rates, branches: int) -> str:
    images = imagenet_images()
    rows = []
    for result in results:
        cpu_s = result["ladder_cpu_s"] + result["serialize_cpu_s"]
        stored_bytes = images * sum(
            figures["bytes_per_image"] for figures in result["nodes"].values()
        )
        for worker in configs:
            cores_alone = duration(images * cpu_s / (worker.workers * worker.cores))
            if worker.gpus == 0:
                wall = wall_seconds(
                    images,
                    cpu_s,
                    branches,
                    worker,
                    cnn_cpu_s_per_branch=result["cnn_cpu_s_per_branch"],
                )
                walls = [wall] * len(gpu_rates)
                cells = [f"{duration(wall)} (cores)"] * len(gpu_rates)
                rate = "-"
            else:
                walls, cells = [], []
                for gpu_rate in gpu_rates:
                    walls.append(wall_seconds(images, cpu_s, branches, worker, gpu_rate))
                    bound = (
                        "cores"
                        if cpu_s / worker.cores >= branches / (worker.gpus * gpu_rate)
                        else "GPUs"
                    )
                    cells.append(f"{duration(walls[-1])} ({bound})")
                rate = f"{break_even_rate(cpu_s, branches, worker):,.0f}"
            rows.append(
                (
                    result["backbone"],
                    worker.label(),
                    cores_alone,
                    *cells,
                    rate,
                    f"{stored_bytes / walls[-1] / 1e9:.1f}",
                )
            )
    return markdown(
        (
            "backbone",
            "N x (K GPUs, C cores)",
            "cores' work alone",
            *(f"wall, R = {rate:,.0f}/s per GPU" for rate in gpu_rates),
            "R at which the cores bind",
            f"GB/s written, R = {gpu_rates[-1]:,.0f}",
        ),
        rows,
    )


def survey_line(results) -> str:
    lines = []
    for result in results:
        survey = result["survey_zero_fractions"]
        if survey:
            values = [100 * fraction for fraction in survey.values()]
            nodes = list(survey)
            lines.append(
                f"{result['backbone']} ({result['weights']} weights): "
                f"{min(values):.0f}-{max(values):.0f} % "
                f"zeros over {nodes[0]}...{nodes[-1]}; the thesis, trained weights: 53-90 %.\n"
                "Per node, %: "
                + ", ".join(f"{node} {100 * value:.0f}" for node, value in survey.items())
            )
    return "\n".join(lines)
