"""The training script's helpers: gain remapping, widening, ROI-like quality maps, detail-seeking crops."""

import math
import random

import numpy as np
import pytest
import torch

from codec.models.gain_hyperprior import GainHyperprior
from scripts.train import CropSampler, random_quality_maps, remap_gains, widen_latent


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


def test_detail_sampling_prefers_detailed_crops():
    random.seed(0)
    img = torch.zeros(3, 64, 256, dtype=torch.uint8)
    img[:, :, 128:] = (torch.rand(3, 64, 128) * 255).to(torch.uint8)  # right half: noise
    plain = CropSampler([img], 32, detail=0.0, device="cpu")
    picky = CropSampler([img], 32, detail=1.0, device="cpu")
    right = [sum(s.position()[2] >= 128 for _ in range(400)) for s in (plain, picky)]
    assert right[1] > right[0] + 100


def test_area_power_gives_small_photos_a_larger_share():
    big = torch.zeros(3, 400, 400, dtype=torch.uint8)
    small = torch.zeros(3, 100, 100, dtype=torch.uint8)
    by_area = CropSampler([big, small], 32, 0.0, "cpu").weights
    by_photo = CropSampler([big, small], 32, 0.0, "cpu", area_power=0.0).weights
    halfway = CropSampler([big, small], 32, 0.0, "cpu", area_power=0.5).weights
    assert by_area[1] == pytest.approx(1 / 17)
    assert by_photo == pytest.approx([0.5, 0.5])
    assert halfway[1] == pytest.approx(1 / 5)


def test_batches_are_8_bit_and_augmented():
    random.seed(0)
    img = (torch.rand(3, 64, 64) * 200 + 20).to(torch.uint8)
    x = CropSampler([img], 32, 0.0, "cpu", gray=1.0).batch(4)
    assert x.shape == (4, 3, 32, 32)
    assert torch.allclose(x[:, 0], x[:, 1]) and torch.allclose(x[:, 1], x[:, 2])
    assert torch.equal(x * 255, (x * 255).round())
    y = CropSampler([img], 32, 0.0, "cpu", stretch=1.0).batch(8)
    assert ((y == 0) | (y == 1)).any()


def test_widening_the_latent_keeps_the_reconstruction():
    torch.manual_seed(0)
    old = GainHyperprior(N=16, M=16, levels=4).eval()
    with torch.no_grad():  # trained-looking gains, different per channel
        old.y_gain.add_(torch.randn_like(old.y_gain) * 0.3)
    wide = GainHyperprior(N=16, M=24, levels=4).eval()
    wide.load_state_dict(widen_latent({k: v.clone() for k, v in old.state_dict().items()}, wide))
    x, t = torch.rand(1, 3, 64, 64), torch.tensor([0.4])
    a, b = old(x, t), wide(x, t)
    assert torch.allclose(a["x_hat"], b["x_hat"], atol=1e-6)
    # The old channels keep their entropy parameters; the new ones cost some bits of their own.
    assert torch.allclose(a["likelihoods"]["y"], b["likelihoods"]["y"][:, :16], atol=1e-6)
    assert torch.equal(a["likelihoods"]["z"], b["likelihoods"]["z"])


def test_quality_maps_stay_in_range_and_match_the_coder():
    random.seed(0)
    t = torch.rand(32)
    maps = random_quality_maps(t, (8, 8), prob=0.5)
    assert maps.shape == (32, 1, 8, 8) and maps.min() >= 0 and maps.max() <= 1
    untouched = (maps == t[:, None, None, None]).flatten(1).all(1)
    assert 6 < untouched.sum() < 26  # about half
    assert random_quality_maps(t, (8, 8), prob=0.0) is None
    # A uniform map at t is the plain forward pass.
    torch.manual_seed(0)
    m = GainHyperprior(N=16, M=16, levels=4).eval()
    with torch.no_grad():
        m.y_gain.add_(torch.randn_like(m.y_gain) * 0.3)
    x, t1 = torch.rand(1, 3, 64, 64), torch.tensor([0.3])
    plain, mapped = m(x, t1), m(x, t1, t_map=torch.full((1, 1, 4, 4), 0.3))
    assert torch.allclose(plain["x_hat"], mapped["x_hat"], atol=1e-5)
    assert torch.allclose(plain["likelihoods"]["y"], mapped["likelihoods"]["y"], atol=1e-5)


