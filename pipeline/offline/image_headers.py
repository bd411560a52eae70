"""Reading encoded images' headers inside a TensorFlow graph, never raising: the format by its
first bytes, the size, the EXIF orientation (else XMP's tiff:Orientation) as Pillow reads it from a
JPEG's APP1, a PNG's eXIf and uncompressed iTXt and a WebP's EXIF and XMP chunks, a PNG's colour
type, and a GIF's transparent colour.

Every read is clipped to the bytes there are (zeros past the end), so that truncated or hostile
headers give wrong numbers, never an error: decoding is what finds a broken image.
"""

import tensorflow as tf

from pipeline import traced

UNKNOWN, JPEG, PNG, GIF, BMP, WEBP = range(6)
FORMAT_NAMES = ("unknown", "JPEG", "PNG", "GIF", "BMP", "WebP")
_SIGNATURES = (
    (JPEG, b"\xff\xd8\xff"),
    (PNG, b"\x89PNG\r\n\x1a\n"),
    (GIF, b"GIF87a"),
    (GIF, b"GIF89a"),
    (BMP, b"BM"),
)
_TIFF_LITTLE = (b"II\x2a\x00", b"II\x00\x2a")  # the headers Pillow's TIFF reader accepts
_TIFF_BIG = (b"MM\x00\x2a", b"MM\x2a\x00")
_ORIENTATION_TAG = 0x0112
_INTEGER_SIZES = ((3, 2), (4, 4), (8, 2), (9, 4))  # TIFF types SHORT, LONG, SSHORT, SLONG
_XMP_JPEG = b"http://ns.adobe.com/xap/1.0/\x00"
_XMP_PNG = b"XML:com.adobe.xmp\x00\x00"  # keyword, then compression flag 0: uncompressed text
_XMP_ORIENTATION = r'(?s).*?tiff:Orientation(?:="|>)([0-9]).*'  # Pillow's pattern
_JPEG_FRAMES = set(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}  # SOF markers (not DHT, JPG, DAC)
_ONE_BYTE = tuple(bytes([value]) for value in range(256))


def _int(value) -> tf.Tensor:
    return tf.cast(value, tf.int64)


def _read(data, position, count) -> tf.Tensor:
    """count bytes of data from position as int64 [count], zeros past its end; never raises."""
    length = _int(tf.strings.length(data))
    start = tf.clip_by_value(_int(position), 0, length)
    count = tf.cast(count, tf.int32)
    piece = tf.strings.substr(data, start, tf.clip_by_value(_int(count), 0, length - start))
    # decode_raw pads to a length of at least one byte
    values = tf.io.decode_raw(piece, tf.uint8, fixed_length=tf.maximum(count, 1))
    return _int(values[:count])


def _number(data, position, size: int, little) -> tf.Tensor:
    """The unsigned integer of size bytes at position, little- or big-endian."""
    return _numbers(tf.reshape(_read(data, position, size), [1, size]), little)[0]


def _at(data, position, text: bytes) -> tf.Tensor:
    """Whether data holds text at position."""
    length = _int(tf.strings.length(data))
    start = tf.clip_by_value(_int(position), 0, length)
    return tf.equal(
        tf.strings.substr(data, start, tf.minimum(_int(len(text)), length - start)), text
    )


def _piece(data, position, count) -> tf.Tensor:
    length = _int(tf.strings.length(data))
    start = tf.clip_by_value(_int(position), 0, length)
    return tf.strings.substr(data, start, tf.clip_by_value(_int(count), 0, length - start))


def _any_at(data, position, texts) -> tf.Tensor:
    return tf.reduce_any(tf.stack([_at(data, position, text) for text in texts]))


