"""What `codec info` shows of a .lic file: header fields, section sizes, bits per pixel from the
file's size, and the ROI levels' area shares and quality offsets. Reads the container only: no model, no torch."""

from __future__ import annotations

from . import container
from .container import Section
from .roi_map import RoiMap, grid_shape


def read_info(data: bytes) -> dict:
    """Header fields, section sizes and bits per pixel (from the file's size)."""
    c = container.unpack(data, max_pixels=None)
    h = c.header
    roi = None
    if Section.ROI_MAP in c.sections:
        roi = RoiMap.unpack(c.sections[Section.ROI_MAP], grid_shape(h.height, h.width), h.version)
    return {
        "format_version": h.version,
        "model_id": h.model_id,
        "weights_hash": h.weights_hash.hex(),
        "width": h.width,
        "height": h.height,
        "channels": h.channels,
        "gray": h.gray,
        "bit_depth": h.bit_depth,
        "quality": h.quality,
        "bytes": len(data),
        "bpp": 8 * len(data) / (h.width * h.height),
        "sections": {name: size for name, _, size in container.section_spans(data)},
        "roi_area_shares": roi and roi.shares(),
        "roi_quality_offsets": roi and roi.quality_offsets(),
        "synthesis_adapted": Section.SYNTHESIS_ADAPT in c.sections,
        "post_filtered": Section.POST_FILTER in c.sections,
    }
