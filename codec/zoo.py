"""Shipped models by name: models/<id>.safetensors + models/<id>.json (the model card).

A file names its model by id and by the first 8 bytes of the weights' sha256; both must match
an installed model. CODEC_MODELS points at another models folder. Weights may be stored
xz-compressed as <id>.safetensors.xz (session 9: keeps models/ near 60 MB with four models);
the sha256 is always that of the uncompressed safetensors bytes, so compressing changes no id.

A card may name optional encoder weights (its "encoder" entry: file and sha256): a later g_a,
h_a and z_gain trained with every decoder weight frozen (train.py --encoder-only). They replace
the model's own when an encoder loads it (decoding never reads them), and files keep the model's
id and weights hash: the decoder they need is the one that was shipped (session 16).
"""

from __future__ import annotations

import hashlib
import json
import lzma
import os
import threading
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load, save

from .errors import ModelNotAvailableError
from .models.channel_context import SPATIAL_HIDDEN, GainChannelContext
from .models.gain_hyperprior import GainHyperprior, LatentCoder

DEFAULT_MODEL = "hpgc-n128m320-7"
_CACHE: dict[str, "LoadedModel"] = {}
_LOCK = threading.Lock()
_CDF_BUFFERS = {
    "entropy_bottleneck": ["_quantized_cdf", "_offset", "_cdf_length"],
    "gaussian_conditional": ["_quantized_cdf", "_offset", "_cdf_length", "scale_table"],
}


def without_tables(state: dict) -> dict:
    """A state dict without the coder's CDF tables and scale table: the weights training starts
    from (update() rebuilds the tables at export)."""
    names = tuple({b for bufs in _CDF_BUFFERS.values() for b in bufs})
    return {k: v for k, v in state.items() if not k.endswith(names)}


def models_dir() -> Path:
    env = os.environ.get("CODEC_MODELS")
    return Path(env) if env else Path(__file__).resolve().parents[1] / "models"


@dataclass
class LoadedModel:
    model_id: str
    weights_hash: bytes  # first 8 bytes of sha256(weights file)
    card: dict
    encoder_hash: bytes | None  # first 8 bytes of the optional encoder weights' sha256
    net: GainHyperprior
    coder: LatentCoder
    encoder_loaded: bool = True  # False until the card's encoder weights are in net


def weights_path(model_id: str, d: Path | None = None) -> Path | None:
    """models/<id>.safetensors, else its .xz twin, else None."""
    d = Path(d or models_dir())
    for p in (d / f"{model_id}.safetensors", d / f"{model_id}.safetensors.xz"):
        if p.exists():
            return p
    return None


def read_weights(path: Path) -> bytes:
    """The safetensors bytes of a weights file, decompressed when it is .xz."""
    raw = path.read_bytes()
    return lzma.decompress(raw) if path.suffix == ".xz" else raw


def encoder_side(name: str) -> bool:
    """A weight only the encoder runs. y_gain is not one: the decoder reads it for ROI step
    ratios (LatentCoder.quant_map); z_gain_inv is the decoder's side of z_gain."""
    return name.startswith(("g_a.", "h_a.")) or name == "z_gain"


def available_models() -> list[str]:
    d = models_dir()
    return sorted(p.stem for p in d.glob("*.json") if weights_path(p.stem, d))


def build_network(arch: dict) -> GainHyperprior:
    """The network an architecture record (a card's or a checkpoint's) describes."""
    kw = {k: arch[k] for k in ("N", "M", "levels", "lmbda_min", "lmbda_max")}
    kw["Na"] = arch.get("Na")  # g_a's width where it differs from N (session 9)
    kw["Ns"] = arch.get("Ns")  # g_s's last hidden width where it differs from N (session 19)
    if arch.get("slices", 1) > 1:
        return GainChannelContext(**kw, slices=arch["slices"],
                                  hidden=tuple(arch.get("context_hidden", GainChannelContext.HIDDEN)),
                                  spatial_groups=arch.get("spatial_groups", 0),
                                  spatial_hidden=arch.get("spatial_hidden", SPATIAL_HIDDEN))
    return GainHyperprior(**kw)


def architecture(net: GainHyperprior) -> dict:
    """The architecture record a card stores for `net`: build_network's inverse."""
    arch = {"type": "GainHyperprior (mean-scale hyperprior + Cui 2021 gain units)",
            "N": net.N, "M": net.M, "levels": net.levels,
            "lmbda_min": net.lmbda_min, "lmbda_max": net.lmbda_max}
    if net.Na != net.N:
        arch["Na"] = net.Na
    if net.Ns != net.N:
        arch["Ns"] = net.Ns
    if net.n_slices > 1:
        arch["type"] = ("GainChannelContext (GainHyperprior + Minnen & Singh 2020 channel-conditional "
                        "context, fixed-point context networks)")
        arch["slices"], arch["context_hidden"] = net.n_slices, list(net.hidden)
        if net.spatial_groups:
            arch["type"] += "; checkerboard spatial context (He et al. 2021) in the first groups"
            arch["spatial_groups"], arch["spatial_hidden"] = net.spatial_groups, net.spatial_hidden
    return arch


