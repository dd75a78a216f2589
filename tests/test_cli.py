import json
import subprocess
import sys

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

import codec
from codec.cli import main
from conftest import ROOT


@pytest.fixture()
def runner():
    return CliRunner()


@pytest.fixture()
def src(tmp_path, small):
    p = tmp_path / "in.png"
    small.save(p)
    return p


def test_encode_decode_info(runner, tmp_path, src):
    out = tmp_path / "a.lic"
    r = runner.invoke(main, ["encode", str(src), str(out), "-q", "60"])
    assert r.exit_code == 0, r.output
    assert out.stat().st_size > 0
    r = runner.invoke(main, ["info", str(out)])
    assert r.exit_code == 0 and "bpp" in r.output and "LATENT" in r.output
    r = runner.invoke(main, ["info", "--json", str(out)])
    meta = json.loads(r.output)
    assert meta["quality"] == 60 and meta["bytes"] == out.stat().st_size
    for ext in ("png", "jpg", "webp", "bmp", "tif"):
        dec = tmp_path / f"d.{ext}"
        r = runner.invoke(main, ["decode", str(out), str(dec)])
        assert r.exit_code == 0, r.output
        assert Image.open(dec).size == (67, 45)


def test_target_size_option(runner, tmp_path, src):
    out = tmp_path / "t.lic"
    r = runner.invoke(main, ["encode", str(src), str(out), "--target-size", "700"])
    assert r.exit_code == 0, r.output
    assert out.stat().st_size <= 700


def test_effort_option(runner, tmp_path, src):
    fast, slow = tmp_path / "e0.lic", tmp_path / "e1.lic"
    assert runner.invoke(main, ["encode", str(src), str(fast)]).exit_code == 0
    r = runner.invoke(main, ["encode", str(src), str(slow), "--effort", "1"])
    assert r.exit_code == 0, r.output
    assert slow.read_bytes() != fast.read_bytes()
    assert runner.invoke(main, ["decode", str(slow), str(tmp_path / "e1.png")]).exit_code == 0


def _expect_error(r, code, text):
    assert r.exit_code == code, r.output
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("codec: error:") and text in lines[0], r.stderr
    assert "Traceback" not in r.output


