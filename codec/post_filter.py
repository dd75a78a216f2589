"""A per-image Wiener filter on the decoded pixels, fitted by the encoder and sent in POST_FILTER.

g_s is trained for the average training photo; on one image its output is often systematically
too soft (eval08's long high-contrast edges: +1.7 dB from this filter at quality 20). Like VVC's
adaptive loop filter, the encoder fits by least squares a small symmetric filter that takes the
decoded image towards the source, classified by local activity, and sends its integers where
they lower the rate-distortion cost (a few dozen bytes). The filter runs after g_s and feeds
nothing back, so a decoder that skips the section only loses the gain. Spec: docs/bitstream.md.

Each class k has, per point-symmetric pair of offsets o in a diamond of radius RADIUS, a tap
w_o, plus a gain g and a bias b; on 0..255 pixels

    out(p) = x(p) + sum_o w_o * (x(p+o) + x(p-o) - 2 x(p)) + g * (x(p) - 128) + b

with w_o, g in steps of 2^-COEF_EXP and b in steps of 2^-BIAS_EXP levels. The class of a pixel is
the number of thresholds at or below its activity: the mean of |Laplacian| of the planes' mean
over a ACTIVITY_WINDOW-square window, in steps of 2^-BIAS_EXP.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F

RADIUS = 4  # session 27's probe: radius 3 / 4 / 5 gave -5.2 / -5.4 / -5.5% BD-rate
COEF_EXP = 8
BIAS_EXP = 4
ACTIVITY_WINDOW = 5
CLASS_CHOICES = (1, 4)  # the encoder tries each and keeps the cheapest (or none)
MAX_CLASSES = 8
MAX_RADIUS = 6
FIT_ROWS = 64  # rows of features at a time while fitting
SECTION_OVERHEAD = 7  # the section's type, length and CRC (container.pack_section), for 128+ bytes


class PostFilter(NamedTuple):
    radius: int
    thresholds: list[int]  # K - 1 increasing activity thresholds, in steps of 2^-BIAS_EXP
    coefs: list[list[int]]  # per class: one tap per offset pair, then the gain, then the bias

    @property
    def n_classes(self) -> int:
        return len(self.coefs)


def offsets(radius: int) -> list[tuple[int, int]]:
    """One offset of each point-symmetric pair in the diamond |dy| + |dx| <= radius."""
    return [(dy, dx) for dy in range(-radius, radius + 1) for dx in range(-radius, radius + 1)
            if 0 < abs(dy) + abs(dx) <= radius and (dy, dx) > (0, 0)]


def _padded(x: torch.Tensor, radius: int) -> torch.Tensor:
    return F.pad(x[None], (radius,) * 4, mode="replicate")[0]


def _features(p: torch.Tensor, radius: int, y0: int, y1: int) -> torch.Tensor:
    """Rows y0:y1 of the features of the image whose replicate-padded planes are p ([C, H + 2r,
    W + 2r]): [C, y1 - y0, W, n_offsets + 2] float64, the second differences, x - 128 and 1."""
    r = radius
    W = p.shape[2] - 2 * r
    x = p[:, r + y0:r + y1, r:r + W].double()
    feats = [p[:, r + y0 + dy:r + y1 + dy, r + dx:r + dx + W] + p[:, r + y0 - dy:r + y1 - dy, r - dx:r - dx + W] - 2 * x
             for dy, dx in offsets(radius)]
    feats += [x - 128.0, torch.ones_like(x)]
    return torch.stack(feats, -1)


def activity(x: torch.Tensor) -> torch.Tensor:
    """Local activity [H, W] of [C, H, W] pixels: the windowed mean |Laplacian| of the planes' mean."""
    lum = x.mean(0, keepdim=True)[None]
    lap = torch.tensor([[0.0, 1.0, 0.0], [1.0, -4.0, 1.0], [0.0, 1.0, 0.0]], dtype=x.dtype)
    g = F.conv2d(F.pad(lum, (1, 1, 1, 1), mode="replicate"), lap.view(1, 1, 3, 3)).abs()
    k = ACTIVITY_WINDOW
    return F.avg_pool2d(F.pad(g, (k // 2,) * 4, mode="replicate"), k, stride=1)[0, 0]


def _classes(x: torch.Tensor, thresholds: list[int]) -> torch.Tensor:
    if not thresholds:
        return torch.zeros(x.shape[1:], dtype=torch.int64)
    bounds = torch.tensor(thresholds, dtype=x.dtype) * 2.0 ** -BIAS_EXP
    return torch.bucketize(activity(x), bounds, right=True)


def _kernel(c: list[int], radius: int) -> tuple[torch.Tensor, float]:
    """Class coefficients as one (2r+1)-square convolution kernel and a constant."""
    k = torch.zeros(2 * radius + 1, 2 * radius + 1, dtype=torch.float64)
    taps, gain, bias = c[:-2], c[-2] * 2.0 ** -COEF_EXP, c[-1] * 2.0 ** -BIAS_EXP
    for (dy, dx), v in zip(offsets(radius), taps):
        w = v * 2.0 ** -COEF_EXP
        k[radius + dy, radius + dx] += w
        k[radius - dy, radius - dx] += w
        k[radius, radius] -= 2 * w
    k[radius, radius] += 1 + gain
    return k, bias - 128 * gain


def apply(x: torch.Tensor, f: PostFilter) -> torch.Tensor:
    """The filtered pixels: x [C, H, W] float on 0..255 (unrounded), clamped to 0..255."""
    x = x.float()
    kernels, consts = zip(*(_kernel(c, f.radius) for c in f.coefs))
    # Every class's filter in one convolution (as fast here as one), then each pixel's pick.
    y = F.conv2d(_padded(x, f.radius)[:, None], torch.stack(kernels).float()[:, None])
    y += torch.tensor(consts, dtype=y.dtype).view(1, -1, 1, 1)
    cls = _classes(x, f.thresholds)
    return y.gather(1, cls.expand(x.shape[0], 1, -1, -1)).squeeze(1).clamp_(0, 255)


def fit(x: torch.Tensor, target: torch.Tensor, n_classes: int, radius: int = RADIUS) -> PostFilter:
    """Least-squares filter taking x towards target (both [C, H, W] on 0..255), rounded to the
    section's integers. Thresholds: activity quantiles, so the classes share the pixels evenly."""
    x = x.float()
    thresholds: list[int] = []
    if n_classes > 1:
        q = torch.linspace(0, 1, n_classes + 1, dtype=torch.float64)[1:-1]
        act = activity(x).flatten()[::7].double()  # a subsample: quantile() caps its input size
        thresholds = sorted({max(int(v), 1) for v in torch.round(torch.quantile(act, q) * 2 ** BIAS_EXP)})
    cls = _classes(x, thresholds)
    p = _padded(x, radius)
    n_feat = len(offsets(radius)) + 2
    n = len(thresholds) + 1
    ata = torch.zeros(n, n_feat, n_feat, dtype=torch.float64)
    atb = torch.zeros(n, n_feat, dtype=torch.float64)
    count = [0] * n
    for y0 in range(0, x.shape[1], FIT_ROWS):  # strips: the features of a whole image are large
        y1 = min(y0 + FIT_ROWS, x.shape[1])
        feats = _features(p, radius, y0, y1)
        resid = target[:, y0:y1].double() - x[:, y0:y1].double()
        c = cls[y0:y1].expand_as(resid)
        for k in range(n):
            m = c == k
            a, b = feats[m], resid[m]
            ata[k] += a.T @ a
            atb[k] += a.T @ b
            count[k] += len(b)
    coefs = []
    for k in range(n):
        if count[k] < 4 * n_feat:
            coefs.append([0] * n_feat)
            continue
        # A touch of ridge: x - 128 and 1 are the same column in a flat class.
        w = torch.linalg.solve(ata[k] + 1e-6 * count[k] * torch.eye(n_feat, dtype=torch.float64), atb[k])
        w[:-1] *= 2 ** COEF_EXP
        w[-1] *= 2 ** BIAS_EXP
        coefs.append([int(v) for v in torch.round(w)])
    return PostFilter(radius, thresholds, coefs)


# ---- the section -----------------------------------------------------------------------------
def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b, n = n & 0x7F, n >> 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def pack(f: PostFilter) -> bytes:
    out = bytearray([f.radius, f.n_classes])
    for t in f.thresholds:
        out += _varint(t)
    for c in f.coefs:
        for v in c:
            out += _varint(2 * v if v >= 0 else -2 * v - 1)  # zigzag: small magnitudes, one byte
    return bytes(out)


def unpack(payload: bytes) -> PostFilter:
    """Raises ValueError on a payload that is not a valid POST_FILTER section."""
    if len(payload) < 2 or not 1 <= payload[0] <= MAX_RADIUS or not 1 <= payload[1] <= MAX_CLASSES:
        raise ValueError("bad POST_FILTER header")
    radius, k = payload[0], payload[1]
    pos, values = 2, []
    while pos < len(payload):
        n = shift = 0
        while True:
            if pos >= len(payload) or shift > 28:
                raise ValueError("truncated or overlong integer in POST_FILTER")
            b = payload[pos]
            pos += 1
            n |= (b & 0x7F) << shift
            shift += 7
            if not b & 0x80:
                break
        values.append(n)
    n_coef = len(offsets(radius)) + 2
    if len(values) != k - 1 + k * n_coef:
        raise ValueError("POST_FILTER holds the wrong number of values")
    thresholds = values[:k - 1]
    if any(b <= a for a, b in zip(thresholds, thresholds[1:])):
        raise ValueError("POST_FILTER thresholds are not increasing")
    ints = [v // 2 if v % 2 == 0 else -(v + 1) // 2 for v in values[k - 1:]]
    return PostFilter(radius, thresholds, [ints[i * n_coef:(i + 1) * n_coef] for i in range(k)])


def choose(x: torch.Tensor, target: torch.Tensor, lmbda: float) -> bytes | None:
    """The POST_FILTER payload with the lowest rate-distortion cost for this image, or None where
    sending none costs least. x, target: [C, H, W] on 0..255; lmbda: the file's lambda(t), whose
    cost is bits per pixel + lmbda * MSE on 0..255 pixels (refinement's, scaled)."""
    npx = x.shape[1] * x.shape[2]

    def cost(out: torch.Tensor, n_bytes: int) -> float:
        mse = float(((out.round() - target) ** 2).mean())
        return 8 * n_bytes / npx + lmbda * mse

    best, best_cost = None, cost(x, 0)
    for k in CLASS_CHOICES:
        payload = pack(fit(x, target, k))
        c = cost(apply(x, unpack(payload)), len(payload) + SECTION_OVERHEAD)
        if c < best_cost:
            best, best_cost = payload, c
    return best