def load_model(name: str | None = None, encoder: bool = True) -> LoadedModel:
    """Load (once per process) a shipped model; None means the default model. encoder=False
    leaves out the card's optional encoder weights, which decoding never runs; a later call
    with encoder=True puts them in."""
    name = name or os.environ.get("CODEC_MODEL") or DEFAULT_MODEL
    with _LOCK:
        lm = _CACHE.get(name) or _load(name)
        if encoder and not lm.encoder_loaded:
            _load_encoder(lm.net, name, models_dir(), lm.card["encoder"])
            lm.encoder_loaded = True
        _CACHE[name] = lm  # not before: a failed first load reads the card again next time
        return lm


def _load(name: str) -> LoadedModel:
    d = models_dir()
    weights, card_path = weights_path(name, d), d / f"{name}.json"
    if weights is None or not card_path.exists():
        raise ModelNotAvailableError(
            f"model {name!r} is not available (installed: {', '.join(available_models()) or 'none'})")
    card = json.loads(card_path.read_text())
    net = build_network(card["architecture"])
    try:
        raw = read_weights(weights)
        state = load(raw)
    except (lzma.LZMAError, SafetensorError) as e:  # a truncated or damaged install
        raise ModelNotAvailableError(f"model {name!r}: {weights.name} is damaged ({e})") from None
    for module_name, names in _CDF_BUFFERS.items():
        module = getattr(net, module_name)
        for b in names:
            getattr(module, b).resize_(state[f"{module_name}.{b}"].shape)
    net.load_state_dict(state)
    net.eval().requires_grad_(False)
    net.g_s.to(memory_format=torch.channels_last)
    net.g_a.to(memory_format=torch.channels_last)
    entry = card.get("encoder")
    # The hash comes from the card; _load_encoder checks the file against it when it is read.
    encoder_hash = bytes.fromhex(entry["sha256"])[:8] if entry else None
    return LoadedModel(name, hashlib.sha256(raw).digest()[:8], card, encoder_hash, net,
                       LatentCoder(net), encoder_loaded=entry is None)


def encoder_weights(name: str, d: Path, entry: dict) -> dict:
    """The encoder weights a card's "encoder" entry names, as stored, checked against its sha256."""
    path = d / entry["file"]
    try:
        raw = read_weights(path)
        state = load(raw)
    except (OSError, lzma.LZMAError, SafetensorError) as e:
        raise ModelNotAvailableError(f"model {name!r}: encoder weights {path.name} are missing or "
                                     f"damaged ({e})") from None
    if hashlib.sha256(raw).hexdigest() != entry["sha256"]:
        raise ModelNotAvailableError(f"model {name!r}: encoder weights {path.name} do not match "
                                     f"its card's sha256")
    return state


def _load_encoder(net: GainHyperprior, name: str, d: Path, entry: dict) -> None:
    """Put the card's encoder weights into net, checked against the card's sha256."""
    state = encoder_weights(name, d, entry)
    if set(state) != {k for k in net.state_dict() if encoder_side(k)}:
        raise ModelNotAvailableError(f"model {name!r}: encoder weights {entry['file']} must hold "
                                     f"exactly g_a, h_a and z_gain")
    net.load_state_dict(state, strict=False)


def export_encoder(state: dict, model_id: str, entry: dict, out_dir: Path | None = None) -> Path:
    """Store the encoder-side weights of state (a full state dict as stored_state gives it) as
    optional encoder weights of the installed model_id, and name them in its card. Refused when
    any decoder-side weight differs from the installed model's: files must decode as before."""
    out_dir = Path(out_dir or models_dir())
    card_path = out_dir / f"{model_id}.json"
    weights = weights_path(model_id, out_dir)
    if weights is None or not card_path.exists():
        raise ModelNotAvailableError(f"model {model_id!r} is not installed in {out_dir}")
    base = load(read_weights(weights))
    changed = [k for k, v in base.items() if not encoder_side(k)
               and not (k in state and state[k].dtype == v.dtype and torch.equal(state[k], v))]
    if changed:
        raise ValueError(f"{len(changed)} decoder-side weights differ from {model_id}'s, e.g. {changed[0]}")
    raw = save({k: v.detach().contiguous().clone() for k, v in state.items() if encoder_side(k)})
    path = out_dir / f"{model_id}.encoder.safetensors.xz"
    _store(raw, path)
    card = json.loads(card_path.read_text())
    card["encoder"] = {**entry, "file": path.name, "sha256": hashlib.sha256(raw).hexdigest()}
    card_path.write_text(json.dumps(card, indent=2) + "\n")
    _CACHE.pop(model_id, None)
    return path


