"""FHIR date, dateTime and instant values as aware datetimes."""

from __future__ import annotations

from datetime import datetime, tzinfo


class FhirTimeError(ValueError):
    """A value that is not a FHIR date, dateTime or instant."""


def parse_fhir_datetime(value: object, zone: tzinfo) -> tuple[datetime | None, bool]:
    """Return (aware datetime, zone_assumed) for a FHIR date/dateTime string.

    Partial dates (YYYY, YYYY-MM) take the first instant of the period; a time without
    an offset takes the sending hospital's zone, and the flag says so.
    """
    if value is None:
        return None, False
    if not isinstance(value, str) or not value.strip():
        raise FhirTimeError(f"expected a FHIR dateTime string, got {type(value).__name__}")
    text = value.strip()
    try:
        if len(text) == 4:
            parsed = datetime(int(text), 1, 1)
        elif len(text) == 7:
            parsed = datetime(int(text[:4]), int(text[5:7]), 1)
        else:
            parsed = datetime.fromisoformat(text)
    except ValueError:
        raise FhirTimeError(f"not a FHIR date or dateTime: {text[:40]!r}") from None
    if parsed.tzinfo is None:
        return parsed.replace(tzinfo=zone), True
    return parsed, False
