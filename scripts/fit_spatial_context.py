"""Give a trained channel-context model a checkerboard spatial context by least squares.

    python -m scripts.fit_spatial_context --model hpgc-n128m320-6 --out runs/spatial/fit.pt [--groups 3]

The shipped model's latent still holds spatial redundancy on smooth pictures, where x265 leads
most (docs/training.md, session 25). Training the checkerboard networks by gradient descent on
the frozen model found none of it in session 11; a linear predictor fitted in closed form does.
For each channel c of the first --groups groups, the residual y - mu at a non-anchor position is
predicted from the four decoded anchor residuals around it (left, right, up, down):

    d_mean_c = sum_k a_ck * (y_hat_k - mu_k)        (weighted least squares, weights 1 / sigma)
                                                    (--cross: k runs over the four anchors of
                                                     every channel of the group)
    d_scale_c = (m_c - 1) * sigma_c                 (m_c: the grid value that codes the training
                                                     latents in the fewest bits after d_mean)

fitted on random crops of the training photos at several rates, every weight of the model
frozen. Both are written into the model's own spatial networks (conv 3x3 -> ReLU -> conv 1x1,
which run in fixed point like the rest of the entropy parameters): one hidden unit carries the
mean correction shifted by MEAN_SHIFT so the ReLU passes it, one carries sigma. The result is an
ordinary train.py checkpoint: export it with scripts.export_model, or fine-tune it with train.py.
"""

from __future__ import annotations

import argparse
import random
import time
from pathlib import Path

import numpy as np
import torch
from compressai.entropy_models import GaussianConditional

from codec import zoo
from codec.models.gain_hyperprior import GainHyperprior, anchor_mask, exact_gain
from scripts.train import derived_checkpoint, load_images

ROOT = Path(__file__).resolve().parents[1]
MEAN_SHIFT = 256.0  # the mean unit computes relu(d_mean + MEAN_SHIFT): exact unless d_mean < -256
SIGMA_GRID = np.round(np.arange(0.70, 1.0001, 0.02), 2)
NEIGHBOURS = ((1, 0), (1, 2), (0, 1), (2, 1))  # 3x3 taps of the left, right, upper, lower anchor
_GAUSSIAN = GaussianConditional(None)  # the coder's discretised Gaussian and its scale bound (0.11)


def neighbour_features(k: torch.Tensor) -> torch.Tensor:
    """[C, H, W] -> [C, H, W, 4]: each position's left, right, upper and lower value (0 off the edge)."""
    p = torch.nn.functional.pad(k[None], (1, 1, 1, 1))[0]
    return torch.stack([p[:, ky:ky + k.shape[1], kx:kx + k.shape[2]] for ky, kx in NEIGHBOURS], -1)


@torch.no_grad()
def group_residuals(net: GainHyperprior, y: torch.Tensor, t: float, groups: int):
    """Per group: (residual y - mu, its rounding, sigma), each [C, H, W], as the coder forms them
    without a spatial context (gained domain; earlier groups decoded by plain rounding).
    y: g_a's latent, not yet gained."""
    g, zg, zg_inv = (exact_gain(getattr(net, n), t) for n in ("y_gain", "z_gain", "z_gain_inv"))
    y = y * g
    z = net.h_a(y) * zg
    med = net.entropy_bottleneck._get_medians()
    hs = net.h_s((torch.round(z - med) + med) * zg_inv).chunk(2, 1)
    prev, out = [], []
    for i in range(groups):
        scales, means = net.slice_params(hs, i, prev)
        r = (y[:, net.slice_channels(i)] - means)[0].double()
        k = torch.round(r)
        out.append((r, k, net.gaussian_conditional.lower_bound_scale(scales[0].double())))
        prev.append(k[None].float() + means)
    return out


