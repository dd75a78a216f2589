"""Compare candidate architectures under one equal CPU budget (issue #3, "architecture by measurement").

    python -m scripts.arch_compare --out runs/arch --minutes 18 [--arch small,base,wide,chctx] [--threads 1]

Each candidate is a stock CompressAI model trained from scratch for the same wall time at one
lambda (loss bpp + lambda * 255^2 * MSE, bpp from the likelihoods during training), on the same
crops as scripts/train.py. It is then measured on the eval images with real entropy-coded bytes
(its own compress(): the y and z strings, no container header) and its decode time at 768x512.

- small: mean-scale hyperprior N=96,  M=128
- base:  mean-scale hyperprior N=128, M=192 (the shipped transforms, without gain vectors)
- wide:  mean-scale hyperprior N=192, M=320 (CompressAI's high-rate size)
- chctx: the base GDN transforms with ELIC's space-channel context (5 uneven channel groups, each
         checkerboard-coded; CompressAI's Elic2022Chandelier latent codec), decode still parallel
         within each group.

Results go to OUT/results.json (one record per architecture; rerunning skips finished ones).
Short from-scratch runs measure how far each gets under this machine's budget, not where each
would end up; the note in docs/training.md says so.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import statistics
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from compressai.entropy_models import EntropyBottleneck
from compressai.layers import GDN
from compressai.models import Elic2022Chandelier, MeanScaleHyperprior
from compressai.models.utils import conv, deconv
from PIL import Image

from codec.image_codec import _padded
from scripts.eval_codec import DEFAULT_IMAGES as EVAL, psnr
from scripts.train import CropSampler, load_images

ROOT = Path(__file__).resolve().parents[1]


def gdn_transforms(N: int, M: int):
    g_a = torch.nn.Sequential(conv(3, N), GDN(N), conv(N, N), GDN(N), conv(N, N), GDN(N), conv(N, M))
    g_s = torch.nn.Sequential(deconv(M, N), GDN(N, inverse=True), deconv(N, N), GDN(N, inverse=True),
                              deconv(N, N), GDN(N, inverse=True), deconv(N, 3))
    return g_a, g_s


def build(name: str) -> torch.nn.Module:
    if name == "small":
        return MeanScaleHyperprior(96, 128)
    if name == "base":
        return MeanScaleHyperprior(128, 192)
    if name == "wide":
        return MeanScaleHyperprior(192, 320)
    if name == "chctx":
        net = Elic2022Chandelier(N=128, M=192, groups=[16, 16, 32, 64, 64])
        net.g_a, net.g_s = gdn_transforms(128, 192)
        return net
    raise SystemExit(f"arch_compare: unknown architecture {name!r}")


def train_for(module, step_loss, sampler, minutes: float, lr: float, batch: int, log) -> dict:
    """Adam with a cosine decay to lr/10 over a wall-time budget, grad-norm clip 1; the
    EntropyBottleneck quantiles by their own Adam. step_loss(x) -> (loss, {name: tensor} to log)."""
    main = [p for n, p in module.named_parameters() if not n.endswith(".quantiles")]
    aux = [p for n, p in module.named_parameters() if n.endswith(".quantiles")]
    opt, aux_opt = torch.optim.Adam(main, lr=lr), torch.optim.Adam(aux, lr=1e-3)
    module.train()
    began, step, times = time.time(), 0, []
    while (elapsed := time.time() - began) < minutes * 60:
        for g in opt.param_groups:
            g["lr"] = lr * (0.1 + 0.45 * (1 + math.cos(math.pi * elapsed / (minutes * 60))))
        t0 = time.time()
        loss, rec = step_loss(sampler.batch(batch))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(main, 1.0)
        opt.step()
        aux_loss = sum(m.loss() for m in module.modules() if isinstance(m, EntropyBottleneck))
        aux_opt.zero_grad(set_to_none=True)
        aux_loss.backward()
        aux_opt.step()
        step += 1
        times.append(time.time() - t0)
        if step % 100 == 0:
            log.write(json.dumps({"step": step, **{k: round(v.item(), 4) for k, v in rec.items()}}) + "\n")
            log.flush()
    return {"steps": step, "s_per_step": round(statistics.median(times), 4)}


def rd_step(net, lmbda: float):
    def step_loss(x):
        out = net(x)
        bpp = sum(-torch.log2(v).sum() for v in out["likelihoods"].values()) / (x.shape[0] * x.shape[2] * x.shape[3])
        mse = F.mse_loss(out["x_hat"], x)
        return bpp + lmbda * 255 ** 2 * mse, {"bpp": bpp.detach(), "psnr": -10 * torch.log10(mse.detach())}
    return step_loss


@torch.no_grad()
def evaluate(net) -> dict:
    net.eval()
    net.update(force=True)
    bpps, psnrs = [], []
    for f in sorted(EVAL.glob("*.png")):
        rgb = np.asarray(Image.open(f).convert("RGB"))
        h, w = rgb.shape[:2]
        enc = net.compress(_padded(rgb))
        nbytes = sum(len(s) for s in _flat(enc["strings"]))
        x_hat = net.decompress(enc["strings"], enc["shape"])["x_hat"][0, :, :h, :w]
        bpps.append(8 * nbytes / (h * w))
        psnrs.append(psnr(rgb, (x_hat.clamp(0, 1) * 255).round().permute(1, 2, 0).numpy()))
    return {"bpp": round(float(np.mean(bpps)), 4), "psnr": round(float(np.mean(psnrs)), 3),
            "per_image": [[round(b, 4), round(p, 3)] for b, p in zip(bpps, psnrs)]}


def _flat(s):
    if isinstance(s, (bytes, bytearray)):
        return [s]
    return [b for item in s for b in _flat(item)]


@torch.no_grad()
def decode_time(net, runs: int = 5) -> float:
    """Median seconds to decompress a 768x512 image (entropy decoding and g_s)."""
    net.eval()
    rgb = np.asarray(Image.open(sorted(EVAL.glob("*.png"))[0]).convert("RGB"))
    enc = net.compress(_padded(rgb[:512, :768]))
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        net.decompress(enc["strings"], enc["shape"])
        times.append(time.perf_counter() - t0)
    return round(statistics.median(times), 3)


def add_budget_args(ap: argparse.ArgumentParser, out: str) -> None:
    """Options both comparisons share: where results go, the budget, and the training crops."""
    ap.add_argument("--out", default=str(ROOT / "runs" / out))
    ap.add_argument("--data", default=str(ROOT / "data"))
    ap.add_argument("--minutes", type=float, default=18.0)
    ap.add_argument("--lr", type=float, default=3e-4)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--crop", type=int, default=128)
    ap.add_argument("--threads", type=int, default=1)


def open_results(args) -> tuple[Path, Path, dict]:
    """Set the thread count; -> (out folder, results.json path, results so far)."""
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    res_path = out / "results.json"
    return out, res_path, json.loads(res_path.read_text()) if res_path.exists() else {}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_budget_args(ap, "arch")
    ap.add_argument("--arch", default="small,base,wide,chctx")
    ap.add_argument("--lmbda", type=float, default=0.013)
    ap.add_argument("--time-only", action="store_true",
                    help="only (re)measure decode time of the trained checkpoints, at --threads")
    args = ap.parse_args(argv)
    out, res_path, results = open_results(args)
    sampler = None
    for name in args.arch.split(","):
        random.seed(0)
        torch.manual_seed(0)
        net = build(name)
        ckpt = out / f"{name}.pt"
        if args.time_only:
            net.load_state_dict(torch.load(ckpt, map_location="cpu"))
            net.update(force=True)
            results[name][f"decode_s_{args.threads}threads"] = decode_time(net)
        elif name in results:
            continue
        else:
            if sampler is None:
                sampler = CropSampler(load_images(Path(args.data) / "prepared" / "train", args.crop),
                                      args.crop, detail=0.5, device="cpu")
            with (out / f"{name}.log.jsonl").open("w") as log:
                rec = train_for(net, rd_step(net, args.lmbda), sampler, args.minutes, args.lr, args.batch, log)
            torch.save(net.state_dict(), ckpt)
            rec.update(params=sum(p.numel() for p in net.parameters()), lmbda=args.lmbda,
                       minutes=args.minutes, threads=args.threads, **evaluate(net))
            rec[f"decode_s_{args.threads}threads"] = decode_time(net)
            results[name] = rec
        res_path.write_text(json.dumps(results, indent=1))
        print(name, json.dumps({k: v for k, v in results[name].items() if k != "per_image"}), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
