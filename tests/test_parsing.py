"""Wire parsers and small encoders, with property tests: whatever arrives, they either
return the canonical value or raise BadRequest with a reason, never anything else."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ussd_gateway.menus.template import Template, compile_condition, money
from ussd_gateway.sessions.record import SessionRecord
from ussd_gateway.core.inputs import split_service_code
from ussd_gateway.dispatch.dispatcher import new_inputs
from ussd_gateway.core.errors import BadRequest
from ussd_gateway.core.msisdn import mask_msisdn, normalise_msisdn

subscriber_digits = st.text(alphabet="0123456789", min_size=9, max_size=9).filter(lambda d: d[0] != "0")


class TestMsisdn:
    @given(subscriber_digits)
    def test_the_three_forms_are_one_subscriber(self, digits: str) -> None:
        """0…, 84… and +84… name the same subscriber."""
        forms = {normalise_msisdn("0" + digits), normalise_msisdn("84" + digits), normalise_msisdn("+84" + digits)}
        assert forms == {"84" + digits}

    @given(st.text(max_size=40))
    def test_anything_else_is_a_bad_request_or_digits(self, raw: str) -> None:
        """Arbitrary text is either a number (digits only) or refused with a reason."""
        try:
            number = normalise_msisdn(raw)
        except BadRequest as error:
            assert "is not an MSISDN" in str(error)
        else:
            assert number.isdigit() and 9 <= len(number) <= 15

    def test_mask_hides_the_middle(self) -> None:
        """Logs see 8490****567."""
        assert mask_msisdn("84901234567") == "8490****567"
        assert mask_msisdn("123") == "***"


class TestServiceCode:
    @given(st.text(alphabet="0123456789", min_size=1, max_size=8), st.lists(st.text(alphabet="0123456789", min_size=1, max_size=3), max_size=5))
    def test_code_and_inputs_split(self, base: str, inputs: list[str]) -> None:
        """*090*2*1# routes to *090# with inputs 2, 1."""
        raw = "*" + "*".join([base, *inputs]) + "#"
        assert split_service_code(raw) == (f"*{base}#", tuple(inputs))

    @given(st.text(max_size=30))
    def test_garbage_is_refused(self, raw: str) -> None:
        """Anything that is not a USSD code is a BadRequest, never another error."""
        try:
            code, _ = split_service_code(raw)
        except BadRequest:
            return
        assert code.startswith("*") and code.endswith("#")


class TestHistory:
    @given(st.lists(st.text(alphabet="0123456789", min_size=1, max_size=3), max_size=6), st.lists(st.text(alphabet="0123456789", min_size=1, max_size=3), min_size=1, max_size=3))
    def test_new_inputs_are_what_the_history_adds(self, seen: list[str], added: list[str]) -> None:
        """The dispatcher takes exactly the inputs appended since the last hop."""
        assert new_inputs("*".join(seen + added), "*".join(seen)) == tuple(added)

    def test_same_history_adds_nothing_and_divergence_is_none(self) -> None:
        """A history equal to the seen one adds nothing; a different one is flagged."""
        assert new_inputs("1*2", "1*2") == ()
        assert new_inputs("3*2", "1*2") is None
        assert new_inputs("1*22", "1*2") is None


class TestTemplates:
    @given(st.integers(min_value=0, max_value=10**12))
    def test_money_keeps_every_digit(self, amount: int) -> None:
        """Money renders with thousands separators and the đồng sign, digits intact."""
        assert money(amount, "vi").replace(".", "")[:-1] == str(amount)
        assert money(amount, "vi").endswith("d") and money(amount, "vi_dau").endswith("đ")
        assert money(amount, "en").endswith(" VND")

    def test_lookup_and_filters(self) -> None:
        """Dotted paths reach into dicts and lists; a missing value renders empty."""
        template = Template("TKC {a.balance|money}, goi {a.packages.0.code}, {missing}!")
        assert template.render({"a": {"balance": 200000, "packages": [{"code": "C90N"}]}}, "vi") == "TKC 200.000d, goi C90N, !"

    @pytest.mark.parametrize(
        ("condition", "expected"),
        [("a.n >= 3", True), ("a.n < 3", False), ("a.s == 'x'", True), ("not a.s", False), ("a.none", False), ("a.n == a.m", True)],
    )
    def test_conditions(self, condition: str, expected: bool) -> None:
        """Router conditions compare paths with literals or other paths."""
        assert compile_condition(condition)({"a": {"n": 3, "m": 3, "s": "x"}}) is expected


class TestSessionRecord:
    @given(st.dictionaries(st.text(max_size=8), st.one_of(st.integers(min_value=-(2**63), max_value=2**63 - 1), st.text(max_size=20), st.booleans()), max_size=5))
    def test_round_trip(self, variables: dict) -> None:  # type: ignore[type-arg]
        """What is saved is what is loaded."""
        record = SessionRecord(
            session_id="s", msisdn="84901234567", service_code="*090#", menu="buy", screen="list", lang="en",
            stack=[("main", "home")], vars=variables, seq=3, history="2*1",
        )
        loaded = SessionRecord.from_bytes(record.to_bytes())
        assert loaded == record
