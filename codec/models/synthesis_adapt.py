"""Per-image adaptation of the synthesis: a scale and a bias per output channel of g_s's layers.

The model's decoder is trained for the average training photo. For one image, the encoder can fit
a small correction to it -- after transposed convolution k of g_s, channel c's output becomes
out_c * (1 + a_c * 2^-6) + b_c * 2^-e_k -- and send the integers a, b in the SYNTHESIS_ADAPT section
(instance-adaptive coding in the spirit of van Rozendaal et al. 2021, restricted to 2 * (3N + 3)
numbers so that they cost a few hundred bytes). The latent and its entropy coding do not change:
a decoder that skips the section decodes the unadapted image. Spec: docs/bitstream.md.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn as nn

from .. import grid_coding

STEP_EXP = 6  # the scales' step, 2^-6 (session 11's probe: 1/64 keeps ~96% of the gain, 1/32 ~64%)
# A bias is absolute: its step follows the layer's activations, whose spread falls from ~0.5 after
# the first layer to ~0.03 before the last (e_k = round(log2(64 / median channel std))).
BOUND = 31  # each integer lies in [-BOUND, BOUND]: 63 symbols
MAX_EXP = 24
SECTION_OVERHEAD = 7  # the section's type, length (2 bytes for 128 .. 16383) and CRC
DEFAULT_LR = 0.01
QUANT_FROM = 0.7  # the last 30% of the steps fit through the rounding (straight-through)
CROP = 256  # pixels per side of the random crop each step fits on (the full image if smaller)
MARGIN = 2  # latent positions of context around the crop; their pixels are not scored


class Adaptation(NamedTuple):
    """Integers per adapted layer: scales[k] and biases[k], each of that layer's width; the
    biases of layer k in steps of 2^-bias_exps[k]."""
    scales: list[torch.Tensor]
    biases: list[torch.Tensor]
    bias_exps: list[int]


def layer_widths(g_s: nn.Sequential) -> list[int]:
    """Output channels of each transposed convolution of g_s, in order: the adapted layers."""
    return [m.out_channels for m in g_s if isinstance(m, nn.ConvTranspose2d)]


def synthesize(g_s: nn.Sequential, y: torch.Tensor,
               affine: list[tuple[torch.Tensor, torch.Tensor]] | None = None) -> torch.Tensor:
    """g_s(y), with (scale, bias) per channel applied after each transposed convolution."""
    if not affine:
        return g_s(y)
    x, k = y, 0
    for m in g_s:
        x = m(x)
        if isinstance(m, nn.ConvTranspose2d):
            s, b = affine[k]
            x = x * s.to(x.dtype).view(1, -1, 1, 1) + b.to(x.dtype).view(1, -1, 1, 1)
            k += 1
    return x


def to_affine(a: Adaptation) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return [(1 + s.float() * 2.0 ** -STEP_EXP, b.float() * 2.0 ** -e)
            for s, b, e in zip(a.scales, a.biases, a.bias_exps)]


def _contexts(widths: list[int]) -> list[int]:
    """One adaptive table per layer and kind: layer k's scales use 2k, its biases 2k + 1."""
    return [2 * k + kind for k, w in enumerate(widths) for kind in (0, 1) for _ in range(w)]


def pack(a: Adaptation) -> bytes:
    symbols = [int(v) + BOUND for s, b in zip(a.scales, a.biases) for v in torch.cat([s, b])]
    widths = [len(s) for s in a.scales]
    return bytes(a.bias_exps) + grid_coding.encode_sequence(
        symbols, _contexts(widths), 2 * BOUND + 1, 2 * len(widths))


def unpack(payload: bytes, widths: list[int]) -> Adaptation:
    """Raises ValueError on a payload that is not a valid section for these layer widths."""
    n = len(widths)
    if len(payload) < n + 8 or not all(1 <= e <= MAX_EXP for e in payload[:n]):
        raise ValueError("bad SYNTHESIS_ADAPT payload")
    ctx = _contexts(widths)
    values = torch.tensor(grid_coding.decode_sequence(payload[n:], ctx, 2 * BOUND + 1, 2 * n),
                          dtype=torch.int64) - BOUND
    scales, biases, pos = [], [], 0
    for w in widths:
        scales.append(values[pos:pos + w])
        biases.append(values[pos + w:pos + 2 * w])
        pos += 2 * w
    return Adaptation(scales, biases, list(payload[:n]))


def plain_synthesis(g_s: nn.Sequential, y: torch.Tensor) -> tuple[torch.Tensor, list[int]]:
    """g_s(y), and per adapted layer the bias exponent e: 2^-e is about 1/64 of the standard
    deviation of that layer's median channel."""
    exps, x = [], y
    for m in g_s:
        x = m(x)
        if isinstance(m, nn.ConvTranspose2d):
            sd = float(x.float().std(dim=(0, 2, 3)).median())
            exps.append(min(max(round(math.log2(2 ** STEP_EXP / max(sd, 1e-6))), 1), MAX_EXP))
    return x, exps


def _crop(gen: torch.Generator, lat: tuple[int, int], size: tuple[int, int], crop: int):
    """A random latent window (with MARGIN of context) and, inside its output, the pixel box scored."""
    out = []
    for n_lat, n_px in zip(lat, size):
        c = crop // 16
        if n_lat <= c + 2 * MARGIN:
            out.append((0, n_lat, 0, n_px))
            continue
        r0 = int(torch.randint(0, n_lat - c + 1, (1,), generator=gen))
        w0, w1 = max(r0 - MARGIN, 0), min(r0 + c + MARGIN, n_lat)
        p0, p1 = 16 * (r0 - w0), min(16 * (r0 + c), n_px) - 16 * w0
        out.append((w0, w1, p0, p1))
    return out


