"""Subscriber numbers: one canonical form, and a mask for logs."""

from __future__ import annotations

import re

from ussd_gateway.core.errors import BadRequest

_DIGITS = re.compile(r"^[0-9]{9,15}$")
"""ASCII digits only: `\\d` would also take Arabic-Indic, full-width or Devanagari digits,
which no network delivers and which would make a second subscriber of one number."""
VIETNAM_CC = "84"


def normalise_msisdn(raw: str) -> str:
    """Return `raw` as E.164 digits without `+`: `0901234567`, `84901234567` and
    `+84901234567` are all `84901234567`.

    Raises:
        BadRequest: when `raw` is not a phone number.
    """
    number = raw.strip().replace(" ", "").replace("-", "")
    if number.startswith("+"):
        number = number[1:]
    elif number.startswith("00"):
        number = number[2:]
    elif number.startswith("0"):
        number = VIETNAM_CC + number[1:]
    if not _DIGITS.fullmatch(number):
        shown = raw if len(raw) <= 20 else raw[:20] + "…"
        raise BadRequest(f"phone number {shown!r} is not an MSISDN (expected e.g. 0901234567, 84901234567 or +84901234567)")
    return number


def mask_msisdn(msisdn: str) -> str:
    """Hide the middle digits for logs: `84901234567` -> `8490****567`."""
    if len(msisdn) <= 7:
        return "*" * len(msisdn)
    return msisdn[:4] + "*" * (len(msisdn) - 7) + msisdn[-3:]
