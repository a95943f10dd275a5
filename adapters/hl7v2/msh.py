"""The MSH segment read straight from the text, before (or without) a full parse.

The ACK must echo MSH fields even when the rest of the message is unreadable, and the
character set (MSH-18) must be known before the bytes can be decoded, so this reader
splits the first segment itself and never fails on what follows it.
"""

from __future__ import annotations

from dataclasses import dataclass

DEFAULT_ENCODING_CHARS = "^~\\&"


@dataclass(frozen=True)
class MessageHeader:
    """MSH fields as sent (still HL7-escaped), indexed like the standard (MSH-3 = [3])."""

    fields: tuple[str, ...]  # fields[0] = "MSH", [1] = field separator, [2] = encoding chars

    @property
    def field_sep(self) -> str:
        return self.fields[1]

    @property
    def encoding_chars(self) -> str:
        chars = self.fields[2]
        return chars if len(chars) >= 4 else (chars + DEFAULT_ENCODING_CHARS[len(chars) :])

    @property
    def component_sep(self) -> str:
        return self.encoding_chars[0]

    @property
    def repetition_sep(self) -> str:
        return self.encoding_chars[1]

    def get(self, n: int) -> str:
        """MSH-n as sent, '' when absent."""
        return self.fields[n] if n < len(self.fields) else ""

    def component(self, n: int, c: int = 1) -> str:
        """The c-th component of the first repetition of MSH-n."""
        first = self.get(n).split(self.repetition_sep)[0]
        parts = first.split(self.component_sep)
        return parts[c - 1].strip() if c <= len(parts) else ""

    @property
    def message_code(self) -> str:
        return self.component(9, 1).upper()  # MSH-9.1, e.g. ORU

    @property
    def trigger_event(self) -> str:
        return self.component(9, 2).upper()  # MSH-9.2, e.g. R01

    @property
    def control_id(self) -> str:
        return self.get(10).strip()  # MSH-10

    @property
    def version(self) -> str:
        return self.component(12, 1)  # MSH-12.1 (VID)

    @property
    def accept_ack_type(self) -> str:
        return self.get(15).strip().upper()  # MSH-15, table 0155

    @property
    def application_ack_type(self) -> str:
        return self.get(16).strip().upper()  # MSH-16, table 0155

    @property
    def charset(self) -> str:
        return self.component(18, 1)  # MSH-18, first repetition: the default charset

    @property
    def enhanced_mode(self) -> bool:
        """HL7 2.9: both MSH-15 and MSH-16 empty means original acknowledgment mode."""
        return bool(self.accept_ack_type or self.application_ack_type)


def read_header(text: str) -> MessageHeader | None:
    """The MSH of a message whose text starts with it (leading whitespace allowed)."""
    start = text.lstrip()
    if not start.startswith("MSH") or len(start) < 8:
        return None
    sep = start[3]
    if sep.isalnum() or sep.isspace():
        return None
    end = len(start)
    for stop in ("\r", "\n"):
        pos = start.find(stop)
        if pos != -1:
            end = min(end, pos)
    parts = start[:end].split(sep)
    # "MSH|^~\&|A" splits into ["MSH", "^~\&", "A"]: MSH-1 is the separator itself.
    return MessageHeader(("MSH", sep, *parts[1:]))
