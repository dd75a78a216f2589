"""A per-image Wiener filter on the decoded pixels, fitted by the encoder and sent in POST_FILTER.

g_s is trained for the average training photo; on one image its output is often systematically
too soft (eval08's long high-contrast edges: +1.7 dB from this filter at quality 20). Like VVC's
adaptive loop filter, the encoder fits by least squares a small symmetric filter that takes the
decoded image towards the source, classified by local activity, and sends its integers where
they lower the rate-distortion cost (a few dozen bytes). The filter runs after g_s and feeds
nothing back, so a decoder that skips the section only loses the gain. Spec: docs/bitstream.md.

Each class k has, per point-symmetric pair of offsets o in a diamond of radius RADIUS, a tap
w_o, plus a gain g and a bias b, one set for all planes or one per plane; on 0..255 pixels

    out(p) = x(p) + sum_o w_o * (x(p+o) + x(p-o) - 2 x(p)) + g * (x(p) - 128) + b

with w_o, g in steps of 2^-COEF_EXP and b in steps of 2^-BIAS_EXP levels. The class of a pixel is
the number of thresholds at or below its activity: the mean of |Laplacian| of the planes' mean
over a ACTIVITY_WINDOW-square window, in steps of 2^-BIAS_EXP.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F

from .container import Reader, varint
from .errors import CodecError

RADIUS = 4  # session 27's probe: radius 3 / 4 / 5 gave -5.2 / -5.4 / -5.5% BD-rate
COEF_EXP = 8
BIAS_EXP = 4
ACTIVITY_WINDOW = 5
CLASSES = 4  # the encoder tries 1 and CLASSES classes, shared and per plane, keeps the cheapest
MAX_CLASSES = 8
MAX_RADIUS = 6
FIT_ROWS = 64  # rows of features at a time while fitting
APPLY_ROWS = 512  # rows filtered at a time
SECTION_OVERHEAD = 7  # the section's type, length and CRC (container.pack_section), for 128+ bytes


class PostFilter(NamedTuple):
    radius: int
    thresholds: list[int]  # K - 1 increasing activity thresholds, in steps of 2^-BIAS_EXP
    coefs: list[list[list[int]]]  # per set (one, or one per plane), per class: one tap per
    # offset pair, then the gain, then the bias

    @property
    def n_classes(self) -> int:
        return len(self.thresholds) + 1


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
    """The filtered pixels: x [C, H, W] float on 0..255 (unrounded), clamped to 0..255; f has one
    set of coefficients or C. Differentiable in x (the refinement scores its output)."""
    x = x.float()
    C, H, W = x.shape
    r, k = f.radius, f.n_classes
    cls = _classes(x.detach(), f.thresholds)
    sets = f.coefs * C if len(f.coefs) == 1 else f.coefs  # plane c's classes
    kernels, consts = zip(*(_kernel(c, r) for coefs in sets for c in coefs))
    weight = torch.stack(kernels).float()[:, None]  # [C * K, 1, 2r + 1, 2r + 1]
    const = torch.tensor(consts, dtype=torch.float32).view(1, -1, 1, 1)
    p = _padded(x, r)[None]
    out = []
    for y0 in range(0, H, APPLY_ROWS):  # strips: every class's output of a large image is large
        y1 = min(y0 + APPLY_ROWS, H)
        # Every class's filter of every plane in one grouped convolution, then each pixel's pick.
        y = (F.conv2d(p[:, :, y0:y1 + 2 * r], weight, groups=C) + const).view(C, k, y1 - y0, W)
        out.append(y.gather(1, cls[y0:y1].expand(C, 1, -1, -1)).squeeze(1))
    return torch.cat(out, 1).clamp(0, 255)


def _thresholds(x: torch.Tensor, n_classes: int) -> list[int]:
    """Activity quantiles that share the pixels evenly between n_classes (fewer where they tie)."""
    if n_classes == 1:
        return []
    q = torch.linspace(0, 1, n_classes + 1, dtype=torch.float64)[1:-1]
    act = activity(x).flatten()[::7].double()  # a subsample: quantile() caps its input size
    return sorted({max(int(v), 1) for v in torch.round(torch.quantile(act, q) * 2 ** BIAS_EXP)})


class NormalEquations(NamedTuple):
    """The least-squares system per plane and class: ata [C, K, P, P], atb [C, K, P], count [K]."""
    ata: torch.Tensor
    atb: torch.Tensor
    count: torch.Tensor


def normal_equations(x: torch.Tensor, target: torch.Tensor, thresholds: list[int],
                     radius: int = RADIUS) -> NormalEquations:
    """One pass over the image; summing over planes or classes gives the coarser filters' systems."""
    x = x.float()
    cls = _classes(x, thresholds)
    p = _padded(x, radius)
    n_feat, n_cls, n_planes = len(offsets(radius)) + 2, len(thresholds) + 1, x.shape[0]
    ata = torch.zeros(n_planes, n_cls, n_feat, n_feat, dtype=torch.float64)
    atb = torch.zeros(n_planes, n_cls, n_feat, dtype=torch.float64)
    count = torch.zeros(n_cls, dtype=torch.float64)
    for y0 in range(0, x.shape[1], FIT_ROWS):  # strips: the features of a whole image are large
        y1 = min(y0 + FIT_ROWS, x.shape[1])
        feats = _features(p, radius, y0, y1)
        resid = target[:, y0:y1].double() - x[:, y0:y1].double()
        c = cls[y0:y1]
        for k in range(n_cls):
            m = c == k
            a, b = feats[:, m], resid[:, m]  # [C, n, P], [C, n]
            ata[:, k] += a.transpose(1, 2) @ a
            atb[:, k] += (a.transpose(1, 2) @ b[..., None])[..., 0]
            count[k] += int(m.sum())
    return NormalEquations(ata, atb, count)


