"""Quick RD check of our codec on a folder of PNGs, with JPEG at equal file size beside it.

    python -m scripts.eval_codec [--images shared/data/eval/images] [--qualities 0,20,40,50,60,80,100]

bpp comes from the real .lic bytes; PSNR is RGB PSNR on the decoded 8-bit image. For each image
and quality, JPEG (Pillow, 4:2:0 default, optimize) is interpolated on its own (bpp, PSNR) curve to
the same bpp; the table gives the mean PSNR gain over JPEG at equal size. The full side-by-side
against every codec is scripts/rd_benchmark.py.
"""

from __future__ import annotations

import argparse
import io
import json
import time
from pathlib import Path

import numpy as np
from PIL import Image

import codec

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_IMAGES = ROOT.parent / "shared/data/eval/images"
if not DEFAULT_IMAGES.is_dir():
    DEFAULT_IMAGES = ROOT / "shared/data/eval/images"


def load_eval_image(path: Path, crop: int = 0) -> np.ndarray:
    """An eval image as RGB uint8, or its centre crop x crop when crop > 0."""
    rgb = np.asarray(Image.open(path).convert("RGB"))
    if crop:
        h, w = rgb.shape[:2]
        y0, x0 = (h - crop) // 2, (w - crop) // 2
        rgb = np.ascontiguousarray(rgb[y0:y0 + crop, x0:x0 + crop])
    return rgb


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float(10 * np.log10(255.0 ** 2 / max(mse, 1e-12)))


def jpeg_curve(img: Image.Image) -> tuple[np.ndarray, np.ndarray]:
    ref = np.asarray(img)
    pts = []
    for q in range(5, 100, 3):
        buf = io.BytesIO()
        img.save(buf, format="JPEG", quality=q, optimize=True)
        dec = np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB"))
        pts.append((8 * buf.tell() / (img.width * img.height), psnr(ref, dec)))
    pts.sort()
    return np.array([p[0] for p in pts]), np.array([p[1] for p in pts])


def evaluate(images: Path = DEFAULT_IMAGES, qualities=(0, 20, 40, 50, 60, 80, 100),
             model: str | None = None) -> dict:
    files = sorted(Path(images).glob("*.png"))
    per_image = {}
    for f in files:
        img = Image.open(f).convert("RGB")
        ref = np.asarray(img)
        jb, jp = jpeg_curve(img)
        rows = []
        for q in qualities:
            t0 = time.perf_counter()
            data = codec.encode(img, quality=q, model=model)
            t1 = time.perf_counter()
            dec = np.asarray(codec.decode(data).convert("RGB"))
            t2 = time.perf_counter()
            bpp = 8 * len(data) / (img.width * img.height)
            p = psnr(ref, dec)
            in_range = jb[0] <= bpp <= jb[-1]
            jpeg_p = float(np.interp(bpp, jb, jp)) if in_range else None
            rows.append({"quality": q, "bpp": bpp, "psnr": p, "jpeg_psnr_same_bpp": jpeg_p,
                         "enc_s": t1 - t0, "dec_s": t2 - t1})
        per_image[f.name] = rows
    points = []
    for i, q in enumerate(qualities):
        rows = [per_image[k][i] for k in per_image]
        gains = [r["psnr"] - r["jpeg_psnr_same_bpp"] for r in rows if r["jpeg_psnr_same_bpp"] is not None]
        points.append({"quality": q,
                       "bpp": round(float(np.mean([r["bpp"] for r in rows])), 4),
                       "psnr": round(float(np.mean([r["psnr"] for r in rows])), 3),
                       "gain_vs_jpeg_db": round(float(np.mean(gains)), 3) if gains else None,
                       "jpeg_images_in_range": len(gains)})
    return {"images": str(images), "n_images": len(files), "points": points, "per_image": per_image}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", default=str(DEFAULT_IMAGES))
    ap.add_argument("--qualities", default="0,20,40,50,60,80,100")
    ap.add_argument("--model", default=None)
    ap.add_argument("--json", default=None, help="also write the full result here")
    args = ap.parse_args(argv)
    res = evaluate(Path(args.images), [float(q) for q in args.qualities.split(",")], args.model)
    print(f"{'quality':>8} {'bpp':>8} {'PSNR':>8} {'vs JPEG @ same bpp':>20}")
    for p in res["points"]:
        g = f"{p['gain_vs_jpeg_db']:+.2f} dB ({p['jpeg_images_in_range']} imgs)" if p["gain_vs_jpeg_db"] is not None else "n/a"
        print(f"{p['quality']:>8g} {p['bpp']:>8.4f} {p['psnr']:>8.3f} {g:>20}")
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
