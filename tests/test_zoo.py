"""codec.zoo: building networks from cards, bf16 storage of the transforms, old weight hashes."""

import json

import numpy as np
import pytest
import torch

import codec
from codec import zoo
from codec.errors import ModelNotAvailableError
from codec.models.channel_context import GainChannelContext


def test_a_context_model_round_trips_through_the_api_and_survives_bf16_storage(tmp_path, monkeypatch, small):
    monkeypatch.setenv("CODEC_MODELS", str(tmp_path))
    torch.manual_seed(0)
    net = GainChannelContext(N=16, M=16, levels=4, lmbda_min=0.001, lmbda_max=0.1, slices=4, hidden=(8, 8))
    with torch.no_grad():
        for p in net.context.parameters():
            p.normal_(0, 0.05)
    arch = {"N": 16, "M": 16, "levels": 4, "lmbda_min": 0.001, "lmbda_max": 0.1, "slices": 4,
            "context_hidden": [8, 8]}
    zoo.export(net, "tiny-ctx", {"architecture": arch, "training": {"steps": 0}}, tmp_path,
               bf16_transforms=False)
    data = codec.encode(small, quality=60, model="tiny-ctx")
    before = np.asarray(codec.decode(data))
    assert before.shape == (45, 67, 3)
    old_sha = json.loads((tmp_path / "tiny-ctx.json").read_text())["sha256"]

    zoo.restore_bf16("tiny-ctx", tmp_path)
    card = json.loads((tmp_path / "tiny-ctx.json").read_text())
    assert card["previous_sha256"] == [old_sha] and card["sha256"] != old_sha
    # The file names the old weights; they decode to the same pixels with the bf16-stored ones.
    assert np.array_equal(np.asarray(codec.decode(data)), before)
    assert zoo.load_model("tiny-ctx").net.g_s[0].weight.dtype == torch.float32

    card["previous_sha256"] = []
    (tmp_path / "tiny-ctx.json").write_text(json.dumps(card))
    zoo._CACHE.pop("tiny-ctx", None)
    with pytest.raises(ModelNotAvailableError):
        codec.decode(data)
    zoo._CACHE.pop("tiny-ctx", None)


def test_bf16_storage_leaves_the_entropy_path_alone():
    net = GainChannelContext(N=16, M=16, levels=4, slices=4, hidden=(8, 8))
    names = zoo.bf16_names(net)
    assert "g_s.0.weight" in names and "g_a.6.bias" in names and "h_a.0.weight" in names
    assert not any(n.startswith(("h_s.", "context.", "entropy_bottleneck.", "gaussian_conditional."))
                   or "gain" in n or n.endswith(("beta", "gamma")) for n in names)
