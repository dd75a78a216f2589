import torch

from codec.models.gain_hyperprior import GainHyperprior, exact_gain


def test_forward_shapes_and_likelihoods():
    torch.manual_seed(0)
    m = GainHyperprior(N=32, M=48)
    x = torch.rand(2, 3, 64, 64)
    out = m(x, torch.tensor([0.0, 1.0]))
    assert out["x_hat"].shape == x.shape
    assert out["likelihoods"]["y"].shape == (2, 48, 4, 4)
    assert out["likelihoods"]["z"].shape == (2, 32, 1, 1)
    for lk in out["likelihoods"].values():
        assert (lk > 0).all() and (lk <= 1).all()


def test_lambda_and_gain_interpolation():
    m = GainHyperprior(N=8, M=8, levels=4)
    lam = m.lmbda(torch.tensor([0.0, 0.5, 1.0]))
    assert torch.allclose(lam[0], torch.tensor(m.lmbda_min))
    assert torch.allclose(lam[2], torch.tensor(m.lmbda_max))
    g = m.interpolate(m.y_gain, torch.tensor([0.0, 0.5, 1.0]))[:, :, 0, 0]
    assert (g[0] < g[1]).all() and (g[1] < g[2]).all()  # finer steps at higher rate
    # The levels themselves are hit exactly at t = i / (levels - 1).
    assert torch.allclose(g[2], m.y_gain[-1].exp())


def test_exact_gain_matches_training_interpolation():
    m = GainHyperprior(N=8, M=8)
    for t in (0.0, 0.13, 0.5, 0.99, 1.0):
        a = exact_gain(m.y_gain, t)
        b = m.interpolate(m.y_gain, torch.tensor([t]))
        assert torch.allclose(a, b, rtol=1e-4)
        assert torch.equal(a * 2 ** 16, (a * 2 ** 16).round())


def test_unit_step_map_changes_nothing_and_finer_steps_cost_bits():
    torch.manual_seed(0)
    m = GainHyperprior(N=32, M=48).eval()  # eval: rounding, no noise, so the runs compare exactly
    x = torch.rand(1, 3, 64, 64)
    t = torch.tensor([0.5])
    plain = m(x, t)
    ones = m(x, t, step=torch.ones(1, 1, 4, 4))
    assert torch.equal(plain["x_hat"], ones["x_hat"])
    assert torch.equal(plain["likelihoods"]["y"], ones["likelihoods"]["y"])

    def bits(out):
        return -torch.log2(out["likelihoods"]["y"]).sum()

    finer = m(x, t, step=torch.full((1, 1, 4, 4), 4.0))
    assert bits(finer) > bits(plain)


def test_synthesis_only_autocast_leaves_the_entropy_path_in_float32():
    torch.manual_seed(0)
    m = GainHyperprior(N=16, M=16, levels=3)
    x, t = torch.rand(1, 3, 64, 64), torch.tensor([0.7])

    def forward(autocast):  # training mode: the same uniform noise on the latent each time
        torch.manual_seed(1)
        with torch.no_grad():
            return m(x, t, autocast=autocast)

    full, synth, off = forward(True), forward("synthesis"), forward(False)
    # g_a and h_a in float32: the same latent, so the same likelihoods as without autocast.
    assert torch.equal(synth["likelihoods"]["y"], off["likelihoods"]["y"])
    assert torch.equal(synth["likelihoods"]["z"], off["likelihoods"]["z"])
    assert not torch.equal(full["likelihoods"]["y"], off["likelihoods"]["y"])
    # g_s under bf16 in both autocast modes: close to float32, not equal.
    assert not torch.equal(synth["x_hat"], off["x_hat"])
    assert torch.allclose(synth["x_hat"], off["x_hat"], atol=0.05)


def test_rounded_rate_is_the_coders_and_passes_gradients():
    """latent_forward(rate="round") gives the likelihoods of the values the coder writes (what
    eval mode computes), with gradients reaching h_a, h_s and the context through the rounding."""
    from codec.models.channel_context import GainChannelContext

    torch.manual_seed(0)
    m = GainChannelContext(N=16, M=8, slices=2, levels=3, spatial_groups=1, spatial_hidden=8)
    for c in [*m.context, *m.spatial]:  # zero-initialised last layers would get no gradient below
        torch.nn.init.normal_(c[-1].weight, std=0.05)
    y = 3 * torch.randn(2, 8, 8, 8)
    t = torch.tensor([0.2, 0.9])
    m.eval()
    with torch.no_grad():
        plain = m.latent_forward(y, t)[2]
    rounded = m.latent_forward(y, t, rate="round")[2]
    for k in plain:
        assert torch.allclose(plain[k], rounded[k], rtol=1e-5, atol=1e-7)
    sum(-torch.log2(v).sum() for v in rounded.values()).backward()
    for part in (m.h_a, m.h_s, m.context, m.spatial):
        assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in part.parameters())
