"""The least-squares checkerboard context: the fit finds a planted predictor, and the spatial
network built from it computes that predictor, in float and in the coder's fixed point."""

import torch

from codec.models.channel_context import GainChannelContext
from codec.models.fixed_point import FixedPointSequential
from codec.models.gain_hyperprior import anchor_mask
from scripts.fit_spatial_context import fit, neighbour_features, predict, spatial_weights

C = 4  # channels per group in these tiny models


def _planted(coef: torch.Tensor, n: int = 6, size: int = 24, noise: float = 0.1):
    """Residual sets whose non-anchor residuals are coef . (their anchors' rounded residuals) + noise
    (coef [C, 4]: each channel's own anchors; [C, C, 4]: every channel's)."""
    gen = torch.Generator().manual_seed(0)
    sets = []
    for _ in range(n):
        k = torch.round(3 * torch.randn(C, size, size, generator=gen, dtype=torch.float64))
        k = k * anchor_mask(size, size)[0].double()  # only the anchors are known when predicting
        pred = predict(coef, neighbour_features(k).flatten(1, 2)).view(C, size, size)
        r = pred + noise * torch.randn(C, size, size, generator=gen, dtype=torch.float64)
        r = torch.where(anchor_mask(size, size)[0].bool(), k, r)
        sets.append([(r, torch.round(r), torch.full_like(r, 0.5))])
    return sets


def test_fit_recovers_a_planted_predictor_and_saves_bits():
    coef = torch.tensor([[0.5, 0.0, 0.25, 0.0], [0.0, 0.3, 0.0, 0.3],
                         [0.2, 0.2, 0.2, 0.2], [0.0, 0.0, 0.0, 0.0]], dtype=torch.float64)
    got, mult, before, after, at_one = fit(_planted(coef), groups=1, channels=C)
    assert torch.allclose(got[0], coef, atol=0.02)
    assert at_one < 0.7 * before and after <= at_one
    assert mult.shape == (1, C) and bool(((mult >= 0.7) & (mult <= 1.0)).all())


def test_cross_channel_fit_recovers_a_planted_predictor():
    gen = torch.Generator().manual_seed(2)
    coef = torch.randn(C, C, 4, generator=gen, dtype=torch.float64) * 0.15
    sets = _planted(coef)
    got, _, before, _, at_one = fit(sets, groups=1, channels=C, cross=True)
    assert got.shape == (1, C, C, 4)
    assert torch.allclose(got[0], coef, atol=0.02)
    assert at_one < fit(sets, groups=1, channels=C)[4] < before  # each channel alone explains less


def _net(hidden: int) -> GainChannelContext:
    return GainChannelContext(N=16, M=2 * C, slices=2, spatial_groups=1, spatial_hidden=hidden).eval()


def test_spatial_network_computes_the_predictor_in_float_and_fixed_point():
    gen = torch.Generator().manual_seed(1)
    coef = torch.randn(C, 4, generator=gen, dtype=torch.float64) * 0.3
    mult = torch.tensor([0.8, 0.9, 1.0, 0.74], dtype=torch.float64)
    h, w = 6, 7
    y_hat = torch.round(4 * torch.randn(1, C, h, w, generator=gen))
    means = torch.randn(1, C, h, w, generator=gen)
    scales = torch.rand(1, C, h, w, generator=gen) * 3 + 0.1
    a = anchor_mask(h, w).bool()
    residual = ((y_hat - means) * a)[0].double()  # what the predictor reads: the anchors' residuals
    cross = torch.randn(C, C, 4, generator=gen, dtype=torch.float64) * 0.2
    for coef, m, hidden in ((coef, None, C), (coef, mult, 2 * C), (cross, None, C)):
        d_means = predict(coef, neighbour_features(residual).flatten(1, 2)).view(C, h, w)
        net = _net(hidden)
        with torch.no_grad():
            for p, v in zip(net.spatial[0].parameters(), spatial_weights(coef, m, C)):
                p.copy_(v)
        fixed = [FixedPointSequential(net.spatial[0])]
        want_scales = scales if m is None else scales * torch.where(a, 1.0, m.float()[:, None, None])
        for spatial, tol in ((None, 1e-4), (fixed, 2e-3)):
            s, mu = net.checkerboard_params(0, scales, means, y_hat, spatial=spatial)
            assert torch.equal(mu[a.expand_as(mu)], means[a.expand_as(mu)])  # anchors keep theirs
            assert torch.allclose(mu - means, torch.where(a, 0.0, d_means.float()[None]), atol=tol)
            assert torch.allclose(s, want_scales, atol=tol)
