"""AOLM object boxes and APPM part windows against NumPy/SciPy references, eager and traced."""

import fractions
import math

import numpy as np
import pytest
import scipy.ndimage
import tensorflow as tf

from pipeline.offline import view_ops


def reference_largest_component(mask):
    labels, count = scipy.ndimage.label(mask, structure=np.ones((3, 3)))
    if count == 0:
        return np.zeros(mask.shape, bool)
    return labels == np.argmax(np.bincount(labels.ravel())[1:]) + 1


def reference_resize(values, height, width):
    """tf.image.resize's bilinear resize (half-pixel centres, no antialiasing) of a 2-D array."""

    def weights(out_size, in_size):
        position = (np.arange(out_size) + 0.5) * (in_size / out_size) - 0.5
        lower_float = np.floor(position)
        lower = np.maximum(lower_float, 0).astype(int)
        upper = np.minimum(np.ceil(position), in_size - 1).astype(int)
        return lower, upper, position - lower_float

    top, bottom, row_lerp = weights(height, values.shape[0])
    left, right, col_lerp = weights(width, values.shape[1])
    rows = values[top] + (values[bottom] - values[top]) * row_lerp[:, None]
    return rows[:, left] + (rows[:, right] - rows[:, left]) * col_lerp[None, :]


def normalised(cells, height, width):
    return np.float32(cells) / np.float32([height, width, height, width])


def reference_object_box(last_map, previous_map):
    activation = last_map.astype(np.float64).sum(-1)
    height, width = activation.shape
    previous = previous_map.astype(np.float64).sum(-1)
    if previous.shape != activation.shape:
        previous = reference_resize(previous, height, width)
    largest = reference_largest_component(activation > activation.mean())
    both = largest & (previous > previous.mean())
    if not both.any():
        return np.float32([0, 0, 1, 1])
    rows, cols = np.flatnonzero(both.any(1)), np.flatnonzero(both.any(0))
    return normalised([rows[0], cols[0], rows[-1] + 1, cols[-1] + 1], height, width)


def reference_scaled(cells, size):
    """round(cells * size / 14), halves up, within 1..size."""
    return min(
        max(math.floor(fractions.Fraction(cells * size, 14) + fractions.Fraction(1, 2)), 1), size
    )


def reference_shapes(height, width, window_shapes):
    shapes = []
    for rows, cols in window_shapes:
        shape = (reference_scaled(rows, height), reference_scaled(cols, width))
        if shape not in shapes:
            shapes.append(shape)
    return shapes


def reference_candidates(height, width, window_shapes):
    return [
        (top, left, top + rows, left + cols)
        for rows, cols in reference_shapes(height, width, window_shapes)
        for top in range(height - rows + 1)
        for left in range(width - cols + 1)
    ]


def reference_area(window):
    return (window[2] - window[0]) * (window[3] - window[1])


def reference_iou(a, b):
    rows = max(min(a[2], b[2]) - max(a[0], b[0]), 0)
    cols = max(min(a[3], b[3]) - max(a[1], b[1]), 0)
    return rows * cols / (reference_area(a) + reference_area(b) - rows * cols)


def reference_part_windows(feature_map, num_parts, window_shapes, iou_threshold):
    activation = feature_map.astype(np.float64).sum(-1)
    height, width = activation.shape
    candidates = reference_candidates(height, width, window_shapes)
    scores = [
        activation[top:bottom, left:right].sum() / ((bottom - top) * (right - left))
        for top, left, bottom, right in candidates
    ]
    order = sorted(range(len(candidates)), key=lambda index: -scores[index])  # stable
    kept = []
    for index in order:
        if len(kept) < num_parts and all(
            reference_iou(candidates[index], candidates[other]) <= iou_threshold for other in kept
        ):
            kept.append(index)
    picks = kept + [index for index in order if index not in kept]
    while len(picks) < num_parts:
        picks += order
    return normalised([candidates[index] for index in picks[:num_parts]], height, width)


def random_mask(rng):
    height, width = rng.integers(1, 15, size=2)
    density = rng.choice([0.0, 0.1, 0.3, 0.5, 0.6, 0.8, 1.0])
    return rng.random((height, width)) < density