def find_model(model_id: str, weights_hash: bytes) -> LoadedModel:
    """The installed model a file names, or ModelNotAvailableError. Without its encoder weights,
    which a decoder does not need."""
    try:
        lm = load_model(model_id, encoder=False)
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


def bf16_names(net: GainHyperprior, entropy: bool = False) -> set[str]:
    """Convolution weights and biases of g_a, h_a and g_s: stored as bfloat16, half the bytes.

    The three were trained under bf16 autocast, and g_s decodes under it, which rounds these
    very weights to bf16 on every call: storing them rounded changes no decoded pixel. g_a and
    h_a run in float32 when encoding, so their output moves a little, as it did in training.
    With entropy=True the entropy parameters' networks (h_s, the contexts) are stored rounded
    too (session 9). Their decode stays exact: encoder and decoder widen the same stored
    values and run them in fixed point; only the model itself is a hair different from the
    trained one. Gains, the factorized prior and the CDF tables always stay float32.
    """
    prefixes = ("g_a", "h_a", "g_s") + (("h_s", "context", "spatial") if entropy else ())
    names = set()
    for prefix in prefixes:
        if not hasattr(net, prefix):
            continue
        for name, mod in getattr(net, prefix).named_modules():
            if isinstance(mod, (torch.nn.Conv2d, torch.nn.ConvTranspose2d)):
                names |= {f"{prefix}.{name}.weight", f"{prefix}.{name}.bias"}
    return names


def stored_state(state: dict, half: set[str]) -> dict:
    """state as the weights file holds it: the names in half as bf16."""
    return {k: (v.to(torch.bfloat16) if k in half else v).detach().contiguous().clone()
            for k, v in state.items()}


def _write_weights(state: dict, half: set[str], weights: Path) -> str:
    """Save state (the names in half as bf16) to weights atomically, xz-compressed when the name
    ends in .xz; return the sha256 of the safetensors bytes."""
    raw = save(stored_state(state, half))
    _store(raw, weights)
    return hashlib.sha256(raw).hexdigest()


def _store(raw: bytes, weights: Path) -> None:
    """Write safetensors bytes to weights atomically, xz-compressed when its name ends in .xz."""
    tmp = weights.with_name(weights.name + ".tmp")
    tmp.write_bytes(lzma.compress(raw, preset=6) if weights.suffix == ".xz" else raw)  # 9e is no smaller here
    os.replace(tmp, weights)


def compress(model_id: str, out_dir: Path | None = None) -> Path:
    """Store an installed model's weights as <id>.safetensors.xz, in place; same sha256, same id."""
    out_dir = Path(out_dir or models_dir())
    src = weights_path(model_id, out_dir)
    if src is None:
        raise ModelNotAvailableError(f"model {model_id!r} is not installed in {out_dir}")
    if src.suffix == ".xz":
        return src
    dst = src.with_name(src.name + ".xz")
    _store(src.read_bytes(), dst)
    src.unlink()
    return dst


def export(net: GainHyperprior, model_id: str, card: dict, out_dir: Path | None = None,
           bf16_transforms: bool = True, bf16_entropy: bool = False) -> Path:
    """Write weights (with freshly built CDF tables) and the card, sha256 included."""
    out_dir = Path(out_dir or models_dir())
    out_dir.mkdir(parents=True, exist_ok=True)
    net.update(force=True)
    half = bf16_names(net, entropy=bf16_entropy) if bf16_transforms else set()
    weights = out_dir / f"{model_id}.safetensors"
    card = dict(card)
    card["id"] = model_id
    card["sha256"] = _write_weights(net.state_dict(), half, weights)
    Path(f"{weights}.xz").unlink(missing_ok=True)  # an older compressed twin: the raw file now wins
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
    weights, card_path = weights_path(model_id, out_dir), out_dir / f"{model_id}.json"
    card = json.loads(card_path.read_text())
    state = load(read_weights(weights))
    half = bf16_names(build_network(card["architecture"]))
    if all(state[k].dtype == torch.bfloat16 for k in half):
        return weights
    card["previous_sha256"] = card.get("previous_sha256", []) + [card["sha256"]]
    card["sha256"] = _write_weights(state, half, weights)
    card_path.write_text(json.dumps(card, indent=2) + "\n")
    _CACHE.pop(model_id, None)
    return weights
