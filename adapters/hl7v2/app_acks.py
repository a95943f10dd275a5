"""Enhanced mode's application ACKs, sent once the broker's receipts say what happened.

The commit ACK (CA) only says "stored"; when MSH-16 asks for it, the sender also wants
to know whether the result was indexed (AA) or refused (AE, naming the broker's code).
HL7 sends that as a message of its own to the sender's listener (`--ack-to`). Waiting
ACKs are kept in memory: after a restart the outbox still delivers everything, but
application ACKs not yet sent are not sent.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Mapping
from dataclasses import dataclass

from adapters.common.publisher import Receipt
from adapters.hl7v2.ack import AckOptions, application_ack, encode
from adapters.hl7v2.errors import Hl7ErrorCode, Hl7MappingError
from adapters.hl7v2.intake import Accepted
from adapters.hl7v2.mllp import frame
from adapters.hl7v2.msh import MessageHeader

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class _Waiting:
    header: MessageHeader
    encoding: str
    message_ids: tuple[str, ...]


class ApplicationAcks:
    def __init__(self, target: tuple[str, int] | None, options: AckOptions | None = None) -> None:
        self.target = target  # the sender's own MLLP listener
        self.options = options or AckOptions()
        self._waiting: list[_Waiting] = []
        self._receipts: dict[str, Receipt] = {}  # of waiting messages, across deliveries
        self.sent = 0

    def expect(self, accepted: Accepted) -> None:
        """Remember a stored message whose sender wants an application ACK."""
        h = accepted.header
        if h is None or accepted.error is not None or not accepted.message_ids:
            return
        if not h.enhanced_mode or (h.application_ack_type or "NE") == "NE":
            return
        if self.target is None:
            logger.warning(
                "message %s asks for an application ACK (MSH-16 %s) but no --ack-to is set",
                h.control_id or "?",
                h.application_ack_type,
            )
            return
        self._waiting.append(_Waiting(h, accepted.encoding, accepted.message_ids))

    def due(self, receipts: Mapping[str, Receipt]) -> list[tuple[_Waiting, bytes]]:
        """The ACKs (framed) of messages whose every report now has a receipt."""
        out: list[tuple[_Waiting, bytes]] = []
        for w in self._waiting:
            got = [receipts.get(i) for i in w.message_ids]
            if any(r is None for r in got):
                continue
            refused = [r for r in got if r is not None and r.outcome == "rejected"]
            error = (
                Hl7MappingError(
                    Hl7ErrorCode.BROKER_REJECTED,
                    "; ".join(f"{r.error_code}: {r.error_detail}" for r in refused)[:400],
                )
                if refused
                else None
            )
            text = application_ack(w.header, error, self.options)
            out.append((w, frame(encode(text, w.encoding)) if text else b""))
        return out

    async def send(self, receipts: Mapping[str, Receipt]) -> int:
        """Send what is due to the sender's listener; kept for the next try on failure."""
        wanted = {i for w in self._waiting for i in w.message_ids}
        self._receipts.update({k: r for k, r in receipts.items() if k in wanted})
        acks = self.due(self._receipts)
        if not acks or self.target is None:
            return 0
        done: list[_Waiting] = [w for w, ack in acks if not ack]
        try:
            reader, writer = await asyncio.open_connection(*self.target)
            try:
                for w, ack in acks:
                    if not ack:
                        continue
                    writer.write(ack)
                    await writer.drain()
                    # The sender may answer our ACK with a commit ACK of its own.
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(reader.readuntil(b"\x1c\x0d"), 2)
                    done.append(w)
                    self.sent += 1
            finally:
                writer.close()
                await writer.wait_closed()
        except (OSError, asyncio.IncompleteReadError) as exc:
            logger.warning("application ACKs not delivered to %s (retried): %r", self.target, exc)
        self._waiting = [w for w in self._waiting if w not in done]
        for w in done:
            for i in w.message_ids:
                self._receipts.pop(i, None)
        return self.sent
