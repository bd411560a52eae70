"""MMAL-Net's object box (AOLM) and part windows (APPM) from a CNN's own activation maps.

Everything here is plain TensorFlow on one image, so it traces inside a `tf.function` with unknown
map and image sizes and saves into a SavedModel; callers map it over a batch. Boxes and windows are
normalised (y0, x0, y1, x1) in [0, 1], ends exclusive, so they apply to an image of any size.

Ties are broken by position, never by an argmax, so results do not depend on the device: of equally
large components the one starting first in raster order wins, and equal window scores keep the
candidates' order.
"""

import tensorflow as tf

# Part-window shapes in cells of a 14x14 map (MMAL-Net at 448 px); scaled to other map sizes.
DEFAULT_WINDOWS = ((4, 4), (3, 5), (5, 3), (6, 6), (5, 7), (7, 5))
_REFERENCE_CELLS = 14
# A crop edge this close (in pixels) to a pixel boundary counts as on it: a box edge of r/h cells
# stored in float32 and scaled to the image is off by a few 1e-5 px and must not gain a pixel.
_EDGE_TOLERANCE_PIXELS = 1e-3


def largest_component(mask):
    """The largest 8-connected component of a bool [h, w] mask; all False if the mask is empty.

    Equally large components: the one whose first pixel in raster order comes first wins, as with
    `scipy.ndimage.label` and an argmax over its sizes. Each pixel starts labelled with its own
    raster index and takes the smallest label in its 3x3 neighbourhood until nothing changes, so a
    component ends up labelled with its first pixel.
    """
    mask = tf.convert_to_tensor(mask, tf.bool)
    height, width = tf.shape(mask)[0], tf.shape(mask)[1]
    flat_mask = tf.reshape(mask, [-1])
    labels = _component_labels(flat_mask, height, width)
    cells = height * width
    # The background's label `cells` falls into an extra, ignored segment.
    sizes = tf.math.unsorted_segment_sum(tf.cast(flat_mask, tf.int32), labels, cells + 1)[:cells]
    best_label = _first_true(tf.equal(sizes, tf.reduce_max(sizes)))
    return tf.reshape(flat_mask & tf.equal(labels, best_label), [height, width])


def _component_labels(flat_mask, height, width):
    """Every mask pixel's label: the raster index of its component's first pixel; `h*w` elsewhere.

    Besides the 3x3 minimum, a pixel also takes its label's own label (pointer jumping): a label is
    always a pixel of the same component, and long thin components then settle in far fewer steps.
    """
    cells = height * width
    background = cells
    initial = tf.where(flat_mask, tf.range(cells), background)

    def step(labels, changed):
        del changed
        # Exact in float32 up to 2**24 cells; max pooling negated labels gives the 3x3 minimum.
        grid = tf.reshape(tf.cast(labels, tf.float32), [1, height, width, 1])
        neighbourhood = -tf.nn.max_pool2d(-grid, ksize=3, strides=1, padding="SAME")
        neighbourhood = tf.cast(tf.reshape(neighbourhood, [-1]), tf.int32)
        jumped = tf.gather(labels, tf.minimum(labels, cells - 1))
        updated = tf.where(flat_mask, tf.minimum(neighbourhood, jumped), background)
        return updated, tf.reduce_any(tf.not_equal(updated, labels))

    labels, _ = tf.while_loop(lambda labels, changed: changed, step, (initial, tf.constant(True)))
    return labels


def object_box(last_map, previous_map):
    """AOLM's object box: float32 [4] from the last [h, w, c] and the previous [h2, w2, c2] maps.

    The largest component of the last map's above-mean cells, kept where the previous map is also
    above its mean (resized bilinearly, half-pixel centres, to h x w if its size differs), bounds
    the object. Its cells map to [row0/h, col0/w, (row1+1)/h, (col1+1)/w]; no cell left gives the
    whole image.
    """
    activation = _channel_sum(last_map)
    height, width = tf.shape(activation)[0], tf.shape(activation)[1]
    previous = _channel_sum(previous_map)
    # Resizing to its own size is the identity (half-pixel centres sample each cell exactly).
    previous = tf.image.resize(previous[:, :, tf.newaxis], [height, width], method="bilinear")
    object_mask = largest_component(_above_mean(activation)) & _above_mean(previous[:, :, 0])
    return _bounding_box(object_mask)


def _channel_sum(feature_map):
    """The activation map A: a [h, w, c] feature map summed over channels, in float32."""
    return tf.reduce_sum(tf.cast(feature_map, tf.float32), axis=-1)


