"""Image encode/decode: io -> model (transform -> gains/quantiser -> entropy coder) -> container."""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from . import analysis, container, image_io, post_filter
from .container import DEFAULT_MAX_PIXELS, DEFAULT_QUALITY, FLAG_GRAY, Container, Header, Section
from .errors import CodecError, FormatError, InputError, RateControlError
from .file_info import read_info  # part of the public API here since before file_info existed
from .models import synthesis_adapt
from .models.latent_refine import refine_latent
from .precision import synth_bf16
from .rate_control import search_quality
from .roi_map import DEFAULT_STRENGTH as DEFAULT_ROI_STRENGTH
from .roi_map import CELL, PAD, ROI_MU, RoiMap, check_strength, pixel_to_grid, roi_offset
from .roi_map import grid_shape as _grid_shape
from .zoo import LoadedModel, find_model, load_model

RANS_MIN_BYTES = 8
SYNTH_BF16 = synth_bf16()  # g_s under bf16 autocast only where the CPU makes it pay
# Encoder effort -> steps of latent refinement (codec.models.latent_refine). Effort 0 codes
# g_a's latent as it is; higher efforts spend encode time for a smaller, sharper file.
REFINE_STEPS = {0: 0, 1: 30, 2: 100, 3: 100}
# Effort 3 then fits a per-channel scale and bias of g_s to the image (codec.models.synthesis_adapt)
# and sends them in the SYNTHESIS_ADAPT section where they lower the rate-distortion cost.
ADAPT_STEPS = {3: 120}
# With ROI on, refinement counts the squared error of text and face pixels 1 + 3 * strength times
# (weights normalised to mean 1). Unweighted, refinement sharpens the ROI-off file's text as much
# as the ROI-on file's and the ROI's lead shrinks (docs/roi.md, session 6).
ROI_ERROR_BOOST = 3.0
# The text and face offset is sized from the error share of their cells in a plain encode at
# this quality (codec.roi_map.roi_offset). The share barely moves with the rate (0.62-0.65 from
# quality 7 to 52 on a sign that fills the frame), so one encode serves every quality.
ROI_SHARE_QUALITY = 25.0


def _padded(rgb: np.ndarray) -> torch.Tensor:
    x = torch.from_numpy(np.array(rgb, copy=True)).permute(2, 0, 1)[None].float() / 255.0
    h, w = rgb.shape[:2]
    ph, pw = (-h) % PAD, (-w) % PAD
    if ph or pw:
        x = F.pad(x, (0, pw, 0, ph), mode="replicate")
    return x.contiguous(memory_format=torch.channels_last)


def _check_quality(q) -> float:
    try:
        q = float(q)
    except (TypeError, ValueError):
        raise InputError(f"quality must be a number in [0, 100], got {q!r}") from None
    if not 0.0 <= q <= 100.0 or math.isnan(q):
        raise InputError(f"quality must be in [0, 100], got {q:g}")
    return q


def _check_effort(effort) -> int:
    if isinstance(effort, bool) or effort not in REFINE_STEPS:
        raise InputError(f"effort must be one of {sorted(REFINE_STEPS)}, got {effort!r}")
    return int(effort)


def _roi_error_weight(levels: np.ndarray, strength: float) -> torch.Tensor:
    """Per-pixel weight of the squared error in refinement, [1, 1, H, W], mean 1."""
    w = np.where(levels >= analysis.TEXT, 1.0 + ROI_ERROR_BOOST * strength, 1.0).astype(np.float32)
    return torch.from_numpy(w / w.mean())[None, None]


