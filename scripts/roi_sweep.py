"""Compare ROI quantisation rules quickly: ROI on vs off at equal latent bytes, inside the boxes.

    python -m scripts.roi_sweep '{"NAME": {"offsets": [-6.25, 0, 25, 25]}, ...}' [--strength 1]

Each variant is a JSON object:
- "offsets": quality offset per level (background, texture, text, face), as codec.roi_map's
  LEVEL_OFFSETS: each level coded with the gain vectors of quality q + strength * offset
  (format version 2); or "encoder": the offsets codec's Encoder picks for the image (the
  shipped rule: text and face offset from their share of the error, codec.roi_map.roi_offset);
- or "v1_weights": step exponent per level, one scalar step 2 ** (strength * w) per level
  (format version 1, the session-1/2 rule);
- optional "strength" (default 1), "dilate": grow text/face cells by one cell, "cover": a cell
  takes a level only where that level's pixels cover more than this share of it (default 0,
  a max-pool; codec.roi_map.pixel_to_grid), "adapt":
  [a0, lo, hi] scales the text/face offsets by clamp(a0 / ROI share of the grid, lo, hi), "ramp":
  r scales them by 1 + r * t (t = quality / 100), so they grow with the rate;
- optional "refine": steps of encoder-side latent refinement (codec.models.latent_refine), for
  ROI off and on alike, at the quality rate control chose and 4 points either side; the metrics
  are read off those three points at the byte budget (linear in log-bytes), and
  "weights": per-level weight of the squared error in that refinement (ROI on only; normalised
  to mean 1 over the image, so bits move between regions rather than grow).

Same images, detectors, targets and box metrics as scripts.roi_eval, but faster: it runs g_a and
the detectors once per image (level maps cached in --cache), rate control (codec's
search_quality) runs on the real rANS string sizes plus a fixed 40-byte allowance for the
container header, and the chosen encoding is decoded through LatentCoder.decompress and g_s. Check a chosen rule with scripts.roi_eval, which
writes real files.
"""

from __future__ import annotations

import argparse
import json
import pickle
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from scipy.ndimage import maximum_filter

from codec import analysis, image_io
from codec.errors import RateControlError
from codec.image_codec import SYNTH_BF16, Encoder, _grid_shape, _padded
from codec.models.latent_refine import refine_latent
from codec.rate_control import search_quality
from codec.roi_map import RoiMap, pixel_to_grid
from codec.zoo import load_model
from scripts.roi_eval import (DEFAULT_IMAGES, box_mask, masked_psnr, targets_every_image_reached,
                              whole_image_bd_rate)

ROOT = Path(__file__).resolve().parents[1]
HEADER = 40  # container header + section framing, the same for on and off apart from ROI_MAP
TEXT = 2


def level_maps(folder: Path, names, cache: Path) -> dict:
    maps = pickle.loads(cache.read_bytes()) if cache.exists() else {}
    missing = [n for n in names if n not in maps]
    for n in missing:
        maps[n] = analysis.auto_levels(np.asarray(Image.open(folder / n).convert("RGB")))
    if missing:
        cache.parent.mkdir(parents=True, exist_ok=True)
        cache.write_bytes(pickle.dumps(maps))
    return maps


def quant_map(coder, grid: np.ndarray, t: float, v: dict):
    g = grid.copy()
    if v.get("dilate"):
        for lvl in (2, 3):
            grown = maximum_filter((g == lvl).astype(np.uint8), size=3).astype(bool)
            g[grown & (g < lvl)] = lvl
    s = v.get("strength", 1.0)
    if "v1_weights" in v:
        mults = [int(round(2.0 ** (s * w) * 4096)) for w in v["v1_weights"]]
        return coder.quant_map(g, t, v1_multipliers=mults)
    offsets = list(v["offsets"])  # quality points at strength 1
    if v.get("adapt"):
        a0, lo, hi = v["adapt"]
        f = min(max(a0 / max(float((g >= TEXT).mean()), 1e-6), lo), hi)
        offsets = offsets[:TEXT] + [o * f for o in offsets[TEXT:]]
    if v.get("ramp"):  # text/face offsets grow with the rate: x (1 + ramp * t)
        offsets = offsets[:TEXT] + [o * (1 + v["ramp"] * t) for o in offsets[TEXT:]]
    return coder.quant_map(g, t, [int(round(s * o * 100)) for o in offsets])


def interpolate(points: list[dict], budget: int) -> dict:
    """Metrics at exactly `budget` bytes, linear in log-bytes between the two points around it."""
    pts = sorted(points, key=lambda p: p["bytes"])
    lo = max([p for p in pts if p["bytes"] <= budget], key=lambda p: p["bytes"], default=pts[0])
    hi = min([p for p in pts if p["bytes"] > budget], key=lambda p: p["bytes"], default=pts[-1])
    a = 0.0 if hi is lo else (np.log(budget) - np.log(lo["bytes"])) / (np.log(hi["bytes"]) - np.log(lo["bytes"]))
    out = {k: None if lo[k] is None else lo[k] + a * (hi[k] - lo[k]) for k in lo if k != "bytes"}
    out["bytes"] = float(np.exp(np.log(lo["bytes"]) + a * (np.log(hi["bytes"]) - np.log(lo["bytes"]))))
    return out


