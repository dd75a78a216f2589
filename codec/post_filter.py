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

with w_o, g in steps of 2^-COEF_EXP and b in steps of 2^-BIAS_EXP levels. With one set per
plane of a colour image, the filter of plane c may also read the other planes q (format
version 5, `cross` > 0): a tap on x_q(p) - x_c(p) and one per offset pair in a diamond of
radius `cross` on x_q's second differences. The decoder's errors in R, G and B are not
independent, and these terms add ~0.1 dB on top of the plane's own filter (session 28). The class of a pixel is
the number of thresholds at or below its activity: the mean of |Laplacian| of the planes' mean
over a ACTIVITY_WINDOW-square window, in steps of 2^-BIAS_EXP.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F

from .container import FORMAT_VERSION, Reader, varint
from .errors import CodecError

RADIUS = 4  # session 27's probe: radius 3 / 4 / 5 gave -5.2 / -5.4 / -5.5% BD-rate
CROSS_RADIUS = 2  # session 28's probe: cross radius 1 / 2 / 3 / 4 gave ~60 / 80 / 90 / 100% of the gain
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
    # offset pair, then (cross > 0) the cross-plane taps of each other plane, then the gain and the bias
    cross: int = 0  # radius of the cross-plane taps; 0: each plane reads only itself

    @property
    def n_classes(self) -> int:
        return len(self.thresholds) + 1


def n_coefs(radius: int, cross: int, n_planes: int) -> int:
    """Coefficients per class and set: own taps, cross-plane taps, gain and bias."""
    n_cross = (n_planes - 1) * (1 + len(offsets(cross))) if cross else 0
    return len(offsets(radius)) + n_cross + 2


def offsets(radius: int) -> list[tuple[int, int]]:
    """One offset of each point-symmetric pair in the diamond |dy| + |dx| <= radius."""
    return [(dy, dx) for dy in range(-radius, radius + 1) for dx in range(-radius, radius + 1)
            if 0 < abs(dy) + abs(dx) <= radius and (dy, dx) > (0, 0)]


def _padded(x: torch.Tensor, radius: int) -> torch.Tensor:
    return F.pad(x[None], (radius,) * 4, mode="replicate")[0]


def _features(p: torch.Tensor, pad: int, radius: int, cross: int, y0: int, y1: int) -> torch.Tensor:
    """Rows y0:y1 of the features of the image whose replicate-padded planes (by pad) are p:
    [C, y1 - y0, W, n_coefs] float64 in the coefficients' order: the plane's own second
    differences, (cross > 0) for each other plane q its difference from the plane and its second
    differences, then x - 128 and 1."""
    C, W = p.shape[0], p.shape[2] - 2 * pad

    def at(dy: int, dx: int) -> torch.Tensor:
        return p[:, pad + y0 + dy:pad + y1 + dy, pad + dx:pad + dx + W].double()

    x = at(0, 0)

    def second(r: int) -> list[torch.Tensor]:
        return [at(dy, dx) + at(-dy, -dx) - 2 * x for dy, dx in offsets(r)]

    feats = [torch.stack(second(radius), -1)]
    if cross:
        sec = torch.stack(second(cross), -1)  # [C, rows, W, P_cross]
        feats.append(torch.stack([torch.cat([torch.cat([(x[q] - x[c])[..., None], sec[q]], -1)
                                             for q in range(C) if q != c], -1) for c in range(C)]))
    feats.append(torch.stack([x - 128.0, torch.ones_like(x)], -1))
    return torch.cat(feats, -1)


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


