"""`codec encode | decode | info` — the command line.

Every failure prints one line, `codec: error: ...`, on stderr and exits with the code of its
error class (see codec.errors and the README); --debug shows the traceback instead. Outputs are
written to a temporary file in the target folder and renamed, so a failed run leaves nothing
behind; an existing output is only replaced with --force. `-` is stdin / stdout.
"""

from __future__ import annotations

import io
import json
import os
import sys
import tempfile
from pathlib import Path

import click
from PIL import Image

from .container import DEFAULT_MAX_PIXELS, DEFAULT_QUALITY
from .errors import CodecError, InputError, OutputExistsError
from .file_info import read_info
from .roi_map import DEFAULT_STRENGTH, LEVEL_NAMES

INTERNAL_ERROR = 70


def _read_input(path: str) -> bytes:
    if path == "-":
        return sys.stdin.buffer.read()
    p = Path(path)
    if not p.is_file():
        raise InputError(f"input file not found: {path}")
    return p.read_bytes()


def _check_output(path: str, force: bool) -> Path | None:
    """Refuse an output path before any work is done: an existing file without --force, a
    folder, or a file in a folder that does not exist. Returns the folder (None for stdout)."""
    if path == "-":
        return None
    target = Path(path)
    if target.is_dir() or path.endswith(os.sep):
        raise InputError(f"output is a folder, not a file name: {path}")
    if target.exists() and not force:
        raise OutputExistsError(f"{path} exists (use --force to overwrite)")
    if not target.parent.is_dir():  # Path("x").parent is Path(".")
        raise InputError(f"output folder does not exist: {target.parent}")
    return target.parent


def _write_output(path: str, data: bytes, force: bool) -> None:
    if path == "-":
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()
        return
    folder = _check_output(path, force)  # again: the path may have changed while we worked
    target = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _image_format(path: str) -> str:
    if path == "-":
        return "PNG"
    ext = Path(path).suffix.lower()
    fmt = Image.registered_extensions().get(ext)
    if fmt is None or fmt not in Image.SAVE:
        raise InputError(f"cannot tell an image format from the output name {path!r} "
                         "(use .png, .jpg, .webp, .tif, .bmp, .ppm ...)")
    return fmt


class _Group(click.Group):
    """Turns CodecError (and anything unexpected) into one line on stderr."""

    def invoke(self, ctx):
        debug = bool(ctx.params.get("debug"))
        try:
            return super().invoke(ctx)
        except CodecError as e:
            if debug:
                raise
            click.echo(f"codec: error: {e}", err=True)
            ctx.exit(e.exit_code)
        except (click.exceptions.Exit, click.ClickException, click.Abort):
            raise
        except KeyboardInterrupt:
            click.echo("codec: interrupted", err=True)
            ctx.exit(130)
        except BrokenPipeError:  # the reader went away (`codec info F | head`): stop quietly
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no flush error at exit
            ctx.exit(141)  # 128 + SIGPIPE, as a shell tool killed by it would
        except Exception as e:  # a bug: still one line, with a hint to get the traceback
            if debug:
                raise
            click.echo(f"codec: internal error: {type(e).__name__}: {e} (rerun with --debug)", err=True)
            ctx.exit(INTERNAL_ERROR)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--debug", is_flag=True, help="Show tracebacks instead of one-line errors.")
@click.version_option(package_name="codec")
def main(debug: bool) -> None:
    """A learned image codec. Files use the .lic container (docs/bitstream.md)."""


@main.command()
@click.argument("input", metavar="INPUT")
@click.argument("output", metavar="OUTPUT")
@click.option("-q", "--quality", type=float, default=DEFAULT_QUALITY, show_default=True,
              help="0 (smallest) .. 100 (best); continuous.")
@click.option("--target-bpp", type=float, help="Highest quality whose file is at most this many bits per pixel.")
@click.option("--target-size", type=int, help="Highest quality whose file is at most this many bytes.")
@click.option("--model", default=None, help="Model id (default: the shipped default).")
@click.option("-f", "--force", is_flag=True, help="Overwrite OUTPUT if it exists.")
@click.option("--max-pixels", type=int, default=DEFAULT_MAX_PIXELS, show_default=True)
@click.option("--roi", default="none", show_default=True, metavar="auto|none|MASK.png",
              help="Finer quantisation for faces, text and fine texture (auto) or a level mask.")
