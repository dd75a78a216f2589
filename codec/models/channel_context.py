"""Channel-conditional entropy model (Minnen & Singh 2020) on top of the gain hyperprior.

The latent's M channels are coded in ``slices`` groups, one after the other. Each group's
scales and means are h_s's, corrected by a small context network that also sees the groups
already decoded, so later groups are coded knowing the earlier ones. Decoding stays parallel
over positions; only the groups are sequential. The context networks are Conv2d/ReLU stacks so
that, like h_s, they run in the bit-exact fixed-point path (codec.models.fixed_point) when
coding. Their last layer starts at zero: a model initialised from a trained GainHyperprior
computes exactly what it did until training gives the context something to say.
"""

from __future__ import annotations

import torch
import torch.nn as nn
from compressai.models.utils import conv

from .gain_hyperprior import GainHyperprior


class GainChannelContext(GainHyperprior):
    HIDDEN = (96, 64)  # widths of the context networks' two hidden layers

    def __init__(self, N: int = 128, M: int = 320, levels: int = 9, lmbda_min: float = 0.0004,
                 lmbda_max: float = 0.36, slices: int = 5, hidden: tuple[int, int] = HIDDEN,
                 Na: int | None = None):
        super().__init__(N, M, levels, lmbda_min, lmbda_max, Na)
        self.hidden = tuple(hidden)
        if M % slices:
            raise ValueError(f"M={M} is not a multiple of slices={slices}")
        self.n_slices = slices
        size = M // slices
        h1, h2 = hidden
        # Input of group i: h_s's scales and means of the group, and the i groups before it.
        self.context = nn.ModuleList(
            nn.Sequential(conv(2 * size + i * size, h1, stride=1, kernel_size=3), nn.ReLU(inplace=True),
                          conv(h1, h2, stride=1, kernel_size=3), nn.ReLU(inplace=True),
                          conv(h2, 2 * size, stride=1, kernel_size=3))
            for i in range(slices))
        for c in self.context:
            nn.init.zeros_(c[-1].weight)
            nn.init.zeros_(c[-1].bias)

    def slice_params(self, hs, i, prev, context=None):
        sl = self.slice_channels(i)
        scales, means = hs[0][:, sl], hs[1][:, sl]
        net = self.context[i] if context is None else context[i]
        d = net(torch.cat([scales, means, *prev], 1))
        d_scales, d_means = d.to(scales.dtype).chunk(2, 1)
        return scales + d_scales, means + d_means