def fit(g_s: nn.Sequential, y_hat: torch.Tensor, x: torch.Tensor, size: tuple[int, int], steps: int,
        lmbda: float, weight: torch.Tensor | None = None, gray: bool = False, bf16: bool = False,
        lr: float = DEFAULT_LR, crop: int = CROP, seed: int = 0) -> tuple[Adaptation | None, float, float]:
    """Fit the adaptation of g_s to one image, and keep it only where it pays.

    y_hat: the decoded latent exactly as the decoder gets it ([1, M, h, w], g_s's input); x: the
    padded image [1, 3, 16h, 16w] in [0, 1]; size: (height, width) of the real image inside it.
    lmbda: the rate-distortion trade-off of the file's quality (the model's lambda(t)).
    weight: optional per-pixel weight of the squared error ([1, 1, height, width], mean 1), gray:
    score the planes' mean (as for image_codec's refinement). Of the fitted integers, and of them
    with the small ones (|v| <= 1 or 2) set to zero, which code in fewer bytes, returns the one
    with the lowest rd_cost, or None where sending nothing costs less; with the weighted MSE of
    the whole image (on [0, 1] pixels, after rounding) without any and with the one returned.
    """
    h, w = size
    widths = layer_widths(g_s)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        plain_out, exps = plain_synthesis(g_s, y_hat)  # its error is also the no-section cost
    # Both kinds fit in units of 2^STEP_EXP steps: scale 1 + p[0], bias p[1] * 2^(STEP_EXP - e_k),
    # so that Adam's steps of ~lr are relative changes for the biases too.
    step = 2.0 ** -STEP_EXP
    lim = BOUND * step
    units = [2.0 ** (STEP_EXP - e) for e in exps]
    params = [torch.zeros(2, c, requires_grad=True) for c in widths]
    opt = torch.optim.Adam(params, lr=lr)
    gen = torch.Generator().manual_seed(seed)
    target = x[:, :, :h, :w]
    wmap = weight if weight is not None else torch.ones(1, 1, h, w)
    frozen = [(p, p.requires_grad) for p in g_s.parameters()]
    for p, _ in frozen:
        p.requires_grad_(False)

    def affine(quant: bool):
        out = []
        for p, u in zip(params, units):
            v = p.clamp(-lim, lim)
            if quant:  # straight-through: the forward pass sees the values that will be sent
                v = v + (torch.round(v / step) * step - v).detach()
            out.append((1 + v[0], v[1] * u))
        return out

    def error(x_hat, box_t, box_w):
        x_hat = x_hat.float()
        if gray:
            x_hat = x_hat.mean(1, keepdim=True)
        return ((x_hat - box_t) ** 2 * box_w).mean()

    try:
        with torch.enable_grad():
            for i in range(steps):
                (a0, a1, p0, p1), (b0, b1, q0, q1) = _crop(gen, y_hat.shape[-2:], (h, w), crop)
                if p1 <= p0 or q1 <= q0:  # the window holds only padding
                    continue
                py, px = 16 * a0, 16 * b0  # the window's first pixel
                with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                    x_hat = synthesize(g_s, y_hat[:, :, a0:a1, b0:b1], affine(i >= QUANT_FROM * steps))
                sl = (slice(None), slice(None), slice(py + p0, py + p1), slice(px + q0, px + q1))
                loss = error(x_hat[:, :, p0:p1, q0:q1], target[sl], wmap[sl])
                for g in opt.param_groups:  # cosine decay to lr / 10: Adam's steps of ~lr settle
                    g["lr"] = lr * (0.1 + 0.45 * (1 + math.cos(math.pi * i / steps)))
                opt.zero_grad()
                loss.backward()
                opt.step()
    finally:
        for p, flag in frozen:
            p.requires_grad_(flag)
    with torch.no_grad():
        ints = [torch.round(p.clamp(-lim, lim) / step).to(torch.int64) for p in params]

        def decoded_error(x_hat):
            x_hat = (x_hat.float()[:, :, :h, :w].clamp(0, 1) * 255).round() / 255  # as decoded
            return float(error(x_hat, target, wmap))

        def mse(a):
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                return decoded_error(synthesize(g_s, y_hat, to_affine(a)))

        plain = decoded_error(plain_out)
        best = (rd_cost(plain, 0, lmbda, h * w), None, plain)
        for small in (0, 1, 2):
            kept = [torch.where(v.abs() > small, v, 0) for v in ints]
            a = Adaptation([v[0] for v in kept], [v[1] for v in kept], exps)
            m = mse(a)
            best = min(best, (rd_cost(m, len(pack(a)) + SECTION_OVERHEAD, lmbda, h * w), a, m),
                       key=lambda c: c[0])
    return best[1], plain, best[2]


def rd_cost(mse: float, section_bytes: int, lmbda: float, pixels: int) -> float:
    """The part of the cost the model was trained on, bits per pixel + lambda * 255^2 * MSE,
    that the section changes."""
    return 8 * section_bytes / pixels + lmbda * 255 ** 2 * mse
