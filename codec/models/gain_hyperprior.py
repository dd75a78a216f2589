"""Mean-scale hyperprior with gain vectors: one network for every rate.

Architecture (Minnen et al. 2018 without the autoregressive context, so decoding stays
parallel) plus the gain units of Cui et al. 2021 ("Asymmetric Gained Deep Image Compression"):
per-channel gain vectors for y and z at ``levels`` rate points. A continuous rate parameter
t in [0, 1] picks a point between two neighbouring levels by interpolating the log-gains, so
one set of weights gives a continuous quality knob. Training samples t per image and uses
lambda(t) log-spaced over [lmbda_min, lmbda_max].

The entropy parameters (h_s) have a second, bit-exact implementation in
:mod:`codec.models.fixed_point`; compress/decompress always use that one.
"""

from __future__ import annotations

import math
from typing import NamedTuple, Sequence

import numpy as np
import torch
import torch.nn as nn
from compressai.ans import BufferedRansEncoder, RansDecoder
from compressai.entropy_models import EntropyBottleneck, GaussianConditional
from compressai.layers import GDN
from compressai.models.utils import conv, deconv

SCALE_MIN, SCALE_MAX, SCALE_LEVELS = 0.11, 256.0, 64


def scale_table() -> torch.Tensor:
    return torch.exp(torch.linspace(math.log(SCALE_MIN), math.log(SCALE_MAX), SCALE_LEVELS))


def ste_round(x: torch.Tensor) -> torch.Tensor:
    """Round in the forward pass, identity gradient in the backward pass."""
    return x + (torch.round(x) - x).detach()


def anchor_mask(h: int, w: int) -> torch.Tensor:
    """[1, 1, h, w]: 1 at the checkerboard's anchor positions ((row + column) even), else 0."""
    r, c = torch.arange(h)[:, None], torch.arange(w)[None]
    return ((r + c) % 2 == 0).float()[None, None]


