"""A per-image Wiener filter on the decoded pixels, fitted by the encoder and sent in POST_FILTER.

g_s is trained for the average training photo; on one image its output is often systematically
too soft (eval08's long high-contrast edges: +1.7 dB from this filter at quality 20). Like VVC's
adaptive loop filter, the encoder fits by least squares a small symmetric filter that takes the
decoded image towards the source, classified by local activity and direction, and sends its
integers where they lower the rate-distortion cost (a few dozen bytes). The filter runs after
g_s and feeds nothing back, so a decoder that skips the section only loses the gain. Spec:
docs/bitstream.md.

Each class has, per point-symmetric pair of offsets o in a diamond of radius RADIUS, a tap w_o,
plus a gain g and a bias b, one set for all planes or one per plane; on 0..255 pixels

    out(p) = x(p) + sum_o w_o * (x(p+o) + x(p-o) - 2 x(p)) + g * (x(p) - 128) + b

with w_o, g in steps of 2^-COEF_EXP and b in steps of 2^-BIAS_EXP levels. Format version 5 adds:

- cross-plane taps (`cross` > 0, one set per plane of a colour image): plane c's filter also
  reads each other plane q, a tap on x_q(p) - x_c(p) and one per offset pair in a diamond of
  radius `cross` on x_q's second differences. The decoder's errors in R, G and B are not
  independent (session 28: -1.6% BD-rate).
- direction classes (`directions` = 3): besides its activity class, a pixel is flat-ish,
  horizontal/vertical or diagonal by the second derivatives of the planes' mean, and where the
  vertical one is the larger its taps are read transposed, as VVC's ALF does, so one filter
  serves edges of both orientations (session 28: +0.4 to +0.7 dB more on eval08's long edges).

A pixel's activity class is the number of thresholds at or below the mean of |Laplacian| of the
planes' mean over an ACTIVITY_WINDOW-square window, in steps of 2^-BIAS_EXP.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F

from .container import FORMAT_VERSION, Reader, varint
from .errors import CodecError

RADIUS = 4  # session 27's probe: radius 3 / 4 / 5 gave -5.2 / -5.4 / -5.5% BD-rate
CROSS_RADIUS = 2  # session 28's probe: cross radius 1 / 2 / 3 / 4 gave ~60 / 80 / 90 / 100% of the gain
DIRECTIONS = 3  # direction classes the encoder tries besides 1 (none)
DIRECTION_RATIO = 2  # a pair of second derivatives is directional where one is over twice the other
COEF_EXP = 8
BIAS_EXP = 4
ACTIVITY_WINDOW = 5
CLASSES = 4  # the encoder tries 1 and CLASSES activity classes
MAX_CLASSES = 8
MAX_RADIUS = 6
FIT_ROWS = 64  # rows of features at a time while fitting
FIT_STEP = 2  # the fit reads every FIT_STEP-th row: half the time, the same filters to ~0.01 dB
APPLY_ROWS = 512  # rows filtered at a time
SECTION_OVERHEAD = 7  # the section's type, length and CRC (container.pack_section), for 128+ bytes


class PostFilter(NamedTuple):
    radius: int
    thresholds: list[int]  # A - 1 increasing activity thresholds, in steps of 2^-BIAS_EXP
    coefs: list[list[list[int]]]  # per set (one, or one per plane), per class (activity a,
    # direction d: a * directions + d): one tap per offset pair, then (cross > 0) the cross-plane
    # taps of each other plane, then the gain and the bias
    cross: int = 0  # radius of the cross-plane taps; 0: each plane reads only itself
    directions: int = 1  # 1, or 3: direction classes and transposed taps (version 5)

    @property
    def n_classes(self) -> int:
        return (len(self.thresholds) + 1) * self.directions


def offsets(radius: int) -> list[tuple[int, int]]:
    """One offset of each point-symmetric pair in the diamond |dy| + |dx| <= radius."""
    return [(dy, dx) for dy in range(-radius, radius + 1) for dx in range(-radius, radius + 1)
            if 0 < abs(dy) + abs(dx) <= radius and (dy, dx) > (0, 0)]


def n_coefs(radius: int, cross: int, n_planes: int) -> int:
    """Coefficients per class and set: own taps, cross-plane taps, gain and bias."""
    n_cross = (n_planes - 1) * (1 + len(offsets(cross))) if cross else 0
    return len(offsets(radius)) + n_cross + 2


def _padded(x: torch.Tensor, radius: int) -> torch.Tensor:
    return F.pad(x[None], (radius,) * 4, mode="replicate")[0]


def _features(p: torch.Tensor, pad: int, radius: int, cross: int, y0: int, y1: int,
              transposed: torch.Tensor | None = None, step: int = 1) -> torch.Tensor:
    """Rows y0:y1:step of the features of the image whose replicate-padded planes (by pad) are p:
    [C, rows, W, n_coefs] float64 in the coefficients' order: the plane's own second differences,
    (cross > 0) for each other plane q its difference from the plane and its second differences,
    then x - 128 and 1. transposed: optional [rows, W] bool, where offsets (dy, dx) are read as
    (dx, dy)."""
    C, W = p.shape[0], p.shape[2] - 2 * pad

    def at(dy: int, dx: int) -> torch.Tensor:
        return p[:, pad + y0 + dy:pad + y1 + dy:step, pad + dx:pad + dx + W].double()

    x = at(0, 0)

    def second(r: int) -> torch.Tensor:  # [C, rows, W, P]
        d = torch.stack([at(dy, dx) + at(-dy, -dx) - 2 * x for dy, dx in offsets(r)], -1)
        if transposed is None or not bool(transposed.any()):
            return d
        t = torch.stack([at(dx, dy) + at(-dx, -dy) - 2 * x for dy, dx in offsets(r)], -1)
        return torch.where(transposed[..., None], t, d)

    feats = [second(radius)]
    if cross:
        sec = second(cross)
        feats.append(torch.stack([torch.cat([torch.cat([(x[q] - x[c])[..., None], sec[q]], -1)
                                             for q in range(C) if q != c], -1) for c in range(C)]))
    feats.append(torch.stack([x - 128.0, torch.ones_like(x)], -1))
    return torch.cat(feats, -1)


def _window_mean(g: torch.Tensor) -> torch.Tensor:
    k = ACTIVITY_WINDOW
    return F.avg_pool2d(F.pad(g, (k // 2,) * 4, mode="replicate"), k, stride=1)


def _second_derivatives(x: torch.Tensor) -> torch.Tensor:
    """|second derivative| of the planes' mean along rows, columns and both diagonals, each
    averaged over the window: [4, H, W] (horizontal, vertical, diagonal, anti-diagonal)."""
    H, W = x.shape[1:]
    p = F.pad(x.mean(0, keepdim=True)[None], (1, 1, 1, 1), mode="replicate")[0, 0]

    def at(dy: int, dx: int) -> torch.Tensor:
        return p[1 + dy:1 + dy + H, 1 + dx:1 + dx + W]

    c2 = 2 * at(0, 0)
    g = torch.stack([c2 - at(0, -1) - at(0, 1), c2 - at(-1, 0) - at(1, 0),
                     c2 - at(-1, -1) - at(1, 1), c2 - at(-1, 1) - at(1, -1)]).abs()
    return _window_mean(g[None])[0]


def activity(x: torch.Tensor) -> torch.Tensor:
    """Local activity [H, W] of [C, H, W] pixels: the windowed mean |Laplacian| of the planes' mean."""
    lum = x.mean(0, keepdim=True)[None]
    lap = torch.tensor([[0.0, 1.0, 0.0], [1.0, -4.0, 1.0], [0.0, 1.0, 0.0]], dtype=x.dtype)
    g = F.conv2d(F.pad(lum, (1, 1, 1, 1), mode="replicate"), lap.view(1, 1, 3, 3)).abs()
    return _window_mean(g)[0, 0]


