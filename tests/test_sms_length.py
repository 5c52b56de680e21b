"""The purchase confirmation SMS at its longest fits one SMS where the language allows.

The confirmation says the price, the period, the renewal and how to stop it (HUY <code>
to 999). Rendered at the longest values it can carry (a 20-character bundle name, the
highest price the demo catalogue and the bundle levels can add up to, the longest
renewal wording, an eight-digit balance), vi and en are GSM-7 and fit 160 septets: one
SMS. vi_dau needs UCS-2 (70 characters in one SMS, 67 a part when concatenated), so it
is deliberately sent in several parts: the count is asserted, so a longer text shows up.
"""

from __future__ import annotations

from typing import Any

import pytest

from ussd_gateway.backend import load_demo_data
from ussd_gateway.channels.smpp.encoding import split_sms
from ussd_gateway.menus.compiler import load_menus
from ussd_gateway.menus.model import MenuSet
from ussd_gateway.menus.text import gsm7_septets

ONE_SMS_SEPTETS = 160
LONGEST_NAME = "Goi cua Lan Anh 2026"  # a bundle name at the validator's 20-character limit
BIGGEST_BALANCE = 99_999_999  # eight digits, as `menus check` allows for
VI_DAU_PARTS = 3  # UCS-2: deliberately more than one part (see the module doc)


@pytest.fixture(scope="module")
def menus() -> MenuSet:
    return load_menus()


def worst_case(menus: MenuSet, lang: str) -> dict[str, Any]:
    """The longest variables a confirmation SMS can be rendered with."""
    catalogue = load_demo_data().catalogue
    bundle_max = sum(
        max(max(level.prices.values()) for level in levels)
        for levels in (catalogue.bundle_data, catalogue.bundle_sms, catalogue.bundle_voice)
    )
    longest_days = max(p.validity_days for p in catalogue.packages)
    renewals = [
        menus.texts["renew_every"].render({"days": longest_days}, lang),
        menus.texts["renew_daily"].render({}, lang),
        menus.texts["renew_off"].render({}, lang),
    ]
    return {
        "code": LONGEST_NAME,
        "price": max([p.price for p in catalogue.packages] + [bundle_max]),
        "days": longest_days,
        "renewal": max(renewals, key=len),
        "expires": "2026-12-31",
        "balance": BIGGEST_BALANCE,
    }


def test_the_longest_name_is_at_the_limit() -> None:
    """The name used is as long as a bundle name may be (bundle.toml: 1-20 characters)."""
    assert len(LONGEST_NAME) == 20


@pytest.mark.parametrize("key", ["sms_purchase", "buy.sms_bought"])
@pytest.mark.parametrize("lang", ["vi", "en"])
def test_gsm7_confirmation_fits_one_sms(menus: MenuSet, key: str, lang: str) -> None:
    """vi and en: GSM-7, at most 160 septets, one part, and it says price, renewal and HUY."""
    variables = worst_case(menus, lang)
    text = menus.texts[key].render(variables, lang)
    septets = gsm7_septets(text)
    assert septets is not None, text  # GSM-7: no character forces UCS-2
    assert septets <= ONE_SMS_SEPTETS, (septets, text)
    assert len(split_sms(text, packed=False, reference=1)) == 1
    assert f"HUY {LONGEST_NAME}" in text and variables["renewal"] in text


@pytest.mark.parametrize("key", ["sms_purchase", "buy.sms_bought"])
def test_vi_dau_confirmation_is_deliberately_several_parts(menus: MenuSet, key: str) -> None:
    """vi_dau: UCS-2, so a 70-character SMS cannot hold it; it goes out in exactly
    VI_DAU_PARTS concatenated parts, with nothing dropped."""
    variables = worst_case(menus, "vi_dau")
    text = menus.texts[key].render(variables, "vi_dau")
    assert gsm7_septets(text) is None  # diacritics: UCS-2
    parts = split_sms(text, packed=False, reference=1)
    assert len(parts) == VI_DAU_PARTS, (len(text), text)
    assert f"HUY {LONGEST_NAME} gửi 999" in text and variables["renewal"] in text


@pytest.mark.parametrize("lang", ["vi", "vi_dau", "en"])
def test_amounts_are_written_as_the_language_writes_them(menus: MenuSet, lang: str) -> None:
    """Price and balance grouped like every screen: 99.999.999d / 99.999.999đ / 99,999,999 VND."""
    text = menus.texts["sms_purchase"].render(worst_case(menus, lang), lang)
    expected = {"vi": "TKC 99.999.999d.", "vi_dau": "TKC 99.999.999đ.", "en": "Balance 99,999,999 VND."}[lang]
    assert text.endswith(expected), text
