"""What happens to a saving when its result changes: the MRB_LEDGER_ON_* choices.

On its own (re-exported by broker/domain/ledger.py) so that broker/settings.py, which
every admin command loads, does not import the ledger and the recognition rules with it.
"""

from __future__ import annotations

from enum import StrEnum


class SafetyAction(StrEnum):
    REVERSE = "reverse"  # a reversal entry cancels the saving
    FLAG = "flag"  # the saving stands, marked for finance to review
