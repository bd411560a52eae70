"""ImageNet on paper: storage per node and offline wall time for ImageNet, from per-image costs
measured here.

On a few real ImageNet photos, per backbone:
  (a) storage: the offline stage itself (the job's make_tfrecords) caches the nodes; its manifest
  gives each
      node's encoding (sparse or dense, as the codec chooses), zero fraction and stored bytes per
      image (all branches in one record); the records, read back, give the zero fraction of each
      branch;
  (b) the CPU work per image that is not the CNN: the ladder (decode, 10 JPEG re-encodings and
  decodes at
      the photo's own size, 11 resizes to the input size, as the runners trace it) and serializing
      the records of the stored nodes (the job's serialize_batch with the job's encodings);
  (c) the CNN's CPU cost per branch (the job's BatchForward, the runners' forward pass), for
  reference and
      for CPU-only workers. No GPU is measured: the GPU's rate is a stated parameter.

Costs are CPU seconds of this process (time.process_time) with TensorFlow held to one thread, so
they are core-seconds that busy shared cores do not inflate. The projection for ImageNet (1,281,167
training + 50,000 validation images), N workers with K GPUs and C cores each, R branch passes/s per
GPU:

    wall = images x max(cpu_s / (N*C), 11 / (N*K*R))       cpu_s = ladder + serialization
    wall = images x (cpu_s + 11 * cnn_cpu_s) / (N*C)        K = 0: the CNN on the same cores

It assumes that the cores and the GPUs overlap perfectly, that the work scales linearly with
workers, cores and GPUs, and that reading photos and writing shards never wait on storage or
network.

Run from the project root (about 5-10 minutes on 2 busy cores):
  PYTHONPATH=. python -m tools.benchmarks.imagenet_on_paper --out /tmp/imagenet_on_paper
"""

import argparse
import os
import sys
import tempfile

from tfrecords import fileio
from tools.benchmarks import imagenet_costs
from tools.benchmarks import imagenet_projection

# tools/benchmarks/<this file> -> the project root
PROJECT_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SHARED = os.path.join(os.path.dirname(PROJECT_ROOT), "shared")
DEFAULT_DATA_DIR = os.path.join(SHARED, "data", "imagenet-val-100")
DEFAULT_WEIGHTS = os.path.join(SHARED, "weights", "mobilenet_v2_1.0_224_imagenet.weights.h5")


def comma_separated(text, kind=str):
    """'a,b,,c' -> (kind(a), kind(b), kind(c)); None for an empty or missing flag."""
    return tuple(kind(part.strip()) for part in text.split(",") if part.strip()) if text else None


