"""How much of the loss at high rates is the transform's, not the quantiser's.

    python -m scripts.transform_bound [--images shared/data/eval/images] [--qualities 50,75,100]

For each image and quality: the real file (bpp from its bytes, RGB PSNR of the decoded image) next
to the same model with quantisation switched off, g_s(g_a(x) * gain * inverse gain) in fp32. When
the two PSNRs meet, spending more bits cannot help: the transforms themselves are the limit.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch
from PIL import Image

import codec
from codec.image_codec import _padded
from codec.models.gain_hyperprior import exact_gain
from codec.zoo import load_model
from scripts.eval_codec import DEFAULT_IMAGES, psnr



@torch.no_grad()
def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", default=str(DEFAULT_IMAGES))
    ap.add_argument("--qualities", default="50,75,100")
    args = ap.parse_args(argv)
    net = load_model().net
    qualities = [float(q) for q in args.qualities.split(",")]
    rows = []
    for f in sorted(Path(args.images).glob("*.png")):
        rgb = np.asarray(Image.open(f).convert("RGB"))
        h, w = rgb.shape[:2]
        y = net.g_a(_padded(rgb))
        row = {"image": f.name}
        for q in qualities:
            t = q / 100
            x = net.g_s(y * exact_gain(net.y_gain, t) * exact_gain(net.y_gain_inv, t))
            unq = (x[0, :, :h, :w].clamp(0, 1) * 255).round().permute(1, 2, 0).numpy()
            data = codec.encode(rgb, quality=q)
            dec = np.asarray(codec.decode(data).convert("RGB"))
            row[f"q{q:g}"] = {"bpp": round(8 * len(data) / (h * w), 3), "psnr": round(psnr(rgb, dec), 2),
                              "unquantised_psnr": round(psnr(rgb, unq), 2)}
        rows.append(row)
        print(json.dumps(row), flush=True)
    for q in qualities:
        k = f"q{q:g}"
        print(f"quality {q:g}: mean bpp {np.mean([r[k]['bpp'] for r in rows]):.3f}, "
              f"PSNR {np.mean([r[k]['psnr'] for r in rows]):.2f} dB, "
              f"unquantised {np.mean([r[k]['unquantised_psnr'] for r in rows]):.2f} dB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
