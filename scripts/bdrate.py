"""Bjøntegaard delta-rate (BD-rate) between two rate-distortion curves.

    >>> round(bd_rate([0.25, 0.5, 1, 2], [30, 33, 36, 39], [0.125, 0.25, 0.5, 1], [30, 33, 36, 39]), 6)
    -50.0

log(rate) is interpolated as a function of the quality metric with a monotone cubic (PCHIP, as in
the usual "BD-rate with PCHIP" variant of VCEG-M33), both curves are integrated over the metric
range they share, and the mean log-rate difference is turned into a percentage: negative means
the test codec needs fewer bits than the anchor for the same quality.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
from scipy.interpolate import PchipInterpolator


def clean_curve(rates: Sequence[float], metrics: Sequence[float]) -> tuple[list[float], list[float]]:
    """Sort points by rate and keep only those that raise the metric (drops non-monotone points,
    missing values and non-positive rates)."""
    pts = sorted((float(r), float(m)) for r, m in zip(rates, metrics)
                 if r is not None and m is not None and r > 0 and math.isfinite(r) and math.isfinite(m))
    out_r, out_m = [], []
    for r, m in pts:
        if not out_m or m > out_m[-1]:
            out_r.append(r)
            out_m.append(m)
    return out_r, out_m


def bd_rate(rate_anchor: Sequence[float], metric_anchor: Sequence[float],
            rate_test: Sequence[float], metric_test: Sequence[float]) -> float:
    """Average bit-rate difference (percent) of the test curve against the anchor curve at equal
    metric. Each curve needs >= 2 points with metric increasing with rate (see clean_curve); returns
    nan when a curve is too short or the metric ranges do not overlap."""
    curves = []
    for rates, metrics in ((rate_anchor, metric_anchor), (rate_test, metric_test)):
        r, m = clean_curve(rates, metrics)
        if len(r) < 2:
            return float("nan")
        curves.append((np.log(np.asarray(r)), np.asarray(m)))
    lo = max(m[0] for _, m in curves)
    hi = min(m[-1] for _, m in curves)
    if not hi > lo:
        return float("nan")
    integrals = []
    for log_r, m in curves:
        antideriv = PchipInterpolator(m, log_r).antiderivative()
        integrals.append(float(antideriv(hi) - antideriv(lo)))
    mean_diff = (integrals[1] - integrals[0]) / (hi - lo)
    return (math.exp(mean_diff) - 1.0) * 100.0
