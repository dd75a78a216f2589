"""scripts/rd_benchmark.py and scripts/bdrate.py: BD-rate maths, codec wrappers, results schema.

Cheap codecs and tiny images only; wrappers whose external tool is missing are skipped.
"""

import json
import math

import numpy as np
import pytest

from scripts import rd_benchmark as rb
from scripts.bdrate import bd_rate, clean_curve

# log(rate) linear in PSNR, so any PCHIP through any subset of these points is the same line
RATES = [0.125, 0.25, 0.5, 1.0, 2.0]
PSNRS = [26.0, 29.0, 32.0, 35.0, 38.0]


def test_bd_rate_identical_curves_is_zero():
    assert bd_rate(RATES, PSNRS, RATES, PSNRS) == pytest.approx(0.0, abs=1e-9)


@pytest.mark.parametrize("factor, expected", [(0.5, -50.0), (2.0, 100.0), (1.1, 10.0)])
def test_bd_rate_scaled_rate(factor, expected):
    assert bd_rate(RATES, PSNRS, [r * factor for r in RATES], PSNRS) == pytest.approx(expected)


def test_bd_rate_partial_overlap_and_order():
    # the test curve covers only part of the anchor's range and comes in shuffled order
    test = [(0.5 * r, p) for r, p in zip(RATES, PSNRS)][1:4][::-1]
    assert bd_rate(RATES, PSNRS, [t[0] for t in test], [t[1] for t in test]) == pytest.approx(-50.0)


def test_bd_rate_no_overlap_is_nan():
    assert math.isnan(bd_rate(RATES, PSNRS, [1, 2], [50, 51]))
    assert math.isnan(bd_rate(RATES, PSNRS, [1], [30]))


def test_clean_curve_drops_non_monotone_points():
    r, m = clean_curve([1.0, 0.5, 2.0, 1.5, 3.0, None], [30, 28, 33, 34, 35, 36])
    assert r == [0.5, 1.0, 1.5, 3.0] and m == [28, 30, 34, 35]


@pytest.fixture(scope="module")
def tiny(photo):
    """64x48 RGB crop (even sizes, as 4:2:0 VVC needs)."""
    return photo.crop((100, 80, 164, 128))


MID_QUALITY = {"jpeg": 75, "webp": 75, "avif": 60, "jxl": 1.0, "x265": 27, "x265-medium": 27,
               "vvc": 27, "ours": 50}


@pytest.mark.parametrize("name", rb.CODECS + ("x265-medium",))
def test_wrapper_round_trip(name, tiny):
    codec = rb.make_codec(name)
    why = codec.missing()
    if why:
        pytest.skip(f"{name}: {why}")
    data = codec.encode(tiny, MID_QUALITY[name])
    dec = codec.decode(data)
    assert isinstance(data, bytes) and len(data) > 0
    assert dec.mode == "RGB" and dec.size == tiny.size
    assert rb.psnr(np.asarray(tiny), np.asarray(dec)) > 20


def test_x265_medium_is_x265_at_its_default_tuning(tiny):
    plain, tuned = rb.make_codec("x265-medium"), rb.make_codec("x265")
    if plain.missing():
        pytest.skip(f"x265: {plain.missing()}")
    assert "-tune" not in plain.encoder_args(27) and "-tune" in tuned.encoder_args(27)
    assert plain.settings() != tuned.settings()  # so the result caches stay apart
    assert plain.encode(tiny, 27) != tuned.encode(tiny, 27)


def test_yuv444_conversion_is_near_lossless(tiny):
    back = rb.from_yuv444p(tiny.width, tiny.height, rb.to_yuv444p(tiny))
    assert rb.psnr(np.asarray(tiny), np.asarray(back)) > 48


def test_main_writes_results(tmp_path, tiny):
    for name in ("jpeg", "webp"):
        if rb.make_codec(name).missing():
            pytest.skip(f"{name} not available")
    images = tmp_path / "images"
    images.mkdir()
    tiny.save(images / "tiny.png")
    out = tmp_path / "out"
    argv = ["--images", str(images), "--codecs", "jpeg,webp", "--qualities", "jpeg=30,80",
            "--qualities", "webp=30,80", "--out", str(out), "--anchor", "jpeg"]
    assert rb.main(argv) == 0

    doc = json.loads((out / "results.json").read_text())
    assert set(doc) >= {"codecs", "env", "notes"}
    assert set(doc["codecs"]) == {"jpeg", "webp"}
    for name, res in doc["codecs"].items():
        assert [p["quality"] for p in res["points"]] == [30, 80]
        assert list(res["per_image"]) == ["tiny.png"]
        for row in res["points"] + res["per_image"]["tiny.png"]:
            assert set(row) == set(rb.KEYS)
            for k in ("bpp", "psnr", "enc_s", "dec_s"):
                assert isinstance(row[k], float) and row[k] > 0
            assert row["ms_ssim"] is None  # image too small for MS-SSIM
            if rb.lpips_available():
                assert isinstance(row["lpips"], float) and row["lpips"] >= 0
            else:
                assert row["lpips"] is None
        assert res["points"][1]["bpp"] > res["points"][0]["bpp"]
    assert isinstance(doc["env"]["cpu_count"], int) and doc["env"]["pillow"]
    assert (out / "bdrate.md").read_text().startswith("# BD-rate against jpeg")
    table = json.loads((out / "bdrate.json").read_text())["bd_rate_percent"]
    assert table["jpeg"]["psnr"] == pytest.approx(0.0, abs=1e-6)
    assert (out / "rd_psnr.png").exists() and (out / "rd_msssim.png").exists()
    assert len(list((out / "cache").rglob("*.json"))) == 4

    # a rerun resumes from the cache and gives the same numbers
    assert rb.main(argv) == 0
    again = json.loads((out / "results.json").read_text())
    assert again["codecs"]["jpeg"]["points"] == doc["codecs"]["jpeg"]["points"]


def test_jxl_ffmpeg_fallback(tiny, monkeypatch):
    if not (rb.ffmpeg_has("encoders", "libjxl") and rb.ffmpeg_has("decoders", "libjxl")):
        pytest.skip("ffmpeg without libjxl")
    codec = rb.make_codec("jxl")
    monkeypatch.setattr(codec, "cli", lambda: False)
    dec = codec.decode(codec.encode(tiny, 1.0))
    assert dec.size == tiny.size and rb.psnr(np.asarray(tiny), np.asarray(dec)) > 20
    # every distance of its list is one ffmpeg's libjxl accepts (it refuses above 15)
    assert max(codec.qualities) == 15
    codec.decode(codec.encode(tiny, max(codec.qualities)))


def test_ours_cache_key_names_synthesis_precision(monkeypatch):
    # a bf16 run and a float32 run differ by hundredths of a dB: they must not share cached rows
    ours = rb.make_codec("ours")
    if ours.missing():
        pytest.skip("no shipped model")
    keys = {}
    for choice in ("bf16", "fp32"):
        monkeypatch.setenv("CODEC_SYNTH", choice)
        keys[choice] = ours.settings()
    assert keys["bf16"] != keys["fp32"] and "float32" in keys["fp32"]
