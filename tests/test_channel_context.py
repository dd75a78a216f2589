"""codec.models.channel_context: the channel-conditional context and its bit-exact coding."""

import numpy as np
import pytest
import torch

from codec.models.channel_context import GainChannelContext
from codec.models.gain_hyperprior import GainHyperprior, LatentCoder, anchor_mask, exact_gain
from codec.models.latent_refine import refine_latent
from codec.zoo import build_network

ARCH = {"N": 16, "M": 20, "levels": 4, "lmbda_min": 0.001, "lmbda_max": 0.1}


def _nets(spatial=0):
    torch.manual_seed(0)
    plain = GainHyperprior(**ARCH).eval()
    with torch.no_grad():
        plain.y_gain.add_(torch.randn_like(plain.y_gain) * 0.3)
    ctx = GainChannelContext(**ARCH, slices=5, hidden=(8, 8), spatial_groups=spatial, spatial_hidden=6).eval()
    ctx.load_state_dict(plain.state_dict(), strict=False)
    return plain, ctx


def _wake(ctx, nets=("context", "spatial")):
    """Give the zero-initialised context networks something to say."""
    torch.manual_seed(1)
    with torch.no_grad():
        for name in nets:
            for p in getattr(ctx, name).parameters():
                p.normal_(0, 0.1)


@pytest.mark.parametrize("spatial", [0, 2])
def test_a_fresh_context_computes_what_the_hyperprior_did(spatial):
    plain, ctx = _nets(spatial)
    x, t = torch.rand(1, 3, 64, 64), torch.tensor([0.4])
    torch.manual_seed(2)
    a = plain(x, t)
    torch.manual_seed(2)
    b = ctx(x, t)
    assert torch.equal(a["x_hat"], b["x_hat"])
    assert torch.allclose(a["likelihoods"]["y"], b["likelihoods"]["y"])


def test_the_context_sees_earlier_slices_and_not_later_ones():
    _, ctx = _nets()
    _wake(ctx)
    hs = (torch.rand(1, 20, 4, 4) + 0.5, torch.randn(1, 20, 4, 4))
    prev = [torch.randn(1, 4, 4, 4) for _ in range(2)]
    s, m = ctx.slice_params(hs, 2, prev)
    assert s.shape == m.shape == (1, 4, 4, 4)
    prev2 = [prev[0] + 1.0, prev[1]]
    assert not torch.equal(ctx.slice_params(hs, 2, prev2)[1], m)
    # Slice 2 reads h_s's channels 8..11 only.
    hs2 = (hs[0].clone(), hs[1].clone())
    hs2[1][:, 12:] += 5.0
    assert torch.equal(ctx.slice_params(hs2, 2, prev)[1], m)


def test_the_checkerboard_corrects_only_the_other_positions_from_the_anchors():
    _, ctx = _nets(spatial=2)
    _wake(ctx)
    hs = (torch.rand(1, 4, 6, 6) + 0.5, torch.randn(1, 4, 6, 6))
    y_hat = torch.randn(1, 4, 6, 6)
    s, m = ctx.checkerboard_params(1, *hs, y_hat)
    anchor = anchor_mask(6, 6).bool().expand(1, 4, 6, 6)
    assert torch.equal(s[anchor], hs[0][anchor]) and torch.equal(m[anchor], hs[1][anchor])
    assert not torch.equal(m[~anchor], hs[1][~anchor])
    other = y_hat.clone()
    other[~anchor] += 3.0  # what is not decoded yet cannot matter
    assert torch.equal(ctx.checkerboard_params(1, *hs, other)[1], m)
    other = y_hat.clone()
    other[0, :, 2, 2] += 3.0  # an anchor: its neighbour (2, 3) hears it
    assert not torch.equal(ctx.checkerboard_params(1, *hs, other)[1][0, :, 2, 3], m[0, :, 2, 3])


@pytest.mark.parametrize("roi,spatial", [(False, 0), (True, 0), (False, 2), (True, 2)])
def test_coding_round_trips_and_matches_the_encoders_own_values(roi, spatial):
    _, ctx = _nets(spatial)
    _wake(ctx)
    ctx.update(force=True)
    coder = LatentCoder(ctx)
    x, t = torch.rand(1, 3, 128, 64), 0.5
    y = ctx.g_a(x)
    qmap = None
    if roi:
        levels = np.zeros(y.shape[-2:], dtype=np.int64)
        levels[:4, :3] = 1
        qmap = coder.quant_map(levels, t, offsets=(-500, 2500))
    z_str, y_str = coder.compress(y, t, qmap)
    y_hat = coder.decompress(z_str, y_str, (y.shape[2] // 4, y.shape[3] // 4), t, qmap)
    # Rounding the latent (finer where the map says) is all that changed it.
    g = exact_gain(ctx.y_gain, t)
    step = torch.ones_like(g) if qmap is None else qmap.step
    err = (y_hat / (exact_gain(ctx.y_gain_inv, t) if qmap is None else qmap.out_gain) - y * g * step).abs()
    assert err.max() <= 0.5 + 1e-4
    # A second decoder (a fresh fixed-point twin) reads the same values.
    assert torch.equal(LatentCoder(ctx).decompress(z_str, y_str, (y.shape[2] // 4, y.shape[3] // 4), t, qmap), y_hat)


@pytest.mark.parametrize("spatial", [0, 2])
def test_a_waking_context_changes_the_bitstream(spatial):
    plain, ctx = _nets(spatial)
    plain.update(force=True)
    ctx.update(force=True)
    x = torch.rand(1, 3, 64, 64)
    y = plain.g_a(x)
    same = LatentCoder(ctx).compress(y, 0.5)
    if spatial:  # zero context: the hyperprior's values, in the checkerboard's order
        shape = (y.shape[2] // 4, y.shape[3] // 4)
        assert torch.equal(LatentCoder(ctx).decompress(*same, shape, 0.5),
                           LatentCoder(plain).decompress(*LatentCoder(plain).compress(y, 0.5), shape, 0.5))
    else:  # zero context: the hyperprior's bytes
        assert same == LatentCoder(plain).compress(y, 0.5)
    _wake(ctx, ("spatial",) if spatial else ("context",))
    assert LatentCoder(ctx).compress(y, 0.5)[1] != same[1]


def test_build_network_reads_the_slices_from_the_architecture():
    assert type(build_network(ARCH)) is GainHyperprior
    net = build_network({**ARCH, "slices": 4})
    assert isinstance(net, GainChannelContext) and net.n_slices == 4
    with pytest.raises(ValueError):
        GainChannelContext(**ARCH, slices=3)
    net = build_network({**ARCH, "slices": 4, "spatial_groups": 2, "spatial_hidden": 6})
    assert net.spatial_groups == 2 and len(net.spatial) == 2 and net.spatial[0][0].out_channels == 6
    with pytest.raises(ValueError):
        GainChannelContext(**ARCH, slices=4, spatial_groups=5)


@pytest.mark.parametrize("spatial", [0, 2])
def test_refinement_runs_through_the_context(spatial):
    _, ctx = _nets(spatial)
    _wake(ctx)
    ctx.requires_grad_(False)
    x = torch.rand(1, 3, 64, 64)
    y = ctx.g_a(x)
    y2, _ = refine_latent(ctx, x, y, 0.5, (64, 64), steps=5, lr=0.01)
    assert y2.shape == y.shape and torch.isfinite(y2).all() and not torch.equal(y2, y)
