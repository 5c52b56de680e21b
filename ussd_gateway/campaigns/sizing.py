"""How many SMS a text costs: GSM-7 160 septets in one, 153 per part when concatenated;
UCS-2 70 units in one, 67 per part.

Measured with the menus' GSM 03.38 tables (`menus.text`), the same the SMPP codec
encodes with, and cut at the same places `channels.smpp.encoding.split_sms` cuts (never
inside an escape pair or a surrogate pair), so the count shown before a launch is the
count of `submit_sm` parts that go out (tests/test_campaigns_model.py compares them).
"""

from __future__ import annotations

from dataclasses import dataclass

from ussd_gateway.menus.text import GSM7_EXTENSION_TABLE, gsm7_septets, ucs2_units

GSM7_SINGLE, GSM7_PART = 160, 153
UCS2_SINGLE, UCS2_PART = 70, 67


@dataclass(frozen=True, slots=True)
class SmsSize:
    encoding: str
    """`gsm7` or `ucs2` (any character outside GSM 03.38, e.g. Vietnamese with marks)."""
    units: int
    """Septets (GSM-7) or UTF-16 units (UCS-2)."""
    parts: int

    def describe(self) -> str:
        """`2 SMS (GSM-7, 170/306 septets)`."""
        single, part = (GSM7_SINGLE, GSM7_PART) if self.encoding == "gsm7" else (UCS2_SINGLE, UCS2_PART)
        room = single if self.parts == 1 else part * self.parts
        unit = "septets" if self.encoding == "gsm7" else "characters"
        return f"{self.parts} SMS ({'GSM-7' if self.encoding == 'gsm7' else 'UCS-2'}, {self.units}/{room} {unit})"


def _parts(costs: list[int], limit: int) -> int:
    parts, used = 1, 0
    for cost in costs:
        if used + cost > limit:
            parts, used = parts + 1, 0
        used += cost
    return parts


def sms_size(text: str) -> SmsSize:
    """The encoding, length and part count of `text` as an SMS."""
    septets = gsm7_septets(text)
    if septets is not None:
        if septets <= GSM7_SINGLE:
            return SmsSize("gsm7", septets, 1 if text else 0)
        return SmsSize("gsm7", septets, _parts([2 if c in GSM7_EXTENSION_TABLE else 1 for c in text], GSM7_PART))
    units = ucs2_units(text)
    if units <= UCS2_SINGLE:
        return SmsSize("ucs2", units, 1)
    return SmsSize("ucs2", units, _parts([2 if ord(c) > 0xFFFF else 1 for c in text], UCS2_PART))
