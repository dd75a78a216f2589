"""codec.models.latent_refine: the stochastic rounding and the refinement loop."""

import torch

from codec.models.gain_hyperprior import GainHyperprior, exact_gain
from codec.models.latent_refine import refine_latent, soft_round


def test_soft_round_lands_between_neighbours_and_hardens_when_cold():
    gen = torch.Generator().manual_seed(0)
    r = torch.linspace(-3.9, 3.9, 1000)
    warm = soft_round(r, 0.5, gen)
    assert (warm >= torch.floor(r)).all() and (warm <= torch.ceil(r)).all()
    cold = soft_round(r, 0.01, gen)
    near = (r - torch.round(r)).abs() < 0.3  # far from the .5 ties, cold rounding is plain rounding
    assert torch.allclose(cold[near], torch.round(r[near]), atol=1e-3)


def test_refine_lowers_the_training_loss_it_optimises():
    torch.manual_seed(0)
    net = GainHyperprior(N=16, M=16, levels=4).eval()
    net.requires_grad_(False)
    x = torch.rand(1, 3, 64, 64)
    y = net.g_a(x)
    t = 0.5
    y2 = refine_latent(net, x, y, t, (64, 64), steps=30, lr=0.01)
    assert y2.shape == y.shape and torch.isfinite(y2).all()
    # The loss refine minimises, with hard rounding as the coder does: lower for the refined latent.
    g, g_inv, zg, zg_inv = (exact_gain(getattr(net, n), t) for n in ("y_gain", "y_gain_inv", "z_gain", "z_gain_inv"))
    z = net.h_a(y * g) * zg
    med = net.entropy_bottleneck._get_medians()
    scales, means = net.h_s((torch.round(z - med) + med) * zg_inv).chunk(2, 1)
    lam = net.lmbda(torch.tensor([t])).item()

    def loss(v):
        yq = torch.round(v * g - means) + means
        bits = -torch.log2(net.gaussian_conditional._likelihood(yq, scales, means=means).clamp_min(1e-9)).sum()
        return bits / 64 ** 2 + lam * 255 ** 2 * ((net.g_s(yq * g_inv) - x) ** 2).mean()

    assert loss(y2) < loss(y)
