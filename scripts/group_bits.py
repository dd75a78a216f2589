"""Bits per channel group of a channel-context model, with its context and without it.

    python -m scripts.group_bits [--model hpgc-n128m320-3] [--qualities 20,50,80]

For each eval image and quality: the latent's bits per group from the coder's own (fixed-point)
entropy parameters, once with the context networks and once with their output set to zero
(h_s's parameters alone), as bpp over the image set. Rates come from the likelihoods: this
splits a file's latent bits by group; it does not replace real file sizes.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from codec.image_codec import PAD
from codec.models.gain_hyperprior import exact_gain
from codec.zoo import load_model

ROOT = Path(__file__).resolve().parents[1]


def group_bits(lm, x: torch.Tensor, t: float, context) -> np.ndarray:
    net, coder = lm.net, lm.coder
    gc = net.gaussian_conditional
    y = net.g_a(x) * exact_gain(net.y_gain, t)
    z = net.h_a(y) * exact_gain(net.z_gain, t)
    z_hat = net.entropy_bottleneck.decompress(net.entropy_bottleneck.compress(z), z.shape[-2:])
    hs = coder._hyper_params(z_hat, t)
    bits, prev = [], []
    for i in range(net.n_slices):
        sl = net.slice_channels(i)
        scales, means = net.slice_params(hs, i, prev, context=context)
        if i < net.spatial_groups:  # the checkerboard's second pass, as the coder runs it
            anchors = torch.round(y[:, sl] - means) + means
            scales, means = net.checkerboard_params(i, scales, means, anchors, spatial=coder.spatial)
        yq = torch.round(y[:, sl] - means) + means
        lik = gc._likelihood(yq, gc.lower_bound_scale(scales), means=means).clamp_min(1e-9)
        bits.append(float(-torch.log2(lik).sum()))
        prev.append(yq)
    return np.array(bits)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=None)
    ap.add_argument("--images", default=str(ROOT.parent / "shared/data/eval/images"))
    ap.add_argument("--qualities", default="20,50,80")
    args = ap.parse_args(argv)
    torch.set_num_threads(2)
    lm = load_model(args.model)
    if lm.net.n_slices < 2:
        raise SystemExit(f"group_bits: {lm.model_id} has no channel context")
    size = lm.net.M // lm.net.n_slices
    silent = [lambda a: torch.zeros(a.shape[0], 2 * size, *a.shape[2:], dtype=torch.float64)] * lm.net.n_slices
    qualities = [float(q) for q in args.qualities.split(",")]
    with_ctx = np.zeros((len(qualities), lm.net.n_slices))
    without = np.zeros_like(with_ctx)
    pixels = 0
    with torch.no_grad():
        for f in sorted(Path(args.images).glob("*.png")):
            img = np.array(Image.open(f).convert("RGB"))
            h, w = img.shape[:2]
            pixels += h * w
            x = torch.from_numpy(img).permute(2, 0, 1)[None].float() / 255
            x = torch.nn.functional.pad(x, (0, -w % PAD, 0, -h % PAD), mode="replicate")
            for k, q in enumerate(qualities):
                with_ctx[k] += group_bits(lm, x, q / 100, lm.coder.context)
                without[k] += group_bits(lm, x, q / 100, silent)
    print(f"{lm.model_id}: latent bpp per group of {size} channels, with the context / without it")
    for k, q in enumerate(qualities):
        cells = " | ".join(f"{a / pixels:.4f} / {b / pixels:.4f}" for a, b in zip(with_ctx[k], without[k]))
        saved = 100 * (1 - with_ctx[k].sum() / without[k].sum())
        print(f"q{q:g}: {cells} | context saves {saved:.1f}% of the latent bits")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
