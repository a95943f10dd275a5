"""DICOM body part, laterality and modality terms as the FHIR codings mrb indexes.

Body Part Examined (0018,0015) defined terms map to SNOMED CT following DICOM PS3.16
Annex L (Table L-1, the correspondence of CID 4031 "Common Anatomic Regions" and the
Body Part Examined defined terms). Where the broker's item catalog
(schemas/catalog/catalog.yaml) spells the same region with an equivalent SNOMED CT
concept, the catalog's code is emitted so the study matches the catalog item; the
Annex L code is kept in `annex_l_code` (docs/adapters.md (DICOM) lists both).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

SNOMED = "http://snomed.info/sct"
DCM = "http://dicom.nema.org/resources/ontology/DCM"


@dataclass(frozen=True)
class BodyPart:
    """A body region as a SNOMED CT coding (ImagingStudy.series.bodySite)."""

    code: str
    display: str
    annex_l_code: str | None = None  # PS3.16 Annex L code when the emitted one differs

    def coding(self) -> dict[str, str]:
        return {"system": SNOMED, "code": self.code, "display": self.display}


def _bp(code: str, display: str, annex_l: str | None = None) -> BodyPart:
    return BodyPart(code, display, annex_l)


# Defined term -> SNOMED CT. Current Annex L codes, except CHEST/THORAX and ABDOMEN, where
# the mrb catalog uses 51185008 (Thorax; Annex L before 2019) and 818983003 (Abdomen).
BODY_PARTS: Mapping[str, BodyPart] = {
    "HEAD": _bp("69536005", "Head"),
    "BRAIN": _bp("12738006", "Brain"),
    "SKULL": _bp("89546000", "Skull"),
    "HEADNECK": _bp("774007", "Head and Neck"),
    "NECK": _bp("45048000", "Neck"),
    "ORBIT": _bp("363654007", "Orbital structure"),
    "IAC": _bp("361078006", "Internal Auditory Canal"),
    "SELLA": _bp("42575006", "Sella turcica"),
    "JAW": _bp("661005", "Jaw region"),
    "TMJ": _bp("53620006", "Temporomandibular joint"),
    "THYROID": _bp("69748006", "Thyroid"),
    "CHEST": _bp("51185008", "Thorax", annex_l="43799004"),
    "THORAX": _bp("51185008", "Thorax", annex_l="43799004"),
    "LUNG": _bp("39607008", "Lung"),
    "HEART": _bp("80891009", "Heart"),
    "BREAST": _bp("76752008", "Breast"),
    "MEDIASTINUM": _bp("72410000", "Mediastinum"),
    "RIB": _bp("113197003", "Rib"),
    "STERNUM": _bp("56873002", "Sternum"),
    "CLAVICLE": _bp("51299004", "Clavicle"),
    "ABDOMEN": _bp("818983003", "Abdomen", annex_l="818981001"),
    "ABDOMENPELVIS": _bp("818982008", "Abdomen and Pelvis"),
    "CHESTABDOMEN": _bp("416550000", "Chest and Abdomen"),
    "CHESTABDPELVIS": _bp("416775004", "Chest, Abdomen and Pelvis"),
    "NECKCHEST": _bp("417437006", "Neck and Chest"),
    "PELVIS": _bp("816092008", "Pelvis"),
    "LIVER": _bp("10200004", "Liver"),
    "GALLBLADDER": _bp("28231008", "Gallbladder"),
    "PANCREAS": _bp("15776009", "Pancreas"),
    "SPLEEN": _bp("78961009", "Spleen"),
    "KIDNEY": _bp("64033007", "Kidney"),
    "BLADDER": _bp("89837001", "Bladder"),
    "PROSTATE": _bp("41216001", "Prostate"),
    "UTERUS": _bp("35039007", "Uterus"),
    "OVARY": _bp("15497006", "Ovary"),
    "STOMACH": _bp("69695003", "Stomach"),
    "COLON": _bp("71854001", "Colon"),
    "SPINE": _bp("421060004", "Spine"),
    "CSPINE": _bp("122494005", "Cervical spine"),
    "TSPINE": _bp("122495006", "Thoracic spine"),
    "LSPINE": _bp("122496007", "Lumbar spine"),
    "LSSPINE": _bp("1217253001", "Lumbo-sacral spine"),
    "SSPINE": _bp("54735007", "Sacrum"),
    "COCCYX": _bp("64688005", "Coccyx"),
    "SHOULDER": _bp("16982005", "Shoulder"),
    "UPPERARM": _bp("40983000", "Upper arm"),
    "HUMERUS": _bp("85050009", "Humerus"),
    "ELBOW": _bp("16953009", "Elbow joint"),
    "FOREARM": _bp("14975008", "Forearm"),
    "WRIST": _bp("74670003", "Wrist joint"),
    "HAND": _bp("85562004", "Hand"),
    "FINGER": _bp("7569003", "Finger"),
    "HIP": _bp("24136001", "Hip joint"),
    "FEMUR": _bp("71341001", "Femur"),
    "THIGH": _bp("68367000", "Thigh"),
    "KNEE": _bp("72696002", "Knee"),
    "PATELLA": _bp("64234005", "Patella"),
    "LOWERLEG": _bp("30021000", "Lower leg"),
    "TIBIA": _bp("12611008", "Tibia"),
    "ANKLE": _bp("70258002", "Ankle joint"),
    "FOOT": _bp("56459004", "Foot"),
    "CALCANEUS": _bp("80144004", "Calcaneus"),
    "EXTREMITY": _bp("66019005", "Extremity"),
    "UPPERLIMB": _bp("53120007", "Upper limb"),
    "LOWERLIMB": _bp("61685007", "Lower limb"),
    "WHOLEBODY": _bp("38266002", "Entire body"),
}

# Spellings seen from modalities that are not defined terms (compared after _normal()).
ALIASES: Mapping[str, str] = {
    "CERVICALSPINE": "CSPINE",
    "THORACICSPINE": "TSPINE",
    "LUMBARSPINE": "LSPINE",
    "LUMBOSACRALSPINE": "LSSPINE",
    "SACRUM": "SSPINE",
    "ABDOMENANDPELVIS": "ABDOMENPELVIS",
    "ABD": "ABDOMEN",
    "HEADANDNECK": "HEADNECK",
    "BREASTS": "BREAST",
    "KNEES": "KNEE",
    "WRISTS": "WRIST",
    "HANDS": "HAND",
    "ENTIREBODY": "WHOLEBODY",
    # Chinese PACS often write the region in Chinese despite CS being ASCII-only.
    "头": "HEAD",
    "头部": "HEAD",
    "头颅": "HEAD",
    "颅脑": "BRAIN",
    "脑": "BRAIN",
    "胸": "CHEST",
    "胸部": "CHEST",
    "腹": "ABDOMEN",
    "腹部": "ABDOMEN",
    "盆腔": "PELVIS",
    "颈椎": "CSPINE",
    "胸椎": "TSPINE",
    "腰椎": "LSPINE",
    "膝": "KNEE",
    "膝关节": "KNEE",
    "肩": "SHOULDER",
    "肩关节": "SHOULDER",
    "腕": "WRIST",
    "腕关节": "WRIST",
    "手": "HAND",
    "甲状腺": "THYROID",
    "乳腺": "BREAST",
    "心脏": "HEART",
}

# SNOMED CT codes (e.g. from Anatomic Region Sequence) the catalog spells differently.
CATALOG_EQUIVALENTS: Mapping[str, str] = {
    "43799004": "51185008",  # Chest (Annex L today) -> Thorax (catalog)
    "818981001": "818983003",  # Abdomen (Annex L today) -> Abdomen (catalog)
    "113345001": "818983003",  # Abdominal structure (Annex L before 2019, inactive)
}

_SEPARATORS = re.compile(r"[\s\-_.,/]+")


def _normal(term: str) -> str:
    return _SEPARATORS.sub("", term.strip().upper())


def body_part(term: str | None, overrides: Mapping[str, BodyPart] | None = None) -> BodyPart | None:
    """The SNOMED CT region for a Body Part Examined (0018,0015) value, if known.

    `overrides` (keyed by the value as a site's modalities send it, or a defined term)
    win over the standard table, for a hospital's local habits.
    """
    if not term or not term.strip():
        return None
    key = _normal(term)
    if overrides:
        normal_overrides = {_normal(k): v for k, v in overrides.items()}
        if key in normal_overrides:
            return normal_overrides[key]
    return BODY_PARTS.get(ALIASES.get(key, key))


def region_from_code(scheme: str, code: str, meaning: str | None) -> BodyPart | None:
    """A body region from an Anatomic Region Sequence (0008,2218) item coded in SNOMED CT."""
    if scheme.upper() not in ("SCT", "SNM3", "SNOMED") or not code.isdigit():
        return None  # SNOMED-RT ("SRT", e.g. T-D3000) has no table here
    emitted = CATALOG_EQUIVALENTS.get(code, code)
    for part in BODY_PARTS.values():
        if part.code == emitted:
            return part
    return BodyPart(emitted, meaning or emitted, code if emitted != code else None)


@dataclass(frozen=True)
class Side:
    """A laterality as SNOMED CT (ImagingStudy.series.laterality)."""

    code: str
    display: str

    def coding(self) -> dict[str, str]:
        return {"system": SNOMED, "code": self.code, "display": self.display}


# Laterality (0020,0060) / Image Laterality (0020,0062) enumerated values; U (unpaired)
# says nothing about a side.
SIDES: Mapping[str, Side] = {
    "R": Side("24028007", "Right"),
    "L": Side("7771000", "Left"),
    "B": Side("51440002", "Right and left"),
}


def side(value: str | None) -> Side | None:
    """The SNOMED CT side for R, L or B; None for U, empty or unknown values."""
    if not value:
        return None
    return SIDES.get(value.strip().upper()[:1])


def modality_coding(modality: str | None) -> dict[str, str]:
    """A DICOM modality (0008,0060) as a DCM coding; OT (other) when the header has none.

    DX and CR stay as sent: the broker treats both as DR (digital radiography).
    """
    code = (modality or "").strip().upper() or "OT"
    return {"system": DCM, "code": code}