@click.option("--roi-strength", type=float, default=DEFAULT_STRENGTH, show_default=True,
              help="0..3: how much finer the ROI levels (and coarser the background) are.")
@click.option("--effort", type=int, default=0, show_default=True,
              help="0 fast; 1 or 2 refine the latent for this image: smaller files at the same "
                   "quality, ~16 s / ~40 s per 768x512 image on 2 cores with native bf16; 3 also "
                   "fits the decoder's synthesis to the image (slowest).")
def encode(input, output, quality, target_bpp, target_size, model, force, max_pixels, roi, roi_strength,
           effort):
    """Encode an image (PNG, JPEG, WebP, TIFF, BMP, PPM ...) to a .lic file."""
    _check_output(output, force)
    if roi not in ("auto", "none") and not Path(roi).is_file():
        raise InputError(f"--roi must be auto, none or a mask file; {roi!r} not found")
    from . import image_codec  # torch: only the commands that code load it

    data = image_codec.encode(_read_input(input), quality=quality, target_bpp=target_bpp,
                              target_size=target_size, model=model, max_pixels=max_pixels,
                              roi=roi, roi_strength=roi_strength, effort=effort)
    _write_output(output, data, force)
    if output != "-":
        info = read_info(data)
        click.echo(f"{output}: {info['bytes']} bytes, {info['bpp']:.4f} bpp, "
                   f"quality {info['quality']:g}", err=True)


@main.command()
@click.argument("input", metavar="INPUT")
@click.argument("output", metavar="OUTPUT")
@click.option("-f", "--force", is_flag=True, help="Overwrite OUTPUT if it exists.")
@click.option("--max-pixels", type=int, default=DEFAULT_MAX_PIXELS, show_default=True)
def decode(input, output, force, max_pixels):
    """Decode a .lic file; the output format follows OUTPUT's extension (PNG for -)."""
    _check_output(output, force)
    fmt = _image_format(output)
    from . import image_codec

    img = image_codec.decode(_read_input(input), max_pixels=max_pixels)
    if fmt == "JPEG" and img.mode == "RGBA":
        raise InputError("JPEG cannot store alpha; decode to .png or .webp")
    buf = io.BytesIO()
    img.save(buf, format=fmt)
    _write_output(output, buf.getvalue(), force)


@main.command()
@click.argument("input", metavar="INPUT")
@click.argument("output", metavar="OUT.png")
@click.option("-f", "--force", is_flag=True, help="Overwrite OUTPUT if it exists.")
def roi(input, output, force):
    """Write the automatic ROI level map of an image as a tinted overlay (faces red, text blue,
    texture green)."""
    from . import analysis, image_io

    _check_output(output, force)
    fmt = _image_format(output)
    src = image_io.load(_read_input(input))
    levels = analysis.auto_levels(src.rgb)
    buf = io.BytesIO()
    analysis.overlay(src.rgb, levels).save(buf, format=fmt)
    _write_output(output, buf.getvalue(), force)
    n = levels.size
    shares = ", ".join(f"{name} {100 * (levels == i).sum() / n:.1f}%"
                       for i, name in enumerate(LEVEL_NAMES))
    click.echo(f"{output}: {shares}" + ("" if analysis.text_available() else
                                        " (text detector not installed: pip install codec[roi])"), err=True)


@main.command()
@click.argument("input", metavar="FILE")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def info(input, as_json):
    """Show a .lic file's header fields, section sizes and bpp."""
    meta = read_info(_read_input(input))
    if as_json:
        click.echo(json.dumps(meta, indent=2))
        return
    for k, v in meta.items():
        if k == "sections":
            click.echo("sections:")
            for name, size in v.items():
                click.echo(f"  {name:<14} {size:>9} bytes")
        elif k == "roi_area_shares":
            if v:
                click.echo("roi area:       " + ", ".join(f"{n} {100 * x:.1f}%" for n, x in v.items()))
        elif k == "roi_quality_offsets":
            if v:
                click.echo("roi offsets:    " + ", ".join(f"{n} {x:+g}" for n, x in v.items()))
        elif k == "bpp":
            click.echo(f"{k:<15} {v:.4f}")
        else:
            click.echo(f"{k:<15} {v}")


if __name__ == "__main__":
    main()
