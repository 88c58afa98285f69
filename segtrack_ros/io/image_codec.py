"""
Conversion between sensor_msgs images and numpy arrays, without rclpy.

This module owns the checks on incoming Image and CompressedImage messages (ImageDecodeError is
the one error for a bad message), their decoding to H x W x 3 uint8 BGR arrays, and the building
of outgoing Image and CompressedImage messages from arrays. Decoding is bounded: an image that
declares more than `max_pixels` pixels (in its fields, or in its JPEG or PNG header) is refused
before anything is allocated for it.

Colour conversions of 8-bit encodings go through cv_bridge when it is importable and through
rosbags.image otherwise. This module handles row padding itself (rosbags.image ignores `step`),
as well as the single-channel encodings the libraries refuse or round differently: 8UC1, 16-bit
mono16/16UC1 (scaled to 8 bits by `>> 8`) and 32FC1 (finite range scaled to 0..255, NaN and
+-inf to 0).
"""

import array
import re

import cv2
import numpy as np
from sensor_msgs.msg import CompressedImage, Image

try:
    from cv_bridge import CvBridge

    def _convert_to_bgr(msg):
        return CvBridge().imgmsg_to_cv2(msg, 'bgr8')

    _CONVERSION_ERRORS = (TypeError, cv2.error)  # CvBridgeError is a TypeError
except ImportError:  # the pip install has no cv_bridge: rosbags.image converts instead
    from rosbags.image import ImageError, message_to_cvimage

    def _convert_to_bgr(msg):
        return message_to_cvimage(msg, 'bgr8')

    _CONVERSION_ERRORS = (ImageError, TypeError, cv2.error)

_YUV422 = frozenset({'yuv422', 'uyvy', 'yuv422_yuy2', 'yuyv'})

# Single-channel encodings decoded here rather than by a library, with their element types.
_GRAY_DTYPES = {'8UC1': 'u1', 'mono16': 'u2', '16UC1': 'u2', '32FC1': 'f4'}

_PIXEL_BYTES = {
    'bgr8': 3, 'rgb8': 3, '8UC3': 3, 'bgra8': 4, 'rgba8': 4, 'mono8': 1,
    'bayer_rggb8': 1, 'bayer_bggr8': 1, 'bayer_gbrg8': 1, 'bayer_grbg8': 1,
    **dict.fromkeys(_YUV422, 2),
    **{encoding: np.dtype(dtype).itemsize for encoding, dtype in _GRAY_DTYPES.items()},
}

# Array element type and trailing shape that to_image_msg accepts for each encoding.
_OUTPUT_LAYOUTS = {
    'bgr8': (np.dtype(np.uint8), (3,)),
    'mono8': (np.dtype(np.uint8), ()),
    'mono16': (np.dtype(np.uint16), ()),
}

# A compressed format is accepted when it contains one of these, case-insensitively (the
# image_transport form '<encoding>; compressed <encoding>' names no codec: the bytes tell).
_COMPRESSED_FORMAT_WORDS = ('jpeg', 'jpg', 'png', '; compressed ')

# Default largest image decoded, in pixels: 8K UHD. The node's parameter max_input_pixels.
DEFAULT_MAX_PIXELS = 7680 * 4320

_PNG_SIGNATURE = b'\x89PNG\r\n\x1a\n'
# JPEG frame headers (SOF0..SOF15; 0xc4, 0xc8 and 0xcc are DHT, JPG and DAC) and the markers
# that stand alone, without a length (TEM, RST0..RST7).
_JPEG_SOF_MARKERS = frozenset(range(0xc0, 0xd0)) - {0xc4, 0xc8, 0xcc}
_JPEG_STANDALONE_MARKERS = frozenset({0x01, *range(0xd0, 0xd8)})
# SOI, EOI and SOS: libjpeg fails when one of them comes before the frame header.
_JPEG_MARKERS_BEFORE_FRAME_FAIL = {0xd8: 'SOI', 0xd9: 'EOI', 0xda: 'SOS'}
# A marker as libjpeg finds one: one or more 0xff, then the marker byte. Bytes before it are
# skipped, as libjpeg skips them (with a warning), and 0xff 0x00 is no marker.
_JPEG_MARKER = re.compile(rb'\xff+([^\xff])')


