"""A short fuzz run; the long one is `python -m scripts.fuzz_decoder --cases 5000`."""

from scripts.fuzz_decoder import mutate, run, seeds
from conftest import ASSETS


def test_short_fuzz_run_has_only_images_or_codec_errors():
    res = run(cases=150, seed=1234)
    assert not res["unexpected"], res["unexpected"]
    assert not res["slow"], res["slow"]
    assert sum(res["outcomes"].values()) == 150
    # The run must exercise both the container checks and the decoder behind them.
    assert res["outcomes"]["CorruptFileError"] > 0
    assert len(res["by_mutation"]) >= 10


def test_mutations_change_the_file():
    import random

    rng = random.Random(0)
    data = seeds(ASSETS / "chelsea.png")[0]
    changed = sum(mutate(data, rng)[1] != data for _ in range(50))
    assert changed >= 45
