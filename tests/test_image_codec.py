import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

import codec
from codec import container, image_codec
from codec.container import Section
from conftest import ROOT, png_bytes, psnr


@pytest.mark.parametrize("size", [(1, 1), (2, 3), (67, 45), (64, 64), (65, 129), (200, 17)])
def test_round_trip_any_size(photo, size):
    img = photo.crop((0, 0) + size)
    out = codec.decode(codec.encode(img, quality=80))
    assert out.size == img.size and out.mode == "RGB"


def test_quality_is_monotone_in_rate_and_distortion(photo):
    sizes, psnrs = [], []
    for q in (0, 25, 50, 75, 100):
        data = codec.encode(photo, quality=q)
        sizes.append(len(data))
        psnrs.append(psnr(photo, codec.decode(data)))
    assert sizes == sorted(sizes) and len(set(sizes)) == len(sizes)
    assert psnrs == sorted(psnrs)


def test_reasonable_quality_and_real_rate(photo):
    data = codec.encode(photo, quality=codec.DEFAULT_QUALITY)
    info = codec.read_info(data)
    assert info["bytes"] == len(data)
    assert info["bpp"] == pytest.approx(8 * len(data) / (451 * 300))
    assert psnr(photo, codec.decode(data)) > 26


def test_grayscale_decodes_as_grayscale(photo):
    g = photo.convert("L")
    data = codec.encode(g, quality=70)
    assert codec.read_info(data)["channels"] == 1
    out = codec.decode(data)
    assert out.mode == "L" and out.size == g.size
    assert psnr(g, out) > 25


def test_rgb_with_equal_planes_decodes_to_their_mean(photo):
    g = photo.convert("L").convert("RGB")
    data = codec.encode(g, quality=50)
    info = codec.read_info(data)
    assert info["channels"] == 3 and info["gray"] and info["format_version"] == container.FORMAT_VERSION
    out = np.asarray(codec.decode(data))
    assert out.shape == (300, 451, 3) and (out[..., 0] == out[..., 1]).all() and (out[..., 1] == out[..., 2]).all()
    # The same latent as the grayscale image's: only the header differs.
    assert container.unpack(data).sections == container.unpack(codec.encode(photo.convert("L"), quality=50)).sections
    # Without the flag the model's colour errors stay; their mean is closer to the source.
    c = container.unpack(data)
    c.header.flags = 0
    plain = codec.decode(container.pack(c))
    assert not (np.asarray(plain)[..., 0] == np.asarray(plain)[..., 2]).all()
    assert psnr(g, out) > psnr(g, plain) + 0.1


def test_rgba_alpha_is_lossless(small):
    rgba = small.convert("RGBA")
    alpha = np.random.default_rng(1).integers(0, 256, (small.height, small.width), dtype=np.uint8)
    rgba.putalpha(Image.fromarray(alpha))
    data = codec.encode(rgba)
    out = codec.decode(data)
    assert out.mode == "RGBA"
    assert np.array_equal(np.asarray(out)[:, :, 3], alpha)
    assert Section.ALPHA in container.unpack(data).sections


def test_16_bit_input_is_recorded(small):
    a16 = np.asarray(small).astype(np.uint16) * 257
    data = codec.encode(a16)
    assert codec.read_info(data)["bit_depth"] == 16
    assert codec.decode(data).mode == "RGB"


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "WEBP", "TIFF", "BMP", "PPM"])
def test_every_pillow_format_as_path_and_bytes(tmp_path, small, fmt):
    p = tmp_path / f"in.{fmt.lower()}"
    small.save(p, format=fmt)
    a = codec.encode(p)
    assert a == codec.encode(p.read_bytes()) == codec.encode(str(p))
    assert codec.decode(a).size == small.size


def test_numpy_and_pil_inputs_agree(small):
    assert codec.encode(small) == codec.encode(np.asarray(small))


def test_encoding_is_deterministic(small_file, small):
    assert codec.encode(small, quality=50) == small_file


