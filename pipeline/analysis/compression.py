"""Feature compression: an autoencoder on cached pooled features, its sigmoid code layer pruned by
distinctiveness.

    features [N, D] (min-max scaled on train) -> Dense(code, sigmoid) -> Dense(D)
        -> reconstruction (MSE)

Pruning removes one code unit at a time: of the pair at the smallest angle, one chosen at random,
its outgoing weights merged into the other's (distinctiveness.merge). Under the threshold rule each
removal is followed by a short fine-tuning and kept only while the validation reconstruction MSE
stays under the threshold; under the every-N-epochs rule one unit goes every N epochs down to the
minimum size. A classifier is then trained on the codes at several code sizes, and its top-1/5/10
reported against the code size.
"""

import os

import keras
import numpy as np

from pipeline import branches as branches_lib
from pipeline import seeding
from pipeline.analysis import distinctiveness
from pipeline.analysis import pruning
from pipeline.config import analysis as analysis_config
from pipeline.training import heads
from pipeline.training import metrics
from tfrecords import example
from tfrecords import fileio
from tfrecords import manifest as manifest_lib
from tfrecords import shards
from tfrecords import writer

RESULTS_NAME = "compression.json"
CODE_NAME = "code"


def build_autoencoder(input_size: int, code_size: int, seed: int = 0) -> keras.Sequential:
    model = keras.Sequential(
        [
            keras.layers.Dense(
                code_size,
                activation="sigmoid",
                name=CODE_NAME,
                kernel_initializer=keras.initializers.GlorotUniform(seed=seed),
            ),
            keras.layers.Dense(
                input_size,
                name="reconstruction",
                kernel_initializer=keras.initializers.GlorotUniform(seed=seed + 1),
            ),
        ],
        name="autoencoder",
    )
    model.build((None, input_size))
    return model


def get_weights(model: keras.Sequential) -> heads.MlpWeights:
    """Encoder and decoder as the two layers of an MLP (the decoder plays the output layer)."""
    return heads.MlpWeights(*(np.asarray(weight, np.float32) for weight in model.get_weights()))


def from_weights(weights: heads.MlpWeights) -> keras.Sequential:
    model = build_autoencoder(weights.num_classes, weights.hidden_units)
    model.set_weights(
        [weights.hidden_kernel, weights.hidden_bias, weights.output_kernel, weights.output_bias]
    )
    return model


def encode(model: keras.Sequential, features: np.ndarray) -> np.ndarray:
    return np.asarray(model.get_layer(CODE_NAME)(np.asarray(features, np.float32)))


def reconstruction_loss(model: keras.Sequential, features: np.ndarray) -> float:
    return float(np.mean((np.asarray(model(features)) - features) ** 2))


def train(
    model: keras.Sequential,
    features: np.ndarray,
    epochs: int,
    config: analysis_config.CompressConfig,
) -> None:
    model.compile(optimizer=keras.optimizers.Adam(config.learning_rate), loss="mse")
    model.fit(
        features, features, batch_size=config.batch_size, epochs=epochs, shuffle=True, verbose=0
    )


def remove_one(
    model: keras.Sequential, features: np.ndarray, rng: np.random.Generator
) -> keras.Sequential:
    """The autoencoder without one unit of the minimum-angle pair (chosen at random), merged into
    the other."""
    codes = encode(model, features)
    angles = distinctiveness.angles(codes)
    constant = distinctiveness.constant_neurons(codes)
    if constant:
        removal = distinctiveness.Removal((constant[0],), None, "constant")
    else:
        [pair] = distinctiveness.select(angles, "most-similar")
        first, second = pair.survivor, pair.removed[0]
        if rng.random() < 0.5:
            first, second = second, first
        removal = distinctiveness.Removal((second,), first, "similar")
    weights, _ = distinctiveness.merge(get_weights(model), codes, [removal], "scaled")
    return from_weights(weights)


