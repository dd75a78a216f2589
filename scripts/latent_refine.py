"""Encoder-side latent refinement (SGA, Yang et al. 2020), measured: does a better latent pay?

    python -m scripts.latent_refine [--qualities 20,50] [--steps 100] [--crop 256]

For each eval image's centre crop and quality, the plain encoding (y = g_a(x)) against a refined
one: starting from g_a's latent, Adam minimises the training loss bpp + lambda(t) * 255^2 * MSE
through the real g_s, with stochastic Gumbel-softmax rounding of (y - mean) whose temperature
anneals from 0.5 towards hard rounding; the entropy parameters stay those of g_a's latent (see
--hyper). Both latents then go through the real coder (LatentCoder: rANS strings, sizes in real
bytes; the container header is the same for both and left out) and the decoder. Nothing changes
for the decoder or the format; `codec encode --effort` ships it (codec.models.latent_refine).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from codec.image_codec import _padded
from codec.models.latent_refine import DEFAULT_LR, refine_latent
from codec.zoo import load_model
from scripts.bdrate import bd_rate
from scripts.eval_codec import DEFAULT_IMAGES, load_eval_image, psnr


@torch.no_grad()
def code(coder, net, y: torch.Tensor, t: float, rgb: np.ndarray, z=None) -> tuple[float, float]:
    h, w = rgb.shape[:2]
    z_str, y_str = coder.compress(y, t, z=z)
    y_hat = coder.decompress(z_str, y_str, (y.shape[2] // 4, y.shape[3] // 4), t)
    x = net.g_s(y_hat)[0, :, :h, :w].clamp(0, 1).mul(255).round().permute(1, 2, 0).numpy()
    return 8 * (len(z_str) + len(y_str)) / (h * w), psnr(rgb, x)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", default=str(DEFAULT_IMAGES))
    ap.add_argument("--qualities", default="20,50")
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--lr", type=float, default=DEFAULT_LR)
    ap.add_argument("--crop", type=int, default=256, help="centre crop side (0: whole image)")
    ap.add_argument("--hyper", choices=("keep", "refine", "recompute"), default="keep",
                    help="hyper-latent: h_a's of g_a's latent (the codec's way), refined jointly "
                         "with y, or h_a's of the refined latent (session 4's measurement)")
    ap.add_argument("--bf16", action="store_true", help="g_s under bfloat16 autocast in the refinement loop")
    args = ap.parse_args(argv)
    lm = load_model()
    net, coder = lm.net, lm.coder  # loaded with requires_grad off: only the latent trains
    qualities = [float(q) for q in args.qualities.split(",")]
    rows = []
    for f in sorted(Path(args.images).glob("*.png")):
        rgb = load_eval_image(f, args.crop)
        x = _padded(rgb)
        with torch.no_grad():
            y = net.g_a(x)
        for q in qualities:
            plain = code(coder, net, y, q / 100, rgb)
            y2, z2 = refine_latent(net, x, y, q / 100, rgb.shape[:2], args.steps, lr=args.lr,
                                   refine_z=args.hyper == "refine", bf16=args.bf16)
            refined = code(coder, net, y2, q / 100, rgb, None if args.hyper == "recompute" else z2)
            row = {"image": f.name, "quality": q, "plain": [round(v, 4) for v in plain],
                   "refined": [round(v, 4) for v in refined]}
            rows.append(row)
            print(json.dumps(row), flush=True)
    for q in qualities:
        rs = [r for r in rows if r["quality"] == q]
        bits = np.mean([r["refined"][0] / r["plain"][0] - 1 for r in rs]) * 100
        gain = np.mean([r["refined"][1] - r["plain"][1] for r in rs])
        print(f"quality {q:g}: bpp {np.mean([r['plain'][0] for r in rs]):.3f} -> "
              f"{np.mean([r['refined'][0] for r in rs]):.3f} ({bits:+.1f}% per image), "
              f"PSNR {gain:+.2f} dB")

    def curve(kind):
        return ([float(np.mean([r[kind][0] for r in rows if r["quality"] == q])) for q in qualities],
                [float(np.mean([r[kind][1] for r in rows if r["quality"] == q])) for q in qualities])

    print(f"BD-rate of refined against plain (mean curves, RGB PSNR): {bd_rate(*curve('plain'), *curve('refined')):+.1f}%")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
