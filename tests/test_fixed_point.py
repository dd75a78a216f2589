import torch
import torch.nn as nn

from codec.models.fixed_point import ACT_BITS, FixedPointSequential


def _net():
    torch.manual_seed(0)
    return nn.Sequential(
        nn.ConvTranspose2d(16, 24, 5, 2, 2, 1), nn.ReLU(),
        nn.ConvTranspose2d(24, 24, 3, 2, 1, 1), nn.ReLU(),
        nn.Conv2d(24, 32, 1))


def test_matches_float_network_closely():
    net = _net()
    fx = FixedPointSequential(net)
    x = torch.randn(1, 16, 5, 7).round()
    ref = net(x)
    out = fx(x)
    assert out.shape == ref.shape
    assert (out - ref.double()).abs().max() < 0.02


def test_outputs_are_on_the_fixed_point_grid():
    out = FixedPointSequential(_net())(torch.randn(1, 16, 4, 4) * 3)
    scaled = out * 2 ** ACT_BITS
    assert torch.equal(scaled, scaled.round())


def test_independent_of_thread_count_and_batch_split():
    fx = FixedPointSequential(_net())
    x = torch.randn(2, 16, 9, 11).round() * 2
    old = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        a = fx(x)
        torch.set_num_threads(2)
        b = fx(x)
    finally:
        torch.set_num_threads(old)
    assert torch.equal(a, b)
    assert torch.equal(fx(x[1:]), a[1:])  # a different batch shape takes other kernels


def test_rejects_unknown_layers():
    import pytest

    with pytest.raises(TypeError):
        FixedPointSequential(nn.Sequential(nn.Conv2d(1, 1, 1), nn.Sigmoid()))
