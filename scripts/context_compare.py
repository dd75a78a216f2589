"""What a channel-conditional context would save on our own trained transforms (issue #3).

    python -m scripts.context_compare --out runs/context --minutes 18 [--quality 50] [--threads 1]

The shipped model's g_a, g_s and gains are frozen at one quality, so every candidate codes the
same latent y = g_a(x) * gain and only the entropy model differs. Each candidate is a CompressAI
latent codec trained from scratch for the same wall time on rate alone (bits of y and z from the
likelihoods), on the crops scripts/train.py uses:

- hyperprior: our mean-scale hyperprior (h_a, h_s as in GainHyperprior), no context;
- chctx: the same h_a/h_s feeding ELIC's space-channel context (CompressAI's Elic2022Chandelier
  latent codec: channel groups 16/16/32/64/64, each coded in two checkerboard passes).

Both are then measured on the eval images with real entropy-coded bytes (y and z strings), with
the frozen g_s for PSNR, next to the shipped model's own entropy model (trained for the whole run)
at the same quality. Results: OUT/results.json.
"""

from __future__ import annotations

import argparse
import copy
import json
import random
import time
from pathlib import Path

import numpy as np
import torch
from compressai.entropy_models import EntropyBottleneck, GaussianConditional
from compressai.latent_codecs import GaussianConditionalLatentCodec, HyperLatentCodec, HyperpriorLatentCodec
from compressai.models import Elic2022Chandelier
from PIL import Image

from codec.image_codec import _padded
from codec.models.gain_hyperprior import exact_gain, scale_table
from codec.zoo import load_model
from scripts.arch_compare import EVAL, _flat, add_budget_args, open_results, train_for
from scripts.eval_codec import psnr
from scripts.train import CropSampler, load_images



def build(name: str, net, t: float, init_hyper: bool) -> torch.nn.Module:
    """init_hyper: start h_a, h_s and the z prior from the shipped model, with its z gains at t
    folded into h_a's last and h_s's first layer; otherwise fresh weights of the same architecture."""
    N, M = net.N, net.M
    h_a, h_s = copy.deepcopy(net.h_a), copy.deepcopy(net.h_s)
    with torch.no_grad():
        zg, zg_inv = exact_gain(net.z_gain, t).flatten(), exact_gain(net.z_gain_inv, t).flatten()
        h_a[-1].weight.mul_(zg[:, None, None, None])
        h_a[-1].bias.mul_(zg)
        h_s[0].weight.mul_(zg_inv[:, None, None, None])  # ConvTranspose2d: [in, out, k, k]
    bottleneck = copy.deepcopy(net.entropy_bottleneck) if init_hyper else EntropyBottleneck(N)
    for m in (h_a, h_s):
        m.requires_grad_(True)
        for layer in m.modules():
            if hasattr(layer, "reset_parameters") and not init_hyper:
                layer.reset_parameters()
    bottleneck.requires_grad_(True)
    hyper = HyperLatentCodec(entropy_bottleneck=bottleneck, h_a=h_a, h_s=h_s, quantizer="ste")
    if name == "hyperprior":
        y_codec = GaussianConditionalLatentCodec(scale_table=scale_table().tolist(), quantizer="ste")
        return HyperpriorLatentCodec(latent_codec={"y": y_codec, "hyper": hyper})
    if name == "chctx":
        lc = Elic2022Chandelier(N=N, M=M, groups=[16, 16, 32, 64, M - 128]).latent_codec
        lc.hyper = lc.latent_codec["hyper"] = hyper  # the attribute registers it, the dict routes to it
        return lc
    raise SystemExit(f"context_compare: unknown candidate {name!r}")


def update(lc) -> None:
    """Build the CDF tables the rANS coder needs."""
    for m in lc.modules():
        if isinstance(m, EntropyBottleneck):
            m.update(force=True)
        elif isinstance(m, GaussianConditional):
            m.update_scale_table(scale_table(), force=True)


