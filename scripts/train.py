"""Train the variable-rate gain hyperprior; resumes from RUN/last.pt when it exists.

    python -m scripts.train --run runs/main [--steps 200000] [--minutes M] [--lr 5e-4]

Loss per image: R + lambda(t) * 255^2 * MSE with t ~ U(0, 1) drawn per image, R in bits per
pixel from the likelihoods (training only: reported results always use real file bytes).
Data: the prepared photos from `python -m scripts.fetch_data` (DATA/prepared/train), random
crops with flips and 90-degree turns; the 2x/3x/4x downscales give scale augmentation. Half
the crops are the most detailed of four candidates (--detail), because the photos are smoother
than the images people compress; some crops are made grey-scale or contrast-stretched until
they clip (--gray, --stretch); --text draws synthetic text on a share of them
(scripts.synthetic_text: the photos hold almost none). A share of the images (--roi-prob) is
coded with a random per-position quality map, as ROI coding does, so g_s learns spatially
varying quantisation.
--init with a larger --M widens a trained model's latent (widen_latent) before training.
bf16 autocast covers the synthesis/analysis transforms only; entropy models stay fp32. On a CPU
without native bf16 (codec.precision) it is off: emulated, it made a step 9x slower.
Runs on CUDA when it is there (the images then live on the GPU). Logs one JSON line per
--log-every steps to RUN/log.jsonl and validates on DATA/prepared/val.
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
from torch import nn

from codec.models.gain_hyperprior import GainHyperprior
from codec.precision import native_bf16
from codec.zoo import build_network, encoder_side, without_tables  # encoder_side: what --encoder-only trains
from scripts.synthetic_shapes import shapes_crop
from scripts.synthetic_text import draw_text

ROOT = Path(__file__).resolve().parents[1]
GAIN_PARAMS = ("y_gain", "y_gain_inv", "z_gain", "z_gain_inv")


def load_images(folder: Path, min_side: int = 0) -> list[torch.Tensor]:
    files = sorted(p for p in folder.glob("*") if p.suffix in (".png", ".webp"))
    if not files:
        raise SystemExit(f"train: no images in {folder}; run `python -m scripts.fetch_data` first")
    images = [torch.from_numpy(np.array(Image.open(f).convert("RGB"))).permute(2, 0, 1).contiguous()
              for f in files]
    return [im for im in images if min(im.shape[1:]) >= min_side]


class CropSampler:
    """Random crops; with probability `detail`, the most detailed of four candidate crops.

    Detail is the mean absolute gradient, read from an integral image of each photo.
    """

    def __init__(self, images: list[torch.Tensor], crop: int, detail: float, device: str,
                 gray: float = 0.0, stretch: float = 0.0, text: float = 0.0, area_power: float = 1.0,
                 shapes: float = 0.0):
        self.images = [im.to(device) for im in images]
        self.crop, self.detail, self.gray, self.stretch, self.text = crop, detail, gray, stretch, text
        self.shapes = shapes
        # Their own streams, so that --text 0 --shapes 0 leave the crops of a given --seed as they were.
        self.text_rng = random.Random(random.getrandbits(32)) if text > 0 else None
        self.shapes_rng = random.Random(random.getrandbits(32)) if shapes > 0 else None
        self.integrals = []
        for im in images:
            g = im.float().mean(0).numpy()
            e = np.zeros_like(g)
            e[1:, :] += np.abs(np.diff(g, axis=0))
            e[:, 1:] += np.abs(np.diff(g, axis=1))
            ii = np.zeros((g.shape[0] + 1, g.shape[1] + 1))
            ii[1:, 1:] = e.cumsum(0).cumsum(1)
            self.integrals.append(ii)
        # Pick photos by area ** area_power: at 1 every pixel is about equally likely; lower
        # powers give the small photos (whole scenes at the eval images' scale) a larger share.
        area = np.array([im.shape[1] * im.shape[2] for im in images], dtype=float) ** area_power
        self.weights = (area / area.sum()).tolist()

    def _energy(self, k: int, y: int, x: int) -> float:
        ii, c = self.integrals[k], self.crop
        return ii[y + c, x + c] - ii[y, x + c] - ii[y + c, x] + ii[y, x]

    def position(self):
        k = random.choices(range(len(self.images)), self.weights)[0]
        _, h, w = self.images[k].shape
        cands = [(random.randint(0, h - self.crop), random.randint(0, w - self.crop))
                 for _ in range(4 if random.random() < self.detail else 1)]
        y, x = max(cands, key=lambda p: self._energy(k, *p))
        return k, y, x

    def batch(self, n: int) -> torch.Tensor:
        c = self.crop
        crops = []
        for _ in range(n):
            k, y, x = self.position()
            t = self.images[k][:, y:y + c, x:x + c]
            if random.random() < 0.5:
                t = t.flip(2)
            crops.append(torch.rot90(t, random.randint(0, 3), (1, 2)))
        x = torch.stack(crops).float() / 255.0
        if self.shapes > 0:
            for i in range(n):
                if self.shapes_rng.random() < self.shapes:
                    x[i] = shapes_crop(c, self.shapes_rng, x.device)
        if self.text > 0:
            for i in range(n):
                if self.text_rng.random() < self.text:
                    x[i] = draw_text(x[i], self.text_rng)
        # The photos hold few grey-scale images and few clipped blacks and whites, both common
        # in what people compress (and where the codec did worst on the eval set).
        for i in range(n):
            if random.random() < self.gray:
                x[i] = (x[i] * torch.tensor([0.299, 0.587, 0.114], device=x.device)[:, None, None]).sum(0)
            if random.random() < self.stretch:
                lo, hi = 0.15 * random.random(), 1 - 0.15 * random.random()
                x[i] = ((x[i] - lo) / (hi - lo)).clamp(0, 1)
        # Round back to 8 bits: the codec only ever sees 8-bit images.
        x = (x * 255).round() / 255
        return x.contiguous(memory_format=torch.channels_last)


def random_quality_maps(t: torch.Tensor, grid: tuple[int, int], prob: float) -> torch.Tensor | None:
    """Per-position rate parameters like the ones ROI coding makes (codec.roi_map's offsets up to
    strength 1.5): for a share `prob` of the images, a coarser background (offset in [-0.094, 0])
    with one to three finer rectangles (offset in [0, 0.375]) around each image's t; elsewhere t."""
    if prob <= 0:
        return None
    n, (h, w) = t.shape[0], grid
    off = torch.zeros(n, 1, h, w)
    for i in range(n):
        if random.random() >= prob:
            continue
        off[i] = -0.094 * random.random()
        for _ in range(random.randint(1, 3)):
            bh, bw = random.randint(1, h), random.randint(1, w)
            y, x = random.randint(0, h - bh), random.randint(0, w - bw)
            off[i, :, y:y + bh, x:x + bw] = 0.375 * random.random()
    return (t.cpu()[:, None, None, None] + off).clamp(0, 1).to(t.device)


