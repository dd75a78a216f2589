"""Fine-tune a trained model's entropy model on its own frozen latents, for rate alone.

    python -m scripts.tune_entropy --model hpgc-n128m320-7 --out runs/entropy/tune.pt --minutes 60

With g_a and g_s frozen, the entropy model (h_a, h_s, the channel and checkerboard context
networks, the hyper-latent's factorised prior and the z gains) decides how many bits a latent
costs, and hardly what it decodes to: the coder rounds y - mean, so the decoded latent is within
half a step of y whatever the networks predict, and where it rounds to the mean itself, the mean
that costs fewest bits is also the one nearest y. So the loss is the rate alone: the likelihoods
of the rounded latents the coder writes (straight-through gradients), not train.py's noisy
proxy, whose mismatch a fine-tune of these parts alone can remove. g_a runs once per
training photo (and its mirror image) before training; a step then runs only the small entropy
networks on latent crops, many times the pixels per second of train.py, which spends most of
its time in g_a and g_s. The real test is a real-file RD measurement (scripts.eval_codec):
distortion is only assumed unchanged here.

Why bother: in a shipped model these parts were never trained together with the encoder that
codes its files. -7's g_a and h_a are an encoder-only fine-tune of -6 (session 16) and its
checkerboard was fitted in closed form on the frozen rest (session 25).

The result is an ordinary train.py checkpoint: export it with scripts.export_model.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import time
from pathlib import Path

import torch

from codec import zoo
from scripts.train import derived_checkpoint, load_images

ROOT = Path(__file__).resolve().parents[1]
# What the rate depends on and g_s does not. y_gain/y_gain_inv stay: they set the distortion.
ENTROPY_PARTS = ("h_a.", "h_s.", "context.", "spatial.", "entropy_bottleneck.", "z_gain", "z_gain_inv")
# The default trains the decoder's side of it only: with h_a, the factorised prior and the z gains
# too, lr 1e-5 diverged within 400 steps (docs/training.md, session 26).
DEFAULT_PARTS = ("h_s.", "context.", "spatial.")
VAL_RATES = (0.0, 0.25, 0.5, 0.75, 1.0)


@torch.no_grad()
def latents(net, images: list[torch.Tensor], flips: bool) -> list[torch.Tensor]:
    """g_a's latent of each photo (float32, as the codec's encoder computes it), cropped to the
    positions whose 16x16 pixels lie inside the photo; with flips, of its mirror image too."""
    out = []
    for im in images:
        _, h, w = im.shape
        h16, w16 = h // 16, w // 16
        for flip in ((False, True) if flips else (False,)):
            x = im[None, :, :h16 * 16, :w16 * 16].float() / 255
            if flip:
                x = x.flip(-1)
            out.append(net.g_a(x)[0].contiguous())
    return out


def sample_batch(ys: list[torch.Tensor], batch: int, size: int, rng: random.Random) -> torch.Tensor:
    """batch random size x size crops of the latents, a latent picked with probability ~ sqrt(area)."""
    pool = [y for y in ys if min(y.shape[1:]) >= size]
    weights = [math.sqrt(y.shape[1] * y.shape[2]) for y in pool]
    crops = []
    for y in rng.choices(pool, weights, k=batch):
        r, c = rng.randrange(y.shape[1] - size + 1), rng.randrange(y.shape[2] - size + 1)
        crops.append(y[:, r:r + size, c:c + size])
    return torch.stack(crops)


def bits(net, y: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Total bits of latents y (not yet gained) at rates t: the likelihoods of the rounded values."""
    _, _, lik = net.latent_forward(y, t, rate="round")
    return sum(-torch.log2(v).sum() for v in lik.values())


@torch.no_grad()
def val_bpp(net, ys: list[torch.Tensor]) -> dict[str, float]:
    """Bits per pixel of whole validation latents at VAL_RATES, with rounding (eval mode): what
    the coder would write, up to the rANS overhead. Each latent is cut to a multiple of 4
    positions, as the hyper-latent needs."""
    was = net.training
    net.eval()
    res = {}
    for t in VAL_RATES:
        b = px = 0
        for y in ys:
            h, w = y.shape[1] // 4 * 4, y.shape[2] // 4 * 4
            b += bits(net, y[None, :, :h, :w], torch.tensor([t])).item()
            px += 256 * h * w
        res[f"t{t}"] = b / px
    net.train(was)
    return res


