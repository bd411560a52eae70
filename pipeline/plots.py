"""Plots as PNG files: one way to make a figure (matplotlib without a display) and to save it
whole."""

import os

import matplotlib

matplotlib.use("Agg")  # files only: no display needed
from matplotlib import pyplot  # noqa: E402


def figure(*grid, **options):
    """(figure, axes) as pyplot.subplots makes them."""
    return pyplot.subplots(*grid, **options)


def colors() -> list[str]:
    """The default colour cycle, for lines that must not share a colour."""
    return pyplot.rcParams["axes.prop_cycle"].by_key()["color"]


def save(plot_figure, path: str, dpi: int = 100) -> str:
    """Writes the figure as a PNG to path (a temporary name, then renamed: never half a file) and
    frees it."""
    plot_figure.tight_layout()
    directory, name = os.path.split(path)
    temporary = os.path.join(directory, f".{name}.tmp.png")
    try:
        plot_figure.savefig(temporary, dpi=dpi)
        os.replace(temporary, path)
    finally:
        pyplot.close(plot_figure)
        if os.path.exists(temporary):
            os.remove(temporary)
    return path
