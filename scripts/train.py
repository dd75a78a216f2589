"""Train the variable-rate gain hyperprior; resumes from RUN/last.pt when it exists.

    python -m scripts.train --run runs/main [--steps 200000] [--lr 5e-4] [--threads 2]

Loss per image: R + lambda(t) * 255^2 * MSE with t ~ U(0, 1) drawn per image, R in bits per
pixel from the likelihoods (training only: reported results always use real file bytes).
Data: the prepared photos from `python -m scripts.fetch_data` (DATA/prepared/train), random
crops with flips and 90-degree turns; the 2x/3x/4x downscales give scale augmentation.
bf16 autocast covers the synthesis/analysis transforms only; entropy models stay fp32.
Logs one JSON line per --log-every steps to RUN/log.jsonl and validates on DATA/prepared/val.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from codec.models.gain_hyperprior import GainHyperprior

ROOT = Path(__file__).resolve().parents[1]


def load_images(folder: Path) -> list[torch.Tensor]:
    files = sorted(folder.glob("*.png"))
    if not files:
        raise SystemExit(f"train: no images in {folder}; run `python -m scripts.fetch_data` first")
    return [torch.from_numpy(np.asarray(Image.open(f).convert("RGB"))).permute(2, 0, 1).contiguous()
            for f in files]


def random_batch(images, batch: int, crop: int) -> torch.Tensor:
    out = torch.empty(batch, 3, crop, crop, dtype=torch.uint8)
    for b in range(batch):
        img = random.choice(images)
        _, h, w = img.shape
        y, x = random.randint(0, h - crop), random.randint(0, w - crop)
        c = img[:, y:y + crop, x:x + crop]
        if random.random() < 0.5:
            c = c.flip(2)
        c = torch.rot90(c, random.randint(0, 3), (1, 2))
        out[b] = c
    return (out.float() / 255.0).contiguous(memory_format=torch.channels_last)


def rd_terms(model, x, t, autocast: bool):
    out = model(x, t, autocast=autocast)
    n_pix = x.shape[2] * x.shape[3]
    bits = sum(-torch.log2(l).flatten(1).sum(1) for l in out["likelihoods"].values())
    bpp = bits / n_pix
    mse = ((out["x_hat"].float() - x) ** 2).flatten(1).mean(1)
    return bpp, mse


@torch.no_grad()
def validate(model, val_images, crop: int = 256) -> dict:
    model.eval()
    res = {}
    for t in (0.0, 0.5, 1.0):
        bpps, psnrs = [], []
        for img in val_images:
            _, h, w = img.shape
            y, x0 = (h - crop) // 2, (w - crop) // 2
            x = img[None, :, y:y + crop, x0:x0 + crop].float() / 255
            bpp, mse = rd_terms(model, x, torch.tensor([t]), autocast=False)
            bpps.append(bpp.item())
            psnrs.append(10 * math.log10(1 / max(mse.item(), 1e-10)))
        res[f"t{t}"] = {"est_bpp": round(float(np.mean(bpps)), 4),
                        "psnr": round(float(np.mean(psnrs)), 3)}
    model.train()
    return res


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", default=str(ROOT / "runs" / "main"))
    ap.add_argument("--data", default=str(ROOT / "data"))
    ap.add_argument("--steps", type=int, default=200_000)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--crop", type=int, default=128)
    ap.add_argument("--lr", type=float, default=5e-4, help="also overrides a resumed run's lr")
    ap.add_argument("--aux-lr", type=float, default=1e-3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--no-bf16", action="store_true")
    ap.add_argument("--N", type=int, default=128)
    ap.add_argument("--M", type=int, default=192)
    ap.add_argument("--log-every", type=int, default=100)
    ap.add_argument("--ckpt-every", type=int, default=1000)
    ap.add_argument("--val-every", type=int, default=5000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--init", default=None, metavar="MODEL_ID",
                    help="with no checkpoint in --run: start from a shipped model's weights "
                         "(models/MODEL_ID.safetensors; optimiser state starts fresh)")
    args = ap.parse_args(argv)

    torch.set_num_threads(args.threads)
    random.seed(args.seed)
    torch.manual_seed(args.seed)
    run = Path(args.run)
    run.mkdir(parents=True, exist_ok=True)
    data = Path(args.data) / "prepared"
    train_images = [im for im in load_images(data / "train") if min(im.shape[1:]) >= args.crop]
    val_images = load_images(data / "val")

    model = GainHyperprior(N=args.N, M=args.M).to(memory_format=torch.channels_last)
    main_params = [p for n, p in model.named_parameters() if not n.endswith(".quantiles")]
    aux_params = [p for n, p in model.named_parameters() if n.endswith(".quantiles")]
    opt = torch.optim.Adam(main_params, lr=args.lr)
    aux_opt = torch.optim.Adam(aux_params, lr=args.aux_lr)
    step, wall = 0, 0.0
    ckpt_path = run / "last.pt"
    if ckpt_path.exists():
        ck = torch.load(ckpt_path, map_location="cpu", weights_only=False)
        model.load_state_dict(ck["model"])
        opt.load_state_dict(ck["opt"])
        aux_opt.load_state_dict(ck["aux_opt"])
        step, wall = ck["step"], ck.get("wall_s", 0.0)
        random.setstate(ck["py_rng"])
        torch.set_rng_state(ck["torch_rng"])
        print(f"resumed {ckpt_path} at step {step}")
    elif args.init:
        from codec.zoo import load_model

        shipped = load_model(args.init)
        state = {k: v for k, v in shipped.net.state_dict().items()
                 if not k.endswith(("_quantized_cdf", "_offset", "_cdf_length", "scale_table"))}
        model.load_state_dict(state, strict=False)
        step = shipped.card["training"]["steps"]
        wall = shipped.card["training"].get("wall_hours", 0) * 3600
        print(f"initialised from shipped model {args.init} (step {step})")
    for g in opt.param_groups:
        g["lr"] = args.lr

    def save():
        tmp = run / "last.pt.tmp"
        torch.save({"model": model.state_dict(), "opt": opt.state_dict(),
                    "aux_opt": aux_opt.state_dict(), "step": step, "wall_s": wall,
                    "args": vars(args), "py_rng": random.getstate(),
                    "torch_rng": torch.get_rng_state()}, tmp)
        os.replace(tmp, ckpt_path)

    log = (run / "log.jsonl").open("a")
    model.train()
    acc = {"loss": 0.0, "bpp": 0.0, "psnr": 0.0, "n": 0}
    t0 = time.time()
    while step < args.steps:
        x = random_batch(train_images, args.batch, args.crop)
        t = torch.rand(args.batch)
        lam = model.lmbda(t)
        bpp, mse = rd_terms(model, x, t, autocast=not args.no_bf16)
        loss = (bpp + lam * 255 ** 2 * mse).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(main_params, 1.0)
        opt.step()
        aux_loss = model.aux_loss()
        aux_opt.zero_grad(set_to_none=True)
        aux_loss.backward()
        aux_opt.step()
        step += 1

        acc["loss"] += loss.item()
        acc["bpp"] += bpp.mean().item()
        acc["psnr"] += (10 * torch.log10(1 / mse.clamp_min(1e-10))).mean().item()
        acc["n"] += 1
        if step % args.log_every == 0:
            now = time.time()
            wall += now - t0
            rec = {"step": step, "lr": opt.param_groups[0]["lr"], "s_per_step": round((now - t0) / acc["n"], 3),
                   "wall_s": round(wall), "aux": round(aux_loss.item(), 2),
                   **{k: round(v / acc["n"], 4) for k, v in acc.items() if k != "n"}}
            t0 = now
            acc = {"loss": 0.0, "bpp": 0.0, "psnr": 0.0, "n": 0}
            if step % args.val_every == 0:
                rec["val"] = validate(model, val_images)
            log.write(json.dumps(rec) + "\n")
            log.flush()
        if step % args.ckpt_every == 0:
            save()
    save()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
