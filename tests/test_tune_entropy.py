"""Entropy-model tuning on frozen latents: it lowers the rounded rate of latents like those it
trained on and leaves every weight outside the parts it was given alone."""

import random

import torch

from codec.models.channel_context import GainChannelContext
from scripts.tune_entropy import EntropyTuner, sample_batch, val_bpp


def test_tuner_lowers_the_rate_and_keeps_the_transforms():
    torch.manual_seed(0)
    net = GainChannelContext(N=16, M=8, slices=2, levels=3, spatial_groups=1, spatial_hidden=8)
    # Latents with structure to learn: channel 0 carries the signal, the others echo it.
    base = 4 * torch.randn(6, 1, 16, 16)
    ys = [torch.cat([b, 0.8 * b.expand(7, -1, -1) + 0.3 * torch.randn(7, 16, 16)]) for b in base]
    frozen = {n: p.detach().clone() for n, p in net.named_parameters()
              if n.startswith(("g_a.", "g_s.", "y_gain", "h_a."))}
    before = val_bpp(net, ys[:2])
    tuner = EntropyTuner(net, ("h_s.", "context.", "spatial."), lr=3e-3, aux_lr=1e-3)
    rng = random.Random(0)
    net.train()
    for _ in range(60):
        tuner.step(sample_batch(ys, 4, 8, rng), torch.rand(4))
    after = val_bpp(net, ys[:2])
    assert sum(after.values()) < 0.9 * sum(before.values())
    for n, p in net.named_parameters():
        if n in frozen:
            assert torch.equal(p, frozen[n]), n