def random_map(rng, height, width, channels, integer):
    """Integer maps make many exact ties; ReLU-like float maps have zeros and near-ties."""
    if integer:
        return rng.integers(0, 3, size=(height, width, channels)).astype(np.float32)
    return np.maximum(rng.normal(size=(height, width, channels)), 0).astype(np.float32)


def traced(function, *specs):
    """`function` traced once for inputs of any size: random cases then run in milliseconds."""
    return tf.function(function, input_signature=specs, autograph=False)


def test_largest_component_matches_scipy_on_random_masks():
    rng = np.random.default_rng(0)
    largest_component = traced(view_ops.largest_component, tf.TensorSpec([None, None], tf.bool))
    for case in range(200):
        mask = random_mask(rng)
        # A few eagerly: the traced and eager paths should not differ.
        function = view_ops.largest_component if case < 10 else largest_component
        np.testing.assert_array_equal(
            function(mask).numpy(), reference_largest_component(mask), err_msg=f"case {case}"
        )


@pytest.mark.parametrize(
    "rows, expected_rows",
    [
        # Two components of two pixels: the one starting first in raster order wins.
        (
            ["...##", ".....", ".....", "#....", "#...."],
            ["...##", ".....", ".....", ".....", "....."],
        ),
        # Diagonal neighbours are connected (8-connectivity).
        (
            ["#...#", ".#...", "..#..", ".....", "##..."],
            ["#....", ".#...", "..#..", ".....", "....."],
        ),
        # A spiral: one long component, longer than the map's side.
        (
            ["#####.", "....#.", "###.#.", "#...#.", "#####.", "......"],
            ["#####.", "....#.", "###.#.", "#...#.", "#####.", "......"],
        ),
        (["...", "..."], ["...", "..."]),
        (["##", "##"], ["##", "##"]),
        (["#"], ["#"]),
    ],
)
def test_largest_component_hand_made(rows, expected_rows):
    np.testing.assert_array_equal(
        view_ops.largest_component(_as_mask(rows)).numpy(), _as_mask(expected_rows)
    )


def _as_mask(lines):
    return np.array([[cell == "#" for cell in line] for line in lines]).reshape(len(lines), -1)


