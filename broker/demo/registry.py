"""The demo hospitals' registry entries: grades, alliance and QC certifications.

Chosen so the sample shows every decision: H001 and H003 share the Luzhou medical
alliance; H002's haematology certification lapsed two months ago; H003 (二级) is only
certified for chemistry and ultrasound; H004 in Nanjing holds a Jiangsu certificate,
whose mark (苏HR) does not cover Luzhou; H005 in Chongqing holds a Chongqing certificate
and marks its results 川渝HR, which crosses into Sichuan under the 川渝 agreement.
"""

from __future__ import annotations

from datetime import date, timedelta

from broker.demo.dataset import DemoHospital
from broker.domain.registry import Certification, CertifyingBody
from broker.storage.hospitals import Hospital

LAB_GROUPS = ("HEMATOLOGY", "CHEMISTRY", "IMMUNOLOGY", "COAGULATION", "URINALYSIS", "TUMOR_MARKERS")
IMAGING_GROUPS = ("CT", "MR", "DR", "US", "MG")
ALLIANCE = "LZ-YLT-1"  # 泸州市医联体

_PROFILE = {  # id -> (grade, ownership, alliances)
    "H001": ("甲", "public", frozenset({ALLIANCE})),
    "H002": ("甲", "public", frozenset()),
    "H003": ("乙", "public", frozenset({ALLIANCE})),
    "H004": (None, "private", frozenset()),
    "H005": ("甲", "public", frozenset()),  # Chongqing: the 川渝 agreement's other side
}


def hospitals(demo: tuple[DemoHospital, ...]) -> list[Hospital]:
    out = []
    for h in demo:
        grade, ownership, alliances = _PROFILE.get(h.id, (None, "public", frozenset()))
        out.append(
            Hospital(
                h.id,
                h.name,
                h.region,
                h.level,
                grade=grade,
                ownership=ownership,
                alliances=alliances,
            )
        )
    return out


def certifications(today: date) -> list[Certification]:
    year_ago, in_a_year = today - timedelta(days=400), today + timedelta(days=365)
    lapsed = today - timedelta(days=60)
    national, provincial = CertifyingBody.NATIONAL_EQA, CertifyingBody.PROVINCIAL_EQA
    imaging = CertifyingBody.PROVINCIAL_IMAGING_QC
    certs = [Certification("H001", g, national, year_ago, in_a_year) for g in LAB_GROUPS]
    certs += [Certification("H001", g, imaging, year_ago, in_a_year) for g in IMAGING_GROUPS]
    certs += [
        Certification("H002", g, provincial, year_ago, lapsed if g == "HEMATOLOGY" else in_a_year)
        for g in LAB_GROUPS
    ]
    certs += [Certification("H002", g, imaging, year_ago, in_a_year) for g in IMAGING_GROUPS]
    certs += [
        Certification("H003", "CHEMISTRY", provincial, year_ago, in_a_year),
        Certification("H003", "US", imaging, year_ago, in_a_year),
        Certification("H003", "DR", imaging, year_ago, in_a_year),
    ]
    certs += [
        Certification("H004", g, provincial, year_ago, in_a_year)
        for g in ("HEMATOLOGY", "CHEMISTRY")
    ]
    certs += [Certification("H005", g, provincial, year_ago, in_a_year) for g in LAB_GROUPS]
    return certs
