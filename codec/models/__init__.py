"""The networks and their coders. compressai_parts comes first, before any module here imports
compressai: compressai then loads without the subpackages the codec never uses."""

from .. import compressai_parts  # noqa: F401