def test_training_adds_a_channel_context_to_a_hyperprior_and_resumes(tmp_path):
    from PIL import Image

    from scripts.train import main

    rng = np.random.default_rng(0)
    data = tmp_path / "data" / "prepared" / "train"
    data.mkdir(parents=True)
    for i in range(2):
        Image.fromarray(rng.integers(0, 256, (96, 96, 3), dtype=np.uint8)).save(data / f"p{i}.png")
    torch.manual_seed(0)
    plain = GainHyperprior(N=16, M=16, levels=9, lmbda_min=0.0004, lmbda_max=0.36)
    init = tmp_path / "init.pt"
    torch.save({"model": plain.state_dict(), "arch": {"N": 16, "M": 16, "levels": 9, "lmbda_min": 0.0004,
                                                      "lmbda_max": 0.36}, "step": 100}, init)
    run = tmp_path / "run"
    common = ["--run", str(run), "--data", str(tmp_path / "data"), "--N", "16", "--batch", "2",
              "--crop", "64", "--device", "cpu", "--threads", "1", "--lr", "1e-4"]
    assert main(common + ["--init", str(init), "--slices", "4", "--steps", "102"]) == 0
    ck = torch.load(run / "last.pt", weights_only=False)
    assert ck["arch"]["slices"] == 4 and ck["arch"]["M"] == 16 and ck["step"] == 102
    assert any(k.startswith("context.") for k in ck["model"])
    assert main(common + ["--steps", "103"]) == 0  # resumes the checkpoint, context and all
    assert torch.load(run / "last.pt", weights_only=False)["step"] == 103


def _trained_looking(net: GainHyperprior) -> GainHyperprior:
    """GDN cross terms between channels, as training leaves them."""
    with torch.no_grad():
        for gdn in [m for m in net.modules() if m.__class__.__name__ == "GDN"]:
            gdn.gamma.add_(torch.rand_like(gdn.gamma) * 0.05)
    return net


def test_widening_the_analysis_keeps_the_latent_and_lets_new_channels_learn():
    from scripts.train import widen_hidden

    torch.manual_seed(0)
    old = _trained_looking(GainHyperprior(N=16, M=16, levels=4)).eval()
    wide = GainHyperprior(N=16, M=16, levels=4, Na=24)
    assert wide.g_a[0].weight.shape[0] == 24 and wide.g_s[0].weight.shape[1] == 16
    wide.load_state_dict(widen_hidden({k: v.clone() for k, v in old.state_dict().items()}, wide, "g_a"))
    x = torch.rand(2, 3, 64, 64)
    assert torch.allclose(old.g_a(x), wide.g_a(x), atol=1e-5)
    # The new channels carry signal, and the zero weights out of them get a gradient.
    assert wide.g_a[:2](x)[:, 16:].abs().sum() > 0
    wide.g_a(x).square().sum().backward()
    assert wide.g_a[2].weight.grad[:, 16:].abs().sum() > 0


def test_widening_the_synthesis_keeps_its_output_and_lets_new_channels_learn():
    from scripts.train import widen_hidden

    torch.manual_seed(0)
    old = _trained_looking(GainHyperprior(N=16, M=16, levels=4)).eval()
    wide = GainHyperprior(N=16, M=16, levels=4, Ns=24)
    # Only the last hidden stage grows (transposed convolutions are [in, out, k, k]).
    assert wide.g_s[2].weight.shape[:2] == (16, 16) and wide.g_s[4].weight.shape[:2] == (16, 24)
    assert wide.g_s[6].weight.shape[:2] == (24, 3) and wide.g_a[0].weight.shape[0] == 16
    wide.load_state_dict(widen_hidden({k: v.clone() for k, v in old.state_dict().items()}, wide, "g_s"))
    y = torch.randn(2, 16, 4, 4)
    assert torch.allclose(old.g_s(y), wide.g_s(y), atol=1e-5)
    assert wide.g_s[:6](y)[:, 16:].abs().sum() > 0
    (wide.g_s(y) - 0.5).square().sum().backward()
    assert wide.g_s[6].weight.grad[16:].abs().sum() > 0


def _train_from_tiny_init(tmp_path, *flags, steps=1):
    """scripts.train.main on one random 96 px photo, from an N = M = 16 init at step 100.
    -> (the init's state, the checkpoint written)."""
    from PIL import Image

    from scripts.train import main

    rng = np.random.default_rng(0)
    data = tmp_path / "data" / "prepared" / "train"
    data.mkdir(parents=True)
    Image.fromarray(rng.integers(0, 256, (96, 96, 3), dtype=np.uint8)).save(data / "p.png")
    arch = {"N": 16, "M": 16, "levels": 9, "lmbda_min": 0.0004, "lmbda_max": 0.36}
    init = tmp_path / "init.pt"
    before = GainHyperprior(**arch).state_dict()
    torch.save({"model": before, "arch": arch, "step": 100}, init)
    run = tmp_path / "run"
    assert main(["--run", str(run), "--data", str(tmp_path / "data"), "--N", "16", *flags,
                 "--batch", "2", "--crop", "64", "--device", "cpu", "--threads", "1",
                 "--init", str(init), "--steps", str(100 + steps)]) == 0
    return before, torch.load(run / "last.pt", weights_only=False)


def test_training_widens_the_analysis_from_an_init_and_the_zoo_rebuilds_it(tmp_path):
    from codec.zoo import build_network

    _, ck = _train_from_tiny_init(tmp_path, "--Na", "24")
    assert ck["arch"]["Na"] == 24 and ck["step"] == 101
    net = build_network(ck["arch"])
    net.load_state_dict(ck["model"])
    assert net.g_a[2].weight.shape[:2] == (24, 24) and net.h_a[0].weight.shape[0] == 16