@torch.no_grad()
def run(v: dict, folder: Path, boxes: dict, maps: dict, targets, only=None) -> list[dict]:
    lm = load_model()
    net, coder = lm.net, lm.coder
    rows = []
    for name, ann in sorted(boxes.items()):
        if only and name not in only:
            continue
        ref = np.asarray(Image.open(folder / name).convert("RGB"))
        h, w = ref.shape[:2]
        x_pad = _padded(ref)
        grid = pixel_to_grid(maps[name], _grid_shape(h, w), v.get("cover", 0.0))
        rule = v
        if v.get("offsets") == "encoder":
            enc = Encoder(image_io.load(ref), lm, maps[name], v.get("strength", 1.0))
            y, rule = enc.y, v | {"offsets": [o / 100 for o in enc.roi.offsets], "strength": 1.0}
        else:
            y = net.g_a(x_pad).contiguous()
        map_bytes = len(RoiMap.from_levels(grid, 1.0).pack()) + 4
        masks = {"psnr": np.ones((h, w), bool), "face": box_mask((h, w), ann.get("faces", [])),
                 "text": box_mask((h, w), ann.get("text", []))}
        weight = None
        if v.get("weights"):
            wmap = torch.tensor(v["weights"], dtype=torch.float32)[torch.from_numpy(maps[name].astype(np.int64))]
            weight = (wmap / wmap.mean())[None, None]

        def measure(q, qmap, y_code, z=None) -> dict:
            z_str, y_str = coder.compress(y_code, q / 100, qmap, z=z)
            y_hat = coder.decompress(z_str, y_str, (y.shape[2] // 4, y.shape[3] // 4), q / 100, qmap)
            x = net.g_s(y_hat)[0, :, :h, :w].clamp(0, 1).mul(255).round().permute(1, 2, 0).numpy()
            return {"bytes": len(z_str) + len(y_str)} | {k: masked_psnr(ref, x, m) for k, m in masks.items()}

        for bpp in targets:
            res = {"image": name, "target_bpp": bpp}
            try:
                for mode in ("off", "on"):
                    budget = int(bpp * w * h / 8) - HEADER - (map_bytes if mode == "on" else 0)

                    def qmap_at(q):
                        return None if mode == "off" else quant_map(coder, grid, q / 100, rule)

                    q = search_quality(lambda q: (q, sum(map(len, coder.compress(y, q / 100, qmap_at(q))))),
                                       budget, size=lambda e: e[1])[0]
                    if v.get("refine"):
                        # Refined files are not searched for (6-8 refinements each): refine at
                        # q - 4, q and q + 4 and read the metrics at the budget off the curve.
                        pts = []
                        for qq in sorted({max(0.0, q - 4), q, min(100.0, q + 4)}):
                            qm = qmap_at(qq)
                            y2, z2 = refine_latent(net, x_pad, y, qq / 100, (h, w), v["refine"], qm,
                                                   weight if mode == "on" else None, bf16=SYNTH_BF16)
                            pts.append(measure(qq, qm, y2, z2))
                        m = interpolate(pts, budget)
                    else:
                        m = measure(q, qmap_at(q), y)
                    size = m.pop("bytes") + HEADER + (map_bytes if mode == "on" else 0)
                    res[mode] = {"bpp": 8 * size / (h * w)} | m
            except RateControlError:  # below this image's smallest file
                continue
            rows.append(res)
    return rows


def summarize(rows: list[dict], targets) -> dict:
    out = {}
    for t in targets:
        rs = [r for r in rows if r["target_bpp"] == t]
        out[str(t)] = {k: round(float(np.mean([r["on"][k] - r["off"][k] for r in rs if r["off"][k] is not None])), 2)
                       for k in ("face", "text", "psnr")}
    out["bd_rate_pct"] = round(whole_image_bd_rate(rows, targets), 1)
    # roi_eval's headline figure: every image, at the targets every image reaches.
    reached = targets_every_image_reached(rows, targets, len({r["image"] for r in rows}))
    out["bd_rate_all_pct"] = round(whole_image_bd_rate(rows, reached), 1)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("variants", help="JSON object: name -> variant (see the module doc)")
    ap.add_argument("--images", default=str(DEFAULT_IMAGES))
    ap.add_argument("--bpp", default="0.1,0.2,0.4")
    ap.add_argument("--cache", default=str(ROOT / "runs" / "roi_levels.pkl"))
    ap.add_argument("--only", default=None, help="comma-separated image names (default: all)")
    ap.add_argument("--out", default=None, help="folder for NAME.json with the per-image rows")
    args = ap.parse_args(argv)
    folder = Path(args.images)
    boxes = json.loads((folder / "boxes.json").read_text())
    targets = [float(b) for b in args.bpp.split(",")]
    maps = level_maps(folder, list(boxes), Path(args.cache))
    for name, v in json.loads(args.variants).items():
        rows = run(v, folder, boxes, maps, targets, args.only.split(",") if args.only else None)
        print(name, json.dumps(summarize(rows, targets)), flush=True)
        if args.out:
            Path(args.out).mkdir(parents=True, exist_ok=True)
            (Path(args.out) / f"{name}.json").write_text(json.dumps(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