class GainHyperprior(nn.Module):
    def __init__(self, N: int = 128, M: int = 192, levels: int = 6,
                 lmbda_min: float = 0.0016, lmbda_max: float = 0.10, Na: int | None = None,
                 Ns: int | None = None):
        super().__init__()
        # Na: g_a's hidden width, N unless set. A wider analysis costs encode time only;
        # h_a, h_s and g_s (but for Ns) keep width N.
        # Ns: the width of g_s's last hidden stage (half resolution), N unless set. At high
        # rates g_s itself caps the PSNR (docs/training.md, session 19), and this stage is
        # where fine texture is made; widening only it keeps the decode cost down.
        self.N, self.M, self.levels, self.Na, self.Ns = N, M, levels, Na or N, Ns or N
        self.lmbda_min, self.lmbda_max = lmbda_min, lmbda_max

        Na = self.Na
        self.g_a = nn.Sequential(
            conv(3, Na), GDN(Na), conv(Na, Na), GDN(Na), conv(Na, Na), GDN(Na), conv(Na, M))
        self.g_s = nn.Sequential(
            deconv(M, N), GDN(N, inverse=True), deconv(N, N), GDN(N, inverse=True),
            deconv(N, self.Ns), GDN(self.Ns, inverse=True), deconv(self.Ns, 3))
        self.h_a = nn.Sequential(
            conv(M, N, stride=1, kernel_size=3), nn.LeakyReLU(inplace=True),
            conv(N, N), nn.LeakyReLU(inplace=True), conv(N, N))
        # ReLU only: the fixed-point twin of h_s relies on exactly representable activations.
        self.h_s = nn.Sequential(
            deconv(N, M), nn.ReLU(inplace=True),
            deconv(M, M, kernel_size=3), nn.ReLU(inplace=True),
            conv(M, M * 2, stride=1, kernel_size=1))

        # Log-gains, initialised so the quantisation step shrinks like 1/sqrt(lambda).
        init = 0.5 * torch.log(self.level_lambdas() / math.sqrt(lmbda_min * lmbda_max))
        self.y_gain = nn.Parameter(init[:, None].repeat(1, M))
        self.y_gain_inv = nn.Parameter(-init[:, None].repeat(1, M))
        self.z_gain = nn.Parameter(torch.zeros(levels, N))
        self.z_gain_inv = nn.Parameter(torch.zeros(levels, N))

        self.entropy_bottleneck = EntropyBottleneck(N)
        self.gaussian_conditional = GaussianConditional(None)

    # ---- rate parameter -------------------------------------------------------------------
    def level_lambdas(self) -> torch.Tensor:
        return torch.exp(torch.linspace(math.log(self.lmbda_min), math.log(self.lmbda_max),
                                        self.levels))

    def lmbda(self, t: torch.Tensor) -> torch.Tensor:
        lo, hi = math.log(self.lmbda_min), math.log(self.lmbda_max)
        return torch.exp(lo + (hi - lo) * t)

    @staticmethod
    def interpolate_map(log_gains: torch.Tensor, t_map: torch.Tensor) -> torch.Tensor:
        """Gains for a per-position rate map t_map [B, 1, h, w] -> [B, C, h, w]."""
        pos = t_map.clamp(0, 1)[:, 0] * (log_gains.shape[0] - 1)
        i = pos.floor().long().clamp(max=log_gains.shape[0] - 2)
        frac = (pos - i)[..., None]
        lg = log_gains[i] * (1 - frac) + log_gains[i + 1] * frac  # [B, h, w, C]
        return torch.exp(lg).permute(0, 3, 1, 2)

    @classmethod
    def interpolate(cls, log_gains: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """Gains for rate parameters t (shape [B]) -> [B, C, 1, 1]."""
        return cls.interpolate_map(log_gains, t[:, None, None, None])

    def gains(self, t: torch.Tensor):
        return (self.interpolate(self.y_gain, t), self.interpolate(self.y_gain_inv, t),
                self.interpolate(self.z_gain, t), self.interpolate(self.z_gain_inv, t))

    # ---- training forward -----------------------------------------------------------------
    def forward(self, x: torch.Tensor, t: torch.Tensor, autocast: bool | str = False,
                step: torch.Tensor | None = None, t_map: torch.Tensor | None = None):
        """autocast: bf16 autocast on g_a, h_a and g_s (True), on g_s only ("synthesis"), or
        off. step: optional [B, 1, h, w] scalar quantisation multiplier per position (format
        version 1's ROI); t_map: optional [B, 1, h, w] rate parameter per position, coded as
        LatentCoder.quant_map does (version 2's ROI): per-channel steps g(t_map) / g(t), and
        g_s gets the decoded value times the inverse gains of t_map."""
        device = x.device.type
        with torch.autocast(device, dtype=torch.bfloat16, enabled=autocast is True):
            y = self.g_a(x).float()
        y_hat, out_gain, likelihoods = self.latent_forward(y, t, autocast is True, step, t_map)
        with torch.autocast(device, dtype=torch.bfloat16, enabled=bool(autocast)):
            x_hat = self.g_s(y_hat * out_gain).float()
        return {"x_hat": x_hat, "likelihoods": likelihoods}

    def latent_forward(self, y: torch.Tensor, t: torch.Tensor, autocast: bool = False,
                       step: torch.Tensor | None = None, t_map: torch.Tensor | None = None,
                       rate: str = "noise"):
        """The training forward between g_a and g_s: g_a's latent y (not yet gained) ->
        (y_hat, out_gain, likelihoods); g_s's input is y_hat * out_gain. autocast: bf16 on h_a.
        step and t_map as in forward. rate: the likelihoods of the latents plus uniform noise
        ("noise", the usual proxy), or of the rounded latents the coder writes ("round",
        straight-through gradients; scripts.tune_entropy)."""
        yg, yg_inv, zg, zg_inv = self.gains(t)
        y = y * yg
        with torch.autocast(y.device.type, dtype=torch.bfloat16, enabled=autocast):
            z = self.h_a(y).float() * zg
        medians = self.entropy_bottleneck._get_medians()
        z_hat = ste_round(z - medians) + medians
        z_likelihoods = self.entropy_bottleneck(z)[1] if rate == "noise" else self._z_likelihoods(z_hat)
        hs = self.h_s(z_hat * zg_inv).chunk(2, 1)
        out_gain = yg_inv
        if t_map is not None:
            # The map's gains are a coding condition here: detached, so images coded at rate
            # t do not pull the gain vectors of other rates towards their own lambda.
            with torch.no_grad():
                step = self.interpolate_map(self.y_gain, t_map) / yg
                out_gain = self.interpolate_map(self.y_gain_inv, t_map) * step
        elif step is None:
            step = torch.ones_like(y[:, :1])
        y_hats, y_likelihoods = [], []
        for i in range(self.n_slices):
            sl = self.slice_channels(i)
            st = self.slice_step(step, i)
            scales, means = self.slice_params(hs, i, y_hats)
            if i < self.spatial_groups:  # the anchors as decoded, then the rest's parameters
                anchors = ste_round((y[:, sl] - means) * st) / st + means
                scales, means = self.checkerboard_params(i, scales, means, anchors)
            # The coder quantises (y - mean) * step with a Gaussian of scale sigma * step.
            rounded = ste_round((y[:, sl] - means) * st)
            if rate == "noise":
                _, lik = self.gaussian_conditional(y[:, sl] * st, scales * st, means=means * st)
            else:
                gc = self.gaussian_conditional
                lik = gc.likelihood_lower_bound(gc._likelihood(rounded, scales * st))
            y_likelihoods.append(lik)
            # Mixed quantisation (Minnen & Singh 2020): noise for the rate, rounding for g_s
            # and for the context of later slices.
            y_hats.append(rounded / st + means)
        return torch.cat(y_hats, 1), out_gain, {"y": torch.cat(y_likelihoods, 1), "z": z_likelihoods}

    def _z_likelihoods(self, z_hat: torch.Tensor) -> torch.Tensor:
        """The factorised prior's likelihoods of the rounded hyper-latent z_hat [B, N, h, w]
        (EntropyBottleneck.forward without its own quantisation, so gradients pass)."""
        eb = self.entropy_bottleneck
        v = z_hat.transpose(0, 1)
        lik = eb.likelihood_lower_bound(eb._likelihood(v.reshape(v.shape[0], 1, -1))[0])
        return lik.reshape(v.shape).transpose(0, 1)

    # ---- entropy parameters, slice by slice ---------------------------------------------------
    n_slices = 1  # no channel context: one slice, h_s's parameters as they are
    spatial_groups = 0  # groups coded in two checkerboard passes (GainChannelContext)

    def slice_channels(self, i: int) -> slice:
        size = self.M // self.n_slices
        return slice(i * size, (i + 1) * size)

    def slice_step(self, step: torch.Tensor, i: int) -> torch.Tensor:
        """Slice i's part of a step map: one step for all channels ([B, 1, h, w]) or one per channel."""
        return step if step.shape[1] == 1 else step[:, self.slice_channels(i)]

    def slice_params(self, hs: tuple[torch.Tensor, torch.Tensor], i: int, prev: list[torch.Tensor],
                     context=None) -> tuple[torch.Tensor, torch.Tensor]:
        """(scales, means) of slice i from h_s's output hs = (scales, means) and the decoded
        earlier slices prev (gained domain). context: the fixed-point twins of the context
        networks, for the coder (subclasses with a channel context use it)."""
        return hs[0], hs[1]

    def aux_loss(self) -> torch.Tensor:
        return self.entropy_bottleneck.loss()

    def update(self, force: bool = True) -> None:
        """Build the integer CDF tables the rANS coder uses (stored with the weights)."""
        self.gaussian_conditional.update_scale_table(scale_table(), force=force)
        self.entropy_bottleneck.update(force=force)


# ---- inference: real bitstreams ------------------------------------------------------------------
GAIN_GRID = 2.0 ** 16  # gains are rounded to this grid so encoder and decoder agree exactly
STEP_GRID = 4096.0  # ROI step multipliers are multiples of 1 / STEP_GRID


def exact_gain(log_gains: torch.Tensor, t: float) -> torch.Tensor:
    """Deterministic gain vector for rate parameter t: float64 libm exp, rounded to a fixed grid."""
    lg = log_gains.detach().double()
    pos = min(max(t, 0.0), 1.0) * (lg.shape[0] - 1)
    i = min(int(math.floor(pos)), lg.shape[0] - 2)
    frac = pos - i
    vals = [(1 - frac) * a + frac * b for a, b in zip(lg[i].tolist(), lg[i + 1].tolist())]
    g = torch.tensor([round(math.exp(v) * GAIN_GRID) / GAIN_GRID for v in vals], dtype=torch.float64)
    return g.float()[None, :, None, None]


def _pick(t: torch.Tensor, sel: torch.Tensor | None) -> list[int]:
    """The values of t at the positions sel (all when None), in row-major order, as ints."""
    return (t.reshape(-1) if sel is None else t[sel]).int().numpy().tolist()  # numpy's tolist is ~2x faster


def _guard(string: bytes, n_symbols: int) -> bytes:
    """Zero-pad a rANS string so a damaged one cannot make the decoder read past its buffer.

    compressai's rANS decoder does not bounds-check: each symbol may pull one 32-bit word, and
    escape (bypass) codes a few more per word of real data. A valid string never reaches the
    padding, so decoding is unchanged; a crafted one decodes to garbage instead of a crash.
    """
    return string + bytes(4 * n_symbols + 16 * len(string) + 4096)


class QuantMap(NamedTuple):
    """Per-position quantisation for ROI coding. The residual (y - mean) is coded as
    round((y - mean) * step) with a Gaussian of scale sigma * step; the decoded value
    (k + mean * step) times out_gain is g_s's input."""

    step: torch.Tensor  # [1, M, h, w], exact multiples of 1 / STEP_GRID; > 1 is finer
    out_gain: torch.Tensor  # [1, M, h, w]


class LatentCoder:
    """Turns a latent y into rANS strings and back, for one model and one rate parameter.

    Holds the fixed-point twins of h_s and the context, and the CDF tables as lists, taken from
    the model when built (after its update()), so building one costs a little; reuse it.
    """

    def __init__(self, model: GainHyperprior):
        from .fixed_point import FixedPointSequential

        self.model = model
        self.h_s = FixedPointSequential(model.h_s)
        self.context = [FixedPointSequential(c) for c in getattr(model, "context", [])]
        self.spatial = [FixedPointSequential(c) for c in getattr(model, "spatial", [])]
        # The rANS coder takes its CDF tables as Python lists; convert them once, not per group.
        gc = model.gaussian_conditional
        self.tables = (gc._quantized_cdf.tolist(), gc._cdf_length.reshape(-1).int().tolist(),
                       gc._offset.reshape(-1).int().tolist())

    def quant_map(self, levels: np.ndarray, t: float, offsets: Sequence[int] = (),
                  v1_multipliers: Sequence[int] | None = None) -> QuantMap:
        """Steps for a level map (codec.roi_map): level l is coded with the gain vectors of
        rate parameter t + offsets[l] / 10000 (offsets in hundredths of a quality point), so each
        channel's step follows the rate the model learned for it. The step ratios are computed
        in float64 from the grid-rounded gains and rounded to 1 / STEP_GRID: bit-exact.
        Version-1 files give one scalar step per level (v1_multipliers, in 1 / STEP_GRID)."""
        m = self.model
        if v1_multipliers is not None:
            steps = torch.tensor(v1_multipliers, dtype=torch.float32)[:, None] / STEP_GRID
            outs = exact_gain(m.y_gain_inv, t)[0, :, 0, 0][None] / steps
            steps = steps.expand_as(outs)
        else:
            g = exact_gain(m.y_gain, t).double()[0, :, 0, 0]
            rows_s, rows_o = [], []
            for off in offsets:
                t2 = min(max(t + off / 10000.0, 0.0), 1.0)
                ratio = exact_gain(m.y_gain, t2).double()[0, :, 0, 0] / g
                rows_s.append(torch.round(ratio * STEP_GRID).clamp_min(1.0) / STEP_GRID)
                rows_o.append(exact_gain(m.y_gain_inv, t2)[0, :, 0, 0])
            steps, outs = torch.stack(rows_s).float(), torch.stack(rows_o)
        idx = torch.from_numpy(np.asarray(levels, dtype=np.int64))
        return QuantMap(steps[idx].permute(2, 0, 1)[None].contiguous(),
                        outs[idx].permute(2, 0, 1)[None].contiguous())

    def _hyper_params(self, z_hat: torch.Tensor, t: float):
        zg_inv = exact_gain(self.model.z_gain_inv, t)
        return tuple(p.float() for p in self.h_s(z_hat * zg_inv).chunk(2, 1))

    def _indexes_means(self, scales, means, step: torch.Tensor | None):
        """Scale indexes and means for the coder, from exact (fixed-point) parameters. With a
        step map, round((y - mean) * step) is coded: a Gaussian of scale sigma * step."""
        if step is not None:
            scales, means = scales * step, means * step
        return self.model.gaussian_conditional.build_indexes(scales), means

    def _passes(self, i: int, shape) -> list[torch.Tensor | None]:
        """Positions of group i coded in each pass: all at once (None), or the checkerboard's
        anchors and then the rest."""
        if i >= self.model.spatial_groups:
            return [None]
        a = anchor_mask(*shape[-2:]).bool().expand(shape)
        return [a, ~a]

    @torch.no_grad()
    def compress(self, y: torch.Tensor, t: float, qmap: QuantMap | None = None,
                 z: torch.Tensor | None = None) -> tuple[bytes, bytes]:
        """y: ungained latent [1, M, h, w] -> (hyper string, latent string).

        qmap: optional per-position quantisation (ROI), from quant_map. z: the gained
        hyper-latent to code (an encoder's choice, e.g. latent_refine's); default h_a's of y.
        All slices go into one rANS string, in slice order.
        """
        m = self.model
        gc = m.gaussian_conditional
        y = y * exact_gain(m.y_gain, t)
        if z is None:
            z = m.h_a(y) * exact_gain(m.z_gain, t)
        z_str = m.entropy_bottleneck.compress(z)[0]
        z_hat = m.entropy_bottleneck.decompress([z_str], z.shape[-2:])
        hs = self._hyper_params(z_hat, t)
        step = None if qmap is None else qmap.step
        enc, prev = BufferedRansEncoder(), []
        for i in range(m.n_slices):
            scales, means = m.slice_params(hs, i, prev, context=self.context)
            st = None if step is None else m.slice_step(step, i)
            y_i = y[:, m.slice_channels(i)]
            v = None  # the group's decoded values after each pass
            for k, sel in enumerate(self._passes(i, y_i.shape)):
                if k:  # the checkerboard's second pass sees the anchors just coded
                    scales, means = m.checkerboard_params(i, scales, means, v if st is None else v / st,
                                                          spatial=self.spatial)
                indexes, mu = self._indexes_means(scales, means, st)
                symbols = gc.quantize(y_i if st is None else y_i * st, "symbols", mu)
                enc.encode_with_indexes(_pick(symbols, sel), _pick(indexes, sel), *self.tables)
                # The decoder's value of this group, computed as it will compute it.
                v = gc.dequantize(symbols, mu)
            prev.append(v if st is None else v / st)
        return z_str, enc.flush()

    @torch.no_grad()
    def decompress(self, z_str: bytes, y_str: bytes, z_shape: tuple[int, int], t: float,
                   qmap: QuantMap | None = None) -> torch.Tensor:
        """-> dequantised, un-gained latent y_hat [1, M, 4h, 4w] ready for g_s."""
        m = self.model
        gc = m.gaussian_conditional
        h, w = z_shape
        z_hat = m.entropy_bottleneck.decompress([_guard(z_str, m.N * h * w)], z_shape)
        hs = self._hyper_params(z_hat, t)
        step = None if qmap is None else qmap.step
        dec = RansDecoder()
        dec.set_stream(_guard(y_str, m.M * 16 * h * w))
        prev, coded = [], []
        for i in range(m.n_slices):
            scales, means = m.slice_params(hs, i, prev, context=self.context)
            st = None if step is None else m.slice_step(step, i)
            shape = (1, m.slice_channels(i).stop - m.slice_channels(i).start, 4 * h, 4 * w)
            symbols, v = torch.zeros(shape, dtype=torch.int32), None
            for k, sel in enumerate(self._passes(i, shape)):
                if k:
                    scales, means = m.checkerboard_params(i, scales, means, v if st is None else v / st,
                                                          spatial=self.spatial)
                indexes, mu = self._indexes_means(scales, means, st)
                # numpy builds the tensor from the coder's list ~3x faster than torch.tensor does
                decoded = torch.from_numpy(np.array(dec.decode_stream(_pick(indexes, sel), *self.tables),
                                                    dtype=np.int32))
                if sel is None:
                    symbols = decoded.reshape(shape)
                else:
                    symbols[sel] = decoded
                v = gc.dequantize(symbols, mu)
            coded.append(v)
            prev.append(v if st is None else v / st)
        y_hat = torch.cat(coded, 1)  # round((y - mean) * step) + mean * step
        return y_hat * (exact_gain(m.y_gain_inv, t) if qmap is None else qmap.out_gain)
