"""Mutation fuzzer for the decoder: every outcome must be an image or a CodecError.

    python -m scripts.fuzz_decoder [--cases 5000] [--seed 0] [--image assets/chelsea.png]

Starts from valid .lic files (RGB, grayscale, RGBA) and applies one mutation per case: bit
flips, truncation, insertion, deletion, and "smart" mutations that rewrite a field and then fix
the CRCs so the damage reaches deeper layers (section lengths, section types, dimensions, header
fields, garbage or empty payloads). Prints outcomes by class and mutation; exits 1 on any other
exception or a decode whose CPU time exceeds the bound (10 s + 10 us per claimed pixel). A hard hang or crash is caught by
faulthandler (the process dies with a traceback and the case number).
"""

from __future__ import annotations

import argparse
import collections
import faulthandler
import random
import struct
import sys
import time
import zlib
from pathlib import Path

from PIL import Image

import codec
from codec import container
from codec.container import Section
from codec.image_codec import PAD

ROOT = Path(__file__).resolve().parents[1]
FUZZ_MAX_PIXELS = 1 << 20  # keeps each case small; the limit itself is part of what is tested
TIME_BOUND_S = 10.0  # per case, plus PER_PIXEL_S for each pixel the header claims


def time_bound(data: bytes) -> float:
    """The networks run on the image padded to multiples of PAD (64) pixels, so a claimed
    65535 x 2 image is 65536 x 64 of work: the bound follows the padded area."""
    try:
        h, _ = container.unpack_header(data, max_pixels=None)
        padded = -(-h.width // PAD) * PAD * -(-h.height // PAD) * PAD
        return TIME_BOUND_S + PER_PIXEL_S * padded
    except codec.CodecError:
        return TIME_BOUND_S


# Decoding (g_s, and the fixed-point context) costs ~2 us of wall time per padded pixel on 2
# cores, ~3.5 us of CPU time over both threads (a 65536 x 64 case measured 8.5 s wall, 14.5 s CPU).
PER_PIXEL_S = 10e-6


def seeds(image: Path) -> list[bytes]:
    img = Image.open(image).convert("RGB").crop((0, 0, 96, 72))
    rgba = img.convert("RGBA")
    rgba.putalpha(img.convert("L"))
    return [codec.encode(img, quality=40), codec.encode(img.convert("L"), quality=60),
            codec.encode(rgba, quality=20)]


def _refix(parts: list[tuple[int, bytes]], header: bytes) -> bytes:
    return header + b"".join(container.pack_section(t, p) for t, p in parts)


def _split(data: bytes) -> tuple[bytes, list[tuple[int, bytes]]]:
    c = container.unpack(data, max_pixels=None)
    parts = sorted(c.sections.items()) + [(Section.END, b"")]
    return container.pack_header(c.header), parts


def _header_with(data: bytes, **fields) -> bytes:
    c = container.unpack(data, max_pixels=None)
    for k, v in fields.items():
        setattr(c.header, k, v)
    head = container.header_bytes(c.header)  # pack_header would refuse out-of-range values
    _, parts = _split(data)
    return _refix(parts, head)


def mutate(data: bytes, rng: random.Random) -> tuple[str, bytes]:
    kind = rng.choice(["bitflip", "truncate", "insert", "delete", "section_length", "section_type",
                       "dimensions", "header_field", "payload_garbage", "payload_empty",
                       "duplicate_section", "drop_section"])
    b = bytearray(data)
    if kind == "bitflip":
        for _ in range(rng.randint(1, 8)):
            i = rng.randrange(len(b))
            b[i] ^= 1 << rng.randrange(8)
        return kind, bytes(b)
    if kind == "truncate":
        return kind, bytes(b[:rng.randrange(len(b))])
    if kind == "insert":
        i = rng.randrange(len(b) + 1)
        return kind, bytes(b[:i]) + rng.randbytes(rng.randint(1, 64)) + bytes(b[i:])
    if kind == "delete":
        i = rng.randrange(len(b))
        return kind, bytes(b[:i] + b[i + rng.randint(1, 64):])
    header, parts = _split(data)
    if kind == "section_length":
        t, p = rng.choice(parts[:-1])
        i = parts.index((t, p))
        unit = bytes([t]) + container.varint(rng.choice([0, 1, len(p) + 1, 2 ** 32, rng.randrange(1 << 20)])) + p
        raw = unit + struct.pack(">I", zlib.crc32(unit))
        rest = b"".join(container.pack_section(tt, pp) for tt, pp in parts[i + 1:])
        before = b"".join(container.pack_section(tt, pp) for tt, pp in parts[:i])
        return kind, header + before + raw + rest
    if kind == "section_type":
        i = rng.randrange(len(parts))
        parts[i] = (rng.randrange(256), parts[i][1])
        return kind, _refix(parts, header)
    if kind == "dimensions":
        w = rng.choice([1, 2, 63, 64, 65, 4000, 65535, 1 << 20, 0])
        h = rng.choice([1, 2, 63, 64, 65, 4000, 65535, 1 << 20, 0])
        return kind, _header_with(data, width=w, height=h)
    if kind == "header_field":
        field = rng.choice(["channels", "bit_depth", "quality", "model_id", "weights_hash", "flags"])
        value = {"channels": rng.randrange(256), "bit_depth": rng.randrange(256),
                 "quality": rng.randrange(0, 65536) / 100, "model_id": rng.choice(["", "x", "hpg-n128m192 "]),
                 "weights_hash": rng.randbytes(8), "flags": rng.randrange(256)}[field]
        return f"{kind}:{field}", _header_with(data, **{field: value})
    if kind == "payload_garbage":
        i = rng.randrange(len(parts) - 1)
        parts[i] = (parts[i][0], rng.randbytes(rng.choice([1, 4, len(parts[i][1]), 4096])))
        return kind, _refix(parts, header)
    if kind == "payload_empty":
        i = rng.randrange(len(parts) - 1)
        parts[i] = (parts[i][0], b"")
        return kind, _refix(parts, header)
    if kind == "duplicate_section":
        i = rng.randrange(len(parts) - 1)
        parts.insert(i, parts[i])
        return kind, _refix(parts, header)
    # drop_section
    parts.pop(rng.randrange(len(parts)))
    return kind, _refix(parts, header)


def run(cases: int, seed: int = 0, image: Path = ROOT / "assets/chelsea.png", log=None) -> dict:
    """Returns {"outcomes": Counter, "by_mutation": {...}, "unexpected": [...], "slow": [...]}."""
    rng = random.Random(seed)
    pool = seeds(image)
    outcomes: collections.Counter = collections.Counter()
    by_mutation: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    unexpected, slow = [], []
    for n in range(cases):
        kind, data = mutate(rng.choice(pool), rng)
        t0 = time.process_time()  # CPU time of this process: robust to a busy machine
        try:
            img = codec.decode(data, max_pixels=FUZZ_MAX_PIXELS)
            if not isinstance(img, Image.Image):
                raise TypeError("decode returned a non-image")
            outcome = "decoded"
        except codec.CodecError as e:
            outcome = type(e).__name__
        except Exception as e:  # the thing we hunt
            outcome = "UNEXPECTED"
            unexpected.append((n, kind, f"{type(e).__name__}: {e}"))
        dt = time.process_time() - t0
        if dt > time_bound(data):
            slow.append((n, kind, round(dt, 2)))
        outcomes[outcome] += 1
        by_mutation[kind.split(":")[0]][outcome] += 1
        if log and (n + 1) % 500 == 0:
            print(f"  {n + 1}/{cases} cases, {dict(outcomes)}", file=log, flush=True)
    return {"outcomes": outcomes, "by_mutation": by_mutation, "unexpected": unexpected, "slow": slow}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", type=int, default=5000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--image", default=str(ROOT / "assets/chelsea.png"))
    args = ap.parse_args(argv)
    faulthandler.enable()
    faulthandler.dump_traceback_later(TIME_BOUND_S * args.cases + 600, exit=True)
    t0 = time.time()
    res = run(args.cases, args.seed, Path(args.image), log=sys.stderr)
    print(f"{args.cases} cases in {time.time() - t0:.0f} s (seed {args.seed})")
    print("outcomes:", dict(res["outcomes"].most_common()))
    for kind, c in sorted(res["by_mutation"].items()):
        print(f"  {kind:<18} {dict(c.most_common())}")
    for n, kind, msg in res["unexpected"]:
        print(f"UNEXPECTED case {n} ({kind}): {msg}")
    for n, kind, dt in res["slow"]:
        print(f"SLOW case {n} ({kind}): {dt} s")
    return 1 if res["unexpected"] or res["slow"] else 0


if __name__ == "__main__":
    raise SystemExit(main())