def rd_terms(model, x, t, autocast: bool | str, t_map=None):
    """Per image: bpp from the likelihoods, and the squared error of what the decoder outputs.
    For an image whose three planes are equal (the grey crops) that is the planes' mean
    (format version 4's GRAY rule, codec.image_io), so the model may spend nothing on colour."""
    out = model(x, t, autocast=autocast, t_map=t_map)
    n_pix = x.shape[2] * x.shape[3]
    bits = sum(-torch.log2(l).flatten(1).sum(1) for l in out["likelihoods"].values())
    bpp = bits / n_pix
    x_hat = out["x_hat"].float()
    gray = ((x[:, 0] == x[:, 1]) & (x[:, 1] == x[:, 2])).flatten(1).all(1)[:, None, None, None]
    x_hat = torch.where(gray, x_hat.mean(1, keepdim=True).expand_as(x_hat), x_hat)
    mse = ((x_hat - x) ** 2).flatten(1).mean(1)
    return bpp, mse


@torch.no_grad()
def validate(model, val_images, device: str, crop: int = 256) -> dict:
    model.eval()
    res = {}
    for t in (0.0, 0.5, 1.0):
        bpps, psnrs = [], []
        for img in val_images:
            _, h, w = img.shape
            y, x0 = (h - crop) // 2, (w - crop) // 2
            x = img[None, :, y:y + crop, x0:x0 + crop].float().to(device) / 255
            bpp, mse = rd_terms(model, x, torch.tensor([t], device=device), autocast=False)
            bpps.append(bpp.item())
            psnrs.append(10 * math.log10(1 / max(mse.item(), 1e-10)))
        res[f"t{t}"] = {"est_bpp": round(float(np.mean(bpps)), 4),
                        "psnr": round(float(np.mean(psnrs)), 3)}
    model.train()
    return res


