"""codec: a learned image codec (gain hyperprior + rANS) with a small, documented container.

    >>> import codec
    >>> data = codec.encode("photo.png", quality=50)   # bytes of a .lic file
    >>> img = codec.decode(data)                        # PIL.Image.Image
    >>> codec.read_info(data)["bpp"]
"""

import warnings

# compressai 1.2.8 calls torch.jit.script at import, which torch 2.14 flags as deprecated; the
# warning would otherwise land on every CLI user's stderr.
warnings.filterwarnings("ignore", message=r".*torch\.jit\.script.*", category=FutureWarning)

import importlib

from .container import DEFAULT_MAX_PIXELS, DEFAULT_QUALITY, EXTENSION, FORMAT_VERSION
from .errors import (CodecError, CorruptFileError, FormatError, ImageTooLargeError, InputError,
                     ModelNotAvailableError, OutputExistsError, RateControlError, UnsupportedError)
from .file_info import read_info

__version__ = "0.1.0"

# torch and compressai take ~3.4 s to import (README, Precision and speed), so the parts that
# need them load on first use: `codec --help` and `codec info` never pay it.
_LAZY = {"encode": "image_codec", "decode": "image_codec", "load_model": "zoo",
         "available_models": "zoo"}


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    if not name.startswith("_"):  # a submodule, e.g. codec.image_codec before anything imported it
        try:
            return importlib.import_module(f".{name}", __name__)
        except ModuleNotFoundError as e:
            if e.name != f"{__name__}.{name}":
                raise
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

__all__ = [
    "encode", "decode", "read_info", "load_model", "available_models",
    "DEFAULT_QUALITY", "DEFAULT_MAX_PIXELS", "EXTENSION", "FORMAT_VERSION",
    "CodecError", "InputError", "FormatError", "CorruptFileError", "UnsupportedError",
    "ModelNotAvailableError", "ImageTooLargeError", "RateControlError", "OutputExistsError",
]
