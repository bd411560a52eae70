"""Serving throughput: images/s of exports through serving_default beside their bare backbone run
once per branch, on the same images, in one run.

For each export (--models) and each batch size (--batch-sizes):
  serving     images/s of serving_default on the images' encoded bytes, as a client sends them:
              decoding, the ladder's re-encodings, the views' crops, every backbone pass, the head;
  bare x P    images/s of the export's backbone alone (its preprocessing and the CNN up to pool,
              in the chunked graph function serving runs it in) on the same images already decoded
              and resized, P times per image, P the export's backbone passes per image;
  overhead    bare x P over serving: what serving costs beyond its backbone passes (1.0: nothing);
  bare        the backbone once per image, a plain classifier's pass, for scale;
  vs bare     serving over bare: the export's throughput as a share of one pass per image.
Every side is timed in alternating rounds (the median over --rounds), so that a noisy neighbour on
a shared machine slows each alike. Prints one table per batch size; --json writes every number.

    python -m tools.benchmarks.bench_serving --models BASELINE/export LADDER/export \\
        OBJECT/export --data-dir ../shared/data/imagenette-mini
"""

import argparse
import json
import os
import time

import numpy as np
import tensorflow as tf

from bottlenecks import cut
from bottlenecks import registry
from pipeline import backbones
from pipeline.analysis import serving_cost
from pipeline.offline import decode_graph
from pipeline.offline import ladder
from pipeline.training import export
from pipeline.training import serving


def image_paths(data_dir: str) -> list[str]:
    """Every visible file below data_dir, sorted (the format is read from the content)."""
    return sorted(
        os.path.join(root, name)
        for root, _, names in os.walk(data_dir)
        for name in names
        if not name.startswith(".")
    )


class Bare:
    """An export's backbone alone, on pixels already decoded and resized."""

    def __init__(self, description: dict):
        backbone = registry.get_backbone(description["backbone"], description.get("input_range"))
        model = backbones.from_identity(
            description["backbone"],
            description["weights"],
            description["input_size"],
            description.get("weights_seed", 0),
            description.get("input_range"),
        )
        extractor = cut.extractor(model, backbone, [registry.POOL])
        self.run = serving.backbone_pass(extractor, description["input_size"])

    def seconds_per_image(self, pixels, passes: int, batch_size: int, count: int) -> float:
        """Wall seconds per image of `passes` backbone passes over each of count images, batch_size
        images at a time."""
        rows = [
            [(batch * batch_size + row) % len(pixels) for row in range(batch_size)]
            for batch in range(max(1, -(-count // batch_size)))
        ]
        batches = [tf.constant(np.repeat(pixels[batch], passes, axis=0)) for batch in rows]
        self.run(batches[0])  # prepares the graph for this size
        started = time.perf_counter()
        for batch in batches:
            maps = self.run(batch)
        float(tf.reduce_sum(maps[registry.POOL][0]))  # waits for the last pass
        return (time.perf_counter() - started) / (len(rows) * batch_size)


def decoded_pixels(images, input_size: int, central_crop: float) -> np.ndarray:
    """The images' CNN inputs [N, S, S, 3], decoded as serving decodes them."""
    pixels = []
    for data in images:
        format_code, _ = decode_graph.inspect(tf.constant(data))
        prepared = decode_graph.prepared(tf.constant(data), format_code)
        photo = decode_graph.decode(prepared, format_code)
        pixels.append(ladder.resize_for_backbone(photo[None], input_size, central_crop)[0])
    return np.stack(pixels)


def measure(models, paths, batch_sizes, count: int, rounds: int) -> dict:
    exports = {path: export.ExportedClassifier(path) for path in models}
    sent = {
        path: serving_cost.served_images(model, paths, count) for path, model in exports.items()
    }
    bare_models, rows = {}, []
    for path, model in exports.items():
        description = model.description
        identity = json.dumps([description["backbone"], description["weights"]], sort_keys=True)
        if identity not in bare_models:
            bare_models[identity] = Bare(description)
        images, _ = sent[path]
        pixels = decoded_pixels(images, description["input_size"], description["central_crop"])
        rows.append((path, model, bare_models[identity], pixels))
    results = {}
    for batch_size in batch_sizes:
        rounds_of = {path: {"serving": [], "bare_passes": [], "bare": []} for path in models}
        for _ in range(rounds):
            for path, model, bare, pixels in rows:
                passes = model.serving["backbone_passes"]
                images, coded = sent[path]
                times = rounds_of[path]
                times["serving"].append(
                    serving_cost.seconds_per_image(model, images, coded, batch_size, count)
                )
                times["bare_passes"].append(
                    bare.seconds_per_image(pixels, passes, batch_size, count)
                )
                times["bare"].append(bare.seconds_per_image(pixels, 1, batch_size, count))
        results[str(batch_size)] = {path: _row(exports[path], rounds_of[path]) for path in models}
    return {
        "device": serving_cost.device(),
        "images": count,
        "rounds": rounds,
        "batch_sizes": list(batch_sizes),
        "tables": results,
    }


def _row(model: export.ExportedClassifier, times: dict) -> dict:
    rate = {side: 1.0 / float(np.median(seconds)) for side, seconds in times.items()}
    return {
        "branches": model.description["branches"],
        "backbone_passes": model.serving["backbone_passes"],
        "serving_images_per_second": rate["serving"],
        "bare_times_passes_images_per_second": rate["bare_passes"],
        "overhead": rate["bare_passes"] / rate["serving"],
        "bare_images_per_second": rate["bare"],
        "serving_share_of_bare": rate["serving"] / rate["bare"],
        "rounds_seconds_per_image": times,
    }


def table(result: dict) -> str:
    lines = [f"{result['images']} images, median of {result['rounds']} rounds, {result['device']}"]
    for batch_size, rows in result["tables"].items():
        lines += [
            "",
            f"batch {batch_size}",
            "",
            "| export | branches | passes | serving img/s | bare x P img/s | overhead | "
            "bare img/s | vs bare |",
            "|---|---|---:|---:|---:|---:|---:|---:|",
        ]
        for path, row in rows.items():
            lines.append(
                f"| {path} | {_names(row['branches'])} | {row['backbone_passes']} | "
                f"{row['serving_images_per_second']:.1f} | "
                f"{row['bare_times_passes_images_per_second']:.1f} | {row['overhead']:.2f} | "
                f"{row['bare_images_per_second']:.1f} | {row['serving_share_of_bare']:.3f} |"
            )
    return "\n".join(lines)


def _names(branches) -> str:
    """Branch names, a long ladder shortened to its ends."""
    if len(branches) > 4:
        return f"{branches[0]},{branches[1]},...,{branches[-1]} ({len(branches)})"
    return ",".join(branches)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--models", nargs="+", required=True, help="LOGDIR/export directories")
    parser.add_argument("--data-dir", required=True, help="images, in any folder layout")
    parser.add_argument("--images", type=int, default=64, help="images timed per batch size")
    parser.add_argument("--batch-sizes", default="1,32")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", help="write every number here")
    args = parser.parse_args(argv)
    batch_sizes = [int(size) for size in args.batch_sizes.split(",")]
    result = measure(args.models, image_paths(args.data_dir), batch_sizes, args.images, args.rounds)
    print(table(result))
    if args.json:
        with open(args.json, "w") as file:
            json.dump(result, file, indent=2)


if __name__ == "__main__":
    main()