def derived_checkpoint(net, arch: dict, card_training: dict, steps: int, wall_s: float, lr: float,
                       how: dict) -> dict:
    """A train.py checkpoint of a shipped model changed outside train.py (scripts.fit_spatial_context,
    scripts.tune_entropy): steps and wall time go on from the model card's, and the data settings
    are those -6 and -7 were trained with (photos by area ** 0.5, 15% shapes), so export_model
    describes the data as before. how: what changed it, kept under args."""
    return {"model": net.state_dict(), "arch": arch, "step": card_training["steps"] + steps,
            "wall_s": card_training.get("wall_hours", 0) * 3600 + wall_s,
            "args": {"batch": card_training["batch"], "crop": card_training["crop"], "lr": lr,
                     "area_power": 0.5, "shapes": 0.15, **how}}


def checkpoint_arch(ck: dict) -> dict:
    """A checkpoint's architecture; session-1 checkpoints predate the stored one and used these."""
    if "arch" in ck:
        return ck["arch"]
    return {"N": ck["args"]["N"], "M": ck["args"]["M"], "levels": 6, "lmbda_min": 0.0016, "lmbda_max": 0.10}


def remap_gains(state: dict, old: dict, model: GainHyperprior) -> dict:
    """Carry gain vectors trained for one lambda range/level count over to another.

    Log-gains are close to linear in log(lambda), so new levels inside the old range are
    interpolated and levels outside it are extrapolated from the nearest two old levels.
    """
    lo, hi, n_old = math.log(old["lmbda_min"]), math.log(old["lmbda_max"]), old["levels"]
    pos = (torch.log(model.level_lambdas()) - lo) / (hi - lo) * (n_old - 1)
    i = pos.floor().long().clamp(0, n_old - 2)
    frac = (pos - i)[:, None]
    for name in GAIN_PARAMS:
        g = state[name]
        state[name] = g[i] * (1 - frac) + g[i + 1] * frac
    return state


