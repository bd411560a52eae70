"""A small synthetic image dataset that can be made offline, for the demo and for trying the tools."""

import os

import numpy as np
import PIL.Image
import PIL.ImageDraw

SHAPES = ("circle", "square", "triangle")


def _draw(shape: str, rng: np.random.Generator, size: int) -> PIL.Image.Image:
    background = tuple(int(value) for value in rng.integers(0, 256, 3))
    image = PIL.Image.new("RGB", (size, size), background)
    draw = PIL.ImageDraw.Draw(image)
    colour = tuple(int(value) for value in rng.integers(0, 256, 3))
    radius = int(rng.integers(size // 6, size // 3))
    centre_x, centre_y = (int(value) for value in rng.integers(radius, size - radius, 2))
    box = (centre_x - radius, centre_y - radius, centre_x + radius, centre_y + radius)
    if shape == "circle":
        draw.ellipse(box, fill=colour)
    elif shape == "square":
        draw.rectangle(box, fill=colour)
    else:
        draw.polygon([(centre_x, centre_y - radius), (centre_x - radius, centre_y + radius),
                      (centre_x + radius, centre_y + radius)], fill=colour)
    noise = rng.normal(0, 12, (size, size, 3))
    return PIL.Image.fromarray(np.clip(np.asarray(image, dtype=np.float64) + noise, 0, 255).astype(np.uint8))


def write_shapes_dataset(root: str, per_class: int = 20, size: int = 96, seed: int = 0) -> str:
    """root/<shape>/*.jpg: coloured shapes on noisy backgrounds, saved at JPEG qualities 30-95.

    This is synthetic data, made so that the pipeline can run end to end without downloading anything;
    its accuracy figures say nothing about real photos.
    """
    rng = np.random.default_rng(seed)
    for shape in SHAPES:
        os.makedirs(os.path.join(root, shape), exist_ok=True)
        for number in range(per_class):
            path = os.path.join(root, shape, f"{shape}_{number:04d}.jpg")
            _draw(shape, rng, size).save(path, quality=int(rng.integers(30, 96)))
    return root