class ImageDecodeError(ValueError):
    """An image message that cannot be decoded; the message names the problem and the value."""


class _CorruptHeader(Exception):
    """A PNG or JPEG header that cannot be read; the message says what is wrong."""


def decode_image(msg, max_pixels=DEFAULT_MAX_PIXELS):
    """
    Decode a sensor_msgs/msg/Image to a contiguous H x W x 3 uint8 BGR array.

    The layout (encoding, size against max_pixels, step, data length) is checked from the
    fields before the data is read, so a message declaring a huge size fails fast. 16-bit values
    become 8-bit by `>> 8`; 32FC1 maps its finite range linearly onto 0..255 and non-finite
    values to 0. The result may share memory with msg.data (bgr8 and 8UC3 without row padding).

    Raises ImageDecodeError for any message that cannot be decoded or declares more than
    max_pixels pixels.
    """
    pixel_bytes = _checked_pixel_bytes(msg, max_pixels)
    if msg.encoding in _GRAY_DTYPES:
        return cv2.cvtColor(_gray_to_8bit(_gray_pixels(msg, pixel_bytes)), cv2.COLOR_GRAY2BGR)
    return np.ascontiguousarray(_library_bgr(_without_padding(msg, pixel_bytes)))


def decode_compressed(msg, max_pixels=DEFAULT_MAX_PIXELS):
    """
    Decode a JPEG or PNG sensor_msgs/msg/CompressedImage to an H x W x 3 uint8 BGR array.

    Accepts formats naming jpeg, jpg or png ('jpeg', 'bgr8; jpeg compressed bgr8') and the
    image_transport form without a codec name ('rgb8; compressed bgr8'); compressedDepth is
    refused. The data must be JPEG or PNG (the bytes tell which, whatever the format says).
    Its header is read first, and an image declaring more than max_pixels pixels is refused
    without being decoded. Grayscale and alpha images become BGR; EXIF orientation is ignored,
    so the array is the transmitted frame.

    Raises ImageDecodeError for an unsupported format, an image larger than max_pixels, or
    empty, corrupt or truncated data.
    """
    fmt = msg.format.lower()
    if 'compresseddepth' in fmt or not any(word in fmt for word in _COMPRESSED_FORMAT_WORDS):
        raise ImageDecodeError(
            f'unsupported compressed format {msg.format!r}; expected jpeg or png')
    if not len(msg.data):
        raise ImageDecodeError(f'compressed image ({msg.format!r}) has no data')
    codec, width, height = _declared_size(bytes(msg.data), msg.format)
    _check_pixel_count(f'{codec} header', width, height, max_pixels)
    try:
        bgr = cv2.imdecode(
            np.frombuffer(msg.data, np.uint8), cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION)
    except cv2.error as err:  # e.g. a header declaring more than 2**30 pixels
        raise ImageDecodeError(f'cannot decode {msg.format!r} data: {err}') from err
    if bgr is None:
        raise ImageDecodeError(
            f'cannot decode {len(msg.data)} bytes of {msg.format!r} data: corrupt or truncated')
    return bgr


def to_image_msg(array, encoding, header):
    """
    Build a sensor_msgs/msg/Image from an array, copying the pixels once.

    Accepts H x W x 3 uint8 with 'bgr8', H x W uint8 with 'mono8' and H x W uint16 with 'mono16'
    (written little-endian, is_bigendian = 0); rows are unpadded (step = width * bytes per
    pixel). The header is used as given. The message is built with check_fields=True: that keeps
    the data setter from copying again, and also makes later assignments to the message fields
    type-checked (slow for a bytes object assigned to data).

    Raises ValueError when the array does not match the encoding.
    """
    dtype, channels = _OUTPUT_LAYOUTS.get(encoding, (None, None))
    if dtype is None:
        raise ValueError(
            f'cannot build encoding {encoding!r}; use one of {sorted(_OUTPUT_LAYOUTS)}')
    if array.dtype != dtype or array.ndim < 2 or array.shape[2:] != channels:
        raise ValueError(
            f'{encoding} needs a {dtype} array of shape (H, W) + {channels}, '
            f'got {array.dtype} {array.shape}')
    height, width = array.shape[:2]
    msg = Image(
        header=header, height=height, width=width, encoding=encoding, is_bigendian=0,
        step=width * _PIXEL_BYTES[encoding], check_fields=True)
    msg.data = _byte_array(array.astype(dtype.newbyteorder('<'), copy=False))
    return msg


