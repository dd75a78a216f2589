"""codec.zoo: building networks from cards, bf16 and xz storage of the weights, old weight hashes."""

import json

import numpy as np
import pytest
import torch

import codec
from codec import zoo
from codec.errors import ModelNotAvailableError
from codec.models.channel_context import GainChannelContext
from conftest import psnr


def _tiny_context_model(tmp_path, model_id: str, **export_kw) -> None:
    torch.manual_seed(0)
    net = GainChannelContext(N=16, M=16, levels=4, lmbda_min=0.001, lmbda_max=0.1, slices=4, hidden=(8, 8))
    with torch.no_grad():
        for p in net.context.parameters():
            p.normal_(0, 0.05)
    arch = {"N": 16, "M": 16, "levels": 4, "lmbda_min": 0.001, "lmbda_max": 0.1, "slices": 4,
            "context_hidden": [8, 8]}
    zoo.export(net, model_id, {"architecture": arch, "training": {"steps": 0}}, tmp_path, **export_kw)


def test_a_context_model_round_trips_through_the_api_and_survives_bf16_storage(tmp_path, monkeypatch, small):
    monkeypatch.setenv("CODEC_MODELS", str(tmp_path))
    _tiny_context_model(tmp_path, "tiny-ctx", bf16_transforms=False)
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


def test_compressed_weights_keep_their_id_and_decode_the_same_pixels(tmp_path, monkeypatch, small):
    monkeypatch.setenv("CODEC_MODELS", str(tmp_path))
    _tiny_context_model(tmp_path, "tiny-xz")
    raw = (tmp_path / "tiny-xz.safetensors").read_bytes()
    data = codec.encode(small, quality=60, model="tiny-xz")
    before = np.asarray(codec.decode(data))

    out = zoo.compress("tiny-xz", tmp_path)
    zoo._CACHE.pop("tiny-xz", None)
    assert out.name == "tiny-xz.safetensors.xz" and not (tmp_path / "tiny-xz.safetensors").exists()
    assert out.stat().st_size < len(raw)
    assert zoo.read_weights(out) == raw and zoo.available_models() == ["tiny-xz"]
    assert np.array_equal(np.asarray(codec.decode(data)), before)
    assert codec.encode(small, quality=60, model="tiny-xz") == data
    zoo._CACHE.pop("tiny-xz", None)


def test_entropy_networks_stored_as_bf16_still_decode_exactly(tmp_path, monkeypatch, small):
    monkeypatch.setenv("CODEC_MODELS", str(tmp_path))
    net = GainChannelContext(N=16, M=16, levels=4, slices=4, hidden=(8, 8))
    names = zoo.bf16_names(net, entropy=True)
    assert {"h_s.4.weight", "context.1.0.weight", "g_s.0.weight"} <= names
    assert not any(n.startswith(("entropy_bottleneck.", "gaussian_conditional.")) or "gain" in n for n in names)

    _tiny_context_model(tmp_path, "tiny-bf16", bf16_entropy=True)
    state = zoo.load(zoo.read_weights(tmp_path / "tiny-bf16.safetensors"))
    assert state["h_s.4.weight"].dtype == torch.bfloat16 and state["y_gain"].dtype == torch.float32
    # Encoder and decoder widen the same stored values, so the file decodes to what the same
    # model with float32 entropy networks gives (a broken entropy decode gives noise), and a
    # second encode writes the same bytes.
    _tiny_context_model(tmp_path, "tiny-f32")
    data = codec.encode(small, quality=60, model="tiny-bf16")
    assert codec.encode(small, quality=60, model="tiny-bf16") == data
    rounded = np.asarray(codec.decode(data))
    exact = np.asarray(codec.decode(codec.encode(small, quality=60, model="tiny-f32")))
    assert psnr(rounded, exact) > 40
    for m in ("tiny-bf16", "tiny-f32"):
        zoo._CACHE.pop(m, None)


@pytest.mark.parametrize("compressed", [False, True])
def test_a_damaged_weights_file_is_a_clear_error(tmp_path, monkeypatch, compressed):
    monkeypatch.setenv("CODEC_MODELS", str(tmp_path))
    _tiny_context_model(tmp_path, "tiny-bad")
    if compressed:
        zoo.compress("tiny-bad", tmp_path)
    weights = zoo.weights_path("tiny-bad", tmp_path)
    weights.write_bytes(weights.read_bytes()[:-100])
    with pytest.raises(ModelNotAvailableError, match="damaged"):
        zoo.load_model("tiny-bad")


@pytest.mark.parametrize("kw", [{}, {"Na": 24}, {"Ns": 24}, {"slices": 4, "hidden": (8, 8), "Ns": 20},
                                {"slices": 4, "hidden": (8, 8), "spatial_groups": 2, "spatial_hidden": 12}])