def _above_mean(activation):
    return activation > tf.reduce_mean(activation)


def _bounding_box(mask):
    """The normalised box of a bool [h, w] mask's True cells, or [0, 0, 1, 1] if there are none."""
    height, width = tf.shape(mask)[0], tf.shape(mask)[1]
    row0, row1 = _true_span(tf.reduce_any(mask, axis=1))
    col0, col1 = _true_span(tf.reduce_any(mask, axis=0))
    box = _normalise(tf.stack([row0, col0, row1, col1]), height, width)
    return tf.where(row1 > row0, box, tf.constant([0.0, 0.0, 1.0, 1.0]))


def _true_span(flags):
    """First True index and one past the last (both 0 when no flag is True) of a bool vector."""
    positions = tf.range(tf.size(flags))
    first = tf.reduce_min(tf.where(flags, positions, tf.size(flags)))
    end = tf.reduce_max(tf.where(flags, positions + 1, 0))
    return tf.minimum(first, end), end


def _normalise(cells, height, width):
    """Cell coordinates [..., 4] (row0, col0, row1, col1) as float32 fractions of the map."""
    scale = tf.cast(tf.stack([height, width, height, width]), tf.float32)
    return tf.cast(cells, tf.float32) / scale


def window_candidates(height, width, window_shapes=DEFAULT_WINDOWS):
    """Every window position: int32 [n, 4] cells (row0, col0, row1, col1), ends exclusive.

    Order: shape order, then raster order of the top-left cell. `window_shapes` are (rows, cols)
    for a 14x14 map, scaled to height x width (rounded half up, then kept within 1..the map) with
    repeated scaled shapes dropped after their first occurrence.
    """
    return tf.concat([windows for _, windows in _shape_windows(height, width, window_shapes)], 0)


def _shape_windows(height, width, window_shapes):
    """One (scaled shape [2], windows [n, 4]) per shape; a repeated shape gets no windows."""
    _check_window_shapes(window_shapes)
    height = tf.convert_to_tensor(height, tf.int32)
    width = tf.convert_to_tensor(width, tf.int32)
    groups, seen = [], []
    for rows, cols in window_shapes:
        shape = tf.stack([_scale_cells(rows, height), _scale_cells(cols, width)])
        repeated = tf.constant(False)
        for other in seen:
            repeated = repeated | tf.reduce_all(tf.equal(shape, other))
        seen.append(shape)
        positions_down = tf.where(repeated, 0, height - shape[0] + 1)
        top, left = tf.meshgrid(
            tf.range(positions_down), tf.range(width - shape[1] + 1), indexing="ij"
        )
        top, left = tf.reshape(top, [-1]), tf.reshape(left, [-1])
        groups.append((shape, tf.stack([top, left, top + shape[0], left + shape[1]], axis=1)))
    return groups


def _scale_cells(cells, size):
    """round(cells * size / 14) half up, in exact integer arithmetic, within 1..size.

    Half up rather than half to even keeps the shapes' aspect ratios on a 7x7 map: (3, 5) becomes
    (2, 3), where half to even would round both sides to 2.
    """
    scaled = (2 * cells * size + _REFERENCE_CELLS) // (2 * _REFERENCE_CELLS)
    return tf.clip_by_value(scaled, 1, size)


def _check_window_shapes(window_shapes):
    shapes = tuple(tuple(shape) for shape in window_shapes)
    if not shapes or any(len(shape) != 2 or min(shape) < 1 for shape in shapes):
        raise ValueError(f"window_shapes must be (rows, cols) pairs of positive ints: {shapes}")


def part_windows(feature_map, num_parts, window_shapes=DEFAULT_WINDOWS, iou_threshold=0.25):
    """APPM's part windows: float32 [num_parts, 4] from a [h, w, c] feature map.

    A window scores the mean of the channel-summed map over its cells. Greedy non-maximum
    suppression over the candidates (`window_candidates` order; equal scores keep that order)
    keeps a window whose IoU in cells with every kept one is at most `iou_threshold`. Too few
    survivors: the best-scoring windows not yet taken fill the rest, in score order, and once every
    window is taken they are taken again in the same order, so there are always num_parts rows.
    """
    if num_parts < 1:
        raise ValueError(f"num_parts must be at least 1, got {num_parts}")
    activation = tf.cast(_channel_sum(feature_map), tf.float64)
    height, width = tf.shape(activation)[0], tf.shape(activation)[1]
    groups = _shape_windows(height, width, window_shapes)
    windows = tf.concat([group_windows for _, group_windows in groups], 0)
    scores = tf.concat([_window_means(activation, *group) for group in groups], 0)
    # top_k (behind a descending argsort) puts equal scores in index order: a stable sort.
    order = tf.argsort(scores, direction="DESCENDING", stable=True)
    picks = _suppress(tf.gather(windows, order), num_parts, float(iou_threshold))
    return _normalise(tf.gather(windows, tf.gather(order, picks)), height, width)


