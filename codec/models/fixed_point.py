"""Bit-exact entropy parameters: h_s evaluated in fixed point.

The rANS decoder only works if it sees exactly the scales and means the encoder used. Float
convolutions do not promise that: summation order changes with thread count, SIMD width and
library version. Here every weight, bias and activation is an integer (held in float64), and
every partial sum stays far below 2**53, so each multiply-add is exact and the result cannot
depend on the order in which it was summed. Rescaling between layers divides by a power of two
and floors, which is exact too. The outputs are therefore identical on any IEEE-754 machine.

Fixed-point formats: activations carry ACT_BITS fractional bits; each layer's weights carry
their own number of fractional bits, chosen so that the largest weight fits in WEIGHT_BITS.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

ACT_BITS = 10  # activation resolution 2**-10
WEIGHT_BITS = 15  # |weight| < 2**15 after scaling
ACT_LIMIT = 2.0 ** 21  # |activation| clamp (2048.0 in real units); keeps sums < 2**53


class FixedPointLayer:
    def __init__(self, layer: nn.Module):
        w = layer.weight.detach().double()
        self.transposed = isinstance(layer, nn.ConvTranspose2d)
        self.stride, self.padding = layer.stride, layer.padding
        self.output_padding = getattr(layer, "output_padding", (0, 0))
        max_w = float(w.abs().max())
        self.w_bits = WEIGHT_BITS - max(0, math.ceil(math.log2(max_w + 1e-12)))
        self.weight = torch.round(w * 2.0 ** self.w_bits)
        self.bias = torch.round(layer.bias.detach().double() * 2.0 ** (self.w_bits + ACT_BITS))
        fan_in = self.weight[0].numel() if not self.transposed else self.weight[:, 0].numel()
        # Worst-case partial sum must stay exactly representable in float64.
        assert ACT_LIMIT * 2.0 ** WEIGHT_BITS * fan_in < 2.0 ** 53, "fixed-point range overflow"

    def __call__(self, a: torch.Tensor) -> torch.Tensor:
        if self.transposed:
            acc = F.conv_transpose2d(a, self.weight, self.bias, self.stride, self.padding,
                                     self.output_padding)
        else:
            acc = F.conv2d(a, self.weight, self.bias, self.stride, self.padding)
        return torch.floor(acc / 2.0 ** self.w_bits).clamp_(-ACT_LIMIT, ACT_LIMIT)


class FixedPointSequential:
    """Integer twin of an nn.Sequential made of Conv2d / ConvTranspose2d / ReLU."""

    def __init__(self, seq: nn.Sequential):
        self.ops = []
        for layer in seq:
            if isinstance(layer, (nn.Conv2d, nn.ConvTranspose2d)):
                self.ops.append(FixedPointLayer(layer))
            elif isinstance(layer, nn.ReLU):
                self.ops.append(torch.relu)
            else:
                raise TypeError(f"no fixed-point form for {type(layer).__name__}")

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """x: float input; returns float64 outputs that are exact multiples of 2**-ACT_BITS."""
        a = torch.round(x.double() * 2.0 ** ACT_BITS).clamp_(-ACT_LIMIT, ACT_LIMIT)
        with torch.no_grad():
            for op in self.ops:
                a = op(a)
        return a / 2.0 ** ACT_BITS