def _kernel(c: list[int], radius: int, cross: int, plane: int, n_planes: int) -> tuple[torch.Tensor, float]:
    """One class's coefficients for output plane `plane` as a convolution kernel over all
    n_planes input planes ([n_planes, 2R+1, 2R+1], R = max(radius, cross)) and a constant."""
    R = max(radius, cross)
    k = torch.zeros(n_planes, 2 * R + 1, 2 * R + 1, dtype=torch.float64)

    def taps(q: int, offs, values) -> None:
        for (dy, dx), v in zip(offs, values):
            w = v * 2.0 ** -COEF_EXP
            k[q, R + dy, R + dx] += w
            k[q, R - dy, R - dx] += w
            k[q, R, R] -= 2 * w

    n_own = len(offsets(radius))
    taps(plane, offsets(radius), c[:n_own])
    if cross:
        n_q = 1 + len(offsets(cross))
        others = [q for q in range(n_planes) if q != plane]
        for j, q in enumerate(others):
            d, rest = c[n_own + j * n_q], c[n_own + j * n_q + 1:n_own + (j + 1) * n_q]
            k[q, R, R] += d * 2.0 ** -COEF_EXP
            k[plane, R, R] -= d * 2.0 ** -COEF_EXP
            taps(q, offsets(cross), rest)
    gain, bias = c[-2] * 2.0 ** -COEF_EXP, c[-1] * 2.0 ** -BIAS_EXP
    k[plane, R, R] += 1 + gain
    return k, bias - 128 * gain


