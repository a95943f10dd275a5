"""Web pages: static files that use the JSON API with the signed-in user's session
(cookie + CSRF header, broker/api/routes/auth.py)."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import FileResponse

STATIC = Path(__file__).resolve().parents[2] / "web" / "static"
router = APIRouter(tags=["pages"], include_in_schema=False)
# The page loads only its own script and style and talks only to this origin.
_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


@router.get("/login")
async def login_page() -> FileResponse:
    """Sign in with a local account; then on to the page of the user's role."""
    return FileResponse(STATIC / "login.html", headers=_HEADERS)


@router.get("/doctor")
async def doctor_page() -> FileResponse:
    """Safety notices, and a check with recognise / decline for each item."""
    return FileResponse(STATIC / "doctor.html", headers=_HEADERS)


@router.get("/finance")
async def finance_page() -> FileResponse:
    """Savings over time, by hospital, item and decline reason, as charts."""
    return FileResponse(STATIC / "finance.html", headers=_HEADERS)


@router.get("/admin")
async def admin_page() -> FileResponse:
    """Hospitals, QC certifications, the unmapped-code worklist, tokens, identity reviews
    and the catalog, each for the roles the API grants it."""
    return FileResponse(STATIC / "admin.html", headers=_HEADERS)