def parse_flags(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--data-dir",
        default=DEFAULT_DATA_DIR,
        help="photos with a labels.csv of file,imagenet_class_index,wnid,... "
        "(default: ../shared/data/imagenet-val-100)",
    )
    parser.add_argument(
        "--mobilenet-weights",
        default=DEFAULT_WEIGHTS,
        help="MobileNetV2 ImageNet weights file (default: ../shared/weights/ beside the project); "
        "Inception V3 and ResNet-50 V2 use random weights",
    )
    parser.add_argument(
        "--backbones",
        default="mobilenet_v2,inception_v3,resnet50_v2",
        help="backbones to measure (default: %(default)s)",
    )
    parser.add_argument(
        "--out",
        default=os.path.join(tempfile.gettempdir(), "imagenet_on_paper"),
        help="working directory, recreated (default: %(default)s)",
    )
    parser.add_argument("--json", help="where the figures go (default: OUT/imagenet_on_paper.json)")
    parser.add_argument(
        "--from-json",
        metavar="PATH",
        help="measure nothing: print the tables from an earlier run's figures, projected with "
        "this run's --configs and --gpu-rates",
    )
    parser.add_argument(
        "--num-images",
        type=int,
        default=20,
        help="photos cached per backbone and timed through the ladder (default: %(default)s)",
    )
    parser.add_argument(
        "--timing-images",
        type=int,
        default=8,
        help="photos whose CNN pass and serialization are timed (default: %(default)s)",
    )
    parser.add_argument(
        "--batch-size",
        type=int,
        default=4,
        help="images per CNN call, times 11 branches (default: %(default)s)",
    )
    parser.add_argument(
        "--survey-images",
        type=int,
        default=2,
        help="photos whose branches survey the zeros of Inception's mixed1..mixed9 "
        "(default: %(default)s)",
    )
    parser.add_argument(
        "--configs",
        default="1x1x8,1x1x32,16x1x8,50x1x8,50x0x8",
        help="workers x GPUs x cores per worker, comma-separated; 0 GPUs: the CNN on the cores "
        "(default: %(default)s)",
    )
    parser.add_argument(
        "--gpu-rates",
        default="1000,4000",
        help="assumed branch passes per second of one GPU, comma-separated: not measured here "
        "(default: %(default)s)",
    )
    flags = parser.parse_args(argv)
    flags.backbones = comma_separated(flags.backbones) or ()
    unknown = [name for name in flags.backbones if name not in imagenet_costs.NODES]
    if unknown or not flags.backbones:
        parser.error(f"--backbones: choose among {', '.join(imagenet_costs.NODES)}")
    if flags.from_json:
        if not os.path.isfile(flags.from_json):
            parser.error(f"--from-json {flags.from_json}: no such file")
    elif "mobilenet_v2" in flags.backbones and not os.path.isfile(flags.mobilenet_weights):
        parser.error(
            f"--mobilenet-weights {flags.mobilenet_weights}: no such file (the real MobileNetV2 "
            f"ImageNet weights, ../shared/weights/{os.path.basename(DEFAULT_WEIGHTS)} beside the "
            "project)"
        )
    if not flags.from_json and not os.path.isfile(os.path.join(flags.data_dir, "labels.csv")):
        parser.error(
            f"--data-dir {flags.data_dir}: no labels.csv there (expected "
            "../shared/data/imagenet-val-100)"
        )
    if min(flags.num_images, flags.timing_images, flags.batch_size, flags.survey_images) < 1:
        parser.error(
            "--num-images, --timing-images, --batch-size and --survey-images must be at least 1"
        )
    if max(flags.timing_images, flags.survey_images) > flags.num_images:
        parser.error("--timing-images and --survey-images must not exceed --num-images")
    try:
        flags.configs = [
            imagenet_projection.Worker.parse(text)
            for text in comma_separated(flags.configs) or ()
        ]
        flags.gpu_rates = comma_separated(flags.gpu_rates, float) or ()
    except ValueError as error:
        parser.error(str(error))
    if not flags.configs or not flags.gpu_rates or min(flags.gpu_rates) <= 0:
        parser.error("--configs and --gpu-rates need at least one entry each, rates above 0")
    return flags


# ------------------------------------------------------------------------------------------


def print_report(figures: dict, configs, gpu_rates) -> None:
    results, branches = figures["results"], figures["branches"]
    imagenet = imagenet_projection.IMAGENET_IMAGES
    print(
        f"\n### Measured per-image costs (CPU seconds of one thread; {figures['num_images']} "
        "ImageNet "
        f"validation photos of {results[0]['mean_megapixels']:.2f} MP on average)\n"
    )
    print(
        imagenet_projection.costs_table(
            results, figures["num_images"], figures["timing_images"], branches
        )
    )
    print(
        f"\n### Storage per node for ImageNet ({imagenet['train']:,} train + "
        f"{imagenet['validation']:,} validation images, {branches} branches, TB = 10^12 "
        "bytes)\n"
    )
    print(imagenet_projection.storage_table(results, branches))
    survey = imagenet_projection.survey_line(results)
    if survey:
        print(f"\n{survey}")
    print(
        f"\n### Offline wall time for ImageNet "
        f"({imagenet_projection.imagenet_images():,} images)\n\n"
        f"wall = images x max(cpu_s / (N*C), {branches} / (N*K*R)), cpu_s = ladder + serialize;\n"
        f"K = 0: wall = images x (cpu_s + {branches} x cnn_cpu_s) / (N*C). "
        f"R (branch passes/s per GPU) is assumed, not measured.\n"
    )
    print(imagenet_projection.wall_table(results, configs, gpu_rates, branches))


def main(argv=None) -> int:
    flags = parse_flags(argv)
    if flags.from_json:
        print_report(fileio.read_json(flags.from_json), flags.configs, flags.gpu_rates)
        return 0
    flags.out = os.path.abspath(flags.out)
    json_path = flags.json or os.path.join(flags.out, "imagenet_on_paper.json")
    figures = imagenet_costs.measure(flags)
    fileio.write_json_atomic(json_path, figures)
    print_report(figures, flags.configs, flags.gpu_rates)
    print(
        f"\nmeasuring took {figures['wall_seconds']:.0f} s wall, {figures['cpu_seconds']:.0f} s "
        "CPU; "
        f"figures in {json_path} (--from-json reprints them with other --configs and --gpu-rates)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
