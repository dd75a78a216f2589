"""Encoder-side latent refinement: a better latent for the same decoder (SGA, Yang et al. 2020).

g_a is a fast, amortised guess at the latent. Starting from it, Adam minimises the real
rate-distortion cost of this one image -- bits of the latent under the entropy parameters the
decoder will use, plus lambda(t) * 255^2 * MSE of g_s's output -- through stochastic
Gumbel-softmax rounding of (y - mean) whose temperature anneals towards hard rounding. The
result is an ordinary latent: the coder and the decoder do not change, only the encoder spends
time. The hyper-latent stays the one g_a's latent gives and is coded as it is: deriving it
again from the refined latent would change the entropy parameters the latent was refined
against. Seeded, so the same image and settings give the same file.
"""

from __future__ import annotations

import math

import torch

from .gain_hyperprior import GainHyperprior, QuantMap, anchor_mask, exact_gain

DEFAULT_LR = 0.005
TAU_START, TAU_END, TAU_DECAY = 0.5, 0.05, 4.0


def soft_round(r: torch.Tensor, tau: float, gen: torch.Generator) -> torch.Tensor:
    """floor(r) or ceil(r), drawn by a Gumbel-softmax whose logits grow as r nears either."""
    f = torch.floor(r)
    d = (r - f).clamp(1e-4, 1 - 1e-4)
    logits = torch.stack([-torch.atanh(d), -torch.atanh(1 - d)]) / tau
    u = torch.rand(logits.shape, generator=gen).clamp(1e-9, 1)
    return f + torch.softmax(logits - torch.log(-torch.log(u)), 0)[1]


def refine_latent(net: GainHyperprior, x: torch.Tensor, y: torch.Tensor, t: float,
                  size: tuple[int, int], steps: int, qmap: QuantMap | None = None,
                  weight: torch.Tensor | None = None, lr: float = DEFAULT_LR,
                  seed: int = 0, refine_z: bool = False,
                  bf16: bool = False, gray: bool = False, post=None) -> tuple[torch.Tensor, torch.Tensor]:
    """Refine g_a's latent y (ungained, [1, M, h, w]) of the padded image x for rate t.

    size: (height, width) of the real image inside the padding; only those pixels count.
    qmap: the ROI quantisation the coder will use (LatentCoder.quant_map), if any.
    weight: optional [1, 1, height, width] per-pixel weight of the squared error (mean 1 keeps
    lambda's meaning). refine_z: refine the hyper-latent too (its bits and the entropy
    parameters it gives join the loss); by default it stays h_a's of g_a's latent, which
    measured as well (-9.9% against -9.6% BD-rate on the eval crops, docs/training.md).
    bf16: run g_s under bfloat16 autocast (CPU), as the decoder does. gray: the image's planes
    are equal and the decoder outputs their mean (image_io), so the error is the mean's.
    post: optional differentiable function of the decoded pixels ([C, H, W] on 0..255) that
    the decoder applies after g_s (codec.post_filter): the error is then the filtered image's,
    so the latent is refined for the picture the decoder shows (-3.6 to -7.9% BD-rate against
    refining g_s's output, session 27).
    Returns (y, z) for LatentCoder.compress(y, t, qmap, z=z).
    """
    h, w = size
    g, g_inv, zg, zg_inv = (exact_gain(getattr(net, n), t)
                            for n in ("y_gain", "y_gain_inv", "z_gain", "z_gain_inv"))
    step = torch.ones_like(g) if qmap is None else qmap.step
    out_gain = g_inv if qmap is None else qmap.out_gain
    lam = net.lmbda(torch.tensor([t])).item()
    target = x[:, :, :h, :w]
    eb = net.entropy_bottleneck
    with torch.no_grad():
        z = net.h_a(y * g) * zg
        med = eb._get_medians()

    def hyper_params(zq):
        return net.h_s(zq * zg_inv).chunk(2, 1)

    if not refine_z:
        with torch.no_grad():
            hs = hyper_params(torch.round(z - med) + med)
    gen = torch.Generator().manual_seed(seed)
    v = (y * g * step).clone().requires_grad_(True)  # the value the coder rounds, (y*g - mean)*step + mean*step
    u = z.clone().requires_grad_(refine_z)
    opt = torch.optim.Adam([v, u] if refine_z else [v], lr=lr)
    gc = net.gaussian_conditional
    with torch.enable_grad():
        for i in range(steps):
            tau = max(TAU_START * math.exp(-TAU_DECAY * i / steps), TAU_END)
            bits = 0.0
            if refine_z:
                zq = soft_round(u - med, tau, gen) + med
                z_lik = eb._likelihood(zq[0].reshape(zq.shape[1], 1, -1))[0]
                bits = -torch.log2(z_lik.clamp_min(1e-9)).sum()
                hs = hyper_params(zq)
            # Slice by slice (one slice without a channel context): each slice's parameters
            # see the soft-rounded slices before it, as the decoder will see the rounded ones.
            coded, prev = [], []
            for k in range(net.n_slices):
                sl = net.slice_channels(k)
                st = net.slice_step(step, k)
                scales, means = net.slice_params(hs, k, prev)
                if k < net.spatial_groups:  # the checkerboard: the rest sees the anchors
                    anchors = soft_round(v[:, sl] - means * st, tau, gen) + means * st
                    scales, means = net.checkerboard_params(k, scales, means, anchors / st)
                scales, means = scales * st, means * st
                yq = soft_round(v[:, sl] - means, tau, gen) + means
                if k < net.spatial_groups:  # the anchors as the spatial network saw them
                    a = anchor_mask(*yq.shape[-2:])
                    yq = anchors * a + yq * (1 - a)
                lik = gc._likelihood(yq, scales, means=means).clamp_min(1e-9)
                bits = bits - torch.log2(lik).sum()
                coded.append(yq)
                prev.append(yq / st)
            yq = torch.cat(coded, 1)
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                x_hat = net.g_s(yq * out_gain)
            x_hat = x_hat.float()[:, :, :h, :w]
            if gray:
                x_hat = x_hat.mean(1, keepdim=True)
            if post is not None:
                x_hat = post(x_hat[0] * 255)[None] / 255
            err = (x_hat - target) ** 2
            dist = (err * weight).mean() if weight is not None else err.mean()
            loss = bits / (h * w) + lam * 255 ** 2 * dist
            opt.zero_grad()
            loss.backward()
            opt.step()
    return (v / (g * step)).detach(), u.detach()