def test_the_architecture_record_rebuilds_the_same_network(kw):
    from codec.models.gain_hyperprior import GainHyperprior

    cls = GainChannelContext if "slices" in kw else GainHyperprior
    net = cls(N=16, M=16, levels=4, lmbda_min=0.001, lmbda_max=0.1, **kw)
    arch = zoo.architecture(net)
    again = zoo.build_network(json.loads(json.dumps(arch)))  # as a card stores it
    assert type(again) is cls and zoo.architecture(again) == arch
    assert {k: v.shape for k, v in again.state_dict().items()} == {k: v.shape for k, v in net.state_dict().items()}


def _perturbed(model_id: str, tmp_path, prefix: str) -> dict:
    """The installed model's stored state with the weights under prefix moved."""
    state = zoo.load(zoo.read_weights(zoo.weights_path(model_id, tmp_path)))
    torch.manual_seed(1)
    for k, v in state.items():
        if k.startswith(prefix) and v.is_floating_point():
            state[k] = v + (0.05 * torch.randn(v.shape)).to(v.dtype)
    return state


def test_encoder_weights_change_the_files_not_the_decoder_they_need(tmp_path, monkeypatch, small):
    monkeypatch.setenv("CODEC_MODELS", str(tmp_path))
    _tiny_context_model(tmp_path, "tiny-enc")
    old = codec.encode(small, quality=60, model="tiny-enc")
    old_pixels = np.asarray(codec.decode(old))

    path = zoo.export_encoder(_perturbed("tiny-enc", tmp_path, "g_a."), "tiny-enc", {"steps": 1}, tmp_path)
    card = json.loads((tmp_path / "tiny-enc.json").read_text())
    assert card["encoder"]["file"] == path.name and card["encoder"]["steps"] == 1
    lm = zoo.load_model("tiny-enc")
    assert lm.encoder_hash == bytes.fromhex(card["encoder"]["sha256"])[:8]
    new = codec.encode(small, quality=60, model="tiny-enc")
    assert new != old
    assert [codec.read_info(d)[k] for d in (new, old) for k in ("model_id", "weights_hash")] == \
        ["tiny-enc", lm.weights_hash.hex()] * 2
    new_pixels = np.asarray(codec.decode(new))
    assert np.array_equal(np.asarray(codec.decode(old)), old_pixels)  # the decoder did not change

    # Without the encoder weights (an install of the model as first shipped) the new file
    # decodes to the same pixels.
    del card["encoder"]
    (tmp_path / "tiny-enc.json").write_text(json.dumps(card))
    zoo._CACHE.pop("tiny-enc", None)
    assert zoo.load_model("tiny-enc").encoder_hash is None
    assert np.array_equal(np.asarray(codec.decode(new)), new_pixels)
    assert codec.encode(small, quality=60, model="tiny-enc") == old
    zoo._CACHE.pop("tiny-enc", None)


def test_encoder_weights_that_would_change_decoding_or_are_damaged_are_refused(tmp_path, monkeypatch):
    monkeypatch.setenv("CODEC_MODELS", str(tmp_path))
    _tiny_context_model(tmp_path, "tiny-enc2")
    with pytest.raises(ValueError, match="decoder-side"):
        zoo.export_encoder(_perturbed("tiny-enc2", tmp_path, "g_s."), "tiny-enc2", {}, tmp_path)
    path = zoo.export_encoder(_perturbed("tiny-enc2", tmp_path, "h_a."), "tiny-enc2", {}, tmp_path)
    raw = path.read_bytes()
    path.write_bytes(raw[:-50])
    with pytest.raises(ModelNotAvailableError, match="damaged"):
        zoo.load_model("tiny-enc2")
    card_path = tmp_path / "tiny-enc2.json"
    card = json.loads(card_path.read_text())
    path.write_bytes(raw)
    card["encoder"]["sha256"] = "0" * 64
    card_path.write_text(json.dumps(card))
    with pytest.raises(ModelNotAvailableError, match="sha256"):
        zoo.load_model("tiny-enc2")


def test_decoding_does_not_read_the_encoder_weights(tmp_path, monkeypatch, small):
    monkeypatch.setenv("CODEC_MODELS", str(tmp_path))
    _tiny_context_model(tmp_path, "tiny-enc3")
    path = zoo.export_encoder(_perturbed("tiny-enc3", tmp_path, "g_a."), "tiny-enc3", {}, tmp_path)
    data = codec.encode(small, quality=60, model="tiny-enc3")
    pixels = np.asarray(codec.decode(data))
    path.write_bytes(path.read_bytes()[:-50])  # damaged after the file was written
    zoo._CACHE.pop("tiny-enc3", None)
    assert np.array_equal(np.asarray(codec.decode(data)), pixels)
    assert not zoo.load_model("tiny-enc3", encoder=False).encoder_loaded
    with pytest.raises(ModelNotAvailableError, match="damaged"):
        codec.encode(small, quality=60, model="tiny-enc3")
    zoo._CACHE.pop("tiny-enc3", None)
