"""codec.compressai_parts: compressai without its unused subpackages, and unchanged for others.

Each case runs in a fresh interpreter: what matters is what an import leaves in sys.modules.
"""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _run(code: str) -> list[str]:
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 0, r.stderr
    return r.stdout.split()


def test_rans_coder_alone_imports_without_torch():
    out = _run("import sys, codec.compressai_parts\n"
               "from compressai.ans import RansDecoder, RansEncoder\n"
               "print('torch' in sys.modules)")
    assert out == ["False"]


def test_the_model_skips_point_clouds_and_the_zoo():
    out = _run("import sys\n"
               "from codec.zoo import load_model\n"
               "lm = load_model(None, encoder=False)\n"
               "print(*(m in sys.modules for m in ('torch_geometric', 'compressai.models.google')),\n"
               "      type(sys.modules['compressai.zoo']).__name__)")
    assert out == ["False", "False", "_LazyModule"]


def test_compressai_still_whole_for_a_program_that_uses_it():
    out = _run("import sys, codec.models.gain_hyperprior\n"
               "import compressai\n"
               "from compressai.zoo import bmshj2018_factorized\n"
               "net = bmshj2018_factorized(quality=1, pretrained=False)\n"
               "print(type(net).__name__, compressai.datasets.ImageFolder.__name__,\n"
               "      compressai.get_entropy_coder(), 'torch_geometric' in sys.modules)")
    assert out == ["FactorizedPrior", "ImageFolder", "ans", "True"]


def test_nothing_changes_where_compressai_came_first():
    out = _run("import compressai, codec.compressai_parts, sys\n"
               "print(type(sys.modules['compressai.zoo']).__name__)")
    assert out == ["module"]
