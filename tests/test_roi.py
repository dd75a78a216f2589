import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw, ImageFont

import codec
from codec import analysis, container
from codec.container import Section
from codec.roi_map import MAX_ROI_OFFSET, RoiMap, pixel_to_grid, roi_offset
from codec.zoo import load_model
from conftest import psnr

DATA = Path(__file__).parent / "data"


def test_roi_map_pack_round_trip_and_size():
    levels = np.zeros((32, 48), np.uint8)
    levels[4:10, 5:12] = 3
    levels[20:30, 30:40] = 1
    m = RoiMap.from_levels(levels, strength=1.0)
    assert m.offsets[0] < 0 == m.offsets[1] < m.offsets[3]
    data = m.pack()
    assert len(data) < 40  # 9 bytes of offsets, then the 1,536 cells
    back = RoiMap.unpack(data, (32, 48))
    assert np.array_equal(back.levels, levels) and back.offsets == m.offsets
    with pytest.raises(codec.FormatError):
        RoiMap.unpack(data[:12], (32, 48))
    with pytest.raises(codec.InputError):
        RoiMap.from_levels(levels, strength=3.5)
    bad = bytes([4]) + struct.pack(">4h", 0, 0, 20000, 0) + data[9:]  # offset beyond 100 quality points
    with pytest.raises(codec.FormatError, match="offset"):
        RoiMap.unpack(bad, (32, 48))


def test_roi_offset_weighs_the_region_by_its_share_of_the_error():
    span = 900.0  # lambda 0.0004-0.36: 25 quality points are a factor 900 ** 0.25 = 5.5 in lambda
    # mu / share = 0.8 / 0.2: the region's error counts 1 + 4 = 5 times, ln 5 / ln 900 * 100 points.
    assert roi_offset(0.2, 1.0, span) == pytest.approx(100 * np.log(5) / np.log(900))
    offsets = [roi_offset(s, 1.0, span) for s in (0.01, 0.05, 0.2, 0.5, 1.0)]
    assert offsets == sorted(offsets, reverse=True) and offsets[0] == MAX_ROI_OFFSET
    assert 0 < offsets[-1] < 10  # a region that is the whole error still gets a little
    assert roi_offset(0.2, 0.0, span) == 0.0
    assert roi_offset(0.2, 2.0, span) > roi_offset(0.2, 1.0, span)
    with pytest.raises(codec.InputError):
        roi_offset(0.2, -1.0, span)


def test_from_levels_takes_the_region_offset():
    levels = np.array([[0, 1], [2, 3]], np.uint8)
    m = RoiMap.from_levels(levels, 2.0, region_offset=31.4159)
    assert m.offsets == (-1250, 0, 3142, 3142)
    assert m.quality_offsets() == {"background": -12.5, "texture": 0.0, "text": 31.42, "face": 31.42}
    assert RoiMap.from_levels(levels, 1.0).offsets == (-625, 0, 2500, 2500)


def test_quant_map_follows_the_learned_gains():
    coder = load_model().coder
    levels = np.array([[0, 1], [2, 3]], np.uint8)
    q = coder.quant_map(levels, 0.4, (-1250, 0, 2500, 5000))
    step = q.step[0]  # [M, 2, 2]
    assert torch.equal(step[:, 0, 1], torch.ones_like(step[:, 0, 1]))  # offset 0: unchanged
    # Finer for positive offsets, coarser for negative ones: for nearly every channel (a learned
    # gain vector may dip slightly between neighbouring levels), and on average by a wide margin.
    for finer, coarser in ((step[:, 1, 0], 1), (1, step[:, 0, 0]), (step[:, 1, 1], step[:, 1, 0])):
        assert (finer >= coarser).float().mean() > 0.98
    assert step[:, 0, 0].mean() < 0.9 and step[:, 1, 0].mean() > 1.2 and step[:, 1, 1].mean() > 1.5
    assert torch.equal(step * 4096, (step * 4096).round())  # exact multiples of 1/4096
    assert step[:, 1, 0].std() > 0  # per channel, not one scalar
    # The same rate parameter on both sides gives the same steps, bit for bit.
    assert torch.equal(q.step, coder.quant_map(levels, 0.4, (-1250, 0, 2500, 5000)).step)


