"""Tests of segtrack_ros.image_codec against references built with numpy and OpenCV."""

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
from segtrack_ros.image_codec import (
    decode_compressed, decode_image, ImageDecodeError, to_compressed_msg, to_image_msg)
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
        decode_image(msg)
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


def _png_header_only(width, height):
    """Return a PNG whose IHDR declares width x height with almost no image data."""
    def chunk(kind, payload):
        return (struct.pack('>I', len(payload)) + kind + payload
                + struct.pack('>I', zlib.crc32(kind + payload)))
    ihdr = struct.pack('>IIBBBBB', width, height, 8, 2, 0, 0, 0)
    return (b'\x89PNG\r\n\x1a\n' + chunk(b'IHDR', ihdr)
            + chunk(b'IDAT', zlib.compress(bytes(10))) + chunk(b'IEND', b''))


JPEG = encode('.jpg', smooth_bgr())
PNG = encode('.png', smooth_bgr())


@pytest.mark.parametrize('msg, match', [
    (compressed('jpeg', b''), "compressed image \\('jpeg'\\) has no data"),
    (compressed('png', b'not an image at all'), 'cannot decode 19 bytes'),
    (compressed('jpeg', PNG[:8] + JPEG[8:]), 'cannot decode'),
    (compressed('jpeg', JPEG[:len(JPEG) // 2]), 'corrupt or truncated'),
    (compressed('jpeg', JPEG[:-2]), 'corrupt or truncated'),
    (compressed('png', PNG[:len(PNG) // 2]), 'corrupt or truncated'),
    (compressed('png', _png_header_only(60000, 60000)), "cannot decode 'png' data"),
    (compressed('png', _png_header_only(30000, 30000)), 'corrupt or truncated'),
    (compressed('tiff', PNG), "unsupported compressed format 'tiff'"),
    (compressed('', PNG), "unsupported compressed format ''"),
    (compressed('16UC1; compressedDepth png', PNG), 'unsupported compressed format'),
])
def test_bad_compressed_raises_helpful_error(msg, match):
    with pytest.raises(ImageDecodeError, match=match):
        decode_compressed(msg)


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
@given(st.one_of(consistent_images(), arbitrary_images()))
def test_decode_image_returns_bgr_or_raises_decode_error(msg):
    try:
        decoded = decode_image(msg)
    except ImageDecodeError:
        return
    assert_bgr(decoded, msg.height, msg.width)


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


def test_module_does_not_import_rclpy():
    code = 'import sys, segtrack_ros.image_codec; assert "rclpy" not in sys.modules'
    subprocess.run([sys.executable, '-c', code], check=True)