class EntropyTuner:
    """Adam on the parameters whose names start with parts (the factorised prior's quantiles by
    their own aux loss, as train.py); everything else stays frozen."""

    def __init__(self, net, parts: tuple[str, ...], lr: float, aux_lr: float):
        self.net = net
        for n, p in net.named_parameters():
            p.requires_grad_(n.startswith(parts))
        trained = [(n, p) for n, p in net.named_parameters() if p.requires_grad]
        params = [p for n, p in trained if not n.endswith(".quantiles")]
        aux = [p for n, p in trained if n.endswith(".quantiles")]
        self.size = sum(p.numel() for p in params)
        self.opt = torch.optim.Adam(params, lr=lr)
        self.aux_opt = torch.optim.Adam(aux, lr=aux_lr) if aux else None

    def step(self, y: torch.Tensor, t: torch.Tensor) -> float:
        """One step on latent crops y [B, M, h, w] (h, w multiples of 4) at rates t [B]: bpp."""
        loss = bits(self.net, y, t) / (y.shape[0] * 256 * y.shape[2] * y.shape[3])
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        if self.aux_opt is not None:
            self.aux_opt.zero_grad(set_to_none=True)
            self.net.aux_loss().backward()
            self.aux_opt.step()
        return loss.item()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=zoo.DEFAULT_MODEL)
    ap.add_argument("--out", default=str(ROOT / "runs/entropy/tune.pt"))
    ap.add_argument("--data", default=str(ROOT / "data"))
    ap.add_argument("--parts", default=",".join(DEFAULT_PARTS),
                    help=f"comma-separated name prefixes of the parameters trained (all: {','.join(ENTROPY_PARTS)})")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--crop", type=int, default=384, help="crop side in pixels (a multiple of 64)")
    ap.add_argument("--lr", type=float, default=3e-6)
    ap.add_argument("--aux-lr", type=float, default=1e-3)
    ap.add_argument("--steps", type=int, default=100_000)
    ap.add_argument("--minutes", type=float, default=None)
    ap.add_argument("--val-every", type=int, default=500)
    ap.add_argument("--no-flips", dest="flips", action="store_false")
    ap.add_argument("--cache", default=None, help="file keeping the latents of --model between runs")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)
    if args.crop % 64:
        raise SystemExit("tune_entropy: --crop must be a multiple of 64")
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    rng = random.Random(args.seed)
    began = time.time()

    base = zoo.load_model(args.model)  # with its encoder weights: the latents it codes
    arch = {k: v for k, v in base.card["architecture"].items() if k != "type"}
    net = zoo.build_network(arch)
    net.load_state_dict(zoo.without_tables(base.net.state_dict()), strict=False)
    tuner = EntropyTuner(net, tuple(args.parts.split(",")), args.lr, args.aux_lr)
    print(f"training {tuner.size:,} parameters ({args.parts})")

    cache = Path(args.cache) if args.cache else None
    if cache is not None and cache.exists():  # g_a is frozen: its latents are reusable
        train_ys, val_ys = torch.load(cache)
    else:
        train_ys = latents(net, load_images(Path(args.data) / "prepared" / "train"), args.flips)
        val_ys = latents(net, load_images(Path(args.data) / "prepared" / "val"), False)
        if cache is not None:
            cache.parent.mkdir(parents=True, exist_ok=True)
            torch.save((train_ys, val_ys), cache)
    print(f"{len(train_ys)} training and {len(val_ys)} validation latents ({time.time() - began:.0f} s)")
    start = val_bpp(net, val_ys)
    print("val bpp", json.dumps({k: round(v, 5) for k, v in start.items()}), flush=True)

    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    size, step, acc = args.crop // 16, 0, []
    best = (sum(start.values()), 0)
    net.train()
    while step < args.steps and (args.minutes is None or time.time() - began < 60 * args.minutes):
        y = sample_batch(train_ys, args.batch, size, rng)
        bpp = tuner.step(y, torch.rand(args.batch))
        step += 1
        acc.append(bpp)
        if step % 100 == 0:
            print(f"step {step} train bpp {sum(acc) / len(acc):.5f} ({time.time() - began:.0f} s)", flush=True)
            acc = []
        if step % args.val_every == 0:
            v = val_bpp(net, val_ys)
            rel = {k: round(100 * (v[k] / start[k] - 1), 3) for k in v}
            print(f"step {step} val bpp change %", json.dumps(rel), flush=True)
            if sum(v.values()) < best[0]:  # keep the best on the validation photos
                best = (sum(v.values()), step)
                ck = derived_checkpoint(net, arch, base.card["training"], step, time.time() - began,
                                        args.lr, {"entropy_tune": vars(args)})
                torch.save({**ck, "val_change_pct": rel}, out)
                print(f"wrote {out}", flush=True)
    print(f"best validation at step {best[1]} ({time.time() - began:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
