"""ImageNet's 1000 classes, in the index order of the Keras classifiers, and matching a dataset's
classes to them."""

import functools
import importlib.resources


@functools.cache
def imagenet_classes() -> tuple[tuple[str, str], ...]:
    """The 1000 ILSVRC-2012 classes as (wnid, name), in the index order of the Keras classifiers."""
    text = importlib.resources.files("bottlenecks").joinpath("imagenet_classes.txt").read_text()
    return tuple(tuple(line.split(" ", 1)) for line in text.splitlines() if line.strip())


def imagenet_indices(class_names, integers_are_indices: bool = False) -> list[int] | None:
    """Each class's ImageNet index when every class is one of ImageNet's, else None.

    Classes match by wnid (n01440764); integer class names count as ImageNet indices only when the
    caller says so, since most integer-labelled datasets have nothing to do with ImageNet.
    """
    by_wnid = {wnid: index for index, (wnid, _) in enumerate(imagenet_classes())}
    indices = []
    for name in class_names:
        if name in by_wnid:
            indices.append(by_wnid[name])
        elif integers_are_indices and name.isdigit() and int(name) < len(by_wnid):
            indices.append(int(name))
        else:
            return None
    return indices