class Encoder:
    """One image prepared for coding: runs g_a once, then encodes at any quality cheaply.

    levels: optional per-pixel ROI level map (codec.analysis); it is brought to the latent grid
    and travels in the ROI_MAP section. effort: REFINE_STEPS key; above 0 each encode refines
    the latent for its quality (slow: about 0.4 s per step for 768x512 on 2 cores), with the
    error of text and face pixels weighted up when there is a level map (ROI_ERROR_BOOST).
    """

    def __init__(self, src: image_io.SourceImage, model: LoadedModel,
                 levels: np.ndarray | None = None, roi_strength: float = DEFAULT_ROI_STRENGTH,
                 effort: int = 0):
        self.src, self.model = src, model
        self.refine_steps = REFINE_STEPS[_check_effort(effort)]
        self.adapt_steps = ADAPT_STEPS.get(effort, 0)
        x = _padded(src.rgb)
        self.x = x if self.refine_steps or self.adapt_steps else None  # both compare with the pixels
        with torch.no_grad():
            self.y = model.net.g_a(x).contiguous()
        self.alpha = image_io.encode_alpha(src.alpha) if src.alpha is not None else None
        self.levels, self.grid, self.cells, self.share = levels, None, None, None
        if levels is not None:
            self.grid = pixel_to_grid(levels, _grid_shape(src.height, src.width))
            self.cells = self.grid >= analysis.TEXT  # the text and face cells
            if roi_strength > 0 and self.cells.any():
                self.share = self._error_share(self.cells)
        self.set_roi_strength(roi_strength)

    def set_roi_strength(self, strength: float) -> None:
        """Code the level map at this strength from now on (0 keeps the map, with no offsets)."""
        self.roi_strength = strength
        self.roi, self.roi_section, self.weight = None, None, None
        if self.grid is None:
            return
        region = None
        if strength > 0 and self.share is not None:
            net = self.model.net
            region = roi_offset(self.share, strength, net.lmbda_max / net.lmbda_min)
        self.roi = RoiMap.from_levels(self.grid, strength, region)
        self.roi_section = self.roi.pack()  # the same at every quality rate control tries
        if self.refine_steps or self.adapt_steps:
            self.weight = _roi_error_weight(self.levels, strength)

    def encode(self, quality: float, refine: bool = True, max_bytes: int | None = None,
               filtered: bool = True) -> bytes:
        """.lic bytes at this quality; refine=False skips the effort's latent refinement and
        synthesis adaptation, filtered=False the post-filter. The adaptation and the post-filter
        are left out where the file would exceed max_bytes."""
        quality = round(quality * 100) / 100  # exactly what the header stores and the decoder reads
        t, coder = quality / 100.0, self.model.coder
        qmap = None if self.roi is None else coder.quant_map(self.roi.levels, t, self.roi.offsets)
        y, z = self.y, None
        lam = float(self.model.net.lmbda(torch.tensor([t])))
        if refine and self.refine_steps:
            # Refine for the picture the decoder will show: through the post-filter of the
            # unrefined latent (the filter is fitted again afterwards).
            post = self._unrefined_filter(t, qmap, lam) if filtered else None
            y, z = refine_latent(self.model.net, self.x, y, t, (self.src.height, self.src.width),
                                 self.refine_steps, qmap, self.weight, bf16=SYNTH_BF16,
                                 gray=self.src.gray, post=post)
        z_str, y_str = coder.compress(y, t, qmap, z=z)
        # Grayscale sources (channels 1) decode to the planes' mean anyway; the flag says so for
        # RGB(A) sources whose planes are equal.
        flags = FLAG_GRAY if self.src.gray and self.src.channels != 1 else 0
        header = Header(self.model.model_id, self.model.weights_hash, self.src.width,
                        self.src.height, self.src.channels, self.src.bit_depth, quality, flags)
        sections = {Section.HYPER: z_str, Section.LATENT: y_str}
        if self.alpha is not None:
            sections[Section.ALPHA] = self.alpha
        if self.roi is not None:
            sections[Section.ROI_MAP] = self.roi_section
        plain = container.pack(Container(header, sections))
        if not (refine and self.adapt_steps) and not filtered:
            return plain
        # The extras need the decoder's latent; each candidate below costs a g_s pass.
        y_hat = self._decoded_latent(z_str, y_str, t, qmap)
        variants = [None]
        if refine and self.adapt_steps:
            payload = self._adaptation(y_hat, lam)
            if payload is not None:
                variants.insert(0, payload)
        for adapt in variants:  # preferred first; the first that fits max_bytes is the file
            extra = {} if adapt is None else {Section.SYNTHESIS_ADAPT: adapt}
            if filtered:
                pf = self._filter_payload(y_hat, adapt, lam)
                if pf is not None:
                    data = container.pack(Container(header, {**sections, **extra, Section.POST_FILTER: pf}))
                    if max_bytes is None or len(data) <= max_bytes:
                        return data
            if extra:
                data = container.pack(Container(header, {**sections, **extra}))
                if max_bytes is None or len(data) <= max_bytes:
                    return data
        return plain

    def _error_share(self, cells: np.ndarray) -> float:
        """The share of the squared error that falls in these latent-grid cells, in a plain
        encode (no ROI, no filter) at ROI_SHARE_QUALITY."""
        t = ROI_SHARE_QUALITY / 100
        y_hat = self._decoded_latent(*self.model.coder.compress(self.y, t), t, None)
        x = _synthesize(self.model, y_hat, None, self.src.height, self.src.width, False)
        err = (x - _target(self.src).expand_as(x)).square().sum(0).numpy()
        mask = self._pixels(cells)
        return float(err[mask].sum() / max(err.sum(), 1e-12))

    def _pixels(self, cells: np.ndarray) -> np.ndarray:
        """Latent-grid cells as a per-pixel mask of the image."""
        return np.kron(cells, np.ones((CELL, CELL), bool))[:self.src.height, :self.src.width]

    def roi_score(self, data: bytes, mu: float) -> float:
        """What the ROI offsets maximise (codec.roi_map.roi_offset), on this file's decoded
        pixels: whole-image PSNR + mu * PSNR of the text and face cells, in dB."""
        dec = _decode_rgb(container.unpack(data, None)).astype(np.float64)
        err = np.square(dec - self.src.rgb.astype(np.float64)).mean(-1)

        def psnr(e):
            return 10 * math.log10(255.0 ** 2 / max(float(e.mean()), 1e-10))

        if self.cells is None or not self.cells.any():
            return psnr(err)
        return psnr(err) + mu * psnr(err[self._pixels(self.cells)])

    def _decoded_latent(self, z_str: bytes, y_str: bytes, t: float, qmap) -> torch.Tensor:
        """The latent the decoder will give g_s for these strings."""
        return self.model.coder.decompress(z_str, y_str, _latent_shape(self.src.height, self.src.width), t, qmap)

    def _unrefined_filter(self, t: float, qmap, lam: float):
        """The post-filter g_a's latent would get at t, as a function of [C, H, W] pixels on
        0..255 (differentiable in them), or None where it would get none."""
        payload = self._filter_payload(self._decoded_latent(*self.model.coder.compress(self.y, t, qmap), t, qmap),
                                       None, lam)
        if payload is None:
            return None
        f = post_filter.unpack(payload, 1 if self.src.gray else 3)
        return lambda pixels: post_filter.apply(pixels, f)

    def _filter_payload(self, y_hat: torch.Tensor, adapt: bytes | None, lam: float) -> bytes | None:
        """The POST_FILTER payload for the picture this latent (and adaptation) decodes to, or
        None where sending none costs least."""
        x = _synthesize(self.model, y_hat, adapt, self.src.height, self.src.width, self.src.gray)
        return post_filter.choose(x, _target(self.src), lam)

    def _adaptation(self, y_hat: torch.Tensor, lam: float) -> bytes | None:
        """The SYNTHESIS_ADAPT payload fitted for this file, or None where the section would
        not lower the rate-distortion cost."""
        a, _, _ = synthesis_adapt.fit(self.model.net.g_s, y_hat, self.x, (self.src.height, self.src.width),
                                      self.adapt_steps, lam, self.weight, self.src.gray, SYNTH_BF16)
        return None if a is None else synthesis_adapt.pack(a)


