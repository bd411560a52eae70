"""A small synthetic image dataset that can be made offline, for the demo and for trying the tools.

Each class differs in colour and texture as well as shape, so that even a backbone with random
weights (whose pooled features keep colour and local statistics but hardly shape) gives features a
linear head can learn from. Colours and textures are drawn with jitter and overlap a little between
classes, and every image has clutter and noise, so the task is learnable but not trivial.
"""

import colorsys
import os

import numpy as np
import PIL.Image
import PIL.ImageDraw

# class name -> (shape, texture, hue of the shape's colour in [0, 1))
CLASSES = {
    "circle": ("circle", "stripes", 0.0),
    "square": ("square", "checks", 0.33),
    "triangle": ("triangle", "dots", 0.62),
}


def _colour(hue: float, rng: np.random.Generator) -> tuple[int, int, int]:
    """A saturated colour near `hue`; the jitter lets neighbouring classes overlap a little."""
    red, green, blue = colorsys.hsv_to_rgb(
        (hue + rng.normal(0, 0.07)) % 1.0, rng.uniform(0.55, 1.0), rng.uniform(0.5, 1.0)
    )
    return int(255 * red), int(255 * green), int(255 * blue)


def _texture(texture: str, colour, rng: np.random.Generator, size: int) -> PIL.Image.Image:
    """A size x size tile of the texture in `colour` on a darker version of it."""
    dark = tuple(int(value * rng.uniform(0.2, 0.5)) for value in colour)
    tile = PIL.Image.new("RGB", (size, size), dark)
    draw = PIL.ImageDraw.Draw(tile)
    period = int(rng.integers(max(3, size // 16), max(5, size // 6)))
    if texture == "stripes":
        for start in range(0, size, period):
            draw.rectangle((0, start, size, start + period // 2), fill=colour)
    elif texture == "checks":
        for row in range(0, size, period):
            for column in range(0, size, period):
                if (row // period + column // period) % 2 == 0:
                    draw.rectangle(
                        (column, row, column + period - 1, row + period - 1), fill=colour
                    )
    else:  # dots
        radius = max(1, period // 3)
        for row in range(period // 2, size, period):
            for column in range(period // 2, size, period):
                draw.ellipse(
                    (column - radius, row - radius, column + radius, row + radius), fill=colour
                )
    return tile


def _mask(shape: str, rng: np.random.Generator, size: int) -> PIL.Image.Image:
    mask = PIL.Image.new("L", (size, size), 0)
    draw = PIL.ImageDraw.Draw(mask)
    radius = int(rng.integers(size // 4, size // 2 - 2))
    centre_x, centre_y = (int(value) for value in rng.integers(radius, size - radius, 2))
    box = (centre_x - radius, centre_y - radius, centre_x + radius, centre_y + radius)
    if shape == "circle":
        draw.ellipse(box, fill=255)
    elif shape == "square":
        draw.rectangle(box, fill=255)
    else:
        draw.polygon(
            [
                (centre_x, centre_y - radius),
                (centre_x - radius, centre_y + radius),
                (centre_x + radius, centre_y + radius),
            ],
            fill=255,
        )
    return mask


def _draw(name: str, rng: np.random.Generator, size: int) -> PIL.Image.Image:
    shape, texture, hue = CLASSES[name]
    background = PIL.Image.new(
        "RGB", (size, size), tuple(int(value) for value in rng.integers(60, 200, 3))
    )
    clutter = PIL.ImageDraw.Draw(background)
    for _ in range(
        int(rng.integers(2, 6))
    ):  # grey blobs anywhere, also over where the shape will be
        x, y = (int(value) for value in rng.integers(0, size, 2))
        grey = int(rng.integers(0, 256))
        clutter.ellipse(
            (x, y, x + int(rng.integers(4, size // 3)), y + int(rng.integers(4, size // 3))),
            fill=(grey, grey, grey),
        )
    background.paste(
        _texture(texture, _colour(hue, rng), rng, size), (0, 0), _mask(shape, rng, size)
    )
    noise = rng.normal(0, 10, (size, size, 3))
    return PIL.Image.fromarray(
        np.clip(np.asarray(background, dtype=np.float64) + noise, 0, 255).astype(np.uint8)
    )


def write_shapes_dataset(root: str, per_class: int = 20, size: int = 96, seed: int = 0) -> str:
    """root/<class>/*.jpg: textured, coloured shapes on cluttered backgrounds, saved at JPEG
    qualities 30-95.

    This is synthetic data, made so that the pipeline can run end to end without downloading
    anything; its accuracy figures say nothing about real photos.
    """
    rng = np.random.default_rng(seed)
    for name in CLASSES:
        os.makedirs(os.path.join(root, name), exist_ok=True)
        for number in range(per_class):
            path = os.path.join(root, name, f"{name}_{number:04d}.jpg")
            _draw(name, rng, size).save(path, quality=int(rng.integers(30, 96)))
    return root