def prune_codes(
    model: keras.Sequential,
    train_features: np.ndarray,
    validation_features: np.ndarray,
    config: analysis_config.CompressConfig,
) -> tuple[keras.Sequential, list[dict], dict]:
    """Removes code units per the config; returns the final model, the size/loss history and
    snapshots by size."""
    rng = np.random.default_rng(config.seed)
    history = [
        {
            "code_size": config.code_size,
            "validation_loss": reconstruction_loss(model, validation_features),
        }
    ]
    snapshots = {config.code_size: get_weights(model)}
    if config.prune_every_epochs is None and history[0]["validation_loss"] > config.loss_threshold:
        return model, history, snapshots  # already over the threshold: nothing may be removed
    while get_weights(model).hidden_units > config.min_code_size:
        candidate = remove_one(model, train_features, rng)
        train(
            candidate, train_features, config.prune_every_epochs or config.fine_tune_epochs, config
        )
        loss = reconstruction_loss(candidate, validation_features)
        if config.prune_every_epochs is None and loss > config.loss_threshold:
            break
        model = candidate
        size = get_weights(model).hidden_units
        history.append({"code_size": size, "validation_loss": loss})
        if size in config.report_sizes:
            snapshots[size] = get_weights(model)
        if config.progress:
            print(
                f"jpeg-ladder-compress: code size {size}, validation reconstruction MSE {loss:.6f}",
                flush=True,
            )
    snapshots[get_weights(model).hidden_units] = get_weights(model)
    return model, history, snapshots


def _classify(
    codes: dict,
    labels: dict,
    num_classes: int,
    test_split: str,
    config: analysis_config.CompressConfig,
) -> dict:
    fit = config.classifier_fit
    classifier = heads.build_head(
        fit.head, num_classes, hidden_units=fit.hidden_units, seed=fit.seed
    )
    heads.fit(
        classifier,
        (codes["train"], labels["train"]),
        (codes["validation"], labels["validation"]),
        recipe=fit.recipe,
        momentum=fit.momentum,
        batch_size=fit.batch_size,
        max_epochs=fit.max_epochs,
        patience=fit.patience,
        seed=fit.seed,
    )
    result = {}
    for name, split in (("validation", "validation"), ("test", test_split)):
        logits = np.asarray(classifier(codes[split]))
        scores = metrics.top_k_accuracy(logits, labels[split], metrics.TOP_KS)
        result.update({f"{name}_{key}": value for key, value in scores.items()})
    return result


def compress(config: analysis_config.CompressConfig) -> dict:
    """Trains, prunes and evaluates; writes compression.json, compression.md, compression.png (and
    records)."""
    manifest = manifest_lib.Manifest.read(config.records_dir)
    features = pruning.load_features(manifest, config.node, config.branches, "concat")
    raw = {split: features.splits[split][0] for split in features.splits}
    labels = {split: features.splits[split][1] for split in features.splits}
    low, span = raw["train"].min(axis=0), np.ptp(raw["train"], axis=0)
    # A feature (nearly) constant on train is only shifted: dividing by its tiny range would blow up
    # the others.
    span = np.where(span > 1e-6 * max(float(span.max()), 1e-12), span, 1.0)
    scaled = {split: (values - low) / span for split, values in raw.items()}
    with seeding.seeded(config.seed):
        model = build_autoencoder(scaled["train"].shape[1], config.code_size, config.seed)
        train(model, scaled["train"], config.epochs, config)
        model, history, snapshots = prune_codes(
            model, scaled["train"], scaled["validation"], config
        )
    num_classes = len(manifest.class_names)
    rows = [
        {
            "code_size": scaled["train"].shape[1],
            "uncompressed": True,
            "reconstruction_loss": 0.0,
            **_classify(scaled, labels, num_classes, features.test_split, config),
        }
    ]
    for size in sorted(snapshots, reverse=True):
        autoencoder = from_weights(snapshots[size])
        codes = {split: encode(autoencoder, values) for split, values in scaled.items()}
        rows.append(
            {
                "code_size": size,
                "uncompressed": False,
                "reconstruction_loss": reconstruction_loss(autoencoder, scaled["validation"]),
                **_classify(codes, labels, num_classes, features.test_split, config),
            }
        )
    result = {
        "input_size": int(scaled["train"].shape[1]),
        "node": config.node,
        "branches": list(branches_lib.resolve(config.branches, manifest.branch_names)),
        "loss_threshold": config.loss_threshold,
        "prune_every_epochs": config.prune_every_epochs,
        "recipe": config.fit.recipe,
        "test_split": features.test_split,
        "pruning": history,
        "results": rows,
    }
    os.makedirs(config.out_dir, exist_ok=True)
    if config.write_records:
        result["records"] = write_code_records(
            os.path.join(config.out_dir, "records"),
            manifest,
            {split: encode(model, values) for split, values in scaled.items()},
            labels,
            features.image_ids,
        )
    fileio.write_json_atomic(os.path.join(config.out_dir, RESULTS_NAME), result)
    fileio.write_text_atomic(os.path.join(config.out_dir, "compression.md"), markdown(result))
    plot(result, os.path.join(config.out_dir, "compression.png"))
    final = rows[-1]
    print(
        f"jpeg-ladder-compress: {result['input_size']} features -> code size {final['code_size']} "
        f"(validation MSE {final['reconstruction_loss']:.6f}); test top-1 (classifier trained by "
        f"the {config.fit.recipe} recipe) "
        f"{100 * final['test_top1']:.2f} % "
        f"against {100 * rows[0]['test_top1']:.2f} % uncompressed"
        + (
            ""
            if features.test_split == "test"
            else " (no test split: test figures are validation's)"
        )
    )
    return result


