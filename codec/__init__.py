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

from .container import DEFAULT_MAX_PIXELS, EXTENSION, FORMAT_VERSION
from .errors import (CodecError, CorruptFileError, FormatError, ImageTooLargeError, InputError,
                     ModelNotAvailableError, OutputExistsError, RateControlError, UnsupportedError)
from .image_codec import DEFAULT_QUALITY, decode, encode, read_info
from .zoo import available_models, load_model

__version__ = "0.1.0"

__all__ = [
    "encode", "decode", "read_info", "load_model", "available_models",
    "DEFAULT_QUALITY", "DEFAULT_MAX_PIXELS", "EXTENSION", "FORMAT_VERSION",
    "CodecError", "InputError", "FormatError", "CorruptFileError", "UnsupportedError",
    "ModelNotAvailableError", "ImageTooLargeError", "RateControlError", "OutputExistsError",
]
