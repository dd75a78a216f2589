import math

from scripts.roi_sweep import interpolate


def test_interpolate_reads_the_metrics_at_the_budget_in_log_bytes():
    pts = [{"bytes": 2000, "psnr": 30.0, "text": None}, {"bytes": 1000, "psnr": 28.0, "text": None},
           {"bytes": 4000, "psnr": 32.0, "text": None}]
    m = interpolate(pts, int(1000 * math.sqrt(2)))  # halfway between 1000 and 2000 in log-bytes
    assert abs(m["psnr"] - 29.0) < 1e-3 and abs(m["bytes"] - 1414) < 1 and m["text"] is None
    assert interpolate(pts, 2000)["psnr"] == 30.0
    # outside the points: the nearest end, not an extrapolation
    assert interpolate(pts, 500)["psnr"] == 28.0 and interpolate(pts, 9000)["psnr"] == 32.0
