"""Package advice (`services/advice.py`) on the demo catalogue: it never recommends
paying more, counts the saving against what the subscriber pays now, and names the
renewing packages a suggestion replaces."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ussd_gateway.backend import load_demo_data
from ussd_gateway.backend.port import ActivePackage, Package, UsageProfile
from ussd_gateway.services.advice import covers, monthly_cost, suggest

CATALOGUE = load_demo_data().catalogue
MAX90 = ActivePackage(code="MAX90", name="MAX90", expires="2026-12-31", auto_renew=True, data_left_mb=18432)
ALICE_USAGE = UsageProfile(monthly_spend=150_000, data_mb=25_600, voice_min=400, sms=30)  # 84901234567


def test_alice_is_offered_c90n_in_place_of_max90() -> None:
    """84901234567 pays 150.000d a month with MAX90 renewing: C90N (90.000d) covers her
    25GB and 400 minutes, saves 60.000d, and replaces MAX90."""
    found = suggest(CATALOGUE.packages, ALICE_USAGE, [MAX90])
    assert found is not None
    assert (found.package.code, found.monthly_cost, found.saving, found.spend) == ("C90N", 90_000, 60_000, 150_000)
    assert found.replaces == (MAX90,)


def test_a_stopped_renewal_is_not_replaced() -> None:
    """A package whose renewal is already off is not named as replaced (nothing to stop)."""
    stopped = ActivePackage(code="MAX90", name="MAX90", expires="2026-12-31", auto_renew=False)
    found = suggest(CATALOGUE.packages, ALICE_USAGE, [stopped])
    assert found is not None and found.replaces == ()


def test_nothing_is_suggested_when_nothing_costs_less() -> None:
    """20.000d a month: every package that covers the usage costs more, so no advice."""
    assert suggest(CATALOGUE.packages, UsageProfile(monthly_spend=20_000, data_mb=1024, voice_min=10), []) is None


def test_a_package_already_renewing_is_not_suggested_again() -> None:
    """Renewing C90N already, C90N is not "new" advice."""
    c90n = ActivePackage(code="C90N", name="C90N", expires="2026-12-31", auto_renew=True)
    found = suggest(CATALOGUE.packages, ALICE_USAGE, [c90n])
    assert found is None or found.package.code != "C90N"


@settings(max_examples=200, deadline=None)
@given(
    spend=st.integers(0, 1_000_000),
    data_mb=st.integers(0, 300_000),
    voice_min=st.integers(0, 3_000),
    renewing=st.booleans(),
)
def test_advice_never_recommends_paying_more(spend: int, data_mb: int, voice_min: int, renewing: bool) -> None:
    """Whatever the usage: a suggestion covers it, costs less than the spend, and its
    saving is exactly spend - cost; and it is the biggest saving on offer."""
    usage = UsageProfile(monthly_spend=spend, data_mb=data_mb, voice_min=voice_min)
    active = [MAX90] if renewing else []
    found = suggest(CATALOGUE.packages, usage, active)
    candidates = [
        p for p in CATALOGUE.packages
        if covers(p, usage) and monthly_cost(p) < spend and not (renewing and p.code == "MAX90")
    ]
    if found is None:
        assert candidates == []
        return
    assert covers(found.package, usage)
    assert 0 < found.saving == spend - found.monthly_cost
    assert found.monthly_cost == monthly_cost(found.package) < spend
    assert found.saving == max(spend - monthly_cost(p) for p in candidates)


@pytest.mark.parametrize("package", CATALOGUE.packages, ids=lambda p: p.code)
def test_monthly_cost_is_at_least_the_price_per_30_days(package: Package) -> None:
    """A 30-day package costs its price a month; shorter ones cost proportionally more."""
    assert monthly_cost(package) >= package.price * 30 // package.validity_days