def test_version_1_roi_files_still_decode():
    """tests/data/v1_roi.lic was written by the version-1 encoder (commit 6a37236: one scalar step
    per level), v1_roi_decoded.png by its decoder; today's decoder must give the same picture."""
    data = (DATA / "v1_roi.lic").read_bytes()
    assert codec.read_info(data)["format_version"] == 1
    dec = np.asarray(codec.decode(data)).astype(int)
    old = np.asarray(Image.open(DATA / "v1_roi_decoded.png")).astype(int)
    assert np.abs(dec - old).max() <= 1  # g_s input differs only by float rounding


def test_version_2_roi_files_still_decode():
    """tests/data/v2_roi.lic was written by the version-2 encoder (commit c8f5afe: zlib-coded
    levels), v2_roi_decoded.png by its decoder."""
    data = (DATA / "v2_roi.lic").read_bytes()
    info = codec.read_info(data)
    assert info["format_version"] == 2 and info["roi_area_shares"]["face"] > 0
    dec = np.asarray(codec.decode(data)).astype(int)
    old = np.asarray(Image.open(DATA / "v2_roi_decoded.png")).astype(int)
    assert np.abs(dec - old).max() <= 1


def test_pixel_to_grid_max_pools():
    lv = np.zeros((40, 70), np.uint8)
    lv[17, 33] = 2
    g = pixel_to_grid(lv, (4, 8))
    assert g.shape == (4, 8) and g[1, 2] == 2 and g.sum() == 2


def test_pixel_to_grid_min_cover_needs_that_share_of_the_cell():
    lv = np.zeros((32, 48), np.uint8)
    lv[0:16, 0:16] = 1  # cell (0, 0): all texture ...
    lv[0:4, 0:16] = 3  # ... with a quarter of it face
    lv[16:32, 16:22] = 2  # cell (1, 1): 6/16 text
    lv[5, 40] = 3  # cell (0, 2): one face pixel
    g = pixel_to_grid(lv, (2, 3), min_cover=0.3)
    assert g.tolist() == [[1, 0, 0], [0, 2, 0]]
    assert pixel_to_grid(lv, (2, 3)).tolist() == [[3, 0, 3], [0, 2, 0]]


def test_mask_levels_by_value(tmp_path):
    a = np.zeros((10, 12), np.uint8)
    a[:, 6:] = 255
    p = tmp_path / "m.png"
    Image.fromarray(a).save(p)
    lv = analysis.level_map(np.zeros((10, 12, 3), np.uint8), str(p))
    assert lv[:, :6].max() == 0 and lv[:, 6:].min() == 3
    with pytest.raises(codec.InputError, match="mask is"):
        analysis.level_map(np.zeros((11, 12, 3), np.uint8), str(p))
    assert analysis.level_map(np.zeros((4, 4, 3), np.uint8), "none") is None


def test_roi_gives_the_region_finer_quantisation(photo):
    rgb = np.asarray(photo)
    mask = np.zeros(rgb.shape[:2], np.uint8)
    mask[64:192, 128:320] = 3
    off = codec.encode(photo, quality=30)
    on = codec.encode(photo, quality=30, roi=mask, roi_strength=2.0)
    c = container.unpack(on)
    assert Section.ROI_MAP in c.sections and len(c.sections[Section.ROI_MAP]) < 40
    shares = codec.read_info(on)["roi_area_shares"]
    assert shares["face"] > 0.1 and shares["background"] > 0.5
    dec_off, dec_on = np.asarray(codec.decode(off)), np.asarray(codec.decode(on))
    box = (slice(64, 192), slice(128, 320))
    assert psnr(rgb[box], dec_on[box]) > psnr(rgb[box], dec_off[box]) + 0.5
    assert psnr(rgb, dec_on) < psnr(rgb, dec_off)  # the background paid for it


