"""Errors a service raises for a request it cannot serve as asked (an HTTP problem)."""

from __future__ import annotations


class ServiceError(Exception):
    """The message says what to fix; `status` is the HTTP status it maps to."""

    def __init__(self, status: int, title: str, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.title = title
        self.detail = detail
