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


def _mse(a, b) -> float:
    return float(((a.round() - b) ** 2).mean())


@pytest.mark.parametrize("n_classes,per_plane", [(1, False), (4, False), (4, True)])
def test_fit_undoes_a_blur(n_classes, per_plane):
    target = _edges()
    x = _blur(target)
    f = pf.fit(x, target, n_classes, per_plane)
    assert f.n_classes == len(f.thresholds) + 1 <= n_classes
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
    n = len(pf.offsets(pf.RADIUS)) + 2
    for bad in (b"", bytes([0, 1, 1]), bytes([pf.RADIUS, 0, 1]), bytes([pf.MAX_RADIUS + 1, 1, 1]),
                bytes([pf.RADIUS, 1, 2]), payload[:-1], payload + b"\x00", payload[:-1] + b"\x80",
                bytes([pf.RADIUS, 3, 1, 5, 5]) + bytes(3 * n)):  # thresholds not increasing
        with pytest.raises(ValueError):
            pf.unpack(bad, 3)


def test_candidates_share_one_pass():
    x, target = _blur(_edges()), _edges()
    cands = pf.candidates(x, target)
    assert [(c.n_classes, len(c.coefs)) for c in cands] == [(1, 1), (1, 3), (4, 1), (4, 3)]
    # the summed system gives what a separate fit gives
    assert cands[0] == pf.fit(x, target, 1) and cands[3] == pf.fit(x, target, 4, per_plane=True)


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


def test_strips_filter_as_the_whole_image(monkeypatch):
    x, target = _blur(_edges()), _edges()
    f = pf.fit(x, target, 4, per_plane=True)
    whole = pf.apply(x, f)
    monkeypatch.setattr(pf, "APPLY_ROWS", 7)  # strips that do not divide the height
    assert torch.equal(pf.apply(x, f), whole)