def test_error_paths_one_line_and_no_output(runner, tmp_path, src, small_file):
    good = tmp_path / "good.lic"
    good.write_bytes(small_file)
    out = tmp_path / "out.png"
    cases = [
        (["decode", str(src), str(out)], 3, "not a .lic file"),
        (["decode", str(tmp_path / "nope.lic"), str(out)], 2, "not found"),
        (["decode", str(good), str(tmp_path / "x.unknownext")], 2, "image format"),
        (["encode", str(src), str(tmp_path / "o.lic"), "-q", "150"], 2, "quality"),
        (["encode", str(good), str(tmp_path / "o.lic")], 2, "cannot read image"),
        (["encode", str(src), str(tmp_path / "o.lic"), "--target-size", "5"], 6, "smallest file"),
        (["decode", str(good), str(out), "--max-pixels", "10"], 5, "over the limit"),
        (["encode", str(src), str(tmp_path / "nodir" / "o.lic")], 2, "folder does not exist"),
        (["encode", str(src), str(tmp_path / "o.lic"), "--effort", "5"], 2, "effort"),
        (["encode", str(src), str(tmp_path)], 2, "is a folder"),
        (["encode", str(src), str(tmp_path / "o.lic"), "--roi-strength", "9"], 2, "roi strength"),
        (["decode", str(good), str(tmp_path) + "/"], 2, "is a folder"),
        (["encode", str(tmp_path / "empty.lic"), str(tmp_path / "o.lic")], 2, "not an image format"),
    ]
    empty = tmp_path / "empty.lic"
    empty.write_bytes(b"")
    trunc = tmp_path / "trunc.lic"
    trunc.write_bytes(small_file[: len(small_file) // 2])
    flipped = tmp_path / "flip.lic"
    b = bytearray(small_file)
    b[len(b) // 2] ^= 0xFF
    flipped.write_bytes(bytes(b))
    cases += [
        (["decode", str(empty), str(out)], 3, "empty"),
        (["decode", str(trunc), str(out)], 3, "truncated"),
        (["decode", str(flipped), str(out)], 3, "CRC mismatch"),
    ]
    for args, code, text in cases:
        _expect_error(runner.invoke(main, args), code, text)
        assert not out.exists() and not (tmp_path / "o.lic").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        ["in.png", "good.lic", "empty.lic", "trunc.lic", "flip.lic"])  # no temp files left


def test_existing_output_needs_force(runner, tmp_path, src):
    out = tmp_path / "a.lic"
    out.write_bytes(b"keep")
    _expect_error(runner.invoke(main, ["encode", str(src), str(out)]), 7, "--force")
    assert out.read_bytes() == b"keep"
    assert runner.invoke(main, ["encode", "-f", str(src), str(out)]).exit_code == 0
    assert out.read_bytes().startswith(codec.container.MAGIC)


def test_stdin_stdout(runner, src):
    r = runner.invoke(main, ["encode", "-", "-"], input=src.read_bytes())
    assert r.exit_code == 0
    data = r.stdout_bytes
    assert data.startswith(codec.container.MAGIC)
    r = runner.invoke(main, ["decode", "-", "-"], input=data)
    assert r.exit_code == 0 and r.stdout_bytes.startswith(b"\x89PNG")


def test_real_subprocess(tmp_path, src):
    out, dec = tmp_path / "a.lic", tmp_path / "a.png"
    exe = [sys.executable, "-m", "codec.cli"]
    r = subprocess.run(exe + ["encode", str(src), str(out)], capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 0, r.stderr
    r = subprocess.run(exe + ["decode", str(out), str(dec)], capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 0 and Image.open(dec).size == (67, 45)
    r = subprocess.run(exe + ["decode", str(src), str(tmp_path / "b.png")], capture_output=True, text=True,
                       cwd=ROOT)
    assert r.returncode == 3
    assert r.stderr.strip().count("\n") == 0 and r.stderr.startswith("codec: error:")
    assert not (tmp_path / "b.png").exists()


def test_console_script(tmp_path, src):
    from pathlib import Path

    exe = Path(sys.executable).parent / "codec"
    if not exe.exists():
        pytest.skip("console script not installed in this environment")
    r = subprocess.run([str(exe), "encode", str(src), str(tmp_path / "c.lic")], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    r = subprocess.run([str(exe), "info", str(tmp_path / "c.lic")], capture_output=True, text=True)
    assert r.returncode == 0 and "model_id" in r.stdout


def test_help_and_info_do_not_import_torch(small_file, tmp_path):
    f = tmp_path / "a.lic"
    f.write_bytes(small_file)
    # The same as `codec info F`, then a look at what got imported.
    code = ("import sys; from codec.cli import main\n"
            "try:\n    main(['info', sys.argv[1]])\nexcept SystemExit:\n    pass\n"
            "print('torch' in sys.modules, 'compressai' in sys.modules)")
    r = subprocess.run([sys.executable, "-c", code, str(f)], capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 0, r.stderr
    assert "model_id" in r.stdout and r.stdout.splitlines()[-1] == "False False"


def test_a_closed_pipe_stops_quietly(small_file, tmp_path):
    f = tmp_path / "a.lic"
    f.write_bytes(small_file)
    p = subprocess.Popen([sys.executable, "-m", "codec.cli", "info", str(f)], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, cwd=ROOT)
    p.stdout.close()  # before the process gets to write: `codec info F | head -0`
    err = p.stderr.read().decode()
    assert p.wait() == 141 and err == "", err


def test_info_shows_the_roi_levels(runner, tmp_path, src):
    mask = np.zeros((45, 67), np.uint8)
    mask[10:30, 20:50] = 255  # face level
    Image.fromarray(mask).save(tmp_path / "m.png")
    out = tmp_path / "a.lic"
    r = runner.invoke(main, ["encode", str(src), str(out), "--roi", str(tmp_path / "m.png")])
    assert r.exit_code == 0, r.output
    r = runner.invoke(main, ["info", str(out)])
    assert "roi area:" in r.output and "face" in r.output
    offsets = next(line for line in r.output.splitlines() if line.startswith("roi offsets:"))
    assert "background -6.25" in offsets and "face +" in offsets