def _tiff_orientation(blob) -> tf.Tensor:
    """The orientation in an EXIF blob's first directory, 0 without one, as PIL.Image.Exif reads
    it (a blob that is no TIFF structure has none)."""
    for _ in range(2):  # Pillow strips the prefix twice, for writers that add it once too often
        blob = tf.where(
            _at(blob, 0, b"Exif\x00\x00"), _piece(blob, 6, tf.strings.length(blob)), blob
        )
    little = _any_at(blob, 0, _TIFF_LITTLE)
    classic = _any_at(blob, 0, _TIFF_LITTLE + _TIFF_BIG)
    directory = _number(blob, 4, 4, little)
    # A directory cut short keeps the entries that are whole, as Pillow's reader does.
    whole = tf.maximum(_int(tf.strings.length(blob)) - directory - 2, 0) // 12
    count = tf.where(classic, tf.minimum(_number(blob, directory, 2, little), whole), 0)
    entries = tf.reshape(_read(blob, directory + 2, 12 * count), [-1, 12])
    tags = _numbers(entries[:, 0:2], little)
    types = _numbers(entries[:, 2:4], little)
    counts = _numbers(entries[:, 4:8], little)
    value = tf.zeros_like(tags)
    for kind, size in _INTEGER_SIZES:  # the value sits in the entry's first bytes
        value = tf.where(tf.equal(types, kind), _numbers(entries[:, 8 : 8 + size], little), value)
    integer = tf.reduce_any(tf.stack([tf.equal(types, kind) for kind, _ in _INTEGER_SIZES]), 0)
    found = tf.equal(tags, _ORIENTATION_TAG) & integer & tf.equal(counts, 1)
    # A tag written twice: the later one wins, as in Pillow's directory.
    positions = tf.range(tf.size(tags), dtype=tf.int64)
    last = tf.reduce_max(tf.where(found, positions, -1))
    return tf.reduce_sum(tf.where(tf.equal(positions, last), value, 0))


def _numbers(columns, little) -> tf.Tensor:
    """Rows of bytes [N, size] as unsigned integers [N], little- or big-endian."""
    size = columns.shape[1]
    weights = tf.where(
        little,
        256 ** tf.range(size, dtype=tf.int64),
        256 ** tf.range(size - 1, -1, -1, dtype=tf.int64),
    )
    return tf.reduce_sum(columns * weights, 1)


def _xmp_orientation(text) -> tf.Tensor:
    """XMP's tiff:Orientation digit, 0 without one."""
    matched = tf.strings.regex_full_match(text, _XMP_ORIENTATION)
    digit = tf.where(matched, tf.strings.regex_replace(text, _XMP_ORIENTATION, r"\1"), "0")
    return _int(tf.strings.to_number(digit, tf.int32))


def _orientation(exif, xmp) -> tf.Tensor:
    """EXIF's orientation, else XMP's (Pillow reads XMP's only where EXIF has none)."""
    return tf.where(exif > 0, exif, xmp)


BYTES = tf.TensorSpec([], tf.string)
FORMAT = tf.TensorSpec([], tf.int32)


def _walk(condition, body, state):
    return tf.while_loop(condition, body, state, parallel_iterations=1)


@traced.graph_function(BYTES)
def jpeg_headers(data) -> dict:
    """Size, EXIF and XMP orientation of a JPEG from its markers before the scan, read as Pillow's
    JPEG reader reads them (the first EXIF segment, the last frame header and XMP packet)."""
    length = _int(tf.strings.length(data))
    zero = tf.constant(0, tf.int64)

    def body(position, height, width, exif, xmp, seen, done):
        first, marker, high, low = tf.unstack(_read(data, position, 4))
        size = high * 256 + low
        is_marker = tf.equal(first, 0xFF)
        standalone = tf.equal(marker, 0x01) | ((marker >= 0xD0) & (marker <= 0xD8))
        one, two = tf.constant(1, tf.int64), tf.constant(2, tf.int64)
        step = tf.where(
            ~is_marker | tf.equal(marker, 0xFF),
            one,
            tf.where(tf.equal(marker, 0) | standalone, two, two + size),
        )
        segment = is_marker & ~standalone & (marker > 0) & (marker < 0xFF)
        frame = segment & tf.reduce_any(tf.equal(marker, list(_JPEG_FRAMES)))
        height = tf.where(frame, _number(data, position + 5, 2, False), height)
        width = tf.where(frame, _number(data, position + 7, 2, False), width)
        app1 = segment & tf.equal(marker, 0xE1)
        is_exif = app1 & _at(data, position + 4, b"Exif\x00\x00") & ~seen
        exif = tf.cond(
            is_exif, lambda: _tiff_orientation(_piece(data, position + 4, size - 2)), lambda: exif
        )
        xmp = tf.cond(
            app1 & _at(data, position + 4, _XMP_JPEG),
            lambda: _xmp_orientation(_piece(data, position + 4 + len(_XMP_JPEG), size - 31)),
            lambda: xmp,
        )
        done = is_marker & ((marker == 0xDA) | (marker == 0xD9))
        return position + step, height, width, exif, xmp, seen | is_exif, done

    state = (
        tf.constant(2, tf.int64),
        zero,
        zero,
        zero,
        zero,
        tf.constant(False),
        tf.constant(False),
    )
    _, height, width, exif, xmp, _, _ = _walk(
        lambda position, *rest: (position < length) & ~rest[-1], body, state
    )
    return {"height": height, "width": width, "orientation": _orientation(exif, xmp)}


