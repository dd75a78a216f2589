"""The training script's helpers: gain remapping, ROI-like step maps, detail-seeking crops."""

import math
import random

import torch

from codec.models.gain_hyperprior import GainHyperprior
from scripts.train import CropSampler, random_step_maps, remap_gains


def _arch(m):
    return {"levels": m.levels, "lmbda_min": m.lmbda_min, "lmbda_max": m.lmbda_max}


def test_remap_gains_keeps_shared_lambdas_and_extends_the_range():
    old = GainHyperprior(N=8, M=8, levels=4, lmbda_min=0.001, lmbda_max=0.1)
    with torch.no_grad():  # log-gains linear in log(lambda), as training tends to make them
        lam = old.level_lambdas().log()
        for name in ("y_gain", "y_gain_inv", "z_gain", "z_gain_inv"):
            getattr(old, name).copy_(lam[:, None] * torch.linspace(0.2, 0.6, 8)[None])
    # New range: same lambda_min, 100x wider at the top, levels placed 10x apart.
    new = GainHyperprior(N=8, M=8, levels=5, lmbda_min=0.001, lmbda_max=10.0)
    state = remap_gains({k: v.clone() for k, v in old.state_dict().items()}, _arch(old), new)
    assert state["y_gain"].shape == (5, 8)
    # Levels 0 and 2 of the new model sit on old levels 0 and 3: copied exactly.
    assert torch.allclose(state["y_gain"][0], old.y_gain[0])
    assert torch.allclose(state["y_gain"][2], old.y_gain[3], atol=1e-5)
    # Outside the old range, the linear trend continues.
    expect = math.log(10.0) * torch.linspace(0.2, 0.6, 8)
    assert torch.allclose(state["y_gain"][4], expect, atol=1e-4)


def test_random_step_maps_look_like_roi_maps():
    random.seed(0)
    maps = random_step_maps(64, (8, 8), prob=0.5, device="cpu")
    assert maps.shape == (64, 1, 8, 8)
    flat = maps.flatten(1)
    untouched = (flat == 1).all(1)
    assert 10 < untouched.sum() < 54  # about half
    drawn = flat[~untouched]
    assert drawn.min() >= 0.5 and drawn.max() <= 4.0
    assert random_step_maps(4, (8, 8), prob=0.0, device="cpu") is None


def test_detail_sampling_prefers_detailed_crops():
    random.seed(0)
    img = torch.zeros(3, 64, 256, dtype=torch.uint8)
    img[:, :, 128:] = (torch.rand(3, 64, 128) * 255).to(torch.uint8)  # right half: noise
    plain = CropSampler([img], 32, detail=0.0, device="cpu")
    picky = CropSampler([img], 32, detail=1.0, device="cpu")
    right = [sum(s.position()[2] >= 128 for _ in range(400)) for s in (plain, picky)]
    assert right[1] > right[0] + 100


def test_batches_are_8_bit_and_augmented():
    random.seed(0)
    img = (torch.rand(3, 64, 64) * 200 + 20).to(torch.uint8)
    x = CropSampler([img], 32, 0.0, "cpu", gray=1.0).batch(4)
    assert x.shape == (4, 3, 32, 32)
    assert torch.allclose(x[:, 0], x[:, 1]) and torch.allclose(x[:, 1], x[:, 2])
    assert torch.equal(x * 255, (x * 255).round())
    y = CropSampler([img], 32, 0.0, "cpu", stretch=1.0).batch(8)
    assert ((y == 0) | (y == 1)).any()