def _latent_shape(height: int, width: int) -> tuple[int, int]:
    """The hyper-latent's (rows, columns) for an image of this size."""
    grid = _grid_shape(height, width)
    return grid[0] // 4, grid[1] // 4


def _target(src: image_io.SourceImage) -> torch.Tensor:
    """The source as the post-filter fits to it: [C, H, W] float on 0..255, one plane if gray."""
    x = torch.from_numpy(np.array(src.rgb, copy=True)).permute(2, 0, 1).float()
    return x[:1] if src.gray else x


def _synthesize(model: LoadedModel, y_hat: torch.Tensor, adapt: bytes | None, height: int, width: int,
                gray: bool) -> torch.Tensor:
    """The decoder's pixels before rounding: [C, height, width] float on 0..255, the planes'
    mean (C = 1) for gray; adapt: a SYNTHESIS_ADAPT payload (FormatError if it is not valid)."""
    affine = None
    if adapt is not None:
        widths = synthesis_adapt.layer_widths(model.net.g_s)
        try:
            affine = synthesis_adapt.to_affine(synthesis_adapt.unpack(adapt, widths))
        except ValueError as e:
            raise FormatError(f"SYNTHESIS_ADAPT section could not be decoded ({e})") from None
    # g_s was trained under bf16 autocast and runs ~2x faster in it on CPUs with native bf16
    # (codec.precision); it only shapes pixels, never the parsing of the bitstream.
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=SYNTH_BF16):
        x = synthesis_adapt.synthesize(model.net.g_s, y_hat.contiguous(memory_format=torch.channels_last),
                                       affine).float()
    x = x[0, :, :height, :width].clamp_(0, 1).mul_(255)
    return x.mean(0, keepdim=True) if gray else x


