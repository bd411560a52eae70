"""The offline benchmark's report: one table row per figure (measured, reference, ratio, target,
PASS or MISS) from the figures the other modules return, printed as an aligned text table."""

from tools.benchmarks import offline_setup


def table_rows(speed: dict, storage: dict, reading: dict, memory: dict) -> list[dict]:
    predict_rate = speed["predict_images_per_second"]
    rows = [
        {
            "figure": "(a) make_tfrecords vs bare predict",
            "measured": f"{speed['job_images_per_second']:.2f} img/s",
            "reference": f"{predict_rate:.2f} img/s",
            "ratio": speed["ratio"],
            "target": f">= {offline_setup.SPEED_TARGET}",
            "pass": speed["ratio"] >= offline_setup.SPEED_TARGET,
        }
    ]
    if speed.get("job_extracting_images_per_second"):
        extracting_ratio = speed["extracting_ratio"]
        rows.append(
            {
                "figure": "(a) same, extraction loop only (no set-up)",
                "measured": f"{speed['job_extracting_images_per_second']:.2f} img/s",
                "reference": f"{predict_rate:.2f} img/s",
                "ratio": extracting_ratio,
                "target": f">= {offline_setup.SPEED_TARGET}",
                "pass": extracting_ratio >= offline_setup.SPEED_TARGET,
            }
        )
    for node, figures in storage.items():
        rows.append(
            {
                "figure": f"(b) {node} ({figures['encoding']}, "
                f"{100 * figures['zero_fraction']:.0f} % zeros)",
                "measured": f"{figures['bytes_per_image'] / 1024:.1f} KiB/img",
                "reference": f"{figures['float32_bytes_per_image'] / 1024:.1f} KiB/img",
                "ratio": figures["ratio"],
                "target": f"<= {figures['target']}",
                "pass": figures["passed"],
            }
        )
    for node, figures in reading.items():
        rows.append(
            {
                "figure": f"(c) make_dataset vs .txt cache, {node}",
                "measured": f"{figures['reader_examples_per_second']:.1f} ex/s",
                "reference": f"{figures['txt_examples_per_second']:.2f} ex/s",
                "ratio": figures["ratio"],
                "target": f">= {offline_setup.READER_TARGET:g}",
                "pass": figures["ratio"] >= offline_setup.READER_TARGET,
            }
        )
    small, large = memory["runs"]
    rows.append(
        {
            "figure": f"(d) peak RSS, {large['images']} vs {small['images']} images",
            "measured": f"{large['peak_rss_mib']:.0f} MiB",
            "reference": f"{small['peak_rss_mib']:.0f} MiB",
            "ratio": memory["ratio"],
            "target": f"<= {offline_setup.MEMORY_GROWTH_TARGET}",
            "pass": memory["ratio"] <= offline_setup.MEMORY_GROWTH_TARGET,
        }
    )
    return rows


def verdict(passed: bool) -> str:
    return "PASS" if passed else "MISS"


def print_table(rows: list[dict]) -> None:
    headers = ("figure", "measured", "reference", "ratio", "target", "")
    cells = [
        (
            row["figure"],
            row["measured"],
            row["reference"],
            f"{row['ratio']:.3f}",
            row["target"],
            verdict(row["pass"]),
        )
        for row in rows
    ]
    widths = [
        max(len(str(line[column])) for line in cells + [headers]) for column in range(len(headers))
    ]
    for line in [headers, tuple("-" * width for width in widths)] + cells:
        print("  ".join(str(cell).ljust(width) for cell, width in zip(line, widths)).rstrip())
