"""A payment's ledger references, made and read back by one module."""

from __future__ import annotations

from edge.payments.handlers import (
    given_back_reference,
    refund_reference,
    session_of,
    topup_reference,
)


def test_every_reference_a_payment_makes_names_its_session() -> None:
    refund = refund_reference("cs_1", "re_9")
    for reference in (topup_reference("cs_1"), refund, given_back_reference(refund),
                      "dispute:cs_1:dp_3"):
        assert session_of(reference) == "cs_1", reference


def test_other_references_name_no_payment() -> None:
    for reference in ("usage:req_1", "owed:req_2", "adjustment:abc", "topup:1f2e",
                      "refund-failed:usage:x", "checkout:", "opening:sk-ip-1", ""):
        assert session_of(reference) is None, reference
