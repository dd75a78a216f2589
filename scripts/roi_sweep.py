"""Compare ROI quantisation rules quickly: ROI on vs off at equal latent bytes, inside the boxes.

    python -m scripts.roi_sweep '{"NAME": {"offsets": [-6.25, 0, 25, 25]}, ...}' [--strength 1]

Each variant is a JSON object:
- "offsets": quality offset per level (background, texture, text, face), as codec.roi_map's
  LEVEL_OFFSETS: each level coded with the gain vectors of quality q + strength * offset
  (format version 2);
- or "v1_weights": step exponent per level, one scalar step 2 ** (strength * w) per level
  (format version 1, the session-1/2 rule);
- optional "strength" (default 1), "dilate": grow text/face cells by one cell, "adapt":
  [a0, lo, hi] scales the text/face offsets by clamp(a0 / ROI share of the grid, lo, hi);
- optional "refine": steps of encoder-side latent refinement (codec.models.latent_refine) at the
  quality rate control chose, for ROI off and on alike (kept when it still fits the budget), and
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

from codec import analysis
from codec.errors import RateControlError
from codec.image_codec import _grid_shape, _padded
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
    offsets = list(v["offsets"])
    if v.get("adapt"):
        a0, lo, hi = v["adapt"]
        f = min(max(a0 / max(float((g >= TEXT).mean()), 1e-6), lo), hi)
        offsets = offsets[:TEXT] + [o * f for o in offsets[TEXT:]]
    return coder.quant_map(g, t, [int(round(s * o * 100)) for o in offsets])


@torch.no_grad()
def run(v: dict, folder: Path, boxes: dict, maps: dict, targets) -> list[dict]:
    lm = load_model()
    net, coder = lm.net, lm.coder
    rows = []
    for name, ann in sorted(boxes.items()):
        ref = np.asarray(Image.open(folder / name).convert("RGB"))
        h, w = ref.shape[:2]
        x_pad = _padded(ref)
        y = net.g_a(x_pad).contiguous()
        grid = pixel_to_grid(maps[name], _grid_shape(h, w))
        map_bytes = len(RoiMap.from_levels(grid, 1.0).pack()) + 4
        for bpp in targets:
            res = {"image": name, "target_bpp": bpp}
            try:
                for mode in ("off", "on"):
                    budget = int(bpp * w * h / 8) - HEADER - (map_bytes if mode == "on" else 0)

                    def encode(q):
                        qmap = None if mode == "off" else quant_map(coder, grid, q / 100, v)
                        return (*coder.compress(y, q / 100, qmap), q, qmap)

                    z_str, y_str, q, qmap = search_quality(encode, budget, size=lambda e: len(e[0]) + len(e[1]))
                    if v.get("refine"):
                        weight = None
                        if mode == "on" and v.get("weights"):
                            wmap = torch.tensor(v["weights"], dtype=torch.float32)[torch.from_numpy(maps[name].astype(np.int64))]
                            weight = (wmap / wmap.mean())[None, None]
                        y2, z2 = refine_latent(net, x_pad, y, q / 100, (h, w), v["refine"], qmap, weight)
                        z2_str, y2_str = coder.compress(y2, q / 100, qmap, z=z2)
                        if len(z2_str) + len(y2_str) <= budget:
                            z_str, y_str = z2_str, y2_str
                    y_hat = coder.decompress(z_str, y_str, (y.shape[2] // 4, y.shape[3] // 4), q / 100, qmap)
                    x = net.g_s(y_hat)[0, :, :h, :w].clamp(0, 1).mul(255).round().permute(1, 2, 0).numpy()
                    size = len(z_str) + len(y_str) + HEADER + (map_bytes if mode == "on" else 0)
                    res[mode] = {"bpp": 8 * size / (h * w), "psnr": masked_psnr(ref, x, np.ones((h, w), bool)),
                                 "face": masked_psnr(ref, x, box_mask((h, w), ann.get("faces", []))),
                                 "text": masked_psnr(ref, x, box_mask((h, w), ann.get("text", [])))}
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
    ap.add_argument("--out", default=None, help="folder for NAME.json with the per-image rows")
    args = ap.parse_args(argv)
    folder = Path(args.images)
    boxes = json.loads((folder / "boxes.json").read_text())
    targets = [float(b) for b in args.bpp.split(",")]
    maps = level_maps(folder, list(boxes), Path(args.cache))
    for name, v in json.loads(args.variants).items():
        rows = run(v, folder, boxes, maps, targets)
        print(name, json.dumps(summarize(rows, targets)), flush=True)
        if args.out:
            Path(args.out).mkdir(parents=True, exist_ok=True)
            (Path(args.out) / f"{name}.json").write_text(json.dumps(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
