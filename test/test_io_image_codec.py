"""Tests of segtrack_ros.io.image_codec against references built with numpy and OpenCV."""

import struct
import subprocess
import sys
import time
import tracemalloc
import zlib

import cv2
from hypothesis import given, settings, strategies as st
import numpy as np
import pytest
from segtrack_ros.io.image_codec import (
    decode_compressed, decode_image, DEFAULT_MAX_PIXELS, ImageDecodeError, to_compressed_msg,
    to_image_msg)
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import Header

HEIGHT, WIDTH = 6, 8
RNG = np.random.default_rng(7)
BGR = RNG.integers(0, 256, (HEIGHT, WIDTH, 3), dtype=np.uint8)
GRAY = RNG.integers(0, 256, (HEIGHT, WIDTH), dtype=np.uint8)
# 16-bit values where >> 8 and rounding *255/65535 disagree (0xff00 -> 255, not 254).
GRAY16 = np.array([0, 0x00ff, 0x0100, 0x7fff, 0x8000, 0xff00, 0xfeff, 0xffff] * HEIGHT,
                  np.uint16).reshape(HEIGHT, WIDTH)

# OpenCV names Bayer patterns by the second row: ROS rggb is OpenCV BayerBG, and so on.
BAYER = {
    'bayer_rggb8': ('RG', 'GB', cv2.COLOR_BayerBG2BGR),
    'bayer_bggr8': ('BG', 'GR', cv2.COLOR_BayerRG2BGR),
    'bayer_gbrg8': ('GB', 'RG', cv2.COLOR_BayerGR2BGR),
    'bayer_grbg8': ('GR', 'BG', cv2.COLOR_BayerGB2BGR),
}
YUV422 = {
    'uyvy': ('UYVY', cv2.COLOR_YUV2BGR_UYVY),
    'yuv422': ('UYVY', cv2.COLOR_YUV2BGR_UYVY),
    'yuyv': ('YUYV', cv2.COLOR_YUV2BGR_YUYV),
    'yuv422_yuy2': ('YUYV', cv2.COLOR_YUV2BGR_YUYV),
}
PIXEL_BYTES = {
    'bgr8': 3, 'rgb8': 3, '8UC3': 3, 'bgra8': 4, 'rgba8': 4, 'mono8': 1, '8UC1': 1,
    'mono16': 2, '16UC1': 2, '32FC1': 4, **dict.fromkeys(BAYER, 1), **dict.fromkeys(YUV422, 2),
}


def make_image(encoding, pixels, step=None, is_bigendian=0, pad_byte=0xab):
    """
    Return an Image holding pixels (height x row bytes) with rows padded to step.

    pixels is any array whose first axis is the rows; its bytes are used as they are.
    """
    rows = np.ascontiguousarray(pixels).view(np.uint8).reshape(pixels.shape[0], -1)
    height, row_bytes = rows.shape
    step = row_bytes if step is None else step
    padded = np.full((height, step), pad_byte, np.uint8)
    padded[:, :row_bytes] = rows
    msg = Image(height=height, width=row_bytes // PIXEL_BYTES.get(encoding, 1),
                encoding=encoding, is_bigendian=is_bigendian, step=step)
    msg.data = padded.tobytes()
    return msg


def raw_message(encoding, height, width, step, size):
    """Return an Image with the given fields and size bytes of data."""
    msg = Image(height=height, width=width, encoding=encoding, step=step)
    msg.data = bytes(size)
    return msg


def bayer_mosaic(bgr, encoding):
    """Return the single-channel Bayer mosaic of encoding sampled from a BGR image."""
    channel = {'B': 0, 'G': 1, 'R': 2}
    mosaic = np.empty(bgr.shape[:2], np.uint8)
    for row, colours in enumerate(BAYER[encoding][:2]):
        for col, colour in enumerate(colours):
            mosaic[row::2, col::2] = bgr[row::2, col::2, channel[colour]]
    return mosaic


