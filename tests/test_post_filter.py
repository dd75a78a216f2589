import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

import codec
from codec import container, image_codec, image_io, post_filter as pf
from codec.container import Section


def _edges(h=96, w=128, seed=0) -> torch.Tensor:
    """[3, h, w] on 0..255: flat bands with long sharp edges (where g_s and blurs are soft)."""
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    bands = ((xx + 0.4 * yy + 6 * torch.sin(yy / 9.0)) // 14) % 2
    base = 30 + 190 * bands + 20 * torch.rand(3, 1, 1, generator=g)
    return base.float().expand(3, h, w).contiguous()


def _blur(x: torch.Tensor) -> torch.Tensor:
    k = torch.tensor([1.0, 4.0, 6.0, 4.0, 1.0])
    k = (k[:, None] * k[None]) / 256
    return F.conv2d(F.pad(x[:, None], (2, 2, 2, 2), mode="replicate"), k[None, None])[:, 0]


def _noisy_blur(target: torch.Tensor, sigma: float = 2.0) -> torch.Tensor:
    """A blurred, noisy copy: a decoded image whose least-squares filter is well conditioned."""
    return _blur(target) + sigma * torch.randn(target.shape, generator=torch.Generator().manual_seed(0))


def _mse(a, b) -> float:
    return float(((a.round() - b) ** 2).mean())


@pytest.mark.parametrize("n_classes,per_plane,cross,directions",
                         [(1, False, 0, 1), (4, False, 0, 1), (4, True, 0, 1), (4, True, 2, 1), (4, True, 2, 3)])
def test_fit_undoes_a_blur(n_classes, per_plane, cross, directions):
    target = _edges()
    x = _blur(target)
    f = pf.fit(x, target, n_classes, per_plane, cross=cross, directions=directions)
    assert f.n_classes == (len(f.thresholds) + 1) * directions <= n_classes * directions
    assert len(f.coefs) == (3 if per_plane else 1) and all(len(s) == f.n_classes for s in f.coefs)
    assert f.thresholds == sorted(set(f.thresholds))
    out = pf.apply(x, f)
    assert out.shape == x.shape and 0 <= float(out.min()) and float(out.max()) <= 255
    assert _mse(out, target) < 0.5 * _mse(x, target)  # a sharpening filter, not a small tweak


def test_zero_filter_is_the_identity():
    x = _blur(_edges())
    f = pf.PostFilter(pf.RADIUS, [], [[[0] * (len(pf.offsets(pf.RADIUS)) + 2)]])
    assert torch.allclose(pf.apply(x, f), x, atol=1e-4)


def test_gain_and_bias_taps():
    x = torch.full((1, 8, 8), 100.0)
    n = len(pf.offsets(2))
    f = pf.PostFilter(2, [], [[[0] * n + [2 ** pf.COEF_EXP // 4, 3 * 2 ** pf.BIAS_EXP]]])
    assert torch.allclose(pf.apply(x, f), torch.full_like(x, 100 + 0.25 * (100 - 128) + 3))


def test_section_round_trip_and_bad_payloads():
    x, target = _blur(_edges()), _edges()
    f = pf.fit(x, target, 4)
    payload = pf.pack(f)
    assert pf.unpack(payload, 3) == f
    assert len(payload) < 130  # a few dozen bytes: it must pay at low rates
    per_plane = pf.fit(x, target, 4, per_plane=True)
    assert pf.unpack(pf.pack(per_plane), 3) == per_plane
    with pytest.raises(ValueError):  # three sets for a one-plane (gray) image
        pf.unpack(pf.pack(per_plane), 1)
    cross = pf.fit(x, target, 4, per_plane=True, cross=2, directions=3)
    assert (cross.cross, cross.directions) == (2, 3) and pf.unpack(pf.pack(cross), 3) == cross
    n = len(pf.offsets(pf.RADIUS)) + 2
    for bad in (b"", bytes([0, 1, 1, 0, 1]), bytes([pf.RADIUS, 0, 1, 0, 1]), bytes([pf.MAX_RADIUS + 1, 1, 1, 0, 1]),
                bytes([pf.RADIUS, 1, 2, 0, 1]), bytes([pf.RADIUS, 1, 3, pf.MAX_RADIUS + 1, 1]),
                bytes([pf.RADIUS, 1, 1, 2, 1]) + bytes(n),  # cross-plane taps need one set per plane
                bytes([pf.RADIUS, 1, 1, 0, 2]) + bytes(2 * n),  # 2 directions is not a mode
                payload[:-1], payload + b"\x00", payload[:-1] + b"\x80",
                bytes([pf.RADIUS, 3, 1, 0, 1, 5, 5]) + bytes(3 * n)):  # thresholds not increasing
        with pytest.raises(ValueError):
            pf.unpack(bad, 3)
    with pytest.raises(ValueError):
        pf.fit(x, target, 1, per_plane=False, cross=2)


def test_version_4_section_has_no_cross_or_directions_byte():
    f = pf.fit(_blur(_edges()), _edges(), 4, per_plane=True)
    v5 = pf.pack(f)
    v4 = v5[:3] + v5[5:]
    assert pf.unpack(v4, 3, version=4) == f
    with pytest.raises(ValueError):
        pf.unpack(v4, 3)  # read as version 5, the first threshold would be the cross byte


def test_apply_is_the_fitted_linear_model():
    """apply's convolution kernels compute exactly the features' sum the encoder fitted, with
    cross-plane taps in the order the section stores them."""
    x = _blur(_edges()) + torch.linspace(0, 9, 128)  # planes that differ in more than a constant
    g = torch.Generator().manual_seed(1)
    n = pf.n_coefs(3, 2, 3)
    f = pf.PostFilter(3, [], [[torch.randint(-12, 13, (n,), generator=g).tolist()] for _ in range(3)], 2)
    scale = torch.tensor([2.0 ** -pf.COEF_EXP] * (n - 1) + [2.0 ** -pf.BIAS_EXP], dtype=torch.float64)
    w = torch.tensor([s[0] for s in f.coefs], dtype=torch.float64) * scale  # [3, n]
    # The same sum, written out: plane c's own second differences, then each other plane's
    # difference and second differences, then x - 128 and 1.
    p = F.pad(x[None].double(), (3,) * 4, mode="replicate")[0]
    H, W = x.shape[1:]

    def sec(q, offs):
        return [p[q, 3 + dy:3 + dy + H, 3 + dx:3 + dx + W] + p[q, 3 - dy:3 - dy + H, 3 - dx:3 - dx + W]
                - 2 * p[q, 3:3 + H, 3:3 + W] for dy, dx in offs]

    xd = x.double()
    for c in range(3):
        feats = sec(c, pf.offsets(3))
        for q in (q for q in range(3) if q != c):
            feats += [xd[q] - xd[c]] + sec(q, pf.offsets(2))
        feats += [xd[c] - 128, torch.ones_like(xd[c])]
        want = (xd[c] + sum(wi * fi for wi, fi in zip(w[c], feats))).clamp(0, 255)
        assert torch.allclose(pf.apply(x, f)[c].double(), want, atol=1e-3)


def test_direction_classes_transpose_the_taps():
    """A filter fitted on vertical edges, with direction classes, serves horizontal ones: their
    taps are read transposed."""
    target = _edges()
    x = _noisy_blur(target)
    f = pf.fit(x, target, 1, directions=3)
    rot = pf.apply(x.transpose(1, 2).contiguous(), f)
    assert torch.allclose(rot, pf.apply(x, f).transpose(1, 2), atol=1e-3)
    plain = pf.fit(x, target, 1)  # without, the taps fitted to one orientation serve the other worse
    assert _mse(rot, target.transpose(1, 2)) < 0.9 * _mse(pf.apply(x.transpose(1, 2), plain),
                                                          target.transpose(1, 2))


def test_cross_plane_taps_borrow_a_sharp_plane():
    target = _edges()
    x = target.clone()
    x[0] = _blur(target[:1])[0]  # red blurred, green and blue exact
    own = pf.apply(x, pf.fit(x, target, 1, per_plane=True))
    cross = pf.apply(x, pf.fit(x, target, 1, per_plane=True, cross=2))
    assert _mse(cross[0], target[0]) < 0.25 * _mse(own[0], target[0])


def test_candidates_share_one_pass():
    x, target = _blur(_edges()), _edges()
    cands = pf.candidates(x, target)
    assert ([(c.directions, len(c.thresholds) + 1, len(c.coefs), c.cross) for c in cands]
            == [(d, a, s, c) for d, a in ((1, 1), (1, 4), (3, 1)) for s, c in ((1, 0), (3, 0), (3, 2))])
    # the summed systems, and the ones without their cross-plane columns, give what separate fits give
    assert cands[0] == pf.fit(x, target, 1) and cands[4] == pf.fit(x, target, 4, per_plane=True)
    assert cands[5] == pf.fit(x, target, 4, per_plane=True, cross=2)
    assert cands[6] == pf.fit(x, target, 1, directions=3)
    assert cands[8] == pf.fit(x, target, 1, per_plane=True, cross=2, directions=3)
    assert [c.cross for c in pf.candidates(x[:1], target[:1])] == [0] * 3  # gray: no other planes


def test_squared_error_from_the_normal_equations():
    target = 100 + 0.3 * _edges()  # low contrast: the filtered pixels stay inside 0..255
    x = _noisy_blur(target)
    for f, sse in pf._candidates(x, target, pf.RADIUS, pf.CROSS_RADIUS):
        out = pf.apply(x, f)
        assert 0 < float(out.min()) and float(out.max()) < 255
        rows = slice(None, None, pf.FIT_STEP)  # the rows the fit reads
        assert sse == pytest.approx(float(((out[:, rows].double() - target[:, rows]) ** 2).sum()), rel=1e-3)


def test_choose_sends_nothing_where_nothing_is_gained():
    target = _edges()
    assert pf.choose(target.clone(), target, 0.01) is None
    assert pf.choose(_blur(target), target, 0.01) is not None


def _section_free(data: bytes) -> bytes:
    c = container.unpack(data)
    del c.sections[Section.POST_FILTER]
    return container.pack(c)


def test_file_carries_the_filter_and_decodes_without_it():
    img = Image.fromarray(_edges(128, 160).permute(1, 2, 0).round().to(torch.uint8).numpy())
    ref = np.asarray(img, dtype=np.float64)
    data = codec.encode(img, quality=20)
    assert Section.POST_FILTER in container.unpack(data).sections and codec.read_info(data)["post_filtered"]

    def mse(d):
        return np.mean((np.asarray(codec.decode(d), dtype=np.float64) - ref) ** 2)

    plain = _section_free(data)  # what a decoder that skips the ancillary section sees
    assert mse(data) < mse(plain)
    enc = image_codec.Encoder(image_io.load(img, None), image_codec.load_model(None))
    assert enc.encode(20, filtered=False) == plain  # the section is the only difference


def test_gray_image_is_filtered_as_one_plane():
    img = Image.fromarray(_edges(128, 160)[0].round().to(torch.uint8).numpy(), "L")
    data = codec.encode(img, quality=20)
    assert Section.POST_FILTER in container.unpack(data).sections
    out = codec.decode(data)
    assert out.mode == "L"
    ref = np.asarray(img, dtype=np.float64)
    assert (np.mean((np.asarray(out, dtype=np.float64) - ref) ** 2)
            < np.mean((np.asarray(codec.decode(_section_free(data)), dtype=np.float64) - ref) ** 2))


def test_corrupt_section_is_a_format_error():
    img = Image.fromarray(_edges(128, 160).permute(1, 2, 0).round().to(torch.uint8).numpy())
    c = container.unpack(codec.encode(img, quality=20))
    c.sections[Section.POST_FILTER] = bytes([pf.MAX_RADIUS + 1]) + c.sections[Section.POST_FILTER][1:]
    with pytest.raises(codec.FormatError):
        codec.decode(container.pack(c))


def test_target_size_is_kept_with_the_filter():
    img = Image.fromarray(_edges(128, 160).permute(1, 2, 0).round().to(torch.uint8).numpy())
    target = len(codec.encode(img, quality=30))
    data = codec.encode(img, target_size=target)
    assert len(data) <= target and Section.POST_FILTER in container.unpack(data).sections


def test_target_between_the_plain_and_the_filtered_smallest_file():
    img = Image.fromarray(_edges(128, 160).permute(1, 2, 0).round().to(torch.uint8).numpy())
    enc = image_codec.Encoder(image_io.load(img, None), image_codec.load_model(None))
    plain, filtered = enc.encode(0, filtered=False), enc.encode(0)
    assert len(filtered) > len(plain)
    data = codec.encode(img, target_size=len(plain))  # the filter does not fit: the file is the plain one
    assert data == plain


@pytest.mark.parametrize("cross,directions", [(0, 1), (2, 3)])
def test_strips_filter_as_the_whole_image(monkeypatch, cross, directions):
    x, target = _blur(_edges()), _edges()
    f = pf.fit(x, target, 4, per_plane=True, cross=cross, directions=directions)
    whole = pf.apply(x, f)
    monkeypatch.setattr(pf, "APPLY_ROWS", 7)  # strips that do not divide the height
    assert torch.equal(pf.apply(x, f), whole)


def test_version_4_file_with_its_section_decodes():
    img = Image.fromarray(_edges(128, 160).permute(1, 2, 0).round().to(torch.uint8).numpy())
    c = container.unpack(codec.encode(img, quality=20))
    f = pf.PostFilter(2, [], [[[0] * len(pf.offsets(2)) + [2 ** pf.COEF_EXP // 4, 2 ** pf.BIAS_EXP]]])
    c.sections[Section.POST_FILTER] = pf.pack(f)
    v5 = container.pack(c)
    c.header.version = 4
    c.sections[Section.POST_FILTER] = pf.pack(f)[:3] + pf.pack(f)[5:]
    v4 = container.pack(c)
    assert v4[4] == 4 and v5[4] == container.FORMAT_VERSION == 5
    assert np.array_equal(np.asarray(codec.decode(v4)), np.asarray(codec.decode(v5)))