def to_compressed_msg(bgr, header, quality=90):
    """
    Build a JPEG sensor_msgs/msg/CompressedImage (format 'jpeg') from a BGR uint8 array.

    quality is the JPEG quality, 0..100. The header is used as given.
    """
    ok, jpeg = cv2.imencode('.jpg', bgr, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise ValueError(f'OpenCV could not JPEG-encode an array of shape {bgr.shape}')
    msg = CompressedImage(header=header, format='jpeg', check_fields=True)
    msg.data = _byte_array(jpeg)
    return msg


def _checked_pixel_bytes(msg, max_pixels):
    """
    Return the bytes per pixel of msg's encoding after checking its layout against its data.

    Only integers are compared, so nothing is allocated for a bogus declared size.
    """
    pixel_bytes = _PIXEL_BYTES.get(msg.encoding)
    if pixel_bytes is None:
        raise ImageDecodeError(
            f'unsupported encoding {msg.encoding!r}; supported: {", ".join(sorted(_PIXEL_BYTES))}')
    if not msg.width or not msg.height:
        raise ImageDecodeError(f'empty image: width {msg.width}, height {msg.height}')
    _check_pixel_count('raw image', msg.width, msg.height, max_pixels)
    if msg.encoding in _YUV422 and msg.width % 2:
        raise ImageDecodeError(f'{msg.encoding} needs an even width, got width {msg.width}')
    row_bytes = msg.width * pixel_bytes
    if msg.step < row_bytes:
        raise ImageDecodeError(
            f'step {msg.step} is less than width*bytes per pixel = {msg.width}*{pixel_bytes}')
    if len(msg.data) != msg.height * msg.step:
        raise ImageDecodeError(
            f'data has {len(msg.data)} bytes, expected height*step = {msg.height * msg.step}')
    return pixel_bytes


def _check_pixel_count(source, width, height, max_pixels):
    """Raise ImageDecodeError if width x height, as declared by source, exceeds max_pixels."""
    if width * height > max_pixels:
        raise ImageDecodeError(
            f'{source} declares {width}x{height} = {width * height} pixels, more than the limit '
            f'of {max_pixels}; raise the max_input_pixels parameter to accept it')


def _declared_size(data, fmt):
    """
    Return (codec, width, height) as the PNG or JPEG header of data declares them.

    Nothing is decoded. Pillow's Image.open (installed with ultralytics) also reads headers
    lazily, but it is not used: it enforces a decompression-bomb limit of its own, global to the
    process (PIL.Image.MAX_IMAGE_PIXELS, which ultralytics sets to None in places), raising
    DecompressionBombError above twice that with the size only in its message text and warning
    below -- for the very images this check must measure -- and it parses more than the size
    (EXIF, ICC profiles, MPO frames). The two headers need little: PNG's first chunk is IHDR;
    JPEG's frame header (SOFn) is found by walking the marker segments as libjpeg does, so a
    thumbnail inside an APPn segment is skipped like libjpeg skips it.

    Raises ImageDecodeError when data is neither PNG nor JPEG or its header is corrupt or
    truncated.
    """
    try:
        if data.startswith(_PNG_SIGNATURE):
            return ('PNG', *_png_size(data))
        if data.startswith(b'\xff\xd8'):
            return ('JPEG', *_jpeg_size(data))
    except _CorruptHeader as error:
        raise ImageDecodeError(
            f'cannot decode {len(data)} bytes of {fmt!r} data: corrupt or truncated header '
            f'({error})') from None
    raise ImageDecodeError(
        f'cannot decode {len(data)} bytes of {fmt!r} data: neither PNG nor JPEG '
        f'(starts with {data[:8].hex(" ")})')


def _png_size(data):
    """Return (width, height) from the IHDR chunk that follows the PNG signature."""
    ihdr = data[8:24]
    if len(ihdr) < 16 or ihdr[4:8] != b'IHDR':
        raise _CorruptHeader('PNG without an IHDR chunk after its signature')
    width, height = int.from_bytes(ihdr[8:12], 'big'), int.from_bytes(ihdr[12:16], 'big')
    if not width or not height:
        raise _CorruptHeader(f'PNG IHDR declares {width}x{height}')
    return width, height


def _jpeg_size(data):
    """Return (width, height) from the frame header (SOFn) of a JPEG whose SOI was checked."""
    position = 2
    while True:
        found = _JPEG_MARKER.search(data, position)
        if found is None:
            raise _CorruptHeader('JPEG without a frame header (SOFn marker)')
        marker, position = data[found.start(1)], found.end()
        if marker == 0 or marker in _JPEG_STANDALONE_MARKERS:
            continue
        if marker in _JPEG_MARKERS_BEFORE_FRAME_FAIL:
            raise _CorruptHeader(
                f'JPEG {_JPEG_MARKERS_BEFORE_FRAME_FAIL[marker]} marker before the frame header')
        segment = data[position:position + 7]
        length = int.from_bytes(segment[:2], 'big')
        if marker in _JPEG_SOF_MARKERS:
            if len(segment) < 7 or length < 8:
                raise _CorruptHeader(f'JPEG frame header (SOF{marker - 0xc0}) cut short')
            height, width = int.from_bytes(segment[3:5], 'big'), int.from_bytes(segment[5:], 'big')
            if not width or not height:
                raise _CorruptHeader(f'JPEG frame header declares {width}x{height}')
            return width, height
        if len(segment) < 2 or length < 2:
            raise _CorruptHeader(f'JPEG segment of marker 0x{marker:02x} cut short')
        position += length


def _rows(msg, row_bytes):
    """Return the image bytes of msg as a height x row_bytes uint8 view, row padding dropped."""
    return np.frombuffer(msg.data, np.uint8).reshape(msg.height, msg.step)[:, :row_bytes]


def _gray_pixels(msg, pixel_bytes):
    """Return the H x W view of a single-channel msg in its element type and byte order."""
    dtype = np.dtype(_GRAY_DTYPES[msg.encoding]).newbyteorder('>' if msg.is_bigendian else '<')
    return _rows(msg, msg.width * pixel_bytes).view(dtype)


def _gray_to_8bit(gray):
    """Scale a single-channel array to uint8: 16-bit by >> 8, float by its finite range."""
    if gray.dtype.kind == 'f':
        return _float_to_8bit(gray)
    if gray.dtype.itemsize == 2:
        return (gray >> 8).astype(np.uint8)
    return gray


def _float_to_8bit(gray):
    """Map the finite values of a float array linearly onto 0..255 and the others to 0."""
    values = gray.astype(np.float64)
    finite = np.isfinite(values)
    if not finite.any():
        return np.zeros(values.shape, np.uint8)
    low = values[finite].min()
    span = values[finite].max() - low
    scale = 255.0 / span if span > 0 else 0.0
    return np.rint((np.where(finite, values, low) - low) * scale).astype(np.uint8)


def _without_padding(msg, pixel_bytes):
    """Return msg, or an unpadded copy of its pixels in a new Image (rosbags ignores step)."""
    row_bytes = msg.width * pixel_bytes
    if msg.step == row_bytes:
        return msg
    unpadded = Image(
        height=msg.height, width=msg.width, encoding=msg.encoding,
        is_bigendian=msg.is_bigendian, step=row_bytes, check_fields=True)
    unpadded.data = _byte_array(_rows(msg, row_bytes))
    return unpadded


def _library_bgr(msg):
    """Convert an unpadded 8-bit msg to BGR with cv_bridge if importable, else rosbags.image."""
    try:
        return _convert_to_bgr(msg)
    except _CONVERSION_ERRORS as err:
        raise ImageDecodeError(f'cannot convert {msg.encoding!r} to bgr8: {err}') from err


def _byte_array(pixels):
    """Return the bytes of a numpy array in an array.array('B'), copied once."""
    data = array.array('B')
    data.frombytes(np.ascontiguousarray(pixels).view(np.uint8))
    return data