def test_a_small_region_gets_a_larger_offset_than_a_large_one(photo):
    """The encoder sizes the offset by the region's share of the error (roi_offset): the cat's
    head alone is cheap to improve, three quarters of the picture are not."""
    def offset(rows, cols, strength=1.0):
        mask = np.zeros((photo.height, photo.width), np.uint8)
        mask[rows, cols] = 2
        info = codec.read_info(codec.encode(photo, quality=30, roi=mask, roi_strength=strength))
        return info["roi_quality_offsets"]

    small, large = offset(slice(64, 128), slice(160, 256)), offset(slice(0, 225), slice(0, 451))
    assert small["text"] > large["text"] + 10 and small["face"] == small["text"]
    assert small["background"] == large["background"] == -6.25
    assert set(offset(slice(64, 128), slice(160, 256), 0.0).values()) == {0.0}


def test_roi_with_target_size(photo):
    mask = np.zeros((photo.height, photo.width), np.uint8)
    mask[:100, :100] = 3
    target = len(codec.encode(photo, quality=40))
    data = codec.encode(photo, target_size=target, roi=mask)
    assert 0.9 * target < len(data) <= target


def test_a_target_below_the_smallest_roi_file_weakens_the_roi(photo):
    """Where the ROI's finer steps make even quality 0 too big, but the file without them fits,
    the encoder weakens the ROI until it fits instead of giving up, and the region still gains."""
    rgb = np.asarray(photo)
    mask = np.zeros((photo.height, photo.width), np.uint8)
    mask[:150, :] = 3
    plain = len(codec.encode(photo, quality=0))
    full = codec.encode(photo, quality=0, roi=mask, roi_strength=2.0)
    target = plain + (len(full) - plain) // 3
    assert plain < target < len(full)
    data = codec.encode(photo, target_size=target, roi=mask, roi_strength=2.0)
    assert len(data) <= target
    offsets = codec.read_info(data)["roi_quality_offsets"]
    asked = codec.read_info(full)["roi_quality_offsets"]
    assert 0 < offsets["face"] < asked["face"] and asked["background"] < offsets["background"] < 0
    off = np.asarray(codec.decode(codec.encode(photo, target_size=target)))
    on = np.asarray(codec.decode(data))
    assert psnr(rgb[:150], on[:150]) > psnr(rgb[:150], off[:150]) + 0.1  # half the picture: a little
    with pytest.raises(codec.RateControlError):  # below the plain file too: nothing fits
        codec.encode(photo, target_size=plain // 2, roi=mask, roi_strength=2.0)


def test_texture_mask_finds_busy_cells():
    rgb = np.zeros((128, 256, 3), np.uint8)
    rgb[:64, 192:] = (np.random.default_rng(0).random((64, 64, 1)) * 255).astype(np.uint8)
    m = analysis.texture_mask(rgb)
    assert m[:64, 192:].all() and m.sum() == 64 * 64


def test_text_detector_finds_rendered_text():
    if not analysis.text_available():
        pytest.skip("rapidocr-onnxruntime not installed (pip install codec[roi])")
    img = Image.new("RGB", (320, 120), "white")
    d = ImageDraw.Draw(img)
    d.text((20, 30), "HELLO CODEC", fill="black", font=ImageFont.load_default(size=40))
    boxes = analysis.detect_text(np.asarray(img))
    assert boxes
    x0, y0, x1, y1 = max(boxes, key=lambda b: (b[2] - b[0]) * (b[3] - b[1]))
    assert x0 < 60 and x1 > 200 and y0 < 50 and y1 > 50


@pytest.mark.parametrize("detector", ["auto", "haar", "mtcnn"])
def test_face_detector_runs(photo, detector):
    from codec.analysis.faces import available

    if detector != "auto" and detector not in available():
        pytest.skip(f"{detector} not installed")
    boxes = analysis.detect_faces(np.asarray(photo), detector=detector)
    for x0, y0, x1, y1 in boxes:
        assert 0 <= x0 < x1 <= photo.width and 0 <= y0 < y1 <= photo.height


def test_unknown_face_detector_is_refused():
    with pytest.raises(ValueError, match="unknown face detector"):
        analysis.detect_faces(np.zeros((32, 32, 3), np.uint8), detector="nope")
