"""Per-interface settings of the HL7 v2 adapter: what differs between sending systems."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import tzinfo
from zoneinfo import ZoneInfo

from adapters.hl7v2.charset import python_codec
from adapters.hl7v2.segments import FieldPath


@dataclass(frozen=True)
class InterfaceConfig:
    """What differs between sending systems; one per HL7 interface."""

    zone: tzinfo = field(default_factory=lambda: ZoneInfo("Asia/Shanghai"))
    fallback_encoding: str = "utf-8"  # when MSH-18 is empty ("gbk" for many Chinese LIS)
    recognition_mark_field: str | None = None  # e.g. "OBR-46": the 互认标识 per report
    obx_without_sub_id: bool = False  # sender omits OBX-4, shifting OBX-5.. one left

    def __post_init__(self) -> None:
        python_codec(self.fallback_encoding)  # fail at start-up, not on the first message
        if self.recognition_mark_field is not None:
            FieldPath.parse(self.recognition_mark_field)

    @property
    def mark_path(self) -> FieldPath | None:
        field_text = self.recognition_mark_field
        return FieldPath.parse(field_text) if field_text else None
