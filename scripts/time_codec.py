"""Encode/decode wall time of one image through the public API: median of several runs.

    python -m scripts.time_codec [IMAGE] [--runs 7] [--threads 2] [--quality 50] [--effort 0]

The model is loaded (and one warm-up encode/decode run) before timing, as in a long-lived app.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch
from PIL import Image

import codec

ROOT = Path(__file__).resolve().parents[1]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("image", nargs="?", default=str(ROOT / "assets/seeding.png"))
    ap.add_argument("--runs", type=int, default=7)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--quality", type=float, default=codec.DEFAULT_QUALITY)
    ap.add_argument("--effort", type=int, default=0)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    img = Image.open(args.image).convert("RGB")
    codec.load_model()
    data = codec.encode(img, quality=args.quality, effort=args.effort)
    codec.decode(data)
    enc, dec = [], []
    for _ in range(args.runs):
        t0 = time.perf_counter()
        data = codec.encode(img, quality=args.quality, effort=args.effort)
        t1 = time.perf_counter()
        codec.decode(data)
        t2 = time.perf_counter()
        enc.append(t1 - t0)
        dec.append(t2 - t1)
    print(f"{args.image} {img.width}x{img.height}, quality {args.quality:g}, effort {args.effort}, {len(data)} bytes, "
          f"torch threads {torch.get_num_threads()}, {args.runs} runs")
    print(f"  encode median {statistics.median(enc):.3f} s (min {min(enc):.3f}, max {max(enc):.3f})")
    print(f"  decode median {statistics.median(dec):.3f} s (min {min(dec):.3f}, max {max(dec):.3f})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
