"""ROI on vs off at equal file size, measured inside annotated face and text boxes.

    python -m scripts.roi_eval [--images shared/data/eval/roi] [--bpp 0.1,0.2,0.4] [--strength 1.0]
        [--out docs/results/roi]

For every image and target bpp, both encodes use rate control (`target_size`), so they land at
or under the same byte budget; the script reports the actual sizes. Inside the union of the face
boxes (and separately of the text boxes): PSNR over all box pixels, and SSIM (pytorch-msssim
`ssim`, window 7: most boxes are far below the 161 px MS-SSIM needs). Whole-image PSNR and
MS-SSIM show the cost; the whole-image BD-rate of ROI-on against ROI-off is computed over the
target points. Detector coverage: the share of annotated box area that each detector's map
marks (faces: each installed detector, MTCNN and Haar; text: PP-OCR; "auto": the combined map
at levels >= 2, on the latent grid as coded). Writes roi.json, roi.md and side-by-side PNGs (off | on, same budget) to --out.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw
from pytorch_msssim import ms_ssim, ssim

import codec
from codec import analysis
from codec.analysis.faces import available as face_detectors
from codec.image_codec import _grid_shape
from codec.roi_map import CELL, pixel_to_grid
from scripts.bdrate import bd_rate

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_IMAGES = ROOT.parent / "shared/data/eval/roi"


def box_mask(shape, boxes) -> np.ndarray:
    m = np.zeros(shape, bool)
    for x0, y0, x1, y1 in boxes:
        m[y0:y1, x0:x1] = True
    return m


def masked_psnr(a, b, mask) -> float | None:
    if not mask.any():
        return None
    d = (a.astype(np.float64) - b.astype(np.float64))[mask]
    return float(10 * np.log10(255 ** 2 / max(np.mean(d ** 2), 1e-12)))


def _t(a):
    return torch.from_numpy(np.ascontiguousarray(a)).permute(2, 0, 1)[None].float()


def boxes_ssim(a, b, boxes) -> float | None:
    vals, weights = [], []
    for x0, y0, x1, y1 in boxes:
        if min(x1 - x0, y1 - y0) < 7:
            continue
        vals.append(float(ssim(_t(a[y0:y1, x0:x1]), _t(b[y0:y1, x0:x1]), data_range=255, win_size=7)))
        weights.append((x1 - x0) * (y1 - y0))
    return float(np.average(vals, weights=weights)) if vals else None


def coverage(levels: np.ndarray, boxes, min_level: int) -> float | None:
    m = box_mask(levels.shape, boxes)
    return float((levels[m] >= min_level).mean()) if m.any() else None


def targets_every_image_reached(rows: list[dict], targets: list[float], n_images: int) -> list[float]:
    """The targets at which all n_images images have a row (none skipped below its smallest file)."""
    return [t for t in targets if sum(r["target_bpp"] == t for r in rows) == n_images]


def whole_image_bd_rate(rows: list[dict], targets: list[float]) -> float:
    """BD-rate (RGB PSNR) of ROI on vs off on the mean curves of the images reached at every target."""
    per_image: dict[str, dict[float, dict]] = {}
    for r in rows:
        per_image.setdefault(r["image"], {})[r["target_bpp"]] = r
    common = [im for im, d in per_image.items() if all(t in d for t in targets)]
    if not common or len(targets) < 2:
        return float("nan")

    def curve(mode):
        return ([float(np.mean([per_image[i][t][mode]["bpp"] for i in common])) for t in targets],
                [float(np.mean([per_image[i][t][mode]["psnr"] for i in common])) for t in targets])

    return bd_rate(*curve("off"), *curve("on"))


def side_by_side(ref, off, on, boxes, path: Path, label: str) -> None:
    ys = [b[1] for b in boxes] + [b[3] for b in boxes]
    xs = [b[0] for b in boxes] + [b[2] for b in boxes]
    h, w = ref.shape[:2]
    cx, cy = (min(xs) + max(xs)) // 2, (min(ys) + max(ys)) // 2
    half = max(64, (max(max(xs) - min(xs), max(ys) - min(ys)) // 2) + 24)
    x0, y0 = max(0, min(w - 2 * half, cx - half)), max(0, min(h - 2 * half, cy - half))
    crop = (slice(y0, y0 + 2 * half), slice(x0, x0 + 2 * half))
    tiles = [Image.fromarray(t[crop]) for t in (ref, off, on)]
    scale = max(1, 256 // tiles[0].height)
    tiles = [t.resize((t.width * scale, t.height * scale), Image.Resampling.NEAREST) for t in tiles]
    sheet = Image.new("RGB", (sum(t.width for t in tiles) + 8 * 2, tiles[0].height + 22), "white")
    x = 0
    d = ImageDraw.Draw(sheet)
    for t, name in zip(tiles, ("original", "ROI off", "ROI on")):
        sheet.paste(t, (x, 22))
        d.text((x + 4, 4), f"{name} {label if name != 'original' else ''}", fill="black")
        x += t.width + 8
    sheet.save(path)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", default=str(DEFAULT_IMAGES))
    ap.add_argument("--bpp", default="0.1,0.2,0.4")
    ap.add_argument("--strength", type=float, default=1.0)
    ap.add_argument("--out", default=str(ROOT / "docs/results/roi"))
    args = ap.parse_args(argv)
    folder, out = Path(args.images), Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    boxes = json.loads((folder / "boxes.json").read_text())
    targets = [float(b) for b in args.bpp.split(",")]

    sheets: set[str] = set()
    cover = {"faces": {d: [] for d in face_detectors()} | {"auto": []}, "text": {"ppocr": [], "auto": []}}
    rows, skipped = [], []
    for name, ann in sorted(boxes.items()):
        img = Image.open(folder / name).convert("RGB")
        ref = np.asarray(img)
        h, w = ref.shape[:2]
        levels = analysis.auto_levels(ref)
        grid = pixel_to_grid(levels, _grid_shape(h, w))
        coded = np.kron(grid, np.ones((CELL, CELL), np.uint8))[:h, :w]
        faces, text = ann.get("faces", []), ann.get("text", [])
        maps = [("faces", d, box_mask((h, w), analysis.detect_faces(ref, detector=d)).astype(np.uint8) * 3, 3)
                for d in face_detectors()]
        ocr = box_mask((h, w), analysis.detect_text(ref)).astype(np.uint8) * 2
        maps += [("faces", "auto", coded, 2), ("text", "ppocr", ocr, 2), ("text", "auto", coded, 2)]
        for key, src, lv, ml in maps:
            c = coverage(lv, faces if key == "faces" else text, ml)
            if c is not None:
                cover[key][src].append(c)
        for bpp in targets:
            budget = int(bpp * w * h / 8)
            res = {"image": name, "target_bpp": bpp}
            decoded = {}
            try:
                files = {mode: codec.encode(img, target_size=budget, roi="none" if mode == "off" else levels,
                                            roi_strength=args.strength) for mode in ("off", "on")}
            except codec.RateControlError as e:  # the model's lowest rate is above this target
                skipped.append({"image": name, "target_bpp": bpp, "reason": str(e)})
                continue
            for mode, data in files.items():
                dec = np.asarray(codec.decode(data).convert("RGB"))
                decoded[mode] = dec
                res[mode] = {
                    "bytes": len(data), "bpp": 8 * len(data) / (w * h),
                    "psnr": masked_psnr(ref, dec, np.ones((h, w), bool)),
                    "ms_ssim": float(ms_ssim(_t(ref), _t(dec), data_range=255)) if min(h, w) > 160 else None,
                    "face_psnr": masked_psnr(ref, dec, box_mask((h, w), faces)),
                    "text_psnr": masked_psnr(ref, dec, box_mask((h, w), text)),
                    "face_ssim": boxes_ssim(ref, dec, faces), "text_ssim": boxes_ssim(ref, dec, text),
                }
            rows.append(res)
            if name in ("astronaut.png", "scenetext01.png") and name not in sheets:
                sheets.add(name)  # lowest reachable target
                shown = faces if name == "astronaut.png" else text  # one face image, one text image
                side_by_side(ref, decoded["off"], decoded["on"], shown,
                             out / f"side_by_side_{Path(name).stem}.png",
                             f"({res['off']['bytes']} / {res['on']['bytes']} B)")
        print(f"{name}: done", flush=True)

    def mean(xs):
        xs = [x for x in xs if x is not None]
        return round(float(np.mean(xs)), 3) if xs else None

    summary = []
    for bpp in targets:
        rs = [r for r in rows if r["target_bpp"] == bpp]
        if not rs:
            continue
        s = {"target_bpp": bpp, "images": len(rs)}
        for mode in ("off", "on"):
            for k in ("bpp", "psnr", "ms_ssim", "face_psnr", "text_psnr", "face_ssim", "text_ssim"):
                s[f"{k}_{mode}"] = mean([r[mode][k] for r in rs])
        s["size_ratio_on_off"] = mean([r["on"]["bytes"] / r["off"]["bytes"] for r in rs])
        summary.append(s)
    bd = whole_image_bd_rate(rows, targets)
    # The lowest target drops the images whose smallest file is above it; this one keeps them all.
    n_images = len(boxes)
    everyone = targets_every_image_reached(rows, targets, n_images)
    bd_all = whole_image_bd_rate(rows, everyone)
    cov = {k: {d: mean(v) for d, v in dct.items()} for k, dct in cover.items()}
    result = {"strength": args.strength, "summary": summary, "whole_image_bd_rate_psnr_pct": bd,
              "whole_image_bd_rate_all_images": {"targets": everyone, "pct": bd_all},
              "coverage": cov, "text_detector": analysis.text_available(), "skipped": skipped,
              "rows": rows}
    (out / "roi.json").write_text(json.dumps(result, indent=1))
    lines = [f"# ROI on vs off at equal file size (strength {args.strength:g})", "",
             "| target bpp | images | bpp off / on | face PSNR off → on | text PSNR off → on | face SSIM off → on "
             "| text SSIM off → on | whole PSNR off → on |", "|---|---|---|---|---|---|---|---|"]
    for s in summary:
        lines.append(f"| {s['target_bpp']} | {s['images']} | {s['bpp_off']} / {s['bpp_on']} | {s['face_psnr_off']} → "
                     f"{s['face_psnr_on']} | {s['text_psnr_off']} → {s['text_psnr_on']} | "
                     f"{s['face_ssim_off']} → {s['face_ssim_on']} | {s['text_ssim_off']} → "
                     f"{s['text_ssim_on']} | {s['psnr_off']} → {s['psnr_on']} |")
    lines += ["", f"Whole-image BD-rate (RGB PSNR) of ROI on vs off, images reached at every target: {bd:+.1f}%",
              f"The same over all {n_images} images, at the targets every image reached ({everyone}): "
              + ("n/a (needs two such targets)" if math.isnan(bd_all) else f"{bd_all:+.1f}%"), "",
              "Share of annotated box area marked by each detector: " + json.dumps(cov),
              f"Skipped (target below the model's smallest file): {len(skipped)} image/target pairs"]
    (out / "roi.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
