"""Where bfloat16 autocast pays on this CPU.

bf16 halves g_s's time on CPUs that compute it natively (AVX512-BF16 or AMX). Elsewhere oneDNN
emulates it: on an AVX2-only AMD EPYC a 768x512 decode took 12.9 s under bf16 autocast against
0.6 s in float32, and a training step 4.8 s against 0.54 s (session 11). The choice only moves
pixel values by rounding noise, never the parsing of a bitstream (docs/bitstream.md).
"""

from __future__ import annotations

import os

import torch


def native_bf16() -> bool:
    """True when the CPU computes bfloat16 in hardware (AVX512-BF16 or AMX tiles)."""
    probes = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(getattr(torch.cpu, p, lambda: False)() for p in probes)


def synth_bf16() -> bool:
    """Whether g_s runs under bf16 autocast when coding: CODEC_SYNTH=bf16|fp32 decides, else
    the CPU (native_bf16). CODEC_SYNTH_FP32=1 is the older spelling of CODEC_SYNTH=fp32."""
    choice = os.environ.get("CODEC_SYNTH", "").lower()
    if os.environ.get("CODEC_SYNTH_FP32") == "1":
        choice = "fp32"
    if choice in ("bf16", "fp32"):
        return choice == "bf16"
    return native_bf16()
