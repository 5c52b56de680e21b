"""How amounts, numbers, sizes and dates are written in each language of the screens.

Shared by the screens' templates, the services' SMS texts and the testers' arithmetic,
so a price reads the same everywhere.
"""

from __future__ import annotations

from datetime import date
from typing import Any

LANGUAGES = ("vi", "vi_dau", "en")
"""Vietnamese without diacritics (GSM-7, fits any phone), with diacritics (UCS-2), English."""


def _group(amount: int, sep: str) -> str:
    return f"{amount:,}".replace(",", sep)


def money(value: Any, lang: str) -> str:
    """Whole đồng: `200.000d` (vi), `200.000đ` (vi_dau), `200,000 VND` (en)."""
    amount = int(value or 0)
    if lang == "en":
        return _group(amount, ",") + " VND"
    return _group(amount, ".") + ("đ" if lang == "vi_dau" else "d")


def number(value: Any, lang: str) -> str:
    """A grouped whole number: `52.000` (vi), `52,000` (en)."""
    return _group(int(value or 0), "," if lang == "en" else ".")


def data_size(value: Any, lang: str) -> str:
    """MB as shown on a phone: `500MB`, `18GB`, `1.5GB`."""
    mb = int(value or 0)
    if mb < 1024:
        return f"{mb}MB"
    gb = mb / 1024
    text = f"{gb:.1f}".rstrip("0").rstrip(".")
    if lang != "en":
        text = text.replace(".", ",")
    return text + "GB"


def day(value: Any, lang: str) -> str:
    """An ISO date as `21/12/2026` (vi) or `21/12/2026` (en, same: unambiguous here)."""
    if not value:
        return ""
    parsed = date.fromisoformat(str(value))
    return parsed.strftime("%d/%m/%Y")


def upper(value: Any, lang: str) -> str:
    return str(value if value is not None else "").upper()