def classify(x: torch.Tensor, thresholds: list[int], directions: int = 1) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Each pixel's class [H, W] (activity * directions + direction) and, with directions = 3,
    where its taps are read transposed ([H, W] bool; None otherwise). Direction 1: the larger of
    the horizontal and vertical derivatives is over DIRECTION_RATIO times the smaller and their
    ratio is at least the diagonals'; direction 2: else the diagonals' ratio is over it; 0: neither."""
    if thresholds:
        bounds = torch.tensor(thresholds, dtype=x.dtype) * 2.0 ** -BIAS_EXP
        cls = torch.bucketize(activity(x), bounds, right=True)
    else:
        cls = torch.zeros(x.shape[1:], dtype=torch.int64)
    if directions == 1:
        return cls, None
    gh, gv, gd, ga = _second_derivatives(x)
    hv_max, hv_min = torch.maximum(gh, gv), torch.minimum(gh, gv)
    dg_max, dg_min = torch.maximum(gd, ga), torch.minimum(gd, ga)
    hv = (hv_max > DIRECTION_RATIO * hv_min) & (hv_max * dg_min >= dg_max * hv_min)
    dg = ~hv & (dg_max > DIRECTION_RATIO * dg_min)
    d = torch.where(hv, 1, torch.where(dg, 2, 0))
    return cls * directions + d, gv > gh


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
        for j, q in enumerate(q for q in range(n_planes) if q != plane):
            d = c[n_own + j * n_q] * 2.0 ** -COEF_EXP
            k[q, R, R] += d
            k[plane, R, R] -= d
            taps(q, offsets(cross), c[n_own + j * n_q + 1:n_own + (j + 1) * n_q])
    gain, bias = c[-2] * 2.0 ** -COEF_EXP, c[-1] * 2.0 ** -BIAS_EXP
    k[plane, R, R] += 1 + gain
    return k, bias - 128 * gain


def apply(x: torch.Tensor, f: PostFilter) -> torch.Tensor:
    """The filtered pixels: x [C, H, W] float on 0..255 (unrounded), clamped to 0..255; f has one
    set of coefficients or C. Differentiable in x (the refinement scores its output)."""
    x = x.float()
    C, H, W = x.shape
    R, K = max(f.radius, f.cross), f.n_classes
    cls, transposed = classify(x.detach(), f.thresholds, f.directions)
    sets = f.coefs * C if len(f.coefs) == 1 else f.coefs  # plane c's classes
    kernels, consts = zip(*(_kernel(c, f.radius, f.cross, plane, C)
                            for plane, coefs in enumerate(sets) for c in coefs))
    kern = torch.stack(kernels).float().view(C, K, C, 2 * R + 1, 2 * R + 1)
    const = torch.tensor(consts, dtype=torch.float32).view(C, K)
    if transposed is not None:  # every class's filter once more, read transposed
        kern, const = torch.cat([kern, kern.transpose(-1, -2)], 1), torch.cat([const, const], 1)
        cls = cls + K * transposed
    n_out = kern.shape[1]
    if f.cross:
        weight, groups = kern.reshape(C * n_out, C, 2 * R + 1, 2 * R + 1), 1
    else:  # each plane reads only itself: a grouped convolution, a third of the work
        weight, groups = torch.stack([kern[c, :, c] for c in range(C)]).reshape(C * n_out, 1, 2 * R + 1, 2 * R + 1), C
    p = _padded(x, R)[None]
    out = []
    for y0 in range(0, H, APPLY_ROWS):  # strips: every class's output of a large image is large
        y1 = min(y0 + APPLY_ROWS, H)
        # Every class's filter of every plane in one convolution, then each pixel's pick.
        y = (F.conv2d(p[:, :, y0:y1 + 2 * R], weight, groups=groups)[0].view(C, n_out, y1 - y0, W)
             + const[..., None, None])
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
    """The least-squares system per plane and class: ata [C, K, P, P], atb [C, K, P], btb [C, K]
    (the squared residual, for the fitted filter's error), count [K]."""
    ata: torch.Tensor
    atb: torch.Tensor
    btb: torch.Tensor
    count: torch.Tensor

    def activity_merged(self, n_activity: int) -> "NormalEquations":
        """Classes a * D + d summed over the n_activity activity classes a: D classes left."""
        def m(t, dim):
            s = t.shape
            return t.reshape(*s[:dim], n_activity, s[dim] // n_activity, *s[dim + 1:]).sum(dim)
        return NormalEquations(m(self.ata, 1), m(self.atb, 1), m(self.btb, 1), m(self.count, 0))

    def planes_summed(self) -> "NormalEquations":
        return NormalEquations(self.ata.sum(0, keepdim=True), self.atb.sum(0, keepdim=True),
                               self.btb.sum(0, keepdim=True), self.count)

    def columns(self, keep: torch.Tensor) -> "NormalEquations":
        return NormalEquations(self.ata[..., keep[:, None], keep], self.atb[..., keep], self.btb, self.count)


def normal_equations(x: torch.Tensor, target: torch.Tensor, thresholds: list[int],
                     radius: int = RADIUS, cross: int = 0, directions: int = 1) -> NormalEquations:
    """One pass over every FIT_STEP-th row of the image. Merging activity classes, summing over
    planes or dropping the cross-plane columns (own_columns) gives the coarser filters' systems."""
    x = x.float()
    cls, transposed = classify(x, thresholds, directions)
    pad = max(radius, cross)
    p = _padded(x, pad)
    n_feat, n_cls, n_planes = n_coefs(radius, cross, x.shape[0]), (len(thresholds) + 1) * directions, x.shape[0]
    ata = torch.zeros(n_planes, n_cls, n_feat, n_feat, dtype=torch.float64)
    atb = torch.zeros(n_planes, n_cls, n_feat, dtype=torch.float64)
    btb = torch.zeros(n_planes, n_cls, dtype=torch.float64)
    count = torch.zeros(n_cls, dtype=torch.float64)
    for y0 in range(0, x.shape[1], FIT_ROWS):  # strips: the features of a whole image are large
        y1 = min(y0 + FIT_ROWS, x.shape[1])
        rows = slice(y0, y1, FIT_STEP)
        feats = _features(p, pad, radius, cross, y0, y1, None if transposed is None else transposed[rows], FIT_STEP)
        resid = target[:, rows].double() - x[:, rows].double()
        c = cls[rows]
        for k in range(n_cls):
            m = c == k
            a, b = feats[:, m], resid[:, m]  # [C, n, P], [C, n]
            ata[:, k] += a.transpose(1, 2) @ a
            atb[:, k] += (a.transpose(1, 2) @ b[..., None])[..., 0]
            btb[:, k] += (b * b).sum(1)
            count[k] += int(m.sum())
    return NormalEquations(ata, atb, btb, count)


def own_columns(eq: NormalEquations, radius: int) -> NormalEquations:
    """The system without its cross-plane features: the plane's own taps, the gain and the bias."""
    n = eq.ata.shape[-1]
    return eq.columns(torch.tensor([*range(len(offsets(radius))), n - 2, n - 1]))


def _steps(n_coef: int) -> torch.Tensor:
    """The value of one integer step of each coefficient: taps and gain 2^-COEF_EXP, bias 2^-BIAS_EXP."""
    return torch.tensor([2.0 ** -COEF_EXP] * (n_coef - 1) + [2.0 ** -BIAS_EXP], dtype=torch.float64)


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
        w /= _steps(n_feat)
        coefs.append([int(v) for v in torch.round(w)])
    return coefs


def _sets(eq: NormalEquations, per_plane: bool) -> list[list[list[int]]]:
    """The coefficient sets from a plane-by-class system: one per plane, or one for all."""
    if per_plane:
        return [solve(NormalEquations(a, b, e, eq.count)) for a, b, e in zip(eq.ata, eq.atb, eq.btb)]
    s = eq.planes_summed()
    return [solve(NormalEquations(s.ata[0], s.atb[0], s.btb[0], eq.count))]


def squared_error(eq: NormalEquations, coefs: list[list[list[int]]]) -> float:
    """The filtered image's summed squared error before clamping and rounding, over the pixels of
    the system the filter was solved from: sum over planes and classes of btb - 2 w.atb + w.ata.w."""
    w = torch.tensor(coefs, dtype=torch.float64) * _steps(eq.ata.shape[-1])  # [sets, K, n]
    if w.shape[0] == 1:
        eq = eq.planes_summed()
    quad = (w[..., None, :] @ eq.ata @ w[..., :, None])[..., 0, 0]
    return float((eq.btb - 2 * (eq.atb * w).sum(-1) + quad).sum())


def _candidates(x: torch.Tensor, target: torch.Tensor, radius: int,
                cross: int) -> list[tuple[PostFilter, float]]:
    """(filter, its squared error) for each design the encoder tries. Direction classes come
    with one activity class only: the decoder runs every class's filter at every pixel, twice
    with direction classes, and 3 x 4 classes would cost ~0.15 s more per 768x512 decode."""
    thresholds = _thresholds(x, CLASSES)
    cross = cross if x.shape[0] > 1 else 0
    out = []
    for directions, ths in ((1, thresholds), (DIRECTIONS, [])):
        full = normal_equations(x, target, ths, radius, cross, directions)
        systems = [(ths, full)]
        if ths:
            systems.insert(0, ([], full.activity_merged(len(ths) + 1)))
        for th, eq in systems:
            own = own_columns(eq, radius) if cross else eq
            for per_plane in ((False, True) if x.shape[0] > 1 else (False,)):
                coefs = _sets(own, per_plane)
                out.append((PostFilter(radius, th, coefs, 0, directions), squared_error(own, coefs)))
            if cross:
                coefs = _sets(eq, True)
                out.append((PostFilter(radius, th, coefs, cross, directions), squared_error(eq, coefs)))
    return out


def candidates(x: torch.Tensor, target: torch.Tensor, radius: int = RADIUS,
               cross: int = CROSS_RADIUS) -> list[PostFilter]:
    """Least-squares filters taking x towards target (both [C, H, W] on 0..255), rounded to the
    section's integers: without and with direction classes, 1 and CLASSES activity classes, one
    set for all planes and (C > 1) one per plane, without and (cross > 0) with cross-plane taps
    (direction classes with one activity class only)."""
    return [f for f, _ in _candidates(x, target, radius, cross)]


def fit(x: torch.Tensor, target: torch.Tensor, n_classes: int, per_plane: bool = False,
        radius: int = RADIUS, cross: int = 0, directions: int = 1) -> PostFilter:
    """The least-squares filter with n_classes activity classes (fewer where quantiles tie);
    cross > 0 (one set per plane, C > 1) adds the cross-plane taps, directions = 3 the direction
    classes."""
    if cross and not (per_plane and x.shape[0] > 1):
        raise ValueError("cross-plane taps need one set per plane of a colour image")
    thresholds = _thresholds(x, n_classes)
    eq = normal_equations(x, target, thresholds, radius, cross, directions)
    return PostFilter(radius, thresholds, _sets(eq, per_plane), cross, directions)


# ---- the section -----------------------------------------------------------------------------
def pack(f: PostFilter) -> bytes:
    """The section as format version FORMAT_VERSION writes it (the cross and directions bytes
    since version 5)."""
    out = bytearray([f.radius, len(f.thresholds) + 1, len(f.coefs), f.cross, f.directions])
    for t in f.thresholds:
        out += varint(t)
    for v in (v for per_set in f.coefs for c in per_set for v in c):
        out += varint(2 * v if v >= 0 else -2 * v - 1)  # zigzag: small magnitudes, one byte
    return bytes(out)


def unpack(payload: bytes, n_planes: int, version: int = FORMAT_VERSION) -> PostFilter:
    """Raises ValueError on a payload that is not a valid POST_FILTER section for an image of
    n_planes planes in a file of this format version (version 4 has neither cross nor
    directions byte)."""
    head = 5 if version >= 5 else 3
    if (len(payload) < head or not 1 <= payload[0] <= MAX_RADIUS or not 1 <= payload[1] <= MAX_CLASSES
            or payload[2] not in (1, n_planes)):
        raise ValueError("bad POST_FILTER header")
    radius, k, n_sets = payload[:3]
    cross, directions = (payload[3], payload[4]) if head == 5 else (0, 1)
    if cross > MAX_RADIUS or (cross and (n_sets != n_planes or n_planes == 1)):
        raise ValueError("bad POST_FILTER cross-plane radius")
    if directions not in (1, DIRECTIONS):
        raise ValueError("bad POST_FILTER direction count")
    r, values = Reader(payload), []
    r.pos = head
    try:
        while r.pos < len(payload):
            values.append(r.varint("POST_FILTER"))
    except CodecError as e:  # truncated or overlong
        raise ValueError(str(e)) from None
    n_coef, n_cls = n_coefs(radius, cross, n_planes), k * directions
    if len(values) != k - 1 + n_sets * n_cls * n_coef:
        raise ValueError("POST_FILTER holds the wrong number of values")
    thresholds = values[:k - 1]
    if any(b <= a for a, b in zip(thresholds, thresholds[1:])):
        raise ValueError("POST_FILTER thresholds are not increasing")
    ints = [v // 2 if v % 2 == 0 else -(v + 1) // 2 for v in values[k - 1:]]
    per_class = [ints[i * n_coef:(i + 1) * n_coef] for i in range(n_sets * n_cls)]
    return PostFilter(radius, thresholds, [per_class[s * n_cls:(s + 1) * n_cls] for s in range(n_sets)],
                      cross, directions)


def choose(x: torch.Tensor, target: torch.Tensor, lmbda: float) -> bytes | None:
    """The POST_FILTER payload with the lowest rate-distortion cost for this image, or None where
    sending none costs least. x, target: [C, H, W] on 0..255; lmbda: the file's lambda(t), whose
    cost is bits per pixel + lmbda * MSE on 0..255 pixels (refinement's, scaled). The candidates
    are ranked by their error from the normal equations; the best is applied and kept if it
    beats sending none."""
    npx = x.shape[1] * x.shape[2]
    fitted = x.shape[0] * x[:, ::FIT_STEP].shape[1] * x.shape[2]  # the pixels the fit's errors sum over

    def cost(mse: float, n_bytes: int) -> float:
        return 8 * n_bytes / npx + lmbda * mse

    ranked = sorted(((cost(sse / fitted, len(pack(f)) + SECTION_OVERHEAD), f)
                     for f, sse in _candidates(x, target, RADIUS, CROSS_RADIUS)), key=lambda c: c[0])
    f = ranked[0][1]
    payload = pack(f)
    real = cost(float(((apply(x, f).round() - target) ** 2).mean()), len(payload) + SECTION_OVERHEAD)
    return payload if real < cost(float(((x.round() - target) ** 2).mean()), 0) else None