def widen_latent(state: dict, model: GainHyperprior) -> dict:
    """Grow a trained model's latent from M to model.M channels without changing what it computes.

    The new channels of g_a start small and random; g_s, h_a and the old entropy parameters
    ignore them (zero weights) until training finds a use for them. h_s's hidden width follows
    M, so its new hidden units start disconnected as well. New gain vectors start at the mean of
    the old ones at each level.
    """
    old_m, new_m = state["g_a.6.weight"].shape[0], model.M
    fresh = model.state_dict()

    def grow(name: str, dims: dict[int, int], keep_fresh: bool = False) -> None:
        w = fresh[name].clone() if keep_fresh else torch.zeros_like(fresh[name])
        w[tuple(slice(0, dims.get(d, s)) for d, s in enumerate(w.shape))] = state[name]
        state[name] = w

    grow("g_a.6.weight", {0: old_m}, keep_fresh=True)
    state["g_a.6.weight"][old_m:] *= 0.1
    grow("g_a.6.bias", {0: old_m})
    grow("g_s.0.weight", {0: old_m})
    grow("h_a.0.weight", {1: old_m})
    grow("h_s.0.weight", {1: old_m}, keep_fresh=True)
    grow("h_s.0.bias", {0: old_m})
    grow("h_s.2.weight", {0: old_m, 1: old_m})
    state["h_s.2.weight"][:, old_m:] = fresh["h_s.2.weight"][:, old_m:]
    grow("h_s.2.bias", {0: old_m})
    # The 1x1 output conv gives scales then means: old scale rows stay first, old mean rows
    # move to after the new scale rows. New rows start from the old rows' average bias.
    w_old, b_old = state["h_s.4.weight"], state["h_s.4.bias"]
    w = torch.zeros_like(fresh["h_s.4.weight"])
    b = torch.zeros_like(fresh["h_s.4.bias"])
    w[:old_m, :old_m], w[new_m:new_m + old_m, :old_m] = w_old[:old_m], w_old[old_m:]
    b[:old_m], b[new_m:new_m + old_m] = b_old[:old_m], b_old[old_m:]
    b[old_m:new_m] = b_old[:old_m].mean()
    state["h_s.4.weight"], state["h_s.4.bias"] = w, b
    for name in ("y_gain", "y_gain_inv"):
        g = state[name]
        state[name] = torch.cat([g, g.mean(1, keepdim=True).expand(-1, new_m - old_m)], 1)
    return state