def random_previous_size(rng, height, width, integer):
    """The previous block's map size: the same, or one a stride away, or (float maps) any.

    Integer maps only meet an exact 2x upsampling, which keeps them exact in float32, so their
    above-mean tests match the float64 reference exactly.
    """
    choice = rng.integers(3)
    if integer:
        even = height % 2 == 0 and width % 2 == 0
        return (height // 2, width // 2) if choice and even else (height, width)
    if choice == 0:
        return height, width
    if choice == 1:
        return 2 * height, 2 * width
    return tuple(rng.integers(1, 17, size=2))


def test_object_box_matches_reference_on_random_maps():
    rng = np.random.default_rng(1)
    map_spec = tf.TensorSpec([None, None, None])
    object_box = traced(view_ops.object_box, map_spec, map_spec)
    for case in range(120):
        integer = case % 2 == 0
        height, width = rng.integers(1, 15, size=2)
        last_map = random_map(rng, height, width, rng.integers(1, 5), integer)
        previous_size = random_previous_size(rng, height, width, integer)
        previous_map = random_map(rng, *previous_size, rng.integers(1, 5), integer)
        function = view_ops.object_box if case < 10 else object_box
        np.testing.assert_array_equal(
            function(last_map, previous_map).numpy(),
            reference_object_box(last_map, previous_map),
            err_msg=f"case {case}",
        )


def test_object_box_hand_made():
    last_map = np.zeros((7, 7, 2), np.float32)
    last_map[2:5, 1:3] = 1.0
    last_map[0, 6] = 1.0  # a smaller component, dropped
    previous_map = np.zeros((7, 7, 1), np.float32)
    previous_map[3:7, 0:7] = 1.0
    np.testing.assert_array_equal(
        view_ops.object_box(last_map, previous_map).numpy(), normalised([3, 1, 5, 3], 7, 7)
    )
    # No common cell, and a map with no cell above its mean: the whole image.
    disjoint = np.zeros((7, 7, 1), np.float32)
    disjoint[6, 6] = 1.0
    whole = np.float32([0, 0, 1, 1])
    np.testing.assert_array_equal(view_ops.object_box(last_map, disjoint).numpy(), whole)
    constant = np.ones((7, 7, 3), np.float32)
    np.testing.assert_array_equal(view_ops.object_box(constant, previous_map).numpy(), whole)


def test_window_candidates_scale_deduplicate_and_order():
    for height, width in [(14, 14), (7, 7), (3, 3), (1, 1), (28, 10), (5, 20)]:
        np.testing.assert_array_equal(
            view_ops.window_candidates(height, width).numpy().reshape(-1, 4),
            np.array(reference_candidates(height, width, view_ops.DEFAULT_WINDOWS)).reshape(-1, 4),
        )
    shapes = {
        (bottom - top, right - left)
        for top, left, bottom, right in view_ops.window_candidates(7, 7).numpy()
    }
    assert shapes == {(2, 2), (2, 3), (3, 2), (3, 3), (3, 4), (4, 3)}


@pytest.mark.parametrize(
    "num_parts, window_shapes, iou_threshold",
    [
        (4, view_ops.DEFAULT_WINDOWS, 0.25),
        (1, view_ops.DEFAULT_WINDOWS, 0.25),
        (7, view_ops.DEFAULT_WINDOWS, 0.0),
        # Repeated shapes and shapes larger than the map.
        (6, ((2, 30), (14, 14), (14, 14), (30, 2)), 0.5),
        (5, ((7, 7), (3, 11)), 1.0),
        (3, ((1, 1), (20, 9)), 0.1),
    ],
)
def test_part_windows_match_reference_on_random_maps(num_parts, window_shapes, iou_threshold):
    rng = np.random.default_rng(2)

    def part_windows(feature_map):
        return view_ops.part_windows(feature_map, num_parts, window_shapes, iou_threshold)

    traced_part_windows = traced(part_windows, tf.TensorSpec([None, None, None]))
    for case in range(30):
        height, width = rng.integers(1, 17, size=2)
        feature_map = random_map(rng, height, width, rng.integers(1, 4), integer=case % 2 == 0)
        function = part_windows if case < 2 else traced_part_windows
        np.testing.assert_array_equal(
            function(feature_map).numpy(),
            reference_part_windows(feature_map, num_parts, window_shapes, iou_threshold),
            err_msg=f"case {case}: {height}x{width}",
        )


def test_part_windows_fill_with_the_best_remaining_windows():
    # Windows of 1x2 cells score 0.5, 1.5 and 2.5; the middle one overlaps both others (IoU 1/3).
    feature_map = np.arange(4, dtype=np.float32).reshape(1, 4, 1)
    windows = view_ops.part_windows(feature_map, 3, window_shapes=((14, 7),))
    np.testing.assert_array_equal(
        windows.numpy(), np.float32([[0, 0.5, 1, 1], [0, 0, 1, 0.5], [0, 0.25, 1, 0.75]])
    )


def test_part_windows_larger_than_the_map_and_more_parts_than_windows():
    feature_map = np.ones((5, 6, 2), np.float32)
    windows = view_ops.part_windows(feature_map, 3, window_shapes=((40, 30),))
    np.testing.assert_array_equal(windows.numpy(), np.float32([[0, 0, 1, 1]] * 3))


def test_part_windows_rejects_bad_arguments():
    feature_map = np.ones((4, 4, 1), np.float32)
    with pytest.raises(ValueError):
        view_ops.part_windows(feature_map, 0)
    with pytest.raises(ValueError):
        view_ops.part_windows(feature_map, 2, window_shapes=())
    with pytest.raises(ValueError):
        view_ops.part_windows(feature_map, 2, window_shapes=((0, 3),))


def test_crop_box_pixels():
    image = np.arange(10 * 8 * 3, dtype=np.uint8).reshape(10, 8, 3)
    cases = [
        ([0.2, 0.25, 0.5, 0.75], (2, 5, 2, 6)),
        ([0.21, 0.26, 0.49, 0.74], (2, 5, 2, 6)),  # floor of the start, ceiling of the end
        ([0.5, 0.5, 0.5, 0.5], (5, 6, 4, 5)),  # empty: one pixel
        ([1.0, 1.0, 1.0, 1.0], (9, 10, 7, 8)),  # at the far edge: the last pixel
        ([-0.3, -1.0, 1.5, 2.0], (0, 10, 0, 8)),  # clipped to the image
        ([0, 0, 1, 1], (0, 10, 0, 8)),
    ]
    for box, (top, bottom, left, right) in cases:
        crop = view_ops.crop_box(image, tf.constant(box, tf.float32))
        assert crop.dtype == tf.uint8
        np.testing.assert_array_equal(crop.numpy(), image[top:bottom, left:right], err_msg=str(box))


def test_crop_box_of_a_cell_box_gains_no_pixel_from_float32_rounding():
    image = np.zeros((224, 224, 3), np.uint8)
    box = view_ops.object_box(*_two_block_maps())  # rows 2..5 and columns 1..7 of a 7x7 map
    np.testing.assert_array_equal(box.numpy(), normalised([2, 1, 5, 7], 7, 7))
    assert view_ops.crop_box(image, box).shape == (96, 192, 3)


def _two_block_maps():
    last_map = np.zeros((7, 7, 1), np.float32)
    last_map[2:5, 1:7] = 1.0
    return last_map, last_map


class _ViewModule(tf.Module):
    """The ops behind input signatures with unknown sizes, as a model would export them."""

    def __init__(self, num_parts):
        super().__init__()
        self.num_parts = num_parts

    @tf.function(input_signature=[tf.TensorSpec([None, None], tf.bool)], autograph=False)
    def largest_component(self, mask):
        return view_ops.largest_component(mask)

    @tf.function(
        input_signature=[tf.TensorSpec([None, None, 3]), tf.TensorSpec([None, None, 2])],
        autograph=False,
    )
    def object_box(self, last_map, previous_map):
        return view_ops.object_box(last_map, previous_map)

    @tf.function(input_signature=[tf.TensorSpec([None, None, 3])], autograph=False)
    def part_windows(self, feature_map):
        return view_ops.part_windows(feature_map, self.num_parts)

    @tf.function(
        input_signature=[tf.TensorSpec([None, None, 3], tf.uint8), tf.TensorSpec([4])],
        autograph=False,
    )
    def crop_box(self, image, box):
        return view_ops.crop_box(image, box)


class _EagerView:
    """The module's ops, called eagerly."""

    largest_component = staticmethod(view_ops.largest_component)
    object_box = staticmethod(view_ops.object_box)
    crop_box = staticmethod(view_ops.crop_box)

    def part_windows(self, feature_map):
        return view_ops.part_windows(feature_map, 4)


def _outputs(view):
    """Every op of `view` (eager, traced or restored) on the same maps and images."""
    rng = np.random.default_rng(3)
    outputs = []
    for height, width in [(14, 14), (7, 9), (1, 1), (16, 5)]:
        mask = rng.random((height, width)) < 0.5
        last_map = random_map(rng, height, width, 3, integer=False)
        previous_map = random_map(rng, 2 * height, 2 * width, 2, integer=False)
        image = rng.integers(0, 256, size=(3 * height, 2 * width, 3), dtype=np.uint8)
        box = view.object_box(last_map, previous_map)
        outputs += [
            view.largest_component(mask),
            box,
            view.part_windows(last_map),
            view.crop_box(image, box),
        ]
    return [output.numpy() for output in outputs]


def test_traced_with_unknown_sizes_and_saved_model_round_trip(tmp_path):
    eager = _outputs(_EagerView())
    module = _ViewModule(num_parts=4)
    traced_outputs = _outputs(module)
    tf.saved_model.save(module, str(tmp_path))
    restored = _outputs(tf.saved_model.load(str(tmp_path)))
    for expected, traced_output, restored_output in zip(eager, traced_outputs, restored):
        np.testing.assert_array_equal(traced_output, expected)
        np.testing.assert_array_equal(restored_output, expected)
