"""Channel-conditional entropy model (Minnen & Singh 2020) on top of the gain hyperprior.

The latent's M channels are coded in ``slices`` groups, one after the other. Each group's
scales and means are h_s's, corrected by a small context network that also sees the groups
already decoded, so later groups are coded knowing the earlier ones. Decoding stays parallel
over positions; only the groups are sequential. The context networks are Conv2d/ReLU stacks so
that, like h_s, they run in the bit-exact fixed-point path (codec.models.fixed_point) when
coding. Their last layer starts at zero: a model initialised from a trained GainHyperprior
computes exactly what it did until training gives the context something to say.

Optionally (``spatial_groups`` > 0) the first groups are also coded in two checkerboard passes
(He et al. 2021, as in ELIC): the anchor half of the positions with the parameters above, then
the other half with a correction from a network that sees the decoded anchors of the group.
Decoding stays parallel within each pass. The spatial networks' last layer starts at zero too.
"""

from __future__ import annotations

import torch
import torch.nn as nn
from compressai.models.utils import conv

from .gain_hyperprior import GainHyperprior, anchor_mask


SPATIAL_HIDDEN = 96  # width of the checkerboard networks' hidden layer


class GainChannelContext(GainHyperprior):
    HIDDEN = (96, 64)  # widths of the context networks' two hidden layers

    def __init__(self, N: int = 128, M: int = 320, levels: int = 9, lmbda_min: float = 0.0004,
                 lmbda_max: float = 0.36, slices: int = 5, hidden: tuple[int, int] = HIDDEN,
                 Na: int | None = None, spatial_groups: int = 0, spatial_hidden: int = SPATIAL_HIDDEN,
                 Ns: int | None = None):
        super().__init__(N, M, levels, lmbda_min, lmbda_max, Na, Ns)
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
        # Group i's checkerboard network: its decoded anchors (zero elsewhere) and its
        # parameters above -> corrections for the other positions. A 3x3 kernel reaches the four
        # anchor neighbours of every non-anchor position.
        if not 0 <= spatial_groups <= slices:
            raise ValueError(f"spatial_groups={spatial_groups} is not in [0, slices={slices}]")
        self.spatial_groups, self.spatial_hidden = spatial_groups, spatial_hidden
        self.spatial = nn.ModuleList(
            nn.Sequential(conv(3 * size, spatial_hidden, stride=1, kernel_size=3), nn.ReLU(inplace=True),
                          conv(spatial_hidden, 2 * size, stride=1, kernel_size=1))
            for _ in range(spatial_groups))
        for c in [*self.context, *self.spatial]:
            nn.init.zeros_(c[-1].weight)
            nn.init.zeros_(c[-1].bias)

    def slice_params(self, hs, i, prev, context=None):
        sl = self.slice_channels(i)
        scales, means = hs[0][:, sl], hs[1][:, sl]
        net = self.context[i] if context is None else context[i]
        d = net(torch.cat([scales, means, *prev], 1))
        d_scales, d_means = d.to(scales.dtype).chunk(2, 1)
        return scales + d_scales, means + d_means

    def checkerboard_params(self, i, scales, means, y_hat, spatial=None):
        """Group i's parameters at every position once its anchors are decoded: y_hat holds
        them (gained domain; only the anchor positions are read). The anchors keep (scales,
        means); the other positions get the spatial network's correction. spatial: the
        fixed-point twins, for the coder."""
        net = self.spatial[i] if spatial is None else spatial[i]
        a = anchor_mask(*y_hat.shape[-2:]).to(y_hat.device)
        d = net(torch.cat([y_hat * a, scales, means], 1))
        d_scales, d_means = (d.to(scales.dtype) * (1 - a)).chunk(2, 1)
        return scales + d_scales, means + d_means