def widen_hidden(state: dict, model: GainHyperprior, part: str = "g_a") -> dict:
    """Grow the hidden widths of g_a (to model.Na) or g_s (its last stage, to model.Ns) without
    changing what the transform computes.

    New hidden channels take fresh weights from the layer before (so they carry signal at once)
    and zero weights into every layer after, including the other new channels; their GDN rows
    and columns start at zero outside the diagonal, so the old channels' normalisation ignores
    them. Training then grows the zero weights from the new channels' gradients. Unlike new
    latent channels (widen_latent), hidden ones cost no bits, so nothing pushes them back off.
    """
    fresh = model.state_dict()
    for name in [k for k in fresh if k.startswith(part + ".")]:
        old, w = state[name], fresh[name].clone()
        if w.ndim == 4:  # conv [out, in, k, k]; transposed conv [in, out, k, k]
            layer = model.get_submodule(name.rsplit(".", 1)[0])
            w[(slice(old.shape[0], None),) if isinstance(layer, nn.ConvTranspose2d)
              else (slice(None), slice(old.shape[1], None))] = 0
        w[tuple(slice(0, n) for n in old.shape)] = old  # biases, GDN beta [C] and gamma [C, C] too
        state[name] = w
    return state


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", default=str(ROOT / "runs" / "main"))
    ap.add_argument("--data", default=str(ROOT / "data"))
    ap.add_argument("--steps", type=int, default=200_000)
    ap.add_argument("--minutes", type=float, default=None, help="stop after this much wall time")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--crop", type=int, default=128)
    ap.add_argument("--lr", type=float, default=5e-4, help="also overrides a resumed run's lr")
    ap.add_argument("--lr-end", type=float, default=None,
                    help="cosine decay from --lr to this over the run (steps or --minutes)")
    ap.add_argument("--warmup", type=int, default=0,
                    help="ramp the lr up linearly over this many steps (with a fresh optimiser)")
    ap.add_argument("--aux-lr", type=float, default=1e-3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--bf16", choices=("all", "synthesis", "none"), default=None,
                    help="bf16 autocast on g_a, h_a and g_s, on g_s only, or none (default: all on "
                         "CUDA, none on the CPU: session 13, on this CPU 50 steps at lr 1e-6 under "
                         "'all' cost 0.16 dB on the eval set at t = 1, under 'none' they gained 0.03)")
    ap.add_argument("--no-bf16", dest="bf16", action="store_const", const="none", help="--bf16 none")
    ap.add_argument("--N", type=int, default=128)
    ap.add_argument("--M", type=int, default=None, help="latent width (default: --init's, else 192)")
    ap.add_argument("--Na", type=int, default=None,
                    help="g_a's hidden width (default: --init's, else N); a wider one than --init's "
                         "is grown from it (widen_hidden)")
    ap.add_argument("--Ns", type=int, default=None,
                    help="width of g_s's last hidden stage (default: --init's, else N); wider costs "
                         "decode time: g_s +40-50%% at 192 (session 19)")
    ap.add_argument("--levels", type=int, default=9)
    ap.add_argument("--slices", type=int, default=None,
                    help="channel groups of the channel-conditional context, 1 for none "
                         "(default: --init's, else 1)")
    ap.add_argument("--spatial-groups", type=int, default=None,
                    help="code the first K channel groups in two checkerboard passes (default: "
                         "--init's, else 0); new spatial networks start at zero")
    ap.add_argument("--lmbda-min", type=float, default=0.0004)
    ap.add_argument("--lmbda-max", type=float, default=0.36)
    ap.add_argument("--detail", type=float, default=0.5, help="share of detail-seeking crops")
    ap.add_argument("--area-power", type=float, default=1.0,
                    help="pick photos by area ** P (1: every pixel alike; 0: every photo alike)")
    ap.add_argument("--gray", type=float, default=0.1, help="share of crops turned grey-scale")
    ap.add_argument("--stretch", type=float, default=0.2,
                    help="share of crops contrast-stretched until blacks and whites clip")
    ap.add_argument("--text", type=float, default=0.0,
                    help="share of crops with synthetic text drawn on (scripts.synthetic_text)")
    ap.add_argument("--shapes", type=float, default=0.0,
                    help="share of crops replaced by synthetic shaded shapes (scripts.synthetic_shapes)")
    ap.add_argument("--roi-prob", type=float, default=0.25,
                    help="share of images coded with a random ROI-like quality map")
    ap.add_argument("--log-every", type=int, default=100)
    ap.add_argument("--ckpt-every", type=int, default=1000)
    ap.add_argument("--val-every", type=int, default=5000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--encoder-only", action="store_true",
                    help="train only what the decoder never runs (g_a, h_a, z_gain): the decoder's "
                         "weights stay bit for bit those of --init")
    ap.add_argument("--only", default=None, metavar="PREFIX[,PREFIX]",
                    help="train only the parameters whose names start with these, e.g. spatial. "
                         "(the rest stays bit for bit --init's)")
    ap.add_argument("--init", default=None, metavar="MODEL_ID|FILE",
                    help="with no checkpoint in --run: start from a shipped model's weights "
                         "(models/MODEL_ID.safetensors) or a checkpoint file; optimiser starts fresh")
    args = ap.parse_args(argv)

    torch.set_num_threads(args.threads)
    random.seed(args.seed)
    torch.manual_seed(args.seed)
    dev = args.device
    if args.bf16 is None:
        args.bf16 = "none" if dev == "cpu" else "all"
    if dev == "cuda":
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    run = Path(args.run)
    run.mkdir(parents=True, exist_ok=True)
    data = Path(args.data) / "prepared"
    sampler = CropSampler(load_images(data / "train", args.crop), args.crop, args.detail, dev,
                          args.gray, args.stretch, args.text, args.area_power, args.shapes)
    val_dir = data / "val"
    val_images = load_images(val_dir, 256) if val_dir.is_dir() else []

    ckpt_path = run / "last.pt"
    ck = torch.load(ckpt_path, map_location="cpu", weights_only=False) if ckpt_path.exists() else None
    init = None  # (state, architecture, step, wall seconds) of --init, used without a checkpoint
    if ck is None and args.init:
        if Path(args.init).is_file():
            src = torch.load(args.init, map_location="cpu", weights_only=False)
            init = (src["model"], checkpoint_arch(src), src["step"], src.get("wall_s", 0.0))
        else:
            from codec.zoo import load_model

            shipped = load_model(args.init)
            tr = shipped.card["training"]
            init = (shipped.net.state_dict(), shipped.card["architecture"], tr["steps"],
                    tr.get("wall_hours", 0) * 3600)
    if ck is not None:
        arch = checkpoint_arch(ck)
    else:  # --M and --slices default to --init's (else 192 and 1)
        old = init[1] if init else {}
        arch = {"N": args.N, "M": args.M or old.get("M", 192), "levels": args.levels,
                "lmbda_min": args.lmbda_min, "lmbda_max": args.lmbda_max}
        na = args.Na or old.get("Na") or args.N
        if na != args.N:
            arch["Na"] = na
        ns = args.Ns or old.get("Ns") or args.N
        if ns != args.N:
            arch["Ns"] = ns
        slices = args.slices or old.get("slices", 1)
        if slices > 1:
            arch["slices"] = slices
            if "context_hidden" in old:
                arch["context_hidden"] = old["context_hidden"]
            spatial = old.get("spatial_groups", 0) if args.spatial_groups is None else args.spatial_groups
            if spatial:
                arch["spatial_groups"] = spatial
                if "spatial_hidden" in old:  # e.g. a least-squares context (scripts.fit_spatial_context)
                    arch["spatial_hidden"] = old["spatial_hidden"]
        elif args.spatial_groups:
            raise SystemExit("train: --spatial-groups needs a channel context (--slices > 1)")
    model = build_network(arch).to(dev).to(memory_format=torch.channels_last)
    if args.encoder_only and args.only:
        raise SystemExit("train: --encoder-only and --only exclude each other")
    if args.encoder_only or args.only:
        prefixes = tuple(args.only.split(",")) if args.only else ()
        for n, p in model.named_parameters():
            p.requires_grad_(encoder_side(n) if args.encoder_only else n.startswith(prefixes))
    main_params = [p for n, p in model.named_parameters()
                   if p.requires_grad and not n.endswith(".quantiles")]
    aux_params = [p for n, p in model.named_parameters() if p.requires_grad and n.endswith(".quantiles")]
    opt = torch.optim.Adam(main_params, lr=args.lr)
    aux_opt = torch.optim.Adam(aux_params, lr=args.aux_lr) if aux_params else None
    step, wall = 0, 0.0
    if ck is not None:
        model.load_state_dict(ck["model"])
        if "opt" in ck:  # checkpoints brought back from a GPU burst carry weights only
            try:
                opt.load_state_dict(ck["opt"])
                if aux_opt is not None:
                    aux_opt.load_state_dict(ck["aux_opt"])
            except (ValueError, KeyError, TypeError, AttributeError):
                raise SystemExit(f"train: {ckpt_path} trained another set of parameters; resume it "
                                 f"with its own --encoder-only / --only ({ck['args'].get('only')!r}, "
                                 f"encoder-only {ck['args'].get('encoder_only', False)})") from None
        step, wall = ck["step"], ck.get("wall_s", 0.0)
        if "py_rng" in ck:
            random.setstate(ck["py_rng"])
        print(f"resumed {ckpt_path} at step {step}")
    elif init:
        state, old_arch, step, wall = init
        state = {k: v.float() for k, v in without_tables(state).items()}
        if old_arch.get("slices", 1) > arch.get("slices", 1):
            raise SystemExit("train: --init cannot drop a model's channel context")
        if old_arch.get("slices", 1) not in (1, arch.get("slices", 1)):
            raise SystemExit("train: --init cannot change the number of context groups")
        if old_arch.get("spatial_groups", 0) > arch.get("spatial_groups", 0):
            raise SystemExit("train: --init cannot drop a model's checkerboard context")
        if any(old_arch[k] != arch[k] for k in ("levels", "lmbda_min", "lmbda_max")):
            state = remap_gains(state, old_arch, model)
        if old_arch["N"] != arch["N"] or old_arch["M"] > arch["M"]:
            raise SystemExit("train: --init can only widen M (same N, larger or equal M)")
        for key, part in (("Na", "g_a"), ("Ns", "g_s")):  # hidden widths grow, never shrink
            old_w, w = old_arch.get(key, old_arch["N"]), arch.get(key, arch["N"])
            if old_w > w:
                raise SystemExit(f"train: --init cannot narrow {part} (--{key})")
            if old_w < w and old_arch["M"] < arch["M"]:
                raise SystemExit(f"train: widen {part} (--{key}) and the latent (--M) one run at a time")
            if old_w < w:
                state = widen_hidden(state, model, part)
        if old_arch["M"] < arch["M"]:
            if old_arch.get("slices", 1) > 1:
                raise SystemExit("train: --init cannot widen a model with a channel context")
            state = widen_latent(state, model)
        model.load_state_dict(state, strict=False)
        print(f"initialised from {args.init} (step {step})")
    start_step = step

    def lr_at(frac: float) -> float:
        ramp = min(1.0, (step - start_step + 1) / args.warmup) if args.warmup else 1.0
        if args.lr_end is None:
            return ramp * args.lr
        return ramp * (args.lr_end + (args.lr - args.lr_end) * 0.5 * (1 + math.cos(math.pi * min(frac, 1.0))))

    def save():
        tmp = run / "last.pt.tmp"
        torch.save({"model": model.state_dict(), "arch": arch, "opt": opt.state_dict(),
                    "aux_opt": aux_opt and aux_opt.state_dict(), "step": step, "wall_s": wall,
                    "args": vars(args), "py_rng": random.getstate()}, tmp)
        os.replace(tmp, ckpt_path)

    native = dev != "cpu" or native_bf16()
    autocast = {"all": True, "synthesis": "synthesis", "none": False}[args.bf16] if native else False
    if args.bf16 != "none" and not native:
        print("train: this CPU has no native bf16; training in float32")
    log = (run / "log.jsonl").open("a")
    model.train()
    acc = torch.zeros(4, device=dev)  # loss, bpp, psnr, count
    began = t0 = time.time()
    grid = (args.crop // 16, args.crop // 16)
    while step < args.steps:
        elapsed = time.time() - began
        if args.minutes is not None and elapsed > args.minutes * 60:
            break
        frac = (elapsed / (args.minutes * 60) if args.minutes is not None
                else (step - start_step) / max(args.steps - start_step, 1))
        for g in opt.param_groups:
            g["lr"] = lr_at(frac)
        x = sampler.batch(args.batch)
        t = torch.rand(args.batch, device=dev)
        lam = model.lmbda(t)
        bpp, mse = rd_terms(model, x, t, autocast=autocast,
                            t_map=random_quality_maps(t, grid, args.roi_prob))
        loss = (bpp + lam * 255 ** 2 * mse).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(main_params, 1.0)
        opt.step()
        aux_loss = model.aux_loss()
        if aux_opt is not None:
            aux_opt.zero_grad(set_to_none=True)
            aux_loss.backward()
            aux_opt.step()
        step += 1

        with torch.no_grad():
            acc += torch.stack([loss.detach(), bpp.detach().mean(),
                                (10 * torch.log10(1 / mse.detach().clamp_min(1e-10))).mean(),
                                torch.ones((), device=dev)])
        if step % args.log_every == 0:
            now = time.time()
            wall += now - t0
            a = acc.tolist()
            rec = {"step": step, "lr": round(opt.param_groups[0]["lr"], 7),
                   "s_per_step": round((now - t0) / a[3], 4), "wall_s": round(wall),
                   "aux": round(aux_loss.item(), 2), "loss": round(a[0] / a[3], 4),
                   "bpp": round(a[1] / a[3], 4), "psnr": round(a[2] / a[3], 3)}
            t0 = now
            acc.zero_()
            if step % args.val_every == 0 and val_images:
                rec["val"] = validate(model, val_images, dev)
            log.write(json.dumps(rec) + "\n")
            log.flush()
            print(json.dumps(rec), flush=True)
        if step % args.ckpt_every == 0:
            save()
    wall += time.time() - t0
    if val_images:
        rec = {"step": step, "final_val": validate(model, val_images, dev)}
        log.write(json.dumps(rec) + "\n")
        print(json.dumps(rec), flush=True)
    save()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
