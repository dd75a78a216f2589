"""How much of the loss at high rates is the transform's, not the quantiser's.

    python -m scripts.transform_bound [--images shared/data/eval/images] [--qualities 50,75,100]

For each image and quality: the real file (bpp from its bytes, RGB PSNR of the decoded image) next
to the same model with quantisation switched off, g_s(g_a(x) * gain * inverse gain) in fp32. When
the two PSNRs meet, spending more bits cannot help: the transforms themselves are the limit.

--optimise-latent STEPS goes one further and splits that limit between the two transforms: it
runs Adam on g_s's input itself for STEPS steps to minimise the MSE, a lower bound on what the
best encoder could get from this decoder with unlimited bits. --crop C measures the centre C x C crop (g_s's backward pass
on whole images is slow on a CPU).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

import codec
from codec.image_codec import _padded
from codec.models.gain_hyperprior import exact_gain
from codec.zoo import load_model
from scripts.eval_codec import DEFAULT_IMAGES, load_eval_image, psnr


def optimised_latent_psnr(net, x: torch.Tensor, u: torch.Tensor, steps: int, h: int, w: int) -> float:
    """PSNR (over the h x w image, 8-bit) of g_s(u) for the best synthesis input Adam finds in
    `steps` steps, starting at u. Any rate parameter's gains only rescale g_s's input, so this
    bound belongs to g_s alone. The network's weights stay fixed."""
    with torch.enable_grad():
        u = u.detach().clone().requires_grad_(True)
        opt = torch.optim.Adam([u], lr=0.01)
        for _ in range(steps):
            mse = ((net.g_s(u) - x)[..., :h, :w] ** 2).mean()
            opt.zero_grad()
            mse.backward()
            opt.step()
    with torch.no_grad():
        out = (net.g_s(u)[..., :h, :w].clamp(0, 1) * 255).round() / 255
        mse = ((out - x[..., :h, :w]) ** 2).mean().item()
    return 10 * float(np.log10(1 / mse))


@torch.no_grad()
def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", default=str(DEFAULT_IMAGES))
    ap.add_argument("--qualities", default="50,75,100")
    ap.add_argument("--optimise-latent", type=int, default=0, metavar="STEPS")
    ap.add_argument("--crop", type=int, default=0, help="centre crop side (0: whole image)")
    args = ap.parse_args(argv)
    net = load_model().net
    qualities = [float(q) for q in args.qualities.split(",")]
    rows = []
    for f in sorted(Path(args.images).glob("*.png")):
        rgb = load_eval_image(f, args.crop)
        h, w = rgb.shape[:2]
        x_pad = _padded(rgb)
        y = net.g_a(x_pad)
        row = {"image": f.name}
        for q in qualities:
            t = q / 100
            x = net.g_s(y * exact_gain(net.y_gain, t) * exact_gain(net.y_gain_inv, t))
            unq = (x[0, :, :h, :w].clamp(0, 1) * 255).round().permute(1, 2, 0).numpy()
            data = codec.encode(rgb, quality=q)
            dec = np.asarray(codec.decode(data).convert("RGB"))
            row[f"q{q:g}"] = {"bpp": round(8 * len(data) / (h * w), 3), "psnr": round(psnr(rgb, dec), 2),
                              "unquantised_psnr": round(psnr(rgb, unq), 2)}
        if args.optimise_latent:  # from the top quality's unquantised synthesis input
            u = y * exact_gain(net.y_gain, 1.0) * exact_gain(net.y_gain_inv, 1.0)
            row["optimised_latent_psnr"] = round(
                optimised_latent_psnr(net, x_pad, u, args.optimise_latent, h, w), 2)
        rows.append(row)
        print(json.dumps(row), flush=True)
    for q in qualities:
        k = f"q{q:g}"
        print(f"quality {q:g}: mean bpp {np.mean([r[k]['bpp'] for r in rows]):.3f}, "
              f"PSNR {np.mean([r[k]['psnr'] for r in rows]):.2f} dB, "
              f"unquantised {np.mean([r[k]['unquantised_psnr'] for r in rows]):.2f} dB")
    if args.optimise_latent:
        print(f"g_s from an optimised latent ({args.optimise_latent} Adam steps): "
              f"{np.mean([r['optimised_latent_psnr'] for r in rows]):.2f} dB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