def yuv422_bytes(bgr, order):
    """
    Return the packed 4:2:2 pixels (H x W x 2) of a BGR image, chroma averaged per pair.

    Uses BT.601 limited range (Y in 16..235), the YUV of cameras and of OpenCV's 4:2:2 decoding.
    """
    b, g, r = np.moveaxis(bgr.astype(np.float64), -1, 0)
    y = 16 + 0.257 * r + 0.504 * g + 0.098 * b
    u = 128 - 0.148 * r - 0.291 * g + 0.439 * b
    v = 128 + 0.439 * r - 0.368 * g - 0.071 * b
    height, width = y.shape
    pairs = np.stack([y, u, v], axis=-1).reshape(height, width // 2, 2, 3)
    planes = {'Y0': pairs[:, :, 0, 0], 'Y1': pairs[:, :, 1, 0],
              'U': pairs[..., 1].mean(axis=2), 'V': pairs[..., 2].mean(axis=2)}
    names = {'UYVY': ('U', 'Y0', 'V', 'Y1'), 'YUYV': ('Y0', 'U', 'Y1', 'V')}[order]
    packed = np.rint(np.stack([planes[name] for name in names], axis=-1))
    return packed.astype(np.uint8).reshape(height, width, 2)


def encode(ext, image):
    """Return the bytes of image encoded by OpenCV as ext ('.png', '.jpg')."""
    ok, data = cv2.imencode(ext, image)
    assert ok
    return data.tobytes()


def compressed(fmt, data):
    """Return a CompressedImage of the given format and data."""
    msg = CompressedImage(format=fmt)
    msg.data = data
    return msg


def smooth_bgr(height=48, width=64):
    """Return a smooth colour gradient, which JPEG keeps within a few levels."""
    rows, cols = np.mgrid[0:height, 0:width]
    return np.dstack([cols * 255 // width, rows * 255 // height,
                      (rows + cols) * 255 // (height + width)]).astype(np.uint8)


def assert_bgr(image, height, width):
    assert isinstance(image, np.ndarray)
    assert image.shape == (height, width, 3)
    assert image.dtype == np.uint8
    assert image.flags.c_contiguous


# ---- decode_image: each encoding against an independent reference ----

@pytest.mark.parametrize('encoding, pixels, expected', [
    ('bgr8', BGR, BGR),
    ('8UC3', BGR, BGR),
    ('rgb8', BGR[..., ::-1], BGR),
    ('bgra8', np.dstack([BGR, GRAY]), BGR),
    ('rgba8', np.dstack([BGR[..., ::-1], GRAY]), BGR),
    ('mono8', GRAY, np.dstack([GRAY] * 3)),
    ('8UC1', GRAY, np.dstack([GRAY] * 3)),
])
def test_8bit_encodings_decode_exactly(encoding, pixels, expected):
    decoded = decode_image(make_image(encoding, pixels))
    assert_bgr(decoded, HEIGHT, WIDTH)
    np.testing.assert_array_equal(decoded, expected)


@pytest.mark.parametrize('encoding', ['mono16', '16UC1'])
@pytest.mark.parametrize('dtype, is_bigendian', [('<u2', 0), ('>u2', 1)])
def test_16bit_encodings_scale_by_shift(encoding, dtype, is_bigendian):
    msg = make_image(encoding, GRAY16.astype(dtype), is_bigendian=is_bigendian)
    decoded = decode_image(msg)
    assert_bgr(decoded, HEIGHT, WIDTH)
    np.testing.assert_array_equal(decoded, np.dstack([GRAY16 >> 8] * 3).astype(np.uint8))
    assert decoded[0, 5, 0] == 255  # 0xff00


def test_16bit_byte_order_matters():
    big = decode_image(make_image('mono16', GRAY16.astype('>u2'), is_bigendian=1))
    misread = decode_image(make_image('mono16', GRAY16.astype('>u2'), is_bigendian=0))
    assert not np.array_equal(big, misread)


@pytest.mark.parametrize('encoding', sorted(YUV422))
def test_yuv422_matches_opencv_and_original(encoding):
    order, code = YUV422[encoding]
    # Equal colours in each horizontal pair, so 4:2:2 loses nothing but rounding.
    bgr = np.repeat(BGR[:, ::2], 2, axis=1)
    packed = yuv422_bytes(bgr, order)
    decoded = decode_image(make_image(encoding, packed))
    assert_bgr(decoded, HEIGHT, WIDTH)
    np.testing.assert_array_equal(decoded, cv2.cvtColor(packed, code))
    assert np.abs(decoded.astype(int) - bgr).max() <= 2


@pytest.mark.parametrize('encoding', sorted(BAYER))
def test_bayer_matches_opencv(encoding):
    mosaic = bayer_mosaic(BGR, encoding)
    decoded = decode_image(make_image(encoding, mosaic))
    assert_bgr(decoded, HEIGHT, WIDTH)
    np.testing.assert_array_equal(decoded, cv2.cvtColor(mosaic, BAYER[encoding][2]))


@pytest.mark.parametrize('encoding', sorted(BAYER))
def test_bayer_pattern_gives_the_right_colour(encoding):
    bgr = np.full((HEIGHT, WIDTH, 3), (30, 120, 220), np.uint8)
    decoded = decode_image(make_image(encoding, bayer_mosaic(bgr, encoding)))
    np.testing.assert_array_equal(decoded[1:-1, 1:-1], bgr[1:-1, 1:-1])


@pytest.mark.filterwarnings('error')
@pytest.mark.parametrize('dtype, is_bigendian', [('<f4', 0), ('>f4', 1)])
def test_32fc1_scales_finite_range_and_zeroes_non_finite(dtype, is_bigendian):
    depth = np.array([[-1.0, 0.0, 1.0, 0.5], [np.nan, np.inf, -np.inf, -0.5]], dtype)
    decoded = decode_image(make_image('32FC1', depth, is_bigendian=is_bigendian))
    assert_bgr(decoded, 2, 4)
    expected = np.array([[0, 128, 255, 191], [0, 0, 0, 64]], np.uint8)
    np.testing.assert_array_equal(decoded, np.dstack([expected] * 3))


@pytest.mark.filterwarnings('error')
@pytest.mark.parametrize('values, expected', [
    ([np.nan, np.inf, -np.inf, np.nan], [0, 0, 0, 0]),
    ([2.5, 2.5, np.nan, 2.5], [0, 0, 0, 0]),
    ([-3e38, 3e38, 0.0, np.inf], [0, 255, 128, 0]),
])
def test_32fc1_edge_values_decode(values, expected):
    decoded = decode_image(make_image('32FC1', np.array([values], '<f4')))
    np.testing.assert_array_equal(decoded[0, :, 1], expected)


# ---- row padding ----

def _unpadded_pixels():
    """Return (encoding, pixels) for every supported encoding."""
    packed = yuv422_bytes(BGR, 'UYVY')
    cases = {'bgr8': BGR, '8UC3': BGR, 'rgb8': BGR, 'bgra8': np.dstack([BGR, GRAY]),
             'rgba8': np.dstack([BGR, GRAY]), 'mono8': GRAY, '8UC1': GRAY,
             'mono16': GRAY16, '16UC1': GRAY16,
             '32FC1': GRAY16.astype('<f4'),
             **{name: packed for name in YUV422},
             **{name: bayer_mosaic(BGR, name) for name in BAYER}}
    return sorted(cases.items())


def test_every_encoding_has_a_padding_case():
    assert {name for name, _ in _unpadded_pixels()} == set(PIXEL_BYTES)


@pytest.mark.parametrize('encoding, pixels', _unpadded_pixels())
@pytest.mark.parametrize('padding', [1, 3, 16])
def test_row_padding_is_skipped(encoding, pixels, padding):
    plain = make_image(encoding, pixels)
    padded = make_image(encoding, pixels, step=plain.step + padding, pad_byte=0xff)
    assert len(padded.data) == HEIGHT * (plain.step + padding)
    np.testing.assert_array_equal(decode_image(padded), decode_image(plain))


def test_padded_bgr8_keeps_pixels():
    np.testing.assert_array_equal(decode_image(make_image('bgr8', BGR, step=WIDTH * 3 + 5)), BGR)


# ---- to_image_msg and round trips ----

def test_bgr8_round_trip():
    header = Header(frame_id='camera')
    header.stamp.sec = 12
    msg = to_image_msg(BGR, 'bgr8', header)
    assert (msg.height, msg.width, msg.encoding, msg.step, msg.is_bigendian) == (
        HEIGHT, WIDTH, 'bgr8', WIDTH * 3, 0)
    assert msg.header == header and msg.header.frame_id == 'camera'
    assert bytes(msg.data) == BGR.tobytes()
    np.testing.assert_array_equal(decode_image(msg), BGR)


def test_non_contiguous_array_round_trip():
    view = np.ascontiguousarray(np.dstack([BGR, BGR]))[:, ::2, :3]
    np.testing.assert_array_equal(decode_image(to_image_msg(view, 'bgr8', Header())), view)


def test_mono16_round_trip():
    msg = to_image_msg(GRAY16, 'mono16', Header())
    assert (msg.encoding, msg.step, msg.is_bigendian) == ('mono16', WIDTH * 2, 0)
    raw = np.frombuffer(bytes(msg.data), '<u2').reshape(HEIGHT, WIDTH)
    np.testing.assert_array_equal(raw, GRAY16)
    np.testing.assert_array_equal(decode_image(msg)[..., 2], GRAY16 >> 8)


def test_mono8_round_trip():
    msg = to_image_msg(GRAY, 'mono8', Header())
    assert (msg.encoding, msg.step) == ('mono8', WIDTH)
    np.testing.assert_array_equal(decode_image(msg), np.dstack([GRAY] * 3))


def test_message_can_be_serialized():
    from rclpy.serialization import deserialize_message, serialize_message
    msg = to_image_msg(BGR, 'bgr8', Header(frame_id='camera'))
    back = deserialize_message(serialize_message(msg), Image)
    assert back == msg
    np.testing.assert_array_equal(decode_image(back), BGR)


@pytest.mark.parametrize('array, encoding', [
    (BGR, 'rgb8'),
    (BGR, 'mono8'),
    (GRAY, 'bgr8'),
    (GRAY16, 'mono8'),
    (GRAY, 'mono16'),
    (BGR[..., :2], 'bgr8'),
    (GRAY[0], 'mono8'),
])
def test_to_image_msg_refuses_mismatched_arrays(array, encoding):
    with pytest.raises(ValueError, match=encoding):
        to_image_msg(array, encoding, Header())


# ---- bad Image messages ----

@pytest.mark.parametrize('msg, match', [
    (raw_message('bgr9', 2, 3, 9, 18), "unsupported encoding 'bgr9'"),
    (raw_message('', 2, 3, 9, 18), "unsupported encoding ''"),
    (raw_message('BGR8', 2, 3, 9, 18), "unsupported encoding 'BGR8'"),
    (raw_message('bgr8', 2, 0, 0, 0), 'empty image: width 0, height 2'),
    (raw_message('bgr8', 0, 3, 9, 0), 'empty image: width 3, height 0'),
    (raw_message('bgr8', 2, 3, 9, 17), r'data has 17 bytes, expected height\*step = 18'),
    (raw_message('bgr8', 2, 3, 9, 19), r'data has 19 bytes, expected height\*step = 18'),
    (raw_message('bgr8', 2, 3, 9, 0), r'data has 0 bytes, expected height\*step = 18'),
    (raw_message('bgr8', 2, 3, 8, 16), r'step 8 is less than width\*bytes per pixel = 3\*3'),
    (raw_message('mono16', 2, 3, 5, 10), r'step 5 is less than width\*bytes per pixel = 3\*2'),
    (raw_message('uyvy', 2, 3, 6, 12), 'uyvy needs an even width, got width 3'),
])
def test_bad_image_raises_helpful_error(msg, match):
    with pytest.raises(ImageDecodeError, match=match):
        decode_image(msg)


def test_unsupported_encoding_error_lists_the_supported_ones():
    with pytest.raises(ImageDecodeError) as error:
        decode_image(raw_message('nv12', 2, 2, 2, 6))
    assert set(str(error.value).split('supported: ')[1].split(', ')) == set(PIXEL_BYTES)


def test_decode_error_is_a_value_error():
    assert issubclass(ImageDecodeError, ValueError)


def test_huge_declared_size_fails_fast_without_allocating():
    msg = raw_message('bgr8', 2**30, 2**30, 3 * 2**30, 100)
    tracemalloc.start()
    start = time.perf_counter()
    with pytest.raises(ImageDecodeError, match='data has 100 bytes'):
        decode_image(msg, max_pixels=2**60)
    elapsed = time.perf_counter() - start
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert elapsed < 0.1
    assert peak < 1_000_000


# ---- decode_compressed ----

@pytest.mark.parametrize('fmt', [
    'png', 'PNG', 'bgr8; png compressed bgr8', 'rgb8; compressed bgr8'])
def test_png_decodes_exactly(fmt):
    decoded = decode_compressed(compressed(fmt, encode('.png', BGR)))
    assert_bgr(decoded, HEIGHT, WIDTH)
    np.testing.assert_array_equal(decoded, BGR)


def test_grayscale_png_becomes_bgr():
    decoded = decode_compressed(compressed('png', encode('.png', GRAY)))
    np.testing.assert_array_equal(decoded, np.dstack([GRAY] * 3))


def test_16bit_png_becomes_8bit_bgr():
    decoded = decode_compressed(compressed('png', encode('.png', GRAY16)))
    assert_bgr(decoded, HEIGHT, WIDTH)
    np.testing.assert_array_equal(decoded[..., 0], GRAY16 >> 8)


@pytest.mark.parametrize('fmt', ['jpeg', 'JPEG', 'jpg', 'bgr8; jpeg compressed bgr8'])
def test_jpeg_decodes_close_to_original(fmt):
    bgr = smooth_bgr()
    decoded = decode_compressed(compressed(fmt, encode('.jpg', bgr)))
    assert_bgr(decoded, *bgr.shape[:2])
    assert np.abs(decoded.astype(int) - bgr).mean() < 2


@pytest.mark.parametrize('quality', [50, 95])
def test_to_compressed_msg_round_trip(quality):
    bgr = smooth_bgr()
    header = Header(frame_id='camera')
    msg = to_compressed_msg(bgr, header, quality=quality)
    assert msg.format == 'jpeg'
    assert msg.header == header
    assert bytes(msg.data[:2]) == b'\xff\xd8'
    decoded = decode_compressed(msg)
    assert_bgr(decoded, *bgr.shape[:2])
    assert np.abs(decoded.astype(int) - bgr).mean() < 3


def test_to_compressed_msg_quality_changes_size():
    noisy = np.random.default_rng(3).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    low = to_compressed_msg(noisy, Header(), quality=20)
    high = to_compressed_msg(noisy, Header(), quality=95)
    assert len(low.data) < len(high.data)


PNG_SIGNATURE = b'\x89PNG\r\n\x1a\n'


def png_chunk(kind, payload):
    """Return a PNG chunk: length, type, payload and CRC."""
    return (struct.pack('>I', len(payload)) + kind + payload
            + struct.pack('>I', zlib.crc32(kind + payload)))


def _png_header_only(width, height):
    """Return a PNG whose IHDR declares width x height with almost no image data."""
    ihdr = struct.pack('>IIBBBBB', width, height, 8, 2, 0, 0, 0)
    return (PNG_SIGNATURE + png_chunk(b'IHDR', ihdr)
            + png_chunk(b'IDAT', zlib.compress(bytes(10))) + png_chunk(b'IEND', b''))


JPEG = encode('.jpg', smooth_bgr())
PNG = encode('.png', smooth_bgr())


@pytest.mark.parametrize('msg, match', [
    (compressed('jpeg', b''), "compressed image \\('jpeg'\\) has no data"),
    (compressed('png', b'not an image at all'), 'cannot decode 19 bytes'),
    (compressed('jpeg', PNG[:8] + JPEG[8:]), 'cannot decode'),
    (compressed('jpeg', JPEG[:len(JPEG) // 2]), 'corrupt or truncated'),
    (compressed('jpeg', JPEG[:-2]), 'corrupt or truncated'),
    (compressed('png', PNG[:len(PNG) // 2]), 'corrupt or truncated'),
    (compressed('png', _png_header_only(30000, 30000)), 'declares 30000x30000'),
    (compressed('png', encode('.bmp', BGR)), "'png' data: neither PNG nor JPEG"),
    (compressed('tiff', PNG), "unsupported compressed format 'tiff'"),
    (compressed('', PNG), "unsupported compressed format ''"),
    (compressed('16UC1; compressedDepth png', PNG), 'unsupported compressed format'),
])
def test_bad_compressed_raises_helpful_error(msg, match):
    with pytest.raises(ImageDecodeError, match=match):
        decode_compressed(msg)


def test_opencv_refusal_is_a_decode_error():
    # OpenCV refuses more than 2**30 pixels itself; reached only with a higher limit here.
    with pytest.raises(ImageDecodeError, match="cannot decode 'png' data"):
        decode_compressed(compressed('png', _png_header_only(60000, 60000)), max_pixels=2**40)


# ---- bounded inputs: sizes are read from the fields or the header, before decoding ----

LIMIT_MESSAGE = ('declares 20000x20000 = 400000000 pixels, more than the limit of 33177600; '
                 'raise the max_input_pixels parameter to accept it')


def test_default_limit_is_8k_uhd():
    assert DEFAULT_MAX_PIXELS == 7680 * 4320 == 33177600


def gray_png(width, height):
    """Return a valid, fully decodable all-black 8-bit grayscale PNG, compressed row by row."""
    compressor = zlib.compressobj(1)
    row = bytes(width + 1)  # filter type 0, then black pixels
    idat = [compressor.compress(row * 500) for _ in range(height // 500)]
    idat += [compressor.compress(row * (height % 500)), compressor.flush()]
    ihdr = struct.pack('>IIBBBBB', width, height, 8, 0, 0, 0, 0)
    return (PNG_SIGNATURE + png_chunk(b'IHDR', ihdr) + png_chunk(b'IDAT', b''.join(idat))
            + png_chunk(b'IEND', b''))


def test_gray_png_is_a_real_png():
    decoded = decode_compressed(compressed('png', gray_png(30, 1001)))
    np.testing.assert_array_equal(decoded, np.zeros((1001, 30, 3), np.uint8))


# Decodes the PNG on stdin in a fresh process; prints the error on stderr, and on stdout the
# growth of the peak RSS in MiB and the time taken in seconds.
_DECODE_IN_CHILD = """
import resource, sys, time
from sensor_msgs.msg import CompressedImage
from segtrack_ros.io.image_codec import decode_compressed, ImageDecodeError
msg = CompressedImage(format='png')
msg.data = sys.stdin.buffer.read()
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
start = time.perf_counter()
try:
    decode_compressed(msg)
except ImageDecodeError as error:
    print(error, file=sys.stderr)
elapsed = time.perf_counter() - start
print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024, elapsed)
"""


def test_real_20000_square_png_is_refused_without_decoding():
    # cv2.imdecode of this PNG took 9 s and 2.3 GB more peak RSS here.
    run = subprocess.run([sys.executable, '-c', _DECODE_IN_CHILD], input=gray_png(20000, 20000),
                         capture_output=True, check=True)
    assert run.stderr.decode().strip() == 'PNG header ' + LIMIT_MESSAGE
    rss_growth_mib, seconds = map(float, run.stdout.split())
    assert rss_growth_mib < 50
    assert seconds < 0.1


def test_png_declaring_20000_square_is_refused():
    with pytest.raises(ImageDecodeError, match='PNG header ' + LIMIT_MESSAGE):
        decode_compressed(compressed('png', _png_header_only(20000, 20000)))


def jpeg_declaring(width, height, jpeg=None):
    """Return a baseline JPEG from OpenCV with its frame header changed to width x height."""
    jpeg = JPEG if jpeg is None else jpeg
    sof = jpeg.index(b'\xff\xc0')
    return jpeg[:sof + 5] + struct.pack('>HH', height, width) + jpeg[sof + 9:]


def app1(payload):
    """Return a JPEG APP1 segment (the one EXIF uses) holding payload."""
    return b'\xff\xe1' + struct.pack('>H', len(payload) + 2) + payload


def test_jpeg_declaring_a_huge_size_is_refused():
    with pytest.raises(ImageDecodeError, match='JPEG header ' + LIMIT_MESSAGE):
        decode_compressed(compressed('jpeg', jpeg_declaring(20000, 20000)))
    with pytest.raises(ImageDecodeError, match='declares 65535x65535 = 4294836225 pixels'):
        decode_compressed(compressed('jpeg', jpeg_declaring(65535, 65535)))


def test_jpeg_size_is_the_frame_not_an_embedded_thumbnail():
    # An EXIF thumbnail is a whole JPEG inside APP1: its frame header is not the image's.
    thumbnail = app1(b'Exif\0\0' + encode('.jpg', smooth_bgr(8, 8)))
    huge = jpeg_declaring(20000, 20000)
    with pytest.raises(ImageDecodeError, match='JPEG header ' + LIMIT_MESSAGE):
        decode_compressed(compressed('jpeg', huge[:2] + thumbnail + huge[2:]))
    huge_thumbnail = app1(b'Exif\0\0' + jpeg_declaring(20000, 20000))
    assert_bgr(decode_compressed(compressed('jpeg', JPEG[:2] + huge_thumbnail + JPEG[2:])), 48, 64)


def test_jpeg_header_is_walked_as_libjpeg_walks_it():
    # Stray bytes between segments (libjpeg warns and skips them), a stuffed 0xff 0x00, a restart
    # marker without a length and fill bytes before a marker: the frame is still found.
    sof = JPEG.index(b'\xff\xc0')
    odd = JPEG[:sof] + b'\x12\x34\xff\x00\xff\xd3\xff\xff' + JPEG[sof:]
    assert_bgr(decode_compressed(compressed('jpeg', odd)), 48, 64)
    with pytest.raises(ImageDecodeError, match='JPEG header ' + LIMIT_MESSAGE):
        decode_compressed(compressed('jpeg', jpeg_declaring(20000, 20000, odd)))


@pytest.mark.parametrize('width, height', [(20000, 20000), (2**32 - 1, 2**32 - 1), (1, 33177601)])
def test_raw_image_declaring_a_huge_size_is_refused_by_its_fields(width, height):
    msg = raw_message('bgr8', height, width, 3 * width, 0)  # no data: it is never looked at
    start = time.perf_counter()
    with pytest.raises(ImageDecodeError, match=(
            f'^raw image declares {width}x{height} = {width * height} pixels, more than the '
            'limit of 33177600; raise the max_input_pixels parameter to accept it$')):
        decode_image(msg)
    assert time.perf_counter() - start < 0.01


def test_raw_image_at_the_limit_is_decoded_and_one_more_pixel_refused():
    pixels = RNG.integers(0, 256, (7, 9, 3), dtype=np.uint8)
    msg = make_image('bgr8', pixels)
    np.testing.assert_array_equal(decode_image(msg, max_pixels=63), pixels)
    with pytest.raises(ImageDecodeError, match='9x7 = 63 pixels, more than the limit of 62;'):
        decode_image(msg, max_pixels=62)


@pytest.mark.parametrize('ext', ['.png', '.jpg'])
def test_compressed_image_at_the_limit_is_decoded_and_one_more_pixel_refused(ext):
    msg = compressed(ext[1:], encode(ext, smooth_bgr(48, 64)))
    assert_bgr(decode_compressed(msg, max_pixels=48 * 64), 48, 64)
    with pytest.raises(ImageDecodeError, match='64x48 = 3072 pixels, more than the limit of 30'):
        decode_compressed(msg, max_pixels=3071)


@pytest.mark.parametrize('width, height', [(7680, 4320), (4320, 7680)])
def test_default_limit_lets_8k_headers_through_to_the_decoder(width, height):
    # The PNG header passes; then libpng finds no image data behind it.
    with pytest.raises(ImageDecodeError, match='corrupt or truncated$'):
        decode_compressed(compressed('png', _png_header_only(width, height)))
    # libjpeg fills the missing rest of a JPEG in grey: a few KB become the whole frame.
    assert_bgr(decode_compressed(compressed('jpeg', jpeg_declaring(width, height))), height, width)


@pytest.mark.parametrize('data, problem', [
    (PNG_SIGNATURE, 'PNG without an IHDR chunk'),
    (PNG[:20], 'PNG without an IHDR chunk'),
    (PNG_SIGNATURE + png_chunk(b'IEND', b''), 'PNG without an IHDR chunk'),
    (_png_header_only(0, 5), 'PNG IHDR declares 0x5'),
    (b'\xff\xd8', 'JPEG without a frame header'),
    (JPEG[:JPEG.index(b'\xff\xc0')], 'JPEG without a frame header'),
    (JPEG[:JPEG.index(b'\xff\xc0') + 6], r'JPEG frame header \(SOF0\) cut short'),
    (b'\xff\xd8\xff\xda\0\x08', 'JPEG SOS marker before the frame header'),
    (b'\xff\xd8\xff\xd9', 'JPEG EOI marker before the frame header'),
    (b'\xff\xd8\xff\xe0\0\x01' + JPEG[2:], 'JPEG segment of marker 0xe0 cut short'),
    (b'\xff\xd8\xff\xe0\0', 'JPEG segment of marker 0xe0 cut short'),
    (b'\xff\xd8\xff\xe0\xff\xff' + JPEG[2:], 'JPEG without a frame header'),
    (jpeg_declaring(0, 480), 'JPEG frame header declares 0x480'),
])
def test_corrupt_header_is_a_clean_decode_error(data, problem):
    with pytest.raises(ImageDecodeError, match=(
            rf"^cannot decode {len(data)} bytes of 'jpeg' data: corrupt or truncated header "
            rf'\({problem}')):
        decode_compressed(compressed('jpeg', data))


# ---- properties: a BGR array of the declared size, or ImageDecodeError ----

ENCODINGS = sorted(PIXEL_BYTES)
JUNK_ENCODINGS = ['', 'bgr', 'BGR8', 'bgr16', 'nv12', '32FC3', '16SC1', 'bayer_rggb16', 'mono 8']
UINT32 = 2**32 - 1


@st.composite
def consistent_images(draw):
    """Draw Images whose data length matches height*step: they exercise the decoders."""
    encoding = draw(st.sampled_from(ENCODINGS))
    width = draw(st.integers(1, 9))
    height = draw(st.integers(1, 9))
    step = width * PIXEL_BYTES[encoding] + draw(st.integers(0, 7))
    msg = Image(height=height, width=width, encoding=encoding, step=step,
                is_bigendian=draw(st.integers(0, 1)))
    msg.data = draw(st.binary(min_size=height * step, max_size=height * step))
    return msg


@st.composite
def arbitrary_images(draw):
    """Draw Images with any field values, small or huge, and up to 4 KB of data."""
    size = st.one_of(st.integers(0, 64), st.integers(0, UINT32))
    encoding = st.one_of(st.sampled_from(ENCODINGS + JUNK_ENCODINGS), st.text(max_size=12))
    msg = Image(height=draw(size), width=draw(size), step=draw(size), encoding=draw(encoding),
                is_bigendian=draw(st.integers(0, 1)))
    msg.data = draw(st.binary(max_size=4096))
    return msg


@settings(max_examples=300, deadline=None)
@given(st.one_of(consistent_images(), arbitrary_images()),
       st.one_of(st.just(DEFAULT_MAX_PIXELS), st.integers(1, 100)))
def test_decode_image_returns_bgr_or_raises_decode_error(msg, max_pixels):
    try:
        decoded = decode_image(msg, max_pixels)
    except ImageDecodeError:
        return
    assert_bgr(decoded, msg.height, msg.width)
    assert msg.height * msg.width <= max_pixels


COMPRESSED_FORMATS = ['jpeg', 'jpg', 'png', 'JPEG', 'bgr8; jpeg compressed bgr8',
                      'rgb8; compressed bgr8', 'tiff', '', '16UC1; compressedDepth png']


@st.composite
def damaged_codec_bytes(draw):
    """Draw valid JPEG or PNG bytes, then truncate them and overwrite a few bytes."""
    data = bytearray(draw(st.sampled_from([JPEG, PNG, encode('.png', GRAY)])))
    del data[draw(st.integers(0, len(data))):]
    for _ in range(draw(st.integers(0, 4))):
        if data:
            data[draw(st.integers(0, len(data) - 1))] = draw(st.integers(0, 255))
    return bytes(data)


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.sampled_from(COMPRESSED_FORMATS), st.text(max_size=30)),
       st.one_of(st.binary(max_size=4096), damaged_codec_bytes()))
def test_decode_compressed_returns_bgr_or_raises_decode_error(fmt, data):
    try:
        decoded = decode_compressed(compressed(fmt, data))
    except ImageDecodeError:
        return
    assert decoded.ndim == 3 and decoded.shape[2] == 3
    assert decoded.dtype == np.uint8


@st.composite
def resized_codec_bytes(draw):
    """Draw a JPEG or PNG whose header declares another size than its data has, and that size."""
    width, height = draw(st.integers(1, 120)), draw(st.integers(1, 120))
    if draw(st.booleans()):
        return jpeg_declaring(width, height), (height, width)
    ihdr = struct.pack('>IIBBBBB', width, height, 8, 2, 0, 0, 0)
    assert PNG[12:16] == b'IHDR' and PNG[8:12] == struct.pack('>I', 13)
    return PNG[:8] + png_chunk(b'IHDR', ihdr) + PNG[33:], (height, width)


@settings(max_examples=200, deadline=None)
@given(resized_codec_bytes(), st.integers(1, 20000))
def test_header_size_is_the_decoded_size_and_within_the_limit(resized, max_pixels):
    # The size read from the header is the one the decoder makes: what passes the check is
    # exactly what gets allocated.
    data, shape = resized
    try:
        decoded = decode_compressed(compressed('jpeg', data), max_pixels)
    except ImageDecodeError as error:
        assert shape[0] * shape[1] > max_pixels or 'corrupt or truncated' in str(error)
        return
    assert decoded.shape[:2] == shape
    assert shape[0] * shape[1] <= max_pixels


def test_module_does_not_import_rclpy():
    code = 'import sys, segtrack_ros.io.image_codec; assert "rclpy" not in sys.modules'
    subprocess.run([sys.executable, '-c', code], check=True)
