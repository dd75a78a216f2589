"""Every failure the library reports is a CodecError; the CLI maps each class to an exit code."""


class CodecError(Exception):
    """Base class. `exit_code` is what the `codec` command exits with."""

    exit_code = 1


class InputError(CodecError):
    """The input image or an argument is unusable (unreadable file, bad quality, bad mask...)."""

    exit_code = 2


class FormatError(CodecError):
    """The data is not a well-formed codec file (wrong magic, malformed header or section)."""

    exit_code = 3


class CorruptFileError(FormatError):
    """A CRC mismatch or truncation: the file was damaged after it was written."""


class UnsupportedError(FormatError):
    """A newer format version or a critical section type this decoder does not know."""


class ModelNotAvailableError(CodecError):
    """The file names a model (id + weights hash) that is not installed."""

    exit_code = 4


class ImageTooLargeError(CodecError):
    """Width x height exceeds the pixel limit (raise it with max_pixels / --max-pixels)."""

    exit_code = 5


class RateControlError(CodecError):
    """No quality setting lands at or under the requested size."""

    exit_code = 6


class OutputExistsError(CodecError):
    """The output file exists and overwriting was not allowed (CLI: --force)."""

    exit_code = 7