def _window_means(activation, shape, windows):
    """Mean activation over each window of one shape, float64 [n].

    The cells are gathered and summed directly (no integral image), so windows over equal cells,
    zeros above all, score exactly equal and their ties stay ties.
    """
    width = tf.shape(activation)[1]
    offset_rows, offset_cols = tf.meshgrid(tf.range(shape[0]), tf.range(shape[1]), indexing="ij")
    rows = windows[:, :1] + tf.reshape(offset_rows, [1, -1])
    cols = windows[:, 1:2] + tf.reshape(offset_cols, [1, -1])
    values = tf.gather(tf.reshape(activation, [-1]), rows * width + cols)
    return tf.reduce_sum(values, axis=1) / tf.cast(shape[0] * shape[1], tf.float64)


def _suppress(windows, num_parts, iou_threshold):
    """Indices int32 [num_parts] into score-sorted windows [n, 4]: greedy NMS, then filling.

    Each step takes the first window not suppressed by a taken one; when none is left, the first of
    the least-taken windows, which is NMS followed by filling in score order.
    """
    count = tf.shape(windows)[0]

    def step(part, alive, taken, picks):
        least_taken = tf.equal(taken, tf.reduce_min(taken))
        pick = tf.where(tf.reduce_any(alive), _first_true(alive), _first_true(least_taken))
        overlapping = _iou(windows[pick], windows) > iou_threshold
        alive = alive & ~overlapping & tf.not_equal(tf.range(count), pick)
        taken = taken + tf.one_hot(pick, count, dtype=tf.int32)
        picks = tf.tensor_scatter_nd_update(picks, [[part]], [pick])
        return part + 1, alive, taken, picks

    initial = (
        tf.constant(0),
        tf.ones([count], tf.bool),
        tf.zeros([count], tf.int32),
        tf.zeros([num_parts], tf.int32),
    )
    *_, picks = tf.while_loop(lambda part, *_: part < num_parts, step, initial)
    return picks


def _iou(window, windows):
    """Intersection over union in cells of one window [4] with each of windows [n, 4], float64."""
    top = tf.maximum(window[0], windows[:, 0])
    left = tf.maximum(window[1], windows[:, 1])
    bottom = tf.minimum(window[2], windows[:, 2])
    right = tf.minimum(window[3], windows[:, 3])
    intersection = tf.maximum(bottom - top, 0) * tf.maximum(right - left, 0)
    area = (window[2] - window[0]) * (window[3] - window[1])
    areas = (windows[:, 2] - windows[:, 0]) * (windows[:, 3] - windows[:, 1])
    union = area + areas - intersection
    return tf.cast(intersection, tf.float64) / tf.cast(union, tf.float64)


def _first_true(flags):
    """Index of the first True in a bool vector, or its length if none.

    An argmax would do, but which of equal maxima it returns is not guaranteed on every device.
    """
    positions = tf.range(tf.size(flags))
    return tf.reduce_min(tf.where(flags, positions, tf.size(flags)))


def crop_box(image, box):
    """The [H, W, channels] image's pixels inside a normalised box (y0, x0, y1, x1).

    Rows floor(y0*H) .. ceil(y1*H) (end exclusive), columns likewise, clipped to the image and at
    least one pixel each way. An edge within 1e-3 px of a pixel boundary counts as on it.
    """
    image = tf.convert_to_tensor(image)
    box = tf.cast(box, tf.float64)
    top, bottom = _pixel_span(box[0], box[2], tf.shape(image)[0])
    left, right = _pixel_span(box[1], box[3], tf.shape(image)[1])
    return image[top:bottom, left:right]


def _pixel_span(start, end, size):
    """Pixel start and exclusive end covering the fractions start..end of `size` pixels."""
    pixels = tf.cast(size, tf.float64)
    first = tf.cast(tf.floor(start * pixels + _EDGE_TOLERANCE_PIXELS), tf.int32)
    last = tf.cast(tf.math.ceil(end * pixels - _EDGE_TOLERANCE_PIXELS), tf.int32)
    first = tf.clip_by_value(first, 0, size - 1)
    return first, tf.clip_by_value(last, first + 1, size)
