"""Shipped models by name: models/<id>.safetensors + models/<id>.json (the model card).

A file names its model by id and by the first 8 bytes of the weights' sha256; both must match
an installed model. CODEC_MODELS points at another models folder.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from .errors import ModelNotAvailableError
from .models.channel_context import GainChannelContext
from .models.gain_hyperprior import GainHyperprior, LatentCoder

DEFAULT_MODEL = "hpgc-n128m320"
_CACHE: dict[str, "LoadedModel"] = {}
_LOCK = threading.Lock()
_CDF_BUFFERS = {
    "entropy_bottleneck": ["_quantized_cdf", "_offset", "_cdf_length"],
    "gaussian_conditional": ["_quantized_cdf", "_offset", "_cdf_length", "scale_table"],
}


def models_dir() -> Path:
    env = os.environ.get("CODEC_MODELS")
    return Path(env) if env else Path(__file__).resolve().parents[1] / "models"


@dataclass
class LoadedModel:
    model_id: str
    weights_hash: bytes  # first 8 bytes of sha256(weights file)
    card: dict
    net: GainHyperprior
    coder: LatentCoder


def available_models() -> list[str]:
    d = models_dir()
    return sorted(p.stem for p in d.glob("*.json") if (d / f"{p.stem}.safetensors").exists())


def build_network(arch: dict) -> GainHyperprior:
    """The network an architecture record (a card's or a checkpoint's) describes."""
    kw = {k: arch[k] for k in ("N", "M", "levels", "lmbda_min", "lmbda_max")}
    if arch.get("slices", 1) > 1:
        return GainChannelContext(**kw, slices=arch["slices"],
                                  hidden=tuple(arch.get("context_hidden", GainChannelContext.HIDDEN)))
    return GainHyperprior(**kw)


def load_model(name: str | None = None) -> LoadedModel:
    """Load (once per process) a shipped model; None means the default model."""
    name = name or os.environ.get("CODEC_MODEL") or DEFAULT_MODEL
    with _LOCK:
        if name in _CACHE:
            return _CACHE[name]
        d = models_dir()
        weights, card_path = d / f"{name}.safetensors", d / f"{name}.json"
        if not weights.exists() or not card_path.exists():
            raise ModelNotAvailableError(
                f"model {name!r} is not available (installed: {', '.join(available_models()) or 'none'})")
        raw = weights.read_bytes()
        card = json.loads(card_path.read_text())
        net = build_network(card["architecture"])
        state = load_file(str(weights))
        for module_name, names in _CDF_BUFFERS.items():
            module = getattr(net, module_name)
            for b in names:
                getattr(module, b).resize_(state[f"{module_name}.{b}"].shape)
        net.load_state_dict(state)
        net.eval().requires_grad_(False)
        net.g_s.to(memory_format=torch.channels_last)
        net.g_a.to(memory_format=torch.channels_last)
        lm = LoadedModel(name, hashlib.sha256(raw).digest()[:8], card, net, LatentCoder(net))
        _CACHE[name] = lm
        return lm


def find_model(model_id: str, weights_hash: bytes) -> LoadedModel:
    """The installed model a file names, or ModelNotAvailableError."""
    try:
        lm = load_model(model_id)
    except ModelNotAvailableError:
        raise ModelNotAvailableError(
            f"model {model_id!r} (weights {weights_hash.hex()}) is not available; installed: "
            f"{', '.join(available_models()) or 'none'}") from None
    # A card's previous_sha256: the same model stored before, e.g. before bf16_names (session 8):
    # its files decode to the same pixels.
    known = {lm.weights_hash} | {bytes.fromhex(h)[:8] for h in lm.card.get("previous_sha256", [])}
    if weights_hash not in known:
        raise ModelNotAvailableError(
            f"model {model_id!r} with weights {weights_hash.hex()} is not available "
            f"(installed weights are {lm.weights_hash.hex()})")
    return lm


def bf16_names(net: GainHyperprior) -> set[str]:
    """Convolution weights and biases of g_a, h_a and g_s: stored as bfloat16, half the bytes.

    The three were trained under bf16 autocast, and g_s decodes under it, which rounds these
    very weights to bf16 on every call: storing them rounded changes no decoded pixel. g_a and
    h_a run in float32 when encoding, so their output moves a little, as it did in training.
    The entropy-coding path (h_s, the context, gains, CDF tables) stays float32 and exact.
    """
    names = set()
    for prefix in ("g_a", "h_a", "g_s"):
        for name, mod in getattr(net, prefix).named_modules():
            if isinstance(mod, (torch.nn.Conv2d, torch.nn.ConvTranspose2d)):
                names |= {f"{prefix}.{name}.weight", f"{prefix}.{name}.bias"}
    return names


def _write_weights(state: dict, half: set[str], weights: Path) -> str:
    """Save state (the names in half as bf16) to weights atomically; return its sha256."""
    state = {k: (v.to(torch.bfloat16) if k in half else v).detach().contiguous().clone()
             for k, v in state.items()}
    tmp = weights.with_suffix(".tmp")
    save_file(state, str(tmp))
    os.replace(tmp, weights)
    return hashlib.sha256(weights.read_bytes()).hexdigest()


def export(net: GainHyperprior, model_id: str, card: dict, out_dir: Path | None = None,
           bf16_transforms: bool = True) -> Path:
    """Write weights (with freshly built CDF tables) and the card, sha256 included."""
    out_dir = Path(out_dir or models_dir())
    out_dir.mkdir(parents=True, exist_ok=True)
    net.update(force=True)
    half = bf16_names(net) if bf16_transforms else set()
    weights = out_dir / f"{model_id}.safetensors"
    card = dict(card)
    card["id"] = model_id
    card["sha256"] = _write_weights(net.state_dict(), half, weights)
    card["parameters"] = sum(v.numel() for k, v in net.state_dict().items()
                             if not any(k.endswith(b) for b in ("_quantized_cdf", "_offset", "_cdf_length")))
    (out_dir / f"{model_id}.json").write_text(json.dumps(card, indent=2) + "\n")
    _CACHE.pop(model_id, None)
    return weights


def restore_bf16(model_id: str, out_dir: Path | None = None) -> Path:
    """Store an installed model's transforms as bfloat16 (bf16_names), in place. Everything
    else, CDF tables included, is kept as stored; the old sha256 joins the card's
    previous_sha256, so files written with the old weights keep decoding."""
    out_dir = Path(out_dir or models_dir())
    weights, card_path = out_dir / f"{model_id}.safetensors", out_dir / f"{model_id}.json"
    card = json.loads(card_path.read_text())
    state = load_file(str(weights))
    half = bf16_names(build_network(card["architecture"]))
    if all(state[k].dtype == torch.bfloat16 for k in half):
        return weights
    card["previous_sha256"] = card.get("previous_sha256", []) + [card["sha256"]]
    card["sha256"] = _write_weights(state, half, weights)
    card_path.write_text(json.dumps(card, indent=2) + "\n")
    _CACHE.pop(model_id, None)
    return weights
