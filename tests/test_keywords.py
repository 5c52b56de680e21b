"""SMS keyword services, routed by short code and keyword, without the SMPP link (the
SMPP end-to-end tests send the same messages through a real bind)."""

from __future__ import annotations

from datetime import date, timedelta

import pytest

from ussd_gateway.menus.compiler import load_menus
from ussd_gateway.sessions.memory import MemoryStore
from ussd_gateway.services.settings import ServiceSettings
from ussd_gateway.backend import build_backend
from ussd_gateway.services.keywords import KeywordRouter, normalise_keyword_text


@pytest.fixture
def router() -> KeywordRouter:
    backend = build_backend("memory")
    return KeywordRouter(load_menus(), backend, MemoryStore(), ServiceSettings())


class Sms:
    """A subscriber texting short codes; each message gets its own key."""

    def __init__(self, router: KeywordRouter, msisdn: str = "84901234567") -> None:
        self.router, self.msisdn, self.n = router, msisdn, 0

    async def __call__(self, short_code: str, text: str, lang: str | None = None) -> str | None:
        self.n += 1
        return await self.router.handle(self.msisdn, short_code, text, message_key=f"{self.msisdn}:{self.n}", lang=lang)


class TestNormalisation:
    @pytest.mark.parametrize("raw", ["DK", "dk", " DK ", "Đk", "đK", "  dk  "])
    def test_keyword_forms(self, raw: str) -> None:
        """Case, spaces and diacritics do not matter."""
        assert normalise_keyword_text(raw) == ["DK"]

    def test_words_are_split(self) -> None:
        """`huy  c90n` is the keyword HUY with the argument C90N."""
        assert normalise_keyword_text("huy  c90n ") == ["HUY", "C90N"]


class TestKndlKeywords:
    async def test_dk_then_xn_registers(self, router: KeywordRouter) -> None:
        """DK asks for XN; XN within the window makes a member with points and tier."""
        sms = Sms(router)
        assert "Soan XN gui 9237 trong 10 phut" in await sms("9237", "dk")
        reply = await sms("9237", " XN ")
        assert "hoi vien KNDL hang Than thiet" in reply and "1.250" in reply
        assert "da la hoi vien" in await sms("9237", "DK")

    async def test_xn_without_dk_says_why(self, router: KeywordRouter) -> None:
        """XN with nothing pending explains and tells what to do."""
        reply = await Sms(router)("9237", "XN")
        assert "Khong co yeu cau nao cho xac nhan" in reply and "Soan DK gui 9237" in reply

    async def test_diem_for_member_and_non_member(self, router: KeywordRouter) -> None:
        """DIEM answers points and tier, or points and how to join."""
        assert "52.000 diem KNDL, hang Vang" in await Sms(router, "84909999999")("9237", "diem")
        assert "1.250 diem va chua tham gia" in await Sms(router)("9237", "Điểm")

    async def test_huy_takes_two_steps(self, router: KeywordRouter) -> None:
        """HUY asks for XN; XN leaves the programme."""
        sms = Sms(router, "84909999999")
        assert "xac nhan roi chuong trinh" in await sms("9237", "HUY")
        assert "da roi chuong trinh KNDL" in await sms("9237", "XN")
        assert "chua tham gia KNDL" in await sms("9237", "HUY")

    async def test_anything_else_lists_the_keywords(self, router: KeywordRouter) -> None:
        """An unknown word to 9237 gets the keyword list."""
        reply = await Sms(router)("9237", "hello there")
        assert "DK dang ky" in reply and "DIEM" in reply

    async def test_reply_in_the_subscribers_language(self, router: KeywordRouter) -> None:
        """The remembered language is used for the reply."""
        assert "Text XN to 9237" in await Sms(router)("9237", "DK", lang="en")


class TestPackageKeywords:
    async def test_code_registers_once_per_message(self, router: KeywordRouter) -> None:
        """`c90n` to 999 buys C90N; the same message handled again charges nothing more."""
        reply = await router.handle("84901234567", "999", "c90n", message_key="m1")
        assert reply == (
            "Da dang ky goi C90N: 90.000d/30 ngay, tu gia han moi 30 ngay, HSD "
            f"{(date.today() + timedelta(days=30)):%d/%m/%Y}. Huy gia han: HUY C90N gui 999. TKC 110.000d."
        )
        again = await router.handle("84901234567", "999", "c90n", message_key="m1")
        assert again == reply
        account = await router.backend.account("84901234567")
        assert account.balance == 110_000

    async def test_not_enough_balance(self, router: KeywordRouter) -> None:
        """3.000d cannot buy D15: the reply says how much is missing."""
        reply = await Sms(router, "84901111111")("999", "D15")
        assert "TKC khong du" in reply and "12.000d" in reply

    async def test_kt_and_huy(self, router: KeywordRouter) -> None:
        """KT lists active packages; HUY <code> stops a renewal; unknown HUY says so."""
        sms = Sms(router)
        assert "MAX90 con 18GB, HSD" in await sms("999", "KT")  # what is left, not only the name
        assert "Da huy gia han goi MAX90" in await sms("999", "huy max90")
        assert "khong dung goi C120" in await sms("999", "HUY C120")
        assert "chua dang ky goi nao" in await Sms(router, "84905555555")("999", "KT")

    async def test_unknown_code_lists_the_codes(self, router: KeywordRouter) -> None:
        """A wrong code gets the codes on offer."""
        reply = await Sms(router)("999", "XYZ")
        assert "Ma goi XYZ khong dung" in reply and "C90N" in reply and "D15" in reply

    async def test_other_short_codes_are_not_ours(self, router: KeywordRouter) -> None:
        """Nothing is declared for 1234: no reply."""
        assert await Sms(router)("1234", "DK") is None


class TestConfirmationWindow:
    async def test_xn_after_the_window_says_why(self) -> None:
        """DK, then XN after the confirmation window: not registered, told what to do."""
        import asyncio

        backend = build_backend("memory")
        router = KeywordRouter(load_menus(), backend, MemoryStore(), ServiceSettings(kndl_confirm_s=1))
        sms = Sms(router)
        assert "trong 1 phut" in await sms("9237", "DK")
        await asyncio.sleep(1.1)
        reply = await sms("9237", "XN")
        assert "Khong co yeu cau nao cho xac nhan" in reply and "Soan DK gui 9237" in reply
        assert (await backend.account("84901234567")).kndl is None
