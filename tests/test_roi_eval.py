import pytest

from scripts.roi_eval import targets_every_image_reached, whole_image_bd_rate


def _rows(image, points):
    """points: target -> ((bpp off, psnr off), (bpp on, psnr on))"""
    return [{"image": image, "target_bpp": t, "off": {"bpp": a[0], "psnr": a[1]},
             "on": {"bpp": b[0], "psnr": b[1]}} for t, (a, b) in points.items()]


def test_whole_image_bd_rate_counts_every_image_that_reached_the_targets():
    # "a" reached all three targets and pays nothing for ROI; "b" missed the lowest and pays 10%.
    a = _rows("a", {t: ((t, 30 + 10 * t), (t, 30 + 10 * t)) for t in (0.1, 0.2, 0.4)})
    b = _rows("b", {t: ((t, 20 + 10 * t), (1.1 * t, 20 + 10 * t)) for t in (0.2, 0.4)})
    rows = a + b
    assert targets_every_image_reached(rows, [0.1, 0.2, 0.4], 2) == [0.2, 0.4]
    assert whole_image_bd_rate(rows, [0.1, 0.2, 0.4]) == pytest.approx(0.0, abs=1e-6)  # "a" alone
    both = whole_image_bd_rate(rows, [0.2, 0.4])  # "a" too, though it also has a 0.1 row
    assert 0.5 < both < 10.0
