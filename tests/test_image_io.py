import io

import numpy as np
import pytest
from PIL import Image

from codec import image_io
from codec.errors import ImageTooLargeError, InputError


def test_rgb_array():
    a = np.zeros((5, 7, 3), np.uint8)
    s = image_io.load(a)
    assert (s.width, s.height, s.channels, s.bit_depth) == (7, 5, 3, 8)
    assert s.alpha is None


def test_gray_and_rgba_arrays():
    g = image_io.load(np.full((4, 6), 9, np.uint8))
    assert g.channels == 1 and g.rgb.shape == (4, 6, 3) and (g.rgb == 9).all()
    rgba = np.zeros((4, 6, 4), np.uint8)
    rgba[..., 3] = 77
    s = image_io.load(rgba)
    assert s.channels == 4 and (s.alpha == 77).all()


def test_uint16_array_rounds_to_8_bit():
    a = np.array([[0, 257, 65535, 128 * 257 + 100]], np.uint16)
    s = image_io.load(a)
    assert s.bit_depth == 16
    assert s.rgb[0, :, 0].tolist() == [0, 1, 255, 128]


def test_16_bit_png(tmp_path):
    a = (np.arange(64, dtype=np.uint16).reshape(8, 8) * 1000)
    p = tmp_path / "g16.png"
    Image.fromarray(a).save(p)
    s = image_io.load(p)
    assert s.channels == 1 and s.bit_depth == 16
    assert s.rgb[0, 1, 0] == round(1000 / 257)


def test_bad_arrays():
    with pytest.raises(InputError, match="dtype"):
        image_io.load(np.zeros((4, 4, 3), np.float32))
    with pytest.raises(InputError, match="shape"):
        image_io.load(np.zeros((4, 4, 2), np.uint8))
    with pytest.raises(InputError, match="empty"):
        image_io.load(np.zeros((0, 4, 3), np.uint8))


def test_exif_orientation_applied():
    img = Image.new("RGB", (20, 10), (255, 0, 0))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise on display
    buf = io.BytesIO()
    img.save(buf, format="JPEG", exif=exif)
    s = image_io.load(buf.getvalue())
    assert (s.width, s.height) == (10, 20)


def test_palette_with_transparency_keeps_alpha():
    img = Image.new("P", (8, 8), 0)
    img.putpalette([0, 0, 0, 255, 255, 255] + [0] * 762)
    img.info["transparency"] = 0
    s = image_io.load(img)
    assert s.channels == 4 and (s.alpha == 0).all()


def test_unreadable_inputs(tmp_path):
    with pytest.raises(InputError, match="not found"):
        image_io.load(tmp_path / "missing.png")
    junk = tmp_path / "junk.png"
    junk.write_bytes(b"not an image")
    with pytest.raises(InputError, match="cannot read image"):
        image_io.load(junk)
    with pytest.raises(InputError):
        image_io.load(12345)


def test_pixel_limit():
    with pytest.raises(ImageTooLargeError):
        image_io.load(np.zeros((100, 100, 3), np.uint8), max_pixels=5000)


def test_alpha_codec_lossless():
    a = np.random.default_rng(0).integers(0, 256, (13, 17), dtype=np.uint8)
    assert np.array_equal(image_io.decode_alpha(image_io.encode_alpha(a), 17, 13), a)


def test_equal_planes_are_gray_and_decode_to_their_mean():
    rng = np.random.default_rng(0)
    g = rng.integers(0, 256, (4, 6), dtype=np.uint8)
    assert image_io.load(np.dstack([g, g, g])).gray
    assert image_io.load(Image.fromarray(np.dstack([g, g, g, g]), "RGBA")).gray
    assert image_io.load(g).gray  # channels 1
    color = np.dstack([g, g, g])
    color[0, 0, 2] ^= 1
    assert not image_io.load(color).gray
    # Decoded planes that drifted apart come back equal, each their rounded mean.
    rgb = np.dstack([g, g, g]).astype(np.int16)
    rgb[..., 0] += 3
    rgb = np.clip(rgb, 0, 255).astype(np.uint8)
    out = np.asarray(image_io.to_pil(rgb, None, 3, gray=True))
    assert out.shape == (4, 6, 3) and (out[..., 0] == out[..., 2]).all()
    assert (out[..., 1] == np.round(rgb.astype(np.float32).mean(2))).all()
    assert np.array_equal(np.asarray(image_io.to_pil(rgb, None, 3)), rgb)