def gauss_bits(k: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    """-log2 P(k) of integers k under a zero-mean Gaussian of scale s, integrated over [k-1/2, k+1/2]."""
    return -torch.log2(_GAUSSIAN._likelihood(k, s).clamp_min(1e-9))


def training_residuals(net: GainHyperprior, crops: list[torch.Tensor], rates, groups: int):
    """group_residuals of every crop at every rate (g_a runs once per crop)."""
    for x in crops:
        with torch.no_grad():
            y = net.g_a(x)
        for t in rates:
            yield group_residuals(net, y, t, groups)


def predict(coef: torch.Tensor, nb: torch.Tensor) -> torch.Tensor:
    """The mean corrections [C, n] of one group from its anchors' features nb [C, n, 4]: coef
    [C, 4] reads each channel's own anchors, coef [C, C, 4] every channel's."""
    if coef.dim() == 2:
        return (nb * coef[:, None]).sum(-1)
    return torch.einsum("cjt,jnt->cn", coef, nb)


def non_anchor_samples(res):
    """Per group of one group_residuals list: (anchor features [C, n, 4], residual [C, n],
    sigma [C, n]) at the non-anchor positions."""
    H, W = res[0][0].shape[1:]
    rest = ~anchor_mask(H, W)[0, 0].bool()
    return [(neighbour_features(k)[:, rest], r[:, rest], s[:, rest]) for r, k, s in res]


def fit(residual_sets, groups: int, channels: int, cross: bool = False):
    """Least-squares coefficients [groups, C, 4] ([groups, C, C, 4] with cross) and sigma
    multipliers [groups, C] from an iterable of group_residuals lists; and the non-anchor bits
    without the context, with the mean correction, and with the sigma multipliers too. Rows are
    weighted 1 / sigma of the position predicted: unweighted, predicting each channel from all
    its group's anchors made the training crops' bits 1.2% worse (high-sigma positions rule
    that fit)."""
    d = 4 * channels if cross else 4
    xtx = torch.zeros(groups, channels, d, d, dtype=torch.float64)
    xty = torch.zeros(groups, channels, d, dtype=torch.float64)
    samples = []
    for res in residual_sets:
        for i, (nb, r, s) in enumerate(non_anchor_samples(res)):  # [C, n, 4], [C, n], [C, n]
            if cross:  # one feature row per position, shared by the channels; weights per channel
                X = nb.permute(1, 0, 2).reshape(nb.shape[1], d)  # [n, C * 4]
                Xw = X.T[None] / s[:, None, :] ** 2  # [C, d, n]
                xtx[i] += Xw @ X
                xty[i] += (Xw @ r[..., None])[..., 0]
            else:
                X, yv = nb / s[..., None], r / s  # rows weighted 1 / sigma
                xtx[i] += X.transpose(1, 2) @ X
                xty[i] += (X.transpose(1, 2) @ yv[..., None])[..., 0]
            samples.append((i, nb, r, s))
    # A little ridge: channels that carry no bits give all-zero features. Solved one matrix at a
    # time: MKL's batched LU rejected the 192 cross-channel systems.
    ridge = 1e-4 * xtx.diagonal(dim1=-2, dim2=-1).mean(-1)[..., None, None] + 1e-6
    a = xtx + ridge * torch.eye(d, dtype=torch.float64)
    coef = torch.stack([torch.stack([torch.linalg.solve(a[i, c], xty[i, c]) for c in range(channels)])
                        for i in range(groups)])
    if cross:
        coef = coef.view(groups, channels, channels, 4)
    grid = torch.tensor(SIGMA_GRID, dtype=torch.float64)
    bits = torch.zeros(groups, channels, len(grid) + 1, dtype=torch.float64)  # last column: no context
    for i, nb, r, s in samples:
        sym = torch.round(r - predict(coef[i], nb))
        bits[i, :, :-1] += gauss_bits(sym[None], s[None] * grid[:, None, None]).sum(-1).T
        bits[i, :, -1] += gauss_bits(torch.round(r), s).sum(-1)
    best = bits[..., :-1].argmin(-1)
    mult = grid[best]
    before, after = bits[..., -1].sum().item(), bits[..., :-1].gather(-1, best[..., None]).sum().item()
    at_one = bits[..., list(SIGMA_GRID).index(1.0)].sum().item()
    return coef, mult, before, after, at_one


def held_out_bits(coef: torch.Tensor, residual_sets) -> tuple[float, float]:
    """Non-anchor bits of other crops without the context and with the mean correction."""
    before = after = 0.0
    for res in residual_sets:
        for i, (nb, r, s) in enumerate(non_anchor_samples(res)):
            before += gauss_bits(torch.round(r), s).sum().item()
            after += gauss_bits(torch.round(r - predict(coef[i], nb)), s).sum().item()
    return before, after


def spatial_weights(coef: torch.Tensor, mult: torch.Tensor | None, size: int):
    """One group's spatial network (input [y_hat * anchor, scales, means], output [d_scales,
    d_means]) computing the fitted predictor (coef [C, 4] or, across channels, [C, C, 4]; mult
    [C], or None to leave sigma alone): its four state-dict tensors. Hidden units: the C mean
    corrections, then (with mult) the C sigmas."""
    hidden = size if mult is None else 2 * size
    c = range(size)
    if coef.dim() == 2:  # each channel from its own anchors
        coef = torch.diag_embed(coef.T).permute(1, 2, 0)  # [C, C, 4], zero off the diagonal
    w1 = torch.zeros(hidden, 3 * size, 3, 3, dtype=torch.float64)
    for n, (ky, kx) in enumerate(NEIGHBOURS):
        w1[:size, :size, ky, kx] = coef[..., n]  # + a * y_hat of the anchor ...
        w1[:size, 2 * size:, ky, kx] = -coef[..., n]  # ... - a * its mean
    b1 = torch.zeros(hidden, dtype=torch.float64)
    b1[:size] = MEAN_SHIFT
    w2 = torch.zeros(2 * size, hidden, 1, 1, dtype=torch.float64)
    w2[range(size, 2 * size), c, 0, 0] = 1.0  # d_means, and the shift taken off again
    b2 = torch.zeros(2 * size, dtype=torch.float64)
    b2[size:] = -MEAN_SHIFT
    if mult is not None:
        w1[range(size, 2 * size), range(size, 2 * size), 1, 1] = 1.0  # sigma (>= 0 where it matters)
        w2[c, range(size, 2 * size), 0, 0] = mult - 1.0  # d_scales
    return [v.float() for v in (w1, b1, w2, b2)]


def random_crops(images: list[torch.Tensor], n: int, size: int, seed: int) -> list[torch.Tensor]:
    rng = random.Random(seed)
    crops = []
    for _ in range(n):
        im = rng.choice([im for im in images if min(im.shape[1:]) >= size])
        _, h, w = im.shape
        y, x = rng.randrange(0, h - size + 1), rng.randrange(0, w - size + 1)
        crops.append(im[None, :, y:y + size, x:x + size].float() / 255)
    return crops


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True, help="a shipped channel-context model without a spatial context")
    ap.add_argument("--out", default=str(ROOT / "runs/spatial/fit.pt"))
    ap.add_argument("--data", default=str(ROOT / "data"))
    ap.add_argument("--groups", type=int, default=3, help="channel groups given the spatial context")
    ap.add_argument("--crops", type=int, default=48)
    ap.add_argument("--crop", type=int, default=512)
    ap.add_argument("--rates", default="0,0.25,0.5,0.75,1")
    ap.add_argument("--sigma", action="store_true",
                    help="also scale sigma per channel (twice the network's decode time)")
    ap.add_argument("--cross", action="store_true",
                    help="predict each channel from every channel's anchors in its group (same network)")
    ap.add_argument("--holdout", type=int, default=16, help="other crops to measure the fit on")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    began = time.time()

    base = zoo.load_model(args.model)  # with its encoder weights: the latents it will code
    arch = {k: v for k, v in base.card["architecture"].items() if k != "type"}
    if arch.get("slices", 1) < 2 or arch.get("spatial_groups", 0):
        raise SystemExit(f"fit_spatial_context: {args.model} needs a channel context and no spatial one")
    size = arch["M"] // arch["slices"]
    arch.update(spatial_groups=args.groups, spatial_hidden=2 * size if args.sigma else size)
    net = zoo.build_network(arch).eval()
    net.load_state_dict(zoo.without_tables(base.net.state_dict()), strict=False)

    images = load_images(Path(args.data) / "prepared" / "train")
    crops = random_crops(images, args.crops, args.crop, args.seed)
    rates = [float(r) for r in args.rates.split(",")]
    coef, mult, before, after, at_one = fit(training_residuals(net, crops, rates, args.groups),
                                               args.groups, size, cross=args.cross)
    print(f"training crops: non-anchor bits {before:.0f} -> {at_one:.0f} with the mean correction "
          f"({100 * (at_one / before - 1):+.2f}%), {after:.0f} with sigma too ({100 * (after / before - 1):+.2f}%)")
    if args.holdout:
        other = random_crops(images, args.holdout, args.crop, args.seed + 1)
        b0, b1 = held_out_bits(coef, training_residuals(net, other, rates, args.groups))
        print(f"held-out crops: non-anchor bits {b0:.0f} -> {b1:.0f} ({100 * (b1 / b0 - 1):+.2f}%)")
    print(f"sigma multipliers: median {mult.median().item():.2f}, range {mult.min().item():.2f}-{mult.max().item():.2f}")
    with torch.no_grad():
        for i in range(args.groups):
            w1, b1, w2, b2 = spatial_weights(coef[i], mult[i] if args.sigma else None, size)
            net.spatial[i][0].weight.copy_(w1)
            net.spatial[i][0].bias.copy_(b1)
            net.spatial[i][2].weight.copy_(w2)
            net.spatial[i][2].bias.copy_(b2)
    src = base.card["training"]
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    torch.save(derived_checkpoint(net, arch, src, 0, time.time() - began, src["lr_last"],
                                  {"spatial_fit": vars(args)}), out)
    print(f"wrote {out} ({time.time() - began:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