def test_target_size_and_bpp(photo):
    enc = codec.image_codec.Encoder(codec.image_io.load(photo), codec.load_model())
    lo, hi = len(enc.encode(0)), len(enc.encode(100))
    for target in (int(lo * 1.2), (lo + hi) // 2, hi - 1):
        data = codec.encode(photo, target_size=target)
        assert len(data) <= target
        assert len(data) > 0.9 * target
    assert len(codec.encode(photo, target_size=hi + 10)) == hi
    bpp = 8 * (lo + hi) / 2 / (451 * 300)
    data = codec.encode(photo, target_bpp=bpp)
    assert 8 * len(data) / (451 * 300) <= bpp


def test_api_errors(small, small_file):
    with pytest.raises(codec.InputError):
        codec.encode(small, quality=101)
    with pytest.raises(codec.InputError):
        codec.encode(small, quality="high")
    with pytest.raises(codec.InputError):
        codec.encode(small, target_size=100, target_bpp=0.1)
    with pytest.raises(codec.RateControlError):
        codec.encode(small, target_size=10)
    with pytest.raises(codec.FormatError):
        codec.decode(png_bytes(small))
    with pytest.raises(codec.CorruptFileError):
        codec.decode(small_file[:-10])
    with pytest.raises(codec.FormatError):
        codec.decode(b"")
    with pytest.raises(codec.ImageTooLargeError):
        codec.decode(small_file, max_pixels=100)


def test_flipped_byte_in_each_section_is_reported(small_file):
    for name, start, size in container.section_spans(small_file):
        for off in (0, size // 2, size - 1):
            bad = bytearray(small_file)
            bad[start + off] ^= 0x01
            with pytest.raises(codec.FormatError):
                codec.decode(bytes(bad))


def test_too_short_latent_payloads_are_rejected(small_file):
    for sec in (Section.HYPER, Section.LATENT):
        c = container.unpack(small_file)
        c.sections[sec] = b"\0" * 7
        with pytest.raises(codec.FormatError, match=f"{sec.name} section is too short"):
            codec.decode(container.pack(c))


def test_unknown_model_and_wrong_weights(small_file):
    c = container.unpack(small_file)
    c.header.model_id = "no-such-model"
    with pytest.raises(codec.ModelNotAvailableError, match="no-such-model.*not available"):
        codec.decode(container.pack(c))
    c = container.unpack(small_file)
    c.header.weights_hash = b"\xff" * 8
    with pytest.raises(codec.ModelNotAvailableError, match="ffffffffffffffff is not available"):
        codec.decode(container.pack(c))


def _decode_in_subprocess(data: bytes, threads: int) -> bytes:
    code = ("import sys, torch, codec, io; torch.set_num_threads(%d); "
            "img = codec.decode(sys.stdin.buffer.read()); sys.stdout.buffer.write(img.tobytes())" % threads)
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    return subprocess.run([sys.executable, "-c", code], input=data, capture_output=True,
                          check=True, env=env, cwd=ROOT).stdout


def test_decode_identical_across_thread_counts(photo):
    data = codec.encode(photo, quality=60)
    one, two = _decode_in_subprocess(data, 1), _decode_in_subprocess(data, 2)
    assert one == two == codec.decode(data).tobytes()


@pytest.mark.parametrize("gray", [False, True])  # gray: the error refined is that of the planes' mean
def test_effort_refines_the_latent_for_a_lower_rd_cost(photo, gray):
    img = photo.crop((150, 60, 278, 156))  # 128x96: the refinement must ignore the padding
    if gray:
        img = img.convert("L").convert("RGB")
    ref = np.asarray(img, dtype=np.float64)
    lam = codec.load_model().net.lmbda(torch.tensor([0.5])).item()

    def cost(data):  # the loss refinement minimises, from real file bytes and the real decoder
        mse = np.mean((np.asarray(codec.decode(data), dtype=np.float64) - ref) ** 2) / 255 ** 2
        return 8 * len(data) / (128 * 96) + lam * 255 ** 2 * mse

    plain, refined = codec.encode(img, quality=50), codec.encode(img, quality=50, effort=1)
    assert refined != plain
    assert cost(refined) < cost(plain)
    assert codec.encode(img, quality=50, effort=1) == refined  # seeded: the same file every time


def test_effort_with_roi_and_target_size(photo):
    img = photo.crop((150, 60, 278, 156))
    mask = np.zeros((96, 128), np.uint8)
    mask[20:60, 30:90] = 255
    data = codec.encode(img, quality=40, effort=1, roi=mask)
    assert codec.read_info(data)["roi_area_shares"] is not None
    assert codec.decode(data).size == (128, 96)
    target = len(codec.encode(img, quality=40))
    assert len(codec.encode(img, target_size=target, effort=1)) <= target
    with pytest.raises(codec.InputError):
        codec.encode(img, effort=4)


def test_effort_with_roi_counts_the_roi_error_more(photo, monkeypatch):
    img = photo.crop((150, 60, 278, 156))
    ref = np.asarray(img, dtype=np.float64)
    mask = np.zeros((96, 128), np.uint8)
    mask[16:64, 32:96] = 170  # text level
    inside = mask > 0

    def errors(data):
        sq = ((np.asarray(codec.decode(data), dtype=np.float64) - ref) ** 2).mean(axis=2)
        return sq[inside].mean(), sq[~inside].mean()

    weighted = codec.encode(img, quality=40, effort=1, roi=mask)
    monkeypatch.setattr(image_codec, "ROI_ERROR_BOOST", 0.0)
    unweighted = codec.encode(img, quality=40, effort=1, roi=mask)
    (roi_w, bg_w), (roi_u, bg_u) = errors(weighted), errors(unweighted)
    assert roi_w < roi_u and bg_w > bg_u  # bits move towards the region, not just grow
