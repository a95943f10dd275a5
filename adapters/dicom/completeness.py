"""Tell a complete DICOM object from a truncated one without reading its pixels.

The reader stops at Pixel Data; what it saw of the top-level elements (where each
defined-length value would end, where Pixel Data starts and how long it says it is) is
compared with the bytes actually there (PS3.5 7.1 data elements, A.4 encapsulation,
8.1.1 native pixel data).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, BinaryIO

from pydicom.dataset import Dataset

from adapters.dicom.errors import DicomErrorCode, DicomInputError
from adapters.dicom.values import get, has, integer

PIXEL_TAGS = frozenset({0x7FE00008, 0x7FE00009, 0x7FE00010})
UNDEFINED = 0xFFFFFFFF


@dataclass
class Extent:
    """What the reader saw of top-level elements: where values end, where it stopped."""

    value_end: int = 0  # the furthest byte a defined-length value claims
    last_end: int | None = None  # where the last element ends (None: undefined length)
    stop_tag: int | None = None
    stop_offset: int = 0
    stop_length: int = 0


def check_complete(fp: BinaryIO, ds: Dataset, extent: Extent, size: int) -> None:
    """Raise DICOM_TRUNCATED when the object is shorter than its own elements declare."""
    truncated = DicomErrorCode.TRUNCATED
    if extent.value_end > size:
        what = "pixel data" if extent.stop_tag in PIXEL_TAGS else "an element"
        raise DicomInputError(
            truncated,
            f"{what} declares {extent.value_end - size} bytes more than the object holds; "
            "send the object again from the modality or archive",
        )
    if extent.stop_tag is None:
        if extent.last_end is not None and extent.last_end < size:
            raise DicomInputError(truncated, "the object ends inside an element header")
        if has(ds, "Rows") and has(ds, "Columns"):
            raise DicomInputError(truncated, "an image that ends before its pixel data")
        return
    if extent.stop_tag != 0x7FE00010:
        return
    if extent.stop_length == UNDEFINED:
        if not _fragments_complete(fp, extent.stop_offset, size, _little_endian(ds)):
            raise DicomInputError(
                truncated, "encapsulated pixel data ends before its sequence delimiter"
            )
        return
    expected = _native_pixel_bytes(ds)
    if expected is not None and extent.stop_length < expected:
        raise DicomInputError(
            truncated,
            f"pixel data holds {extent.stop_length} of the {expected} bytes its image "
            "attributes need; send the object again",
        )


def _little_endian(ds: Dataset) -> bool:
    little = ds.original_encoding[1]
    return True if little is None else bool(little)


def _fragments_complete(fp: BinaryIO, offset: int, size: int, little: bool) -> bool:
    """Walk the items of encapsulated pixel data (PS3.5 A.4) up to the delimiter."""
    order: Any = "little" if little else "big"
    pos = offset
    while pos + 8 <= size:
        fp.seek(pos)
        head = fp.read(8)
        group = int.from_bytes(head[0:2], order)
        elem = int.from_bytes(head[2:4], order)
        length = int.from_bytes(head[4:8], order)
        if (group, elem) == (0xFFFE, 0xE0DD):
            return True
        if (group, elem) != (0xFFFE, 0xE000) or length == UNDEFINED:
            return False
        pos += 8 + length
    return False


def _native_pixel_bytes(ds: Dataset) -> int | None:
    """Bytes that uncompressed pixel data needs (PS3.5 8.1.1); None when not computable."""
    rows, cols = integer(get(ds, "Rows")), integer(get(ds, "Columns"))
    bits = integer(get(ds, "BitsAllocated"))
    if not rows or not cols or not bits:
        return None
    samples = integer(get(ds, "SamplesPerPixel")) or 1
    frames = integer(get(ds, "NumberOfFrames")) or 1
    return (rows * cols * samples * frames * bits + 7) // 8