@traced.graph_function(BYTES)
def png_headers(data) -> dict:
    """Size, colour type, bit depth, transparency chunk and EXIF/XMP orientation of a PNG, from
    its chunks (eXIf after the pixels counts too: Pillow reads it on load)."""
    length = _int(tf.strings.length(data))
    zero = tf.constant(0, tf.int64)

    def body(position, exif, xmp, transparency, done):
        size = _number(data, position, 4, False)
        kind = _piece(data, position + 4, 4)
        start = position + 8
        exif = tf.cond(
            tf.equal(kind, b"eXIf"),
            lambda: _tiff_orientation(_piece(data, start, size)),
            lambda: exif,
        )
        xmp = tf.cond(
            tf.equal(kind, b"iTXt") & _at(data, start, _XMP_PNG),
            lambda: _xmp_orientation(_piece(data, start, size)),
            lambda: xmp,
        )
        transparency |= tf.equal(kind, b"tRNS")
        return start + size + 4, exif, xmp, transparency, tf.equal(kind, b"IEND")

    state = (tf.constant(8, tf.int64), zero, zero, tf.constant(False), tf.constant(False))
    _, exif, xmp, transparency, _ = _walk(
        lambda position, *rest: (position + 8 <= length) & ~rest[-1], body, state
    )
    return {
        "width": _number(data, 16, 4, False),
        "height": _number(data, 20, 4, False),
        "depth": _read(data, 24, 1)[0],
        "colour": _read(data, 25, 1)[0],
        "transparency": transparency,
        "orientation": _orientation(exif, xmp),
    }