def encode(image, quality: float = DEFAULT_QUALITY, target_bpp: float | None = None,
           target_size: int | None = None, model: str | None = None,
           max_pixels: int | None = DEFAULT_MAX_PIXELS, roi="none",
           roi_strength: float = DEFAULT_ROI_STRENGTH, effort: int = 0) -> bytes:
    """Encode an image (PIL image, HxWxC uint8/uint16 array, path, bytes) to .lic bytes.

    target_bpp / target_size pick the highest quality whose file fits (file bytes, header
    included); they override `quality`. With ROI, a target below the smallest ROI file is met
    with the best of a few weaker strengths that fit (slower). roi: "none", "auto" (faces, text, fine texture get finer
    quantisation, the background coarser), or a level mask (path or HxW array, see
    codec.analysis); roi_strength in [0, 3] scales how strongly. effort 0 (fast), 1 or 2 refines
    the latent for this image (REFINE_STEPS): smaller files at the same quality, ~16 s (effort 1)
    or ~40 s (effort 2) for 768x512 on 2 cores with native bf16 (2-3x that in float32). Effort 3
    also fits g_s to the image (ADAPT_STEPS; codec.models.synthesis_adapt) and sends the fit
    where it pays.
    """
    if target_bpp is not None and target_size is not None:
        raise InputError("give at most one of target_bpp and target_size")
    quality = _check_quality(quality)
    effort = _check_effort(effort)  # before the image is loaded and analysed
    roi_strength = check_strength(roi_strength)  # also with roi="none", where it is unused
    src = image_io.load(image, max_pixels)
    enc = Encoder(src, load_model(model), analysis.level_map(src.rgb, roi), roi_strength, effort)
    if target_bpp is not None:
        if not (isinstance(target_bpp, (int, float)) and target_bpp > 0 and math.isfinite(target_bpp)):
            raise InputError(f"target_bpp must be a positive number, got {target_bpp!r}")
        target_size = int(target_bpp * src.width * src.height / 8)
    if target_size is not None:
        if not isinstance(target_size, int) or isinstance(target_size, bool):
            raise InputError(f"target_size must be an integer number of bytes, got {target_size!r}")
        # Search on fast unrefined encodes, then refine once at the quality found: refinement
        # rarely adds bits, and when it does the unrefined file, which fits, is kept.
        try:
            quality, plain = _fit(enc, target_size)
        except RateControlError:
            if enc.roi is None or not enc.roi_strength:  # nothing to weaken
                raise
            quality, plain = _fit_weaker_roi(enc, target_size)
        if not enc.refine_steps:
            return plain
        refined = enc.encode(quality, max_bytes=target_size)
        return refined if len(refined) <= target_size else plain
    return enc.encode(quality)