def solve(eq: NormalEquations) -> list[list[int]]:
    """The integers of one set of filters (one per class) from summed normal equations
    (ata [K, P, P], atb [K, P], count [K])."""
    n_feat = eq.ata.shape[-1]
    coefs = []
    for ata, atb, n in zip(eq.ata, eq.atb, eq.count.tolist()):
        if n < 4 * n_feat:
            coefs.append([0] * n_feat)
            continue
        # A touch of ridge: x - 128 and 1 are the same column in a flat class.
        w = torch.linalg.solve(ata + 1e-6 * n * torch.eye(n_feat, dtype=torch.float64), atb)
        w[:-1] *= 2 ** COEF_EXP
        w[-1] *= 2 ** BIAS_EXP
        coefs.append([int(v) for v in torch.round(w)])
    return coefs


def _sets(eq: NormalEquations, per_plane: bool) -> list[list[list[int]]]:
    """The coefficient sets from a plane-by-class system: one per plane, or one for all."""
    if per_plane:
        return [solve(NormalEquations(a, b, eq.count)) for a, b in zip(eq.ata, eq.atb)]
    return [solve(NormalEquations(eq.ata.sum(0), eq.atb.sum(0), eq.count))]


def candidates(x: torch.Tensor, target: torch.Tensor, radius: int = RADIUS) -> list[PostFilter]:
    """Least-squares filters taking x towards target (both [C, H, W] on 0..255), rounded to the
    section's integers: 1 and CLASSES classes, one set for all planes and (C > 1) one per plane."""
    thresholds = _thresholds(x, CLASSES)
    eq = normal_equations(x, target, thresholds, radius)
    one = NormalEquations(eq.ata.sum(1, keepdim=True), eq.atb.sum(1, keepdim=True), eq.count.sum(0, keepdim=True))
    return [PostFilter(radius, th, _sets(e, per_plane))
            for th, e in (([], one), (thresholds, eq))
            for per_plane in ((False, True) if x.shape[0] > 1 else (False,))]


def fit(x: torch.Tensor, target: torch.Tensor, n_classes: int, per_plane: bool = False,
        radius: int = RADIUS) -> PostFilter:
    """The least-squares filter with n_classes activity classes (fewer where quantiles tie)."""
    thresholds = _thresholds(x, n_classes)
    return PostFilter(radius, thresholds, _sets(normal_equations(x, target, thresholds, radius), per_plane))


# ---- the section -----------------------------------------------------------------------------
def pack(f: PostFilter) -> bytes:
    out = bytearray([f.radius, f.n_classes, len(f.coefs)])
    for t in f.thresholds:
        out += varint(t)
    for v in (v for per_set in f.coefs for c in per_set for v in c):
        out += varint(2 * v if v >= 0 else -2 * v - 1)  # zigzag: small magnitudes, one byte
    return bytes(out)


def unpack(payload: bytes, n_planes: int) -> PostFilter:
    """Raises ValueError on a payload that is not a valid POST_FILTER section for an image of
    n_planes planes."""
    if (len(payload) < 3 or not 1 <= payload[0] <= MAX_RADIUS or not 1 <= payload[1] <= MAX_CLASSES
            or payload[2] not in (1, n_planes)):
        raise ValueError("bad POST_FILTER header")
    radius, k, n_sets = payload[:3]
    r, values = Reader(payload), []
    r.pos = 3
    try:
        while r.pos < len(payload):
            values.append(r.varint("POST_FILTER"))
    except CodecError as e:  # truncated or overlong
        raise ValueError(str(e)) from None
    n_coef = len(offsets(radius)) + 2
    if len(values) != k - 1 + n_sets * k * n_coef:
        raise ValueError("POST_FILTER holds the wrong number of values")
    thresholds = values[:k - 1]
    if any(b <= a for a, b in zip(thresholds, thresholds[1:])):
        raise ValueError("POST_FILTER thresholds are not increasing")
    ints = [v // 2 if v % 2 == 0 else -(v + 1) // 2 for v in values[k - 1:]]
    per_class = [ints[i * n_coef:(i + 1) * n_coef] for i in range(n_sets * k)]
    return PostFilter(radius, thresholds, [per_class[s * k:(s + 1) * k] for s in range(n_sets)])


def choose(x: torch.Tensor, target: torch.Tensor, lmbda: float) -> bytes | None:
    """The POST_FILTER payload with the lowest rate-distortion cost for this image, or None where
    sending none costs least. x, target: [C, H, W] on 0..255; lmbda: the file's lambda(t), whose
    cost is bits per pixel + lmbda * MSE on 0..255 pixels (refinement's, scaled)."""
    npx = x.shape[1] * x.shape[2]

    def cost(out: torch.Tensor, n_bytes: int) -> float:
        mse = float(((out.round() - target) ** 2).mean())
        return 8 * n_bytes / npx + lmbda * mse

    best, best_cost = None, cost(x, 0)
    for f in candidates(x, target):
        payload = pack(f)
        c = cost(apply(x, f), len(payload) + SECTION_OVERHEAD)
        if c < best_cost:
            best, best_cost = payload, c
    return best