@traced.graph_function(BYTES)
def webp_headers(data) -> dict:
    """Canvas size and EXIF/XMP orientation of a WebP, from its RIFF chunks."""
    length = _int(tf.strings.length(data))
    zero = tf.constant(0, tf.int64)

    def body(position, width, height, exif, xmp):
        kind = _piece(data, position, 4)
        size = _number(data, position + 4, 4, True)
        start = position + 8
        unset = tf.equal(width, 0)
        extended = tf.equal(kind, b"VP8X")
        lossy = tf.equal(kind, b"VP8 ") & unset
        lossless = tf.equal(kind, b"VP8L") & unset
        bits = _number(data, start + 1, 4, True)
        width = tf.where(extended, 1 + _number(data, start + 4, 3, True), width)
        height = tf.where(extended, 1 + _number(data, start + 7, 3, True), height)
        width = tf.where(lossy, _number(data, start + 6, 2, True) % 2**14, width)
        height = tf.where(lossy, _number(data, start + 8, 2, True) % 2**14, height)
        width = tf.where(lossless, 1 + bits % 2**14, width)
        height = tf.where(lossless, 1 + bits // 2**14 % 2**14, height)
        exif = tf.cond(
            tf.equal(kind, b"EXIF"),
            lambda: _tiff_orientation(_piece(data, start, size)),
            lambda: exif,
        )
        xmp = tf.cond(
            tf.equal(kind, b"XMP "),
            lambda: _xmp_orientation(_piece(data, start, size)),
            lambda: xmp,
        )
        return start + size + size % 2, width, height, exif, xmp

    state = (tf.constant(12, tf.int64), zero, zero, zero, zero)
    _, width, height, exif, xmp = _walk(lambda position, *rest: position + 8 <= length, body, state)
    return {"width": width, "height": height, "orientation": _orientation(exif, xmp)}


def image_format(data) -> tf.Tensor:
    """The format of encoded bytes by their first bytes, int32 (UNKNOWN when none fits)."""
    found = tf.constant(UNKNOWN)
    for code, signature in _SIGNATURES:
        found = tf.where(_at(data, 0, signature), code, found)
    webp = _at(data, 0, b"RIFF") & _at(data, 8, b"WEBP")
    return tf.where(webp, WEBP, found)


def size(data, format_code) -> tuple[tf.Tensor, tf.Tensor]:
    """(width, height) from the headers, without decoding."""

    def sized(headers):
        def width_height():
            found = headers(data)
            return found["width"], found["height"]

        return width_height

    def gif():
        return _number(data, 6, 2, True), _number(data, 8, 2, True)

    def bmp():
        height = _number(data, 22, 4, True)
        height = tf.where(height >= 2**31, 2**32 - height, height)  # negative: rows top-down
        return _number(data, 18, 4, True), height

    def unknown():
        return tf.constant(0, tf.int64), tf.constant(0, tf.int64)

    jpeg, png, webp = sized(jpeg_headers), sized(png_headers), sized(webp_headers)

    return tf.switch_case(format_code, [unknown, jpeg, png, gif, bmp, webp])


def bmp_layout(data) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
    """(bits a pixel, compression, size of the information header) of a BMP."""
    return _number(data, 28, 2, True), _number(data, 30, 4, True), _number(data, 14, 4, True)


def gif_first_frame(data) -> tf.Tensor:
    """The GIF cut after its first frame, that frame's transparent colour made opaque white (in
    its colour table and the graphic control extension before it). Pillow reads the first frame
    alone and composites its transparent pixels over white; TensorFlow's GIF decoder would decode
    every frame (a long animation is a lot of memory) and make transparent pixels black."""
    length = _int(tf.strings.length(data))
    flags = _read(data, 10, 1)[0]
    table_size = tf.where(flags >= 128, 3 * 2 ** (1 + flags % 8), 0)
    none = tf.constant(-1, tf.int64)

    def past_blocks(position):
        """Where the data sub-blocks starting at position end (after their empty block)."""
        return (
            _walk(
                lambda at: (at < length) & (_read(data, at, 1)[0] > 0),
                lambda at: [at + 1 + _read(data, at, 1)[0]],
                [position],
            )[0]
            + 1
        )

    def body(position, control, table, image_at, done):
        introducer, label = tf.unstack(_read(data, position, 2))
        extension = tf.equal(introducer, 0x21)
        image = tf.equal(introducer, 0x2C)
        control = tf.where(extension & tf.equal(label, 0xF9), position + 3, control)
        local = _read(data, position + 9, 1)[0]
        table = tf.where(image & (local >= 128), position + 10, table)
        image_at = tf.where(image, position, image_at)
        following = tf.cond(extension, lambda: past_blocks(position + 2), lambda: position + 1)
        return following, control, table, image_at, done | image | ~extension

    _, control, table, image_at, _ = _walk(
        lambda position, *rest: (position < length) & ~rest[-1],
        body,
        (
            13 + table_size,
            none,
            tf.where(table_size > 0, tf.constant(13, tf.int64), none),
            none,
            tf.constant(False),
        ),
    )
    packed = _read(data, control, 4)
    transparent = (control >= 0) & tf.equal(packed[0] % 2, 1)
    entry = table + 3 * packed[3]

    def patched():
        # the same flags, transparency cleared
        flags = tf.gather(tf.constant(_ONE_BYTE), packed[0] - 1)
        opaque = tf.strings.join(
            [_piece(data, 0, control), flags, _piece(data, control + 1, length)]
        )
        return _replace(opaque, entry, b"\xff\xff\xff")

    usable = transparent & (table >= 0) & (entry + 3 <= length)
    opaque = tf.cond(usable, patched, lambda: data)

    def cut():
        local = _read(data, image_at + 9, 1)[0]
        local_size = tf.where(local >= 128, 3 * 2 ** (1 + local % 8), 0)
        # the descriptor, its colour table, the LZW code size, then the frame's data sub-blocks
        end = past_blocks(image_at + 10 + local_size + 1)
        return tf.strings.join([_piece(opaque, 0, end), b"\x3b"])  # then the trailer

    return tf.cond(image_at >= 0, cut, lambda: opaque)


def webp_first_frame(data) -> tf.Tensor:
    """The WebP cut after its first animation frame (its RIFF size mended): Pillow reads the
    first frame alone; TensorFlow's WebP decoder would decode every frame. A still image is
    returned as it is."""
    length = _int(tf.strings.length(data))
    none = tf.constant(-1, tf.int64)

    def body(position, end):
        size = _number(data, position + 4, 4, True)
        following = position + 8 + size + size % 2
        end = tf.where(tf.equal(_piece(data, position, 4), b"ANMF"), following, end)
        return following, end

    _, end = _walk(
        lambda position, end: (position + 8 <= length) & (end < 0),
        body,
        (tf.constant(12, tf.int64), none),
    )

    def cut():
        kept = tf.minimum(end, length)
        size = [(kept - 8) // 256**index % 256 for index in range(4)]  # little-endian
        riff_size = tf.strings.reduce_join(tf.gather(tf.constant(_ONE_BYTE), tf.stack(size)))
        return tf.strings.join([b"RIFF", riff_size, _piece(data, 8, kept - 8)])

    return tf.cond(end >= 0, cut, lambda: data)


def _replace(data, position, text: bytes) -> tf.Tensor:
    """data with the bytes at position replaced by text (as many)."""
    position = _int(position)
    after = tf.strings.substr(data, position + len(text), -1)  # -1: to the end
    return tf.strings.join([_piece(data, 0, position), text, after])