def apply(x: torch.Tensor, f: PostFilter) -> torch.Tensor:
    """The filtered pixels: x [C, H, W] float on 0..255 (unrounded), clamped to 0..255; f has one
    set of coefficients or C. Differentiable in x (the refinement scores its output)."""
    x = x.float()
    C, H, W = x.shape
    R, k = max(f.radius, f.cross), f.n_classes
    cls = _classes(x.detach(), f.thresholds)
    sets = f.coefs * C if len(f.coefs) == 1 else f.coefs  # plane c's classes
    kernels, consts = zip(*(_kernel(c, f.radius, f.cross, plane, C)
                            for plane, coefs in enumerate(sets) for c in coefs))
    weight = torch.stack(kernels).float()  # [C * K, C, 2R + 1, 2R + 1]
    groups = 1
    if not f.cross:  # each plane reads only itself: a grouped convolution, a third of the work
        weight = torch.stack([weight[i, i // k] for i in range(C * k)])[:, None]
        groups = C
    const = torch.tensor(consts, dtype=torch.float32).view(1, -1, 1, 1)
    p = _padded(x, R)[None]
    out = []
    for y0 in range(0, H, APPLY_ROWS):  # strips: every class's output of a large image is large
        y1 = min(y0 + APPLY_ROWS, H)
        # Every class's filter of every plane in one convolution, then each pixel's pick.
        y = (F.conv2d(p[:, :, y0:y1 + 2 * R], weight, groups=groups) + const).view(C, k, y1 - y0, W)
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
                     radius: int = RADIUS, cross: int = 0) -> NormalEquations:
    """One pass over the image; summing over planes or classes, or dropping the cross-plane
    rows and columns (own_columns), gives the coarser filters' systems."""
    x = x.float()
    cls = _classes(x, thresholds)
    pad = max(radius, cross)
    p = _padded(x, pad)
    n_feat, n_cls, n_planes = n_coefs(radius, cross, x.shape[0]), len(thresholds) + 1, x.shape[0]
    ata = torch.zeros(n_planes, n_cls, n_feat, n_feat, dtype=torch.float64)
    atb = torch.zeros(n_planes, n_cls, n_feat, dtype=torch.float64)
    count = torch.zeros(n_cls, dtype=torch.float64)
    for y0 in range(0, x.shape[1], FIT_ROWS):  # strips: the features of a whole image are large
        y1 = min(y0 + FIT_ROWS, x.shape[1])
        feats = _features(p, pad, radius, cross, y0, y1)
        resid = target[:, y0:y1].double() - x[:, y0:y1].double()
        c = cls[y0:y1]
        for k in range(n_cls):
            m = c == k
            a, b = feats[:, m], resid[:, m]  # [C, n, P], [C, n]
            ata[:, k] += a.transpose(1, 2) @ a
            atb[:, k] += (a.transpose(1, 2) @ b[..., None])[..., 0]
            count[k] += int(m.sum())
    return NormalEquations(ata, atb, count)


def own_columns(eq: NormalEquations, radius: int) -> NormalEquations:
    """The system without its cross-plane features: the plane's own taps, the gain and the bias."""
    n = eq.ata.shape[-1]
    keep = torch.tensor([*range(len(offsets(radius))), n - 2, n - 1])
    return NormalEquations(eq.ata[..., keep[:, None], keep], eq.atb[..., keep], eq.count)


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


def candidates(x: torch.Tensor, target: torch.Tensor, radius: int = RADIUS,
               cross: int = CROSS_RADIUS) -> list[PostFilter]:
    """Least-squares filters taking x towards target (both [C, H, W] on 0..255), rounded to the
    section's integers: 1 and CLASSES classes, one set for all planes and (C > 1) one per
    plane, without and (cross > 0) with cross-plane taps."""
    thresholds = _thresholds(x, CLASSES)
    cross = cross if x.shape[0] > 1 else 0
    full = normal_equations(x, target, thresholds, radius, cross)
    out = []
    for th, eq in (([], NormalEquations(full.ata.sum(1, keepdim=True), full.atb.sum(1, keepdim=True),
                                        full.count.sum(0, keepdim=True))), (thresholds, full)):
        own = own_columns(eq, radius) if cross else eq
        out += [PostFilter(radius, th, _sets(own, per_plane)) for per_plane in ((False, True) if x.shape[0] > 1 else (False,))]
        if cross:
            out.append(PostFilter(radius, th, _sets(eq, True), cross))
    return out


def fit(x: torch.Tensor, target: torch.Tensor, n_classes: int, per_plane: bool = False,
        radius: int = RADIUS, cross: int = 0) -> PostFilter:
    """The least-squares filter with n_classes activity classes (fewer where quantiles tie);
    cross > 0 (one set per plane, C > 1) adds the cross-plane taps."""
    if cross and not (per_plane and x.shape[0] > 1):
        raise ValueError("cross-plane taps need one set per plane of a colour image")
    thresholds = _thresholds(x, n_classes)
    eq = normal_equations(x, target, thresholds, radius, cross)
    return PostFilter(radius, thresholds, _sets(eq, per_plane), cross)


# ---- the section -----------------------------------------------------------------------------
def pack(f: PostFilter) -> bytes:
    """The section as format version FORMAT_VERSION writes it (the cross byte since version 5)."""
    out = bytearray([f.radius, f.n_classes, len(f.coefs), f.cross])
    for t in f.thresholds:
        out += varint(t)
    for v in (v for per_set in f.coefs for c in per_set for v in c):
        out += varint(2 * v if v >= 0 else -2 * v - 1)  # zigzag: small magnitudes, one byte
    return bytes(out)


def unpack(payload: bytes, n_planes: int, version: int = FORMAT_VERSION) -> PostFilter:
    """Raises ValueError on a payload that is not a valid POST_FILTER section for an image of
    n_planes planes in a file of this format version (version 4 has no cross byte)."""
    head = 4 if version >= 5 else 3
    if (len(payload) < head or not 1 <= payload[0] <= MAX_RADIUS or not 1 <= payload[1] <= MAX_CLASSES
            or payload[2] not in (1, n_planes)):
        raise ValueError("bad POST_FILTER header")
    radius, k, n_sets = payload[:3]
    cross = payload[3] if head == 4 else 0
    if cross > MAX_RADIUS or (cross and (n_sets != n_planes or n_planes == 1)):
        raise ValueError("bad POST_FILTER cross-plane radius")
    r, values = Reader(payload), []
    r.pos = head
    try:
        while r.pos < len(payload):
            values.append(r.varint("POST_FILTER"))
    except CodecError as e:  # truncated or overlong
        raise ValueError(str(e)) from None
    n_coef = n_coefs(radius, cross, n_planes)
    if len(values) != k - 1 + n_sets * k * n_coef:
        raise ValueError("POST_FILTER holds the wrong number of values")
    thresholds = values[:k - 1]
    if any(b <= a for a, b in zip(thresholds, thresholds[1:])):
        raise ValueError("POST_FILTER thresholds are not increasing")
    ints = [v // 2 if v % 2 == 0 else -(v + 1) // 2 for v in values[k - 1:]]
    per_class = [ints[i * n_coef:(i + 1) * n_coef] for i in range(n_sets * k)]
    return PostFilter(radius, thresholds, [per_class[s * k:(s + 1) * k] for s in range(n_sets)], cross)


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