def _fit(enc: Encoder, target_size: int) -> tuple[float, bytes]:
    """The highest quality, and its unrefined file, that fits target_size."""
    def search(max_bytes):
        return search_quality(lambda q: (q, enc.encode(q, refine=False, max_bytes=max_bytes)),
                              target_size, size=lambda r: len(r[1]))

    try:  # the highest quality that fits with its post-filter
        return search(None)
    except RateControlError:  # where the filter's bytes alone break the budget, without it
        return search(target_size)


def _fit_weaker_roi(enc: Encoder, target_size: int) -> tuple[float, bytes]:
    """For a target below the smallest ROI file at the asked strength: the best of a few weaker
    strengths, each at the highest quality that fits, by the score the offsets were sized for
    (Encoder.roi_score). The strongest that fits is often not the best: it sits at quality 0
    and may have dropped its post-filter, where a weaker one keeps both. The encoder is left at
    the chosen strength."""
    mu = ROI_MU * enc.roi_strength
    top = _fitting_strength(enc, target_size)
    best = None
    for strength in dict.fromkeys((top, top / 2, 0.0)):
        enc.set_roi_strength(strength)
        try:
            quality, data = _fit(enc, target_size)
        except RateControlError:
            if best is None and strength == 0.0:
                raise
            continue
        score = enc.roi_score(data, mu)
        if best is None or score > best[0]:
            best = (score, strength, quality, data)
    enc.set_roi_strength(best[1])
    return best[2], best[3]


def _fitting_strength(enc: Encoder, target_size: int, steps: int = 6) -> float:
    """The largest ROI strength, to 1/2**steps of the asked one, whose smallest file (quality 0,
    without the post-filter) fits target_size; 0 when none does."""
    lo, hi = 0.0, enc.roi_strength
    for _ in range(steps):
        mid = (lo + hi) / 2
        enc.set_roi_strength(mid)
        if len(enc.encode(0.0, refine=False, filtered=False)) <= target_size:
            lo = mid
        else:
            hi = mid
    return lo


def _decode_rgb(c: Container) -> np.ndarray:
    h = c.header
    lm = find_model(h.model_id, h.weights_hash)
    for sec in (Section.HYPER, Section.LATENT):
        if len(c.sections[sec]) < RANS_MIN_BYTES:  # the rANS flush alone writes 8 bytes
            raise FormatError(f"{sec.name} section is too short to be a rANS stream")
    grid = _grid_shape(h.height, h.width)
    t, qmap = h.quality / 100.0, None
    if Section.ROI_MAP in c.sections:
        roi = RoiMap.unpack(c.sections[Section.ROI_MAP], grid, h.version)
        qmap = lm.coder.quant_map(roi.levels, t, roi.offsets, roi.v1_multipliers)
    try:
        y_hat = lm.coder.decompress(c.sections[Section.HYPER], c.sections[Section.LATENT],
                                    _latent_shape(h.height, h.width), t, qmap)
    except (RuntimeError, ValueError, OverflowError) as e:
        raise FormatError(f"latent sections could not be decoded ({e})") from None
    pf = None
    if Section.POST_FILTER in c.sections:
        try:
            pf = post_filter.unpack(c.sections[Section.POST_FILTER], 1 if h.gray else 3, h.version)
        except ValueError as e:
            raise FormatError(f"POST_FILTER section could not be decoded ({e})") from None
    # With a post-filter, a gray image is filtered as one plane, as the encoder fitted it.
    x = _synthesize(lm, y_hat, c.sections.get(Section.SYNTHESIS_ADAPT), h.height, h.width,
                    h.gray and pf is not None)
    if pf is not None:
        x = post_filter.apply(x, pf).expand(3, -1, -1)
    return x.round().to(torch.uint8).permute(1, 2, 0).contiguous().numpy()


def decode(data: bytes, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> Image.Image:
    """Decode .lic bytes to a PIL image ("L", "RGB" or "RGBA", 8-bit)."""
    c = container.unpack(data, max_pixels)
    rgb = _decode_rgb(c)
    alpha = None
    if c.header.channels == 4:
        alpha = image_io.decode_alpha(c.sections[Section.ALPHA], c.header.width, c.header.height)
    return image_io.to_pil(rgb, alpha, c.header.channels, c.header.gray)


__all__ = ["encode", "decode", "read_info", "Encoder", "DEFAULT_QUALITY", "CodecError"]