def test_training_widens_the_synthesis_from_an_init_and_the_zoo_rebuilds_it(tmp_path):
    from codec.zoo import architecture, build_network

    _, ck = _train_from_tiny_init(tmp_path, "--Ns", "24", "--only", "g_s.,y_gain_inv")
    assert ck["arch"]["Ns"] == 24 and "Na" not in ck["arch"]
    net = build_network(ck["arch"])
    net.load_state_dict(ck["model"])
    assert net.g_s[6].weight.shape[0] == 24 and net.g_s[2].weight.shape[1] == 16
    assert architecture(net)["Ns"] == 24


def test_encoder_only_training_leaves_every_decoder_weight_as_it_was(tmp_path):
    from codec.zoo import encoder_side

    before, ck = _train_from_tiny_init(tmp_path, "--encoder-only", steps=3)
    moved = {k for k in before if not torch.equal(before[k], ck["model"][k])}
    assert moved and all(encoder_side(k) for k in moved)
    assert any(k.startswith("g_a.") for k in moved) and any(k.startswith("h_a.") for k in moved)
    assert not encoder_side("z_gain_inv") and not encoder_side("y_gain") and encoder_side("z_gain")


def test_only_trains_the_named_parameters_and_the_zoo_rebuilds_a_checkerboard(tmp_path):
    from codec.zoo import build_network

    before, ck = _train_from_tiny_init(tmp_path, "--slices", "4", "--spatial-groups", "2",
                                       "--only", "spatial.", steps=3)
    assert ck["arch"]["spatial_groups"] == 2
    assert all(torch.equal(before[k], ck["model"][k]) for k in before)  # the init's weights stay
    assert all(not ck["model"][k].any() for k in ck["model"] if k.startswith("context.") and ".4." in k)
    assert ck["model"]["spatial.1.2.weight"].any()  # started at zero, and learned
    net = build_network(ck["arch"])
    net.load_state_dict(ck["model"])
    assert net.spatial_groups == 2


def test_resuming_with_another_parameter_set_is_a_clear_error(tmp_path):
    from scripts.train import main

    _train_from_tiny_init(tmp_path, "--encoder-only")
    with pytest.raises(SystemExit, match="another set of parameters"):
        main(["--run", str(tmp_path / "run"), "--data", str(tmp_path / "data"), "--batch", "2",
              "--crop", "64", "--device", "cpu", "--threads", "1", "--steps", "103"])


def test_a_checkerboard_needs_a_channel_context(tmp_path):
    with pytest.raises(SystemExit, match="channel context"):
        _train_from_tiny_init(tmp_path, "--spatial-groups", "2")


def test_grey_images_are_scored_on_the_planes_mean_as_the_decoder_outputs_it():
    from scripts.train import rd_terms

    def model(x, t, autocast=False, t_map=None):  # colour errors that cancel in the mean
        d = torch.tensor([0.1, -0.1, 0.0])[None, :, None, None]
        return {"x_hat": x + d, "likelihoods": {"y": torch.full((x.shape[0], 4), 0.5)}}

    grey = torch.rand(1, 1, 8, 8).expand(1, 3, 8, 8)
    colour = grey.clone()
    colour[0, 2, 0, 0] += 0.01
    bpp, mse = rd_terms(model, torch.cat([grey, colour]), torch.zeros(2), autocast=False)
    assert torch.allclose(bpp, torch.full((2,), 4 / 64))
    assert mse[0] < 1e-12 and torch.isclose(mse[1], torch.tensor(0.02 / 3))


def test_an_init_with_a_checkerboard_keeps_its_width(tmp_path):
    """A model whose spatial networks are not the default width (a least-squares context,
    scripts.fit_spatial_context) trains on from its own weights."""
    from PIL import Image

    from codec.models.channel_context import GainChannelContext
    from scripts.train import main

    data = tmp_path / "data" / "prepared" / "train"
    data.mkdir(parents=True)
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (96, 96, 3), dtype=np.uint8)).save(data / "p.png")
    arch = {"N": 16, "M": 16, "levels": 9, "lmbda_min": 0.0004, "lmbda_max": 0.36, "slices": 4,
            "context_hidden": [8, 8], "spatial_groups": 2, "spatial_hidden": 5}
    net = GainChannelContext(16, 16, 9, 0.0004, 0.36, slices=4, hidden=(8, 8), spatial_groups=2, spatial_hidden=5)
    torch.save({"model": net.state_dict(), "arch": arch, "step": 100}, tmp_path / "init.pt")
    assert main(["--run", str(tmp_path / "run"), "--data", str(tmp_path / "data"), "--N", "16",
                 "--batch", "2", "--crop", "64", "--device", "cpu", "--threads", "1",
                 "--init", str(tmp_path / "init.pt"), "--steps", "101"]) == 0
    ck = torch.load(tmp_path / "run" / "last.pt", weights_only=False)
    assert ck["arch"]["spatial_groups"] == 2 and ck["arch"]["spatial_hidden"] == 5
    assert ck["model"]["spatial.0.0.weight"].shape[0] == 5
