"""Encode and decode a sample with the shipped default model; print size, bpp and PSNR.

    python -m scripts.demo [IMAGE] [--quality Q] [--out demo_out]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
from PIL import Image

import codec
from scripts.eval_codec import psnr as rgb_psnr

ROOT = Path(__file__).resolve().parents[1]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("image", nargs="?", default=str(ROOT / "assets/seeding.png"))
    ap.add_argument("--quality", type=float, default=codec.DEFAULT_QUALITY)
    ap.add_argument("--out", default=str(ROOT / "demo_out"))
    args = ap.parse_args(argv)

    img = Image.open(args.image).convert("RGB")
    out = Path(args.out)
    out.mkdir(exist_ok=True)
    t0 = time.perf_counter()
    data = codec.encode(img, quality=args.quality)
    t1 = time.perf_counter()
    dec = codec.decode(data)
    t2 = time.perf_counter()
    name = Path(args.image).stem
    (out / f"{name}{codec.EXTENSION}").write_bytes(data)
    dec.save(out / f"{name}.decoded.png")
    psnr = rgb_psnr(np.asarray(img), np.asarray(dec.convert("RGB")))
    info = codec.read_info(data)
    print(f"{args.image}: {img.width}x{img.height}, model {info['model_id']}, quality {info['quality']:g}")
    print(f"  {len(data)} bytes, {info['bpp']:.4f} bpp, RGB PSNR {psnr:.2f} dB")
    print(f"  encode {t1 - t0:.2f} s, decode {t2 - t1:.2f} s; wrote {out}/{name}{codec.EXTENSION} "
          f"and {name}.decoded.png")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