def write_code_records(
    records_dir: str, source: manifest_lib.Manifest, codes: dict, labels: dict, image_ids: dict
) -> str:
    """The codes as a records directory of one node, `pool` [1, code_size], one shard per split."""
    code_size = next(iter(codes.values())).shape[1]
    os.makedirs(os.path.join(records_dir, "pool"), exist_ok=True)
    splits = {}
    for split, values in codes.items():
        name = os.path.join("pool", shards.shard_filename(split, 0, 1))
        with writer.ShardWriter(os.path.join(records_dir, name)) as shard:
            for image_id, label, code in zip(image_ids[split], labels[split], values):
                shard.write(
                    example.serialize(
                        image_id.decode("utf-8"),
                        int(label),
                        code.reshape(1, code_size).astype(np.float32),
                        "dense",
                    )
                )
        info = shard.close()
        splits[split] = manifest_lib.SplitInfo(
            len(values),
            (
                manifest_lib.ShardInfo(
                    0,
                    len(values),
                    {"pool": manifest_lib.FileInfo(name, info.sha256, info.num_bytes)},
                ),
            ),
        )
    manifest_lib.Manifest(
        nodes={"pool": manifest_lib.NodeInfo(shape=(1, code_size), encoding="dense")},
        splits=splits,
        backbone=source.backbone,
        weights=source.weights,
        input_size=source.input_size,
        input_range=source.input_range,
        central_crop=source.central_crop,
        qualities=(),
        branches=("code",),
        class_names=source.class_names,
        config={"compressed_from": source.config},
    ).write(records_dir)
    return records_dir


def markdown(result: dict) -> str:
    test_name = (
        "test" if result["test_split"] == "test" else "validation (the records have no test split)"
    )
    rule = (
        f"one unit removed every {result['prune_every_epochs']} epochs"
        if result["prune_every_epochs"]
        else "units removed while the validation reconstruction MSE stays under "
        f"{result['loss_threshold']:g}"
    )
    lines = [
        f"# Feature compression: {result['input_size']} features of node {result['node']}, "
        f"branches {', '.join(map(str, result['branches']))}",
        "",
        f"Sigmoid autoencoder, {rule}; a classifier trained on the codes by the "
        f'{result.get("recipe", "thesis")} recipe. "Test" is {test_name}.',
        "",
        "| code size | reconstruction MSE | validation top-1 | top-5 | top-10 | test top-1 | "
        "top-5 | top-10 |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in result["results"]:
        size = (
            f"{row['code_size']} (uncompressed)" if row["uncompressed"] else str(row["code_size"])
        )
        lines.append(
            f"| {size} | {row['reconstruction_loss']:.6f} | "
            + metrics.percent_cells(row)
            + " |"
        )
    return "\n".join(lines) + "\n"


def plot(result: dict, path: str) -> None:
    from pipeline import plots  # matplotlib only when a plot is drawn

    rows = [row for row in result["results"] if not row["uncompressed"]]
    figure, axes = plots.figure(1, 2, figsize=(10, 4))
    for k in metrics.TOP_KS:
        axes[0].plot(
            [row["code_size"] for row in rows],
            [100 * row[f"test_top{k}"] for row in rows],
            marker="o",
            label=f"top-{k}",
        )
    axes[0].axhline(
        100 * result["results"][0]["test_top1"],
        color="grey",
        linestyle="--",
        label="top-1 uncompressed",
    )
    axes[0].set_xlabel("code size")
    axes[0].set_ylabel(f"{result['test_split']} accuracy (%)")
    axes[0].legend()
    axes[1].plot(
        [row["code_size"] for row in result["pruning"]],
        [row["validation_loss"] for row in result["pruning"]],
    )
    axes[1].axhline(result["loss_threshold"], color="grey", linestyle="--", label="threshold")
    axes[1].set_xlabel("code size")
    axes[1].set_ylabel("validation reconstruction MSE")
    axes[1].legend()
    plots.save(figure, path)