def rate_step(lc, analysis):
    def step_loss(x):
        with torch.no_grad():
            y = analysis(x)
        out = lc(y)
        bpp = sum(-torch.log2(v).sum() for v in out["likelihoods"].values()) / (x.shape[0] * x.shape[2] * x.shape[3])
        return bpp, {"bpp": bpp.detach()}
    return step_loss


@torch.no_grad()
def evaluate(code, g_s) -> dict:
    """code(x) -> (bytes, g_s input, decoded as encoded?); bpp from the strings, PSNR through the
    frozen g_s from the encoder's reconstruction (what a bit-exact decoder would give)."""
    bpps, psnrs, mismatches = [], [], []
    for f in sorted(EVAL.glob("*.png")):
        rgb = np.asarray(Image.open(f).convert("RGB"))
        h, w = rgb.shape[:2]
        nbytes, y_hat, same = code(_padded(rgb))
        if not same:
            mismatches.append(f.name)
        x_hat = (g_s(y_hat)[0, :, :h, :w].clamp(0, 1) * 255).round().permute(1, 2, 0).numpy()
        bpps.append(8 * nbytes / (h * w))
        psnrs.append(psnr(rgb, x_hat))
    return {"bpp": round(float(np.mean(bpps)), 4), "psnr": round(float(np.mean(psnrs)), 3),
            "decode_mismatch": mismatches, "per_image_bpp": [round(b, 4) for b in bpps]}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_budget_args(ap, "context")
    ap.add_argument("--candidates", default="hyperprior,chctx")
    ap.add_argument("--quality", type=float, default=50.0)
    ap.add_argument("--init-hyper", action="store_true",
                    help="start h_a/h_s/z prior from the shipped model; results are named NAME+init")
    args = ap.parse_args(argv)
    out, res_path, results = open_results(args)

    lm = load_model()
    net, t = lm.net.eval(), args.quality / 100
    for p in net.parameters():
        p.requires_grad_(False)
    yg, yg_inv = exact_gain(net.y_gain, t), exact_gain(net.y_gain_inv, t)

    def analysis(x):
        return net.g_a(x) * yg

    if "shipped" not in results:
        def shipped(x):
            z_str, y_str = lm.coder.compress(net.g_a(x), t)
            h, w = x.shape[2] // 64, x.shape[3] // 64
            return len(z_str) + len(y_str), lm.coder.decompress(z_str, y_str, (h, w), t), True
        results["shipped"] = {"note": "the shipped model's entropy model, trained for the whole run",
                              **evaluate(shipped, net.g_s)}

    sampler = None
    for arch in args.candidates.split(","):
        name = arch + ("+init" if args.init_hyper else "")
        if name in results:
            continue
        random.seed(0)
        torch.manual_seed(0)
        lc = build(arch, net, t, args.init_hyper)
        if sampler is None:
            sampler = CropSampler(load_images(Path(args.data) / "prepared" / "train", args.crop),
                                  args.crop, detail=0.5, device="cpu")
        with (out / f"{name}.log.jsonl").open("w") as log:
            rec = train_for(lc, rate_step(lc, analysis), sampler, args.minutes, args.lr, args.batch, log)
        lc.eval()
        update(lc)

        def coded(x):
            # CompressAI's context models run in float: the decoder can compute different
            # entropy parameters than the encoder did and then decodes garbage. Counted, not hidden.
            enc = lc.compress(analysis(x))
            nbytes = sum(len(s) for s in _flat(enc["strings"]))
            dec = lc.decompress(enc["strings"], enc["shape"])["y_hat"]
            same = bool((dec - enc["y_hat"]).abs().max() < 1e-3)
            return nbytes, enc["y_hat"] * yg_inv, same

        t0 = time.perf_counter()
        rec.update(evaluate(coded, net.g_s), minutes=args.minutes, threads=args.threads,
                   params=sum(p.numel() for p in lc.parameters()))
        rec["eval_s"] = round(time.perf_counter() - t0, 1)
        results[name] = rec
        torch.save(lc.state_dict(), out / f"{name}.pt")
        res_path.write_text(json.dumps(results, indent=1))
        print(name, json.dumps({k: v for k, v in rec.items() if k != "per_image_bpp"}), flush=True)
    res_path.write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
