"""codec.precision: bf16 autocast only where the CPU computes it natively, unless told."""

import pytest
import torch

from codec import precision


@pytest.mark.parametrize("env,native,expected", [
    ({}, True, True), ({}, False, False),
    ({"CODEC_SYNTH": "fp32"}, True, False), ({"CODEC_SYNTH": "BF16"}, False, True),
    ({"CODEC_SYNTH_FP32": "1"}, True, False), ({"CODEC_SYNTH": "auto"}, False, False),
])
def test_synth_bf16_follows_the_cpu_unless_the_environment_says(monkeypatch, env, native, expected):
    for k in ("CODEC_SYNTH", "CODEC_SYNTH_FP32"):
        monkeypatch.delenv(k, raising=False)
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    monkeypatch.setattr(precision, "native_bf16", lambda: native)
    assert precision.synth_bf16() is expected


def test_native_bf16_asks_torch_about_avx512_bf16_and_amx(monkeypatch):
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False, raising=False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False, raising=False)
    assert precision.native_bf16() is False
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: True, raising=False)
    assert precision.native_bf16() is True
