"""ACK messages in original mode (AA/AE/AR) and enhanced mode (CA/CE/CR + later AA)."""

from __future__ import annotations

from datetime import UTC, datetime

import hl7
import pytest

from adapters.hl7v2.ack import AckCode, AckOptions, accept_ack, application_ack, build_ack
from adapters.hl7v2.errors import ErrorLocation, Hl7ErrorCode, Hl7MappingError
from adapters.hl7v2.msh import MessageHeader, read_header

FIXED = AckOptions(control_id="ACK1", now=datetime(2026, 5, 18, 2, 30, tzinfo=UTC))
MSH = "MSH|^~\\&|LIS|LAB|MRB|H001|20260518103000||ORU^R01^ORU_R01|MSG0001|P|2.5.1"


def header(accept: str = "", application: str = "", version: str = "2.5.1") -> MessageHeader:
    msh = MSH.replace("|2.5.1", f"|{version}|||{accept}|{application}")
    found = read_header(msh + "\rPID|1")
    assert found is not None
    return found


def parsed(ack: str | None) -> hl7.Message:
    assert ack is not None
    return hl7.parse(ack)


BAD_VALUE = Hl7MappingError(
    Hl7ErrorCode.INVALID_VALUE,
    "OBX[2]-5 is not a number although OBX-2 says NM",
    location=ErrorLocation("OBX", 2, 5),
)
UNSUPPORTED = Hl7MappingError(Hl7ErrorCode.UNSUPPORTED_MESSAGE, "MSH-9 ADT is not supported")


class TestOriginalMode:
    def test_accept_swaps_sender_and_receiver_and_echoes_the_control_id(self) -> None:
        ack = accept_ack(header(), None, FIXED)
        assert ack == (
            "MSH|^~\\&|MRB|H001|LIS|LAB|20260518023000+0000||ACK^R01^ACK|ACK1|P|2.5.1\r"
            "MSA|AA|MSG0001\r"
        )

    def test_application_error_carries_err_with_table_0357_code(self) -> None:
        msg = parsed(accept_ack(header(), BAD_VALUE, FIXED))
        assert str(msg.segment("MSA")(1)) == "AE"
        err = msg.segment("ERR")
        assert str(err(2)) == "OBX^2^5"  # ERR-2 location
        assert str(err(3)) == "102^Data type error^HL70357"
        assert str(err(4)) == "E"
        assert "OBX[2]-5 is not a number" in str(err(8))

    def test_unsupported_message_is_rejected(self) -> None:
        msg = parsed(accept_ack(header(), UNSUPPORTED, FIXED))
        assert str(msg.segment("MSA")(1)) == "AR"
        assert str(msg.segment("ERR")(3)) == "200^Unsupported message type^HL70357"

    def test_v22_gets_err1_and_a_plain_message_type(self) -> None:
        ack = accept_ack(header(version="2.2"), BAD_VALUE, FIXED)
        assert ack is not None
        msh, msa, err = ack.rstrip("\r").split("\r")
        assert msh.split("|")[8] == "ACK" and msh.endswith("|2.2")
        assert msa.startswith("MSA|AE|MSG0001|")
        assert err == "ERR|OBX^2^5^102&Data type error&HL70357"

    def test_detail_text_is_escaped(self) -> None:
        err = Hl7MappingError(Hl7ErrorCode.PARSE, "a|b^c~d&e\\f")
        msg = parsed(build_ack(header(), AckCode.AR, err, FIXED))
        assert str(msg.segment("MSA")(3)) == "HL7_PARSE: a\\F\\b\\S\\c\\R\\d\\T\\e\\E\\f"
        assert msg.unescape(str(msg.segment("MSA")(3))) == "HL7_PARSE: a|b^c~d&e\\f"

    def test_unreadable_message_still_gets_a_reject(self) -> None:
        err = Hl7MappingError(Hl7ErrorCode.PARSE, "not HL7")
        msg = parsed(accept_ack(None, err, FIXED))
        assert str(msg.segment("MSA")(1)) == "AR" and str(msg.segment("MSA")(2)) == ""

    def test_no_later_application_ack_in_original_mode(self) -> None:
        assert application_ack(header(), None, FIXED) is None

    def test_our_names_and_the_charset_go_in_msh(self) -> None:
        h = read_header(MSH + "||||||UNICODE UTF-8\r")
        assert h is not None
        options = AckOptions("MRB-HL7", "H001", "ACK2", FIXED.now)
        msg = parsed(accept_ack(h, None, options))
        msh = msg.segment("MSH")
        assert (str(msh(3)), str(msh(4)), str(msh(18))) == ("MRB-HL7", "H001", "UNICODE UTF-8")


class TestEnhancedMode:
    def test_commit_accept_when_msh15_is_al(self) -> None:
        msg = parsed(accept_ack(header("AL", "AL"), None, FIXED))
        assert str(msg.segment("MSA")(1)) == "CA"

    def test_commit_error_and_reject(self) -> None:
        assert (
            str(parsed(accept_ack(header("AL", "NE"), BAD_VALUE, FIXED)).segment("MSA")(1)) == "CE"
        )
        assert (
            str(parsed(accept_ack(header("AL", "NE"), UNSUPPORTED, FIXED)).segment("MSA")(1))
            == "CR"
        )

    @pytest.mark.parametrize(
        ("condition", "on_success", "on_error"),
        [("AL", "CA", "CE"), ("NE", None, None), ("ER", None, "CE"), ("SU", "CA", None)],
    )
    def test_msh15_table_0155(
        self, condition: str, on_success: str | None, on_error: str | None
    ) -> None:
        for error, expected in ((None, on_success), (BAD_VALUE, on_error)):
            ack = accept_ack(header(condition, "AL"), error, FIXED)
            assert (str(parsed(ack).segment("MSA")(1)) if ack else None) == expected

    @pytest.mark.parametrize(
        ("condition", "on_success", "on_error"),
        [("AL", "AA", "AE"), ("NE", None, None), ("ER", None, "AE"), ("SU", "AA", None)],
    )
    def test_application_ack_follows_msh16(
        self, condition: str, on_success: str | None, on_error: str | None
    ) -> None:
        for error, expected in ((None, on_success), (BAD_VALUE, on_error)):
            ack = application_ack(header("AL", condition), error, FIXED)
            assert (str(parsed(ack).segment("MSA")(1)) if ack else None) == expected

    def test_empty_msh15_next_to_msh16_still_answers_on_the_socket(self) -> None:
        assert str(parsed(accept_ack(header("", "AL"), None, FIXED)).segment("MSA")(1)) == "CA"
        assert application_ack(header("AL", ""), None, FIXED) is None  # empty MSH-16: NE

    def test_application_ack_is_a_new_message_for_the_same_original(self) -> None:
        first = parsed(accept_ack(header("AL", "AL"), None, AckOptions(control_id="C1")))
        later = parsed(application_ack(header("AL", "AL"), None, AckOptions(control_id="C2")))
        assert str(first.segment("MSA")(2)) == str(later.segment("MSA")(2)) == "MSG0001"
        assert str(first.segment("MSH")(10)) != str(later.segment("MSH")(10))
