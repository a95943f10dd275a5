"""What mrb refuses to do, in its own terms.

Services raise these; each edge maps them once: the REST API to problem+json
(broker/api/problems.py, which also serves the FHIR and CDS Hooks routes) and the CLI to
exit status 2 with the message. No service knows an HTTP status.
"""

from __future__ import annotations


class Refused(Exception):
    """A request mrb will not serve as asked; `title` names the refusal, `detail` says
    what to fix (never a patient identifier). `issue`: the FHIR R4 issue-type code, set by
    the FHIR use cases (their OperationOutcome tells `invalid` from `not-supported`)."""

    retriable = False  # True: the same request may succeed later, unchanged

    def __init__(self, title: str, detail: str, *, issue: str | None = None) -> None:
        super().__init__(detail)
        self.title = title
        self.detail = detail
        self.issue = issue


class Invalid(Refused):
    """The request breaks a rule of its own (a value, a shape, an item out of range)."""


class NotFound(Refused):
    """What the request names does not exist (or is not the caller's to know of)."""


class NotAllowed(Refused):
    """The caller's role, hospital or account does not allow this."""


class Unauthenticated(Refused):
    """The caller did not prove who they are (no, expired or revoked credentials)."""


class Conflict(Refused):
    """The state already holds something else (an outcome recorded, a result changed)."""


class Gone(Refused):
    """What the request names existed but can no longer be served (withdrawn, or its
    payload purged under the retention policy)."""


class PreconditionFailed(Refused):
    """Data the request depends on and should have brought cannot be had (CDS prefetch)."""


class Unavailable(Refused):
    """A collaborator mrb needs for this answer cannot be reached now; try again later.
    Storage raises it for an outage (broker/storage/outage.py), so that callers keep their
    work and retry by this flag rather than by a driver's exception types."""

    retriable = True


class TooManyRequests(Refused):
    """Over a rate limit; `retry_after` whole seconds."""

    def __init__(
        self, title: str, detail: str, retry_after: int, *, issue: str | None = None
    ) -> None:
        super().__init__(title, detail, issue=issue)
        self.retry_after = retry_after


def retriable(exc: BaseException) -> bool:
    """True when `exc` says: keep the work and try it again later."""
    return bool(getattr(exc, "retriable", False))
