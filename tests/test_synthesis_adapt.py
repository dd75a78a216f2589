"""codec/models/synthesis_adapt.py and encoder effort 3: the per-image scale and bias of g_s."""

import numpy as np
import pytest
import torch

import codec
from codec import container, image_codec, image_io
from codec.container import Section
from codec.models import synthesis_adapt as sa


def _adaptation(widths, seed=0, exps=None):
    g = torch.Generator().manual_seed(seed)
    ints = [torch.randint(-sa.BOUND, sa.BOUND + 1, (2, w), generator=g) for w in widths]
    return sa.Adaptation([v[0] for v in ints], [v[1] for v in ints], exps or [6 + k for k in range(len(widths))])


def test_pack_unpack_round_trip():
    widths = [8, 8, 3]
    a = _adaptation(widths)
    b = sa.unpack(sa.pack(a), widths)
    assert b.bias_exps == a.bias_exps
    for x, y in zip(a.scales + a.biases, b.scales + b.biases):
        assert torch.equal(x, y)


def test_mostly_zero_adaptation_codes_small():
    widths = [128, 128, 128, 3]
    zeros = sa.Adaptation([torch.zeros(w, dtype=torch.int64) for w in widths],
                          [torch.zeros(w, dtype=torch.int64) for w in widths], [6, 7, 8, 6])
    # 774 symbols of one value: the adaptive tables learn it within a few symbols
    assert len(sa.pack(zeros)) < 64 < 8 * 64 < len(sa.pack(_adaptation(widths)))


@pytest.mark.parametrize("payload", [b"", b"\x06\x06\x06", b"\x00" * 40, bytes([99] * 3) + b"\x00" * 40])
def test_unpack_rejects_bad_payloads(payload):
    with pytest.raises(ValueError):
        sa.unpack(payload, [8, 8, 3])


def test_zero_adaptation_is_the_plain_synthesis():
    g_s = codec.load_model().net.g_s
    y = torch.randn(1, g_s[0].in_channels, 3, 4)
    widths = sa.layer_widths(g_s)
    zero = sa.Adaptation([torch.zeros(w, dtype=torch.int64) for w in widths],
                         [torch.zeros(w, dtype=torch.int64) for w in widths], [6] * len(widths))
    with torch.no_grad():
        assert torch.equal(sa.synthesize(g_s, y, sa.to_affine(zero)), g_s(y))


def test_fit_lowers_the_error_of_the_decoded_image(photo):
    src = image_io.load(photo.crop((100, 40, 356, 232)), None)  # 256x192: the crop path and the full one
    lm = codec.load_model()
    y = lm.net.g_a(image_codec._padded(src.rgb)).detach()
    grid = image_codec._grid_shape(src.height, src.width)
    z_str, y_str = lm.coder.compress(y, 0.3)
    y_hat = lm.coder.decompress(z_str, y_str, (grid[0] // 4, grid[1] // 4), 0.3)
    x = image_codec._padded(src.rgb)
    flags = [p.requires_grad for p in lm.net.g_s.parameters()]
    a, before, after = sa.fit(lm.net.g_s, y_hat, x, (src.height, src.width), 30, 100.0, crop=128)
    assert a is not None and after < before  # at a huge lambda any gain pays for the bytes
    assert [p.requires_grad for p in lm.net.g_s.parameters()] == flags  # the model is left as it was
    assert sa.unpack(sa.pack(a), sa.layer_widths(lm.net.g_s)).bias_exps == a.bias_exps


@pytest.fixture
def quick_effort3(monkeypatch):
    """Effort 3 with few steps, and a section kept whatever it costs (rd_cost has its own test)."""
    monkeypatch.setitem(image_codec.REFINE_STEPS, 3, 5)
    monkeypatch.setitem(image_codec.ADAPT_STEPS, 3, 20)
    monkeypatch.setattr(sa, "rd_cost", lambda mse, nbytes, lmbda, pixels: mse - (nbytes > 0))


def test_effort3_file_decodes_adapted_and_without_the_section(photo, quick_effort3, monkeypatch):
    img = photo.crop((150, 60, 278, 156))
    ref = np.asarray(img, dtype=np.float64)
    data = codec.encode(img, quality=60, effort=3)
    c = container.unpack(data)
    assert Section.SYNTHESIS_ADAPT in c.sections and codec.read_info(data)["synthesis_adapted"]
    # an older decoder skips the ancillary section: the same latent, the unadapted picture
    del c.sections[Section.SYNTHESIS_ADAPT]
    plain = container.pack(c)

    def mse(d):
        return np.mean((np.asarray(codec.decode(d), dtype=np.float64) - ref) ** 2)

    assert mse(data) < mse(plain)
    assert codec.encode(img, quality=60, effort=3) == data  # seeded
    # the rest of the file is effort 2's (same refinement steps here): only the section is added
    monkeypatch.setitem(image_codec.REFINE_STEPS, 2, image_codec.REFINE_STEPS[3])
    assert codec.encode(img, quality=60, effort=2) == plain


def test_effort3_corrupt_section_is_a_format_error(photo, quick_effort3):
    data = codec.encode(photo.crop((150, 60, 278, 156)), quality=60, effort=3)
    c = container.unpack(data)
    c.sections[Section.SYNTHESIS_ADAPT] = bytes([200]) + c.sections[Section.SYNTHESIS_ADAPT][1:]
    with pytest.raises(codec.FormatError):
        codec.decode(container.pack(c))


def test_effort3_target_size_is_kept(photo, quick_effort3):
    img = photo.crop((150, 60, 278, 156))
    target = len(codec.encode(img, quality=40))
    assert len(codec.encode(img, target_size=target, effort=3)) <= target


def test_rd_cost_and_the_choice_to_send_nothing(photo):
    # 100 bytes over 1000 pixels cost 0.8 bpp; 0.001 of MSE at lambda 0.01 is worth 0.65 bpp
    assert sa.rd_cost(0.001, 100, 0.01, 1000) > sa.rd_cost(0.002, 0, 0.01, 1000)
    assert sa.rd_cost(0.001, 100, 0.01, 2000) < sa.rd_cost(0.002, 0, 0.01, 2000)
    # a tiny image at a tiny lambda: no gain pays for a few hundred bytes
    src = image_io.load(photo.crop((150, 60, 214, 124)), None)
    lm = codec.load_model()
    x = image_codec._padded(src.rgb)
    y_hat = torch.round(lm.net.g_a(x).detach())
    a, before, after = sa.fit(lm.net.g_s, y_hat, x, (64, 64), 5, 1e-4)
    assert a is None and after == before
