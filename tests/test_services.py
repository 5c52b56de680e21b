"""End-to-end behaviour of every *090# service, as a subscriber sees it.

Every test that takes `phone` runs four times: Africa's Talking and JSON dialects, each
with the in-memory store and with a real redis-server. Tests assert the screen text, END
versus CON, and what changed (balances through *101#, the account screen, the outbound
SMS queue, the stored feedback).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import date, timedelta
from typing import Any

import pytest
import redis.asyncio as aioredis
from helpers import Phone, Screen, make_settings

from ussd_gateway.menus.text import ScreenBudget, fits
from ussd_gateway.app.server import GATEWAY, create_app

# ---- what the demo data and the menus show ------------------------------------------------
MAIN_LINES = [
    "MobiFone *090#",
    "1. Tra cuu tai khoan",
    "2. Mua goi cuoc",
    "3. Tu tao goi M090",
    "4. Ket noi dai lau",
    "5. Dich vu GTGT",
    "6. Gop y",
    "7. Ngon ngu/Language",
    "8. Nap the/KM",
]
MAIN_MENU = "\n".join(MAIN_LINES)
FOOTER = "0.Quay lai 00.Trang chu"
MORE = "98.Xem them"
INVALID = "Lua chon khong hop le."
RESUME_OFFER = "Quy khach co giao dich chua hoan tat.\n1.Tiep tuc\n2.Bat dau lai"
BUY_MENU = "Mua goi cuoc\n1. Goi Data\n2. Goi Thoai\n3. Goi Combo\n4. Goi y cho ban\n" + FOOTER
DATA_LIST = (
    "Goi Data:\n1. D15 15.000d/3 ngay\n2. D30 30.000d/7 ngay\n3. MAX90 90.000d/30 ngay\n"
    "4. MAX200 200.000d/30 ngay\n" + FOOTER
)
SUGGESTION = (  # C90N replaces the renewing MAX90: 90.000d a month against the 150.000d spent now
    "Goi y: C90N (4GB/ngay, 1000 phut noi mang, 50 phut ngoai mang) thay cho MAX90: 90.000d/thang thay vi khoang "
    "150.000d/thang, tiet kiem 60.000d/thang. Dang ky C90N va huy gia han MAX90?"
)
CYCLE_SCREEN = "Tu tao goi M090. Chon chu ky:\n1. Ngay\n2. Tuan\n3. Thang\n" + FOOTER

ALICE = "84901234567"  # 200.000d, MAX90, two VAS, 1.250 points, not a member
POOR = "84901111111"  # 3.000d, nothing else
GOLD = "84909999999"  # Gold KNDL member, 52.000 points, 150.000d


def in_days(days: int) -> str:
    """An expiry date as the screens print it."""
    return (date.today() + timedelta(days=days)).strftime("%d/%m/%Y")


async def open_menu(phone: Phone) -> Screen:
    """Dial *090# on a new dialogue; if an earlier one is offered back, start over."""
    screen = await phone.dial("*090#")
    if screen.text == RESUME_OFFER:
        screen = await phone.send("2")
    assert screen.text == MAIN_MENU, screen.text
    return screen


async def balance_of(phone: Phone) -> str:
    """The *101# END text for the phone's subscriber."""
    screen = await phone.dial("*101#")
    assert screen.end, screen.text
    return screen.text


def gateway_of(phone: Phone) -> Any:
    return phone.client.server.app[GATEWAY]


PhoneFactory = Callable[..., Awaitable[Phone]]


@pytest.fixture
def phone_with(store_kind: str, dialect: str, redis_server: Any, aiohttp_client: Any) -> PhoneFactory:
    """A phone on a gateway of its own built with changed settings (per section, as
    `make_settings` takes them), on the same dialect and store as `phone`."""

    async def make(*, msisdn: str = ALICE, **sections: dict[str, Any]) -> Phone:
        url = ""
        if store_kind == "redis":
            redis_server.start()
            client = aioredis.Redis.from_url(redis_server.url)
            await client.flushdb()
            await client.aclose()
            url = redis_server.url
        http = await aiohttp_client(create_app(make_settings(url, **sections)))
        return Phone(http, dialect, msisdn=msisdn)

    return make


# ---- main menu, balance, service codes, MSISDN forms ------------------------------------------
class TestEntry:
    async def test_main_menu_lists_the_seven_services_in_order(self, phone: Phone) -> None:
        """*090# shows account, buy, bundle, KNDL, VAS, feedback, language, in that order."""
        screen = await phone.dial("*090#")
        assert not screen.end
        assert screen.text == MAIN_MENU

    async def test_101_answers_the_main_balance_in_one_end(self, phone: Phone) -> None:
        """*101# is a single END screen with the main balance."""
        screen = await phone.dial("*101#")
        assert screen.end
        assert screen.text == "TKC cua quy khach: 200.000d."

    async def test_unknown_service_code_gets_a_polite_end(self, phone: Phone) -> None:
        """*999# is not served: a polite END pointing to *090#, not an HTTP error."""
        screen = await phone.dial("*999#")
        assert screen.status == 200 and screen.end
        assert screen.text == "Ma dich vu khong dung. Quy khach vui long bam *090# de duoc ho tro."

    async def test_the_three_msisdn_forms_are_one_subscriber(self, phone: Phone) -> None:
        """A purchase dialled as 0901234567 shows in the balance of +84901234567 and 84901234567."""
        phone.msisdn = "0901234567"
        await open_menu(phone)
        done = await phone.walk("2", "1", "1", "1")
        assert done.end and "TKC con 185.000d" in done.text
        phone.msisdn = "+84901234567"
        assert await balance_of(phone) == "TKC cua quy khach: 185.000d."
        phone.msisdn = ALICE
        assert await balance_of(phone) == "TKC cua quy khach: 185.000d."
        [sms] = await gateway_of(phone).store.outbound_sms()
        assert sms.to == ALICE

    async def test_first_hop_with_inputs_in_the_code_lands_on_that_screen(self, phone: Phone) -> None:
        """Dialling *090*2*1# opens the data package list straight away, and the dialogue goes on."""
        screen = await phone.dial("*090*2*1#")
        assert not screen.end
        assert screen.text == DATA_LIST
        detail = await phone.send("1")
        assert detail.text.startswith("Goi D15: 3GB toc do cao trong 3 ngay. Gia 15.000d/3 ngay, tu gia han moi 3 ngay.")

    async def test_first_hop_inputs_in_each_dialect(self, gateway_client: Any) -> None:
        """Africa's Talking text "2*1" on a new session and JSON service_code "*090*2*1#" both open the data list."""
        response = await gateway_client.post(
            "/ussd/africastalking",
            data={"sessionId": "at-first", "serviceCode": "*090#", "phoneNumber": ALICE, "text": "2*1"},
        )
        assert response.status == 200
        assert await response.text() == "CON " + DATA_LIST
        response = await gateway_client.post(
            "/ussd/africastalking",
            data={"sessionId": "at-first", "serviceCode": "*090#", "phoneNumber": ALICE, "text": "2*1*2"},
        )
        assert (await response.text()).startswith("CON Goi D30: 7GB toc do cao trong 7 ngay.")
        response = await gateway_client.post(
            "/ussd",
            json={"session_id": "json-first", "msisdn": POOR, "service_code": "*090*2*1#", "event": "begin"},
        )
        assert response.status == 200
        assert await response.json() == {"text": DATA_LIST, "end": False}


# ---- account ---------------------------------------------------------------------------------------
class TestAccount:
    async def test_account_shows_balance_points_and_tier(self, phone: Phone) -> None:
        """Account lookup: 200.000d, 1.250 points, not a KNDL member yet."""
        await open_menu(phone)
        screen = await phone.send("1")
        assert not screen.end
        assert screen.text == "TKC: 200.000d\nDiem KNDL: 1.250\nHang: Chua tham gia\n1. Goi cuoc dang dung\n2. Lich su nap the\n3. Cuoc tra sau\n" + FOOTER

    async def test_packages_show_what_remains_and_expiry(self, phone: Phone) -> None:
        """The active package list shows MAX90 with 18GB left and its expiry date."""
        await open_menu(phone)
        screen = await phone.walk("1", "1")
        assert screen.text == f"Goi dang dung:\n1. MAX90 con 18GB, HSD {in_days(12)}\n" + FOOTER
        detail = await phone.send("1")
        assert detail.text == f"MAX90: con 18GB\nHSD: {in_days(12)}\nTu gia han: Co\n1. Huy gia han\n2. Ket thuc goi ngay\n" + FOOTER

    async def test_cancel_renewal_after_confirmation(self, phone: Phone) -> None:
        """Stopping auto-renewal asks first, ENDs, then the package shows "Tu gia han: Khong"."""
        await open_menu(phone)
        confirm = await phone.walk("1", "1", "1", "1")
        assert confirm.text == (
            f"Huy tu gia han goi MAX90? Goi van dung den {in_days(12)}.\n1. Dong y\n2. Khong\n" + FOOTER
        )
        done = await phone.send("1")
        assert done.end
        assert done.text == f"Da huy tu gia han goi MAX90. Goi van dung den {in_days(12)}."
        await open_menu(phone)  # an ENDed dialogue is not offered back
        package = await phone.walk("1", "1", "1")
        assert "Tu gia han: Khong" in package.text

    async def test_a_stopped_renewal_is_not_offered_again(self, phone: Phone) -> None:
        """Once stopped, the package screen says "Tu gia han: Khong" and offers no "Huy gia han";
        its one option goes back to the package list."""
        await open_menu(phone)
        assert (await phone.walk("1", "1", "1", "1", "1")).end
        await open_menu(phone)
        package = await phone.walk("1", "1", "1")
        assert package.text == f"MAX90: con 18GB\nHSD: {in_days(12)}\nTu gia han: Khong\n1. Goi cuoc dang dung\n" + FOOTER
        assert "Huy gia han" not in package.text
        assert (await phone.send("1")).text.startswith("Goi dang dung:\n1. MAX90 con 18GB")

    async def test_declining_the_cancellation_changes_nothing(self, phone: Phone) -> None:
        """"2 Khong" (no) on the confirmation returns to the account screen and the package still renews."""
        await open_menu(phone)
        back = await phone.walk("1", "1", "1", "1", "2")
        assert back.text.startswith("TKC: 200.000d\n")
        package = await phone.walk("1", "1")
        assert "Tu gia han: Co" in package.text


# ---- buy a package --------------------------------------------------------------------------------
class TestBuy:
    async def test_each_category_lists_its_packages(self, phone: Phone) -> None:
        """Data, voice and combo each list their own packages with price and validity."""
        await open_menu(phone)
        assert await phone.send("2") == Screen(BUY_MENU, False)
        assert (await phone.send("1")).text == DATA_LIST
        await phone.send("0")
        voice = await phone.send("2")
        assert voice.text == "Goi Thoai:\n1. T50 50.000d/30 ngay\n2. T100 100.000d/30 ngay\n" + FOOTER
        await phone.send("0")
        combo = await phone.send("3")
        assert combo.text == (
            "Goi Combo:\n1. C90N 90.000d/30 ngay\n2. C120 120.000d/30 ngay\n3. 21G 210.000d/30 ngay\n" + FOOTER
        )

    async def test_detail_confirm_debit_and_one_sms_even_when_repeated(self, phone: Phone) -> None:
        """Buying D30 ENDs with the new balance; a repeated hop changes nothing; exactly one SMS is queued."""
        await open_menu(phone)
        detail = await phone.walk("2", "1", "2")
        assert detail.text == (
            "Goi D30: 7GB toc do cao trong 7 ngay. Gia 30.000d/7 ngay, tu gia han moi 7 ngay. Dang ky?\n"
            "1. Dong y\n2. Khong\n" + FOOTER
        )
        done = await phone.send("1")
        assert done.end
        assert done.text == (
            f"Dang ky thanh cong goi D30, HSD {in_days(7)}, tu gia han moi 7 ngay. TKC con 170.000d. "
            "Tin nhan xac nhan se duoc gui toi quy khach."
        )
        assert await phone.repeat() == done
        assert await balance_of(phone) == "TKC cua quy khach: 170.000d."
        queued = await gateway_of(phone).store.outbound_sms()
        assert len(queued) == 1
        assert queued[0].to == ALICE and queued[0].sender == "MobiFone"
        assert queued[0].text == (  # price, validity, renewal and how to stop it, in one SMS
            f"Da dang ky goi D30: 30.000d/7 ngay, tu gia han moi 7 ngay, HSD {in_days(7)}. "
            "Huy gia han: HUY D30 gui 999. TKC 170.000d."
        )

    async def test_not_enough_balance_says_how_much_is_missing(self, phone: Phone) -> None:
        """3.000d cannot buy D15: an advance is offered first; declined, END with the
        12.000d missing, balance unchanged, no SMS."""
        phone.msisdn = POOR
        await open_menu(phone)
        offer = await phone.walk("2", "1", "1", "1")
        assert offer.text.startswith("TKC thieu 12.000d de mua D15. Ung truoc 20.000d (phi 2.000d)") and not offer.end
        screen = await phone.send("2")
        assert screen.end
        assert screen.text == "TKC khong du de dang ky goi D15. Quy khach can nap them 12.000d va thu lai."
        assert await balance_of(phone) == "TKC cua quy khach: 3.000d."
        assert await gateway_of(phone).store.outbound_sms() == []

    async def test_accepting_the_suggestion_replaces_the_renewing_package(self, phone: Phone) -> None:
        """"Goi y cho ban" suggests C90N instead of MAX90 (90.000d a month against the 150.000d spent);
        accepting buys C90N once (200.000d - 90.000d), stops MAX90's renewal (still usable), and
        queues one confirmation SMS."""
        await open_menu(phone)
        first = await phone.walk("2", "4")
        assert not first.end
        pages = await read_pages(phone, first)
        assert page_words(pages) == (SUGGESTION + " 1. Dong y 2. Khong").split()
        done = await phone.send("1")
        assert done.end
        assert done.text == (
            f"Dang ky thanh cong goi C90N, HSD {in_days(30)}, tu gia han moi 30 ngay. "
            "Da huy gia han MAX90 (van dung den het han). TKC con 110.000d."
        )
        assert await phone.repeat() == done
        assert await balance_of(phone) == "TKC cua quy khach: 110.000d."
        await open_menu(phone)
        packages = await phone.walk("1", "1")
        assert packages.text == (
            f"Goi dang dung:\n1. MAX90 con 18GB, HSD {in_days(12)}\n"
            f"2. C90N con 120GB, 1.050 phut, HSD {in_days(30)}\n" + FOOTER
        )
        assert "Tu gia han: Khong" in (await phone.send("1")).text  # MAX90 replaced: no longer renews
        await phone.send("0")
        assert "Tu gia han: Co" in (await phone.send("2")).text  # C90N renews
        [sms] = await gateway_of(phone).store.outbound_sms()
        assert sms.text.startswith("Da dang ky goi C90N: 90.000d/30 ngay, tu gia han moi 30 ngay,")

    async def test_declining_the_suggestion_keeps_everything(self, phone: Phone) -> None:
        """"2 Khong" on the suggestion: back to the buy menu, MAX90 still renews, nothing debited."""
        await open_menu(phone)
        pages = await read_pages(phone, await phone.walk("2", "4"))
        assert pages[-1].split("\n")[-3:] == ["1. Dong y", "2. Khong", FOOTER]
        assert (await phone.send("2")).text == BUY_MENU
        assert await balance_of(phone) == "TKC cua quy khach: 200.000d."
        await open_menu(phone)
        assert "Tu gia han: Co" in (await phone.walk("1", "1", "1")).text
        assert await gateway_of(phone).store.outbound_sms() == []

    async def test_declining_on_confirm_debits_nothing(self, phone: Phone) -> None:
        """"2 Khong" (no) on a package's confirmation goes back to the buy menu and debits nothing."""
        await open_menu(phone)
        back = await phone.walk("2", "1", "3", "2")
        assert back.text == BUY_MENU
        back = await phone.walk("4", "2")
        assert back.text == BUY_MENU
        assert await balance_of(phone) == "TKC cua quy khach: 200.000d."
        assert await gateway_of(phone).store.outbound_sms() == []


# ---- build your own bundle (M090) -----------------------------------------------------------------
async def to_name_screen(phone: Phone, cycle: str = "3", data: str = "2", sms: str = "2", voice: str = "2") -> Screen:
    await open_menu(phone)
    await phone.walk("3", cycle, data, sms)
    return await phone.send(voice)


NAME_PROMPT = "Tong: 70.000d/thang\nDat ten cho goi (1-20 ky tu):\n" + FOOTER


class TestBundle:
    async def test_cycle_and_levels_with_the_running_total(self, phone: Phone) -> None:
        """Cycle, then data, SMS and voice levels priced for it, with "Tam tinh" adding up."""
        await open_menu(phone)
        assert (await phone.send("3")).text == CYCLE_SCREEN
        data = await phone.send("3")
        assert data.text == (
            "Chon muc Data (theo thang):\n1. Khong chon 0d\n2. 1GB 30.000d\n3. 5GB 70.000d\n4. 15GB 120.000d\n" + FOOTER
        )
        sms = await phone.send("2")
        assert sms.text == "Tam tinh: 30.000d\nChon muc SMS:\n1. Khong chon 0d\n2. 20 SMS 10.000d\n3. 100 SMS 25.000d\n" + FOOTER
        voice = await phone.send("2")
        assert voice.text == (
            "Tam tinh: 40.000d\nChon muc thoai:\n1. Khong chon 0d\n2. 30 phut 30.000d\n3. 100 phut 60.000d\n"
            "4. 500 phut 150.000d\n" + FOOTER
        )
        assert (await phone.send("2")).text == NAME_PROMPT

    async def test_going_back_shows_the_total_before_that_step(self, phone: Phone) -> None:
        """Back from voice to SMS shows the data-only subtotal; a new SMS pick re-totals."""
        await open_menu(phone)
        await phone.walk("3", "1", "2", "2")  # day: 1GB 5.000d, 20 SMS 4.000d
        back = await phone.send("0")
        assert back.text.startswith("Tam tinh: 5.000d\nChon muc SMS:")
        voice = await phone.send("3")  # 100 SMS 8.000d
        assert voice.text.startswith("Tam tinh: 13.000d\nChon muc thoai:")
        name = await phone.send("1")
        assert name.text.startswith("Tong: 13.000d/ngay\n")

    @pytest.mark.parametrize(
        ("name", "reason"),
        [
            ("", "Ten goi khong duoc de trong."),
            ("A" * 21, "Ten goi toi da 20 ky tu."),
            ("Gói@!", "Ten goi chi gom chu khong dau, so, dau cach, . _ -"),
            ("Goi@!", "Ten goi chi gom chu khong dau, so, dau cach, . _ -"),
        ],
    )
    async def test_an_invalid_name_is_asked_again_with_the_reason(self, phone: Phone, name: str, reason: str) -> None:
        """An empty, 21-character or non-plain name re-asks the name with why it was refused."""
        assert (await to_name_screen(phone)).text == NAME_PROMPT
        screen = await phone.send(name)
        assert not screen.end
        assert screen.text == reason + "\n" + NAME_PROMPT
        review = await phone.send("Lan Data")  # the screen still takes a valid name
        assert review.text.startswith("Goi Lan Data:")

    async def test_valid_name_leads_to_the_review(self, phone: Phone) -> None:
        """A valid name (20 characters is the most) shows the choices, the total and "1. Mua 2. Thay doi"."""
        await to_name_screen(phone)
        review = await phone.send("A" * 20)
        assert review.text == (
            f"Goi {'A' * 20}: 1GB, 20 SMS, 30 phut. Tong 70.000d/thang, tu gia han moi 30 ngay.\n1. Mua\n2. Thay doi\n" + FOOTER
        )

    async def test_change_starts_over_and_back_leaves_the_service(self, phone: Phone) -> None:
        """"2 Thay doi" returns to the cycle choice; 0 there leaves for the main menu, not a stale review."""
        await to_name_screen(phone)
        await phone.send("Lan Data")
        again = await phone.send("2")
        assert again.text == CYCLE_SCREEN
        back = await phone.send("0")
        assert back == Screen(MAIN_MENU, False)
        assert await balance_of(phone) == "TKC cua quy khach: 200.000d."

    async def test_buy_debits_the_total_and_shows_in_account(self, phone: Phone) -> None:
        """"1 Mua" ENDs with the name, debits 70.000d once, and Account lists the bundle under its name."""
        await to_name_screen(phone)
        await phone.send("Lan Data")
        done = await phone.send("1")
        assert done.end
        assert done.text == (
            f"Dang ky thanh cong goi Lan Data, 70.000d/thang, tu gia han moi 30 ngay, HSD {in_days(30)}. TKC con 130.000d."
        )
        assert await phone.repeat() == done
        assert await balance_of(phone) == "TKC cua quy khach: 130.000d."
        await open_menu(phone)
        packages = await phone.walk("1", "1")
        assert packages.text == (
            f"Goi dang dung:\n1. MAX90 con 18GB, HSD {in_days(12)}\n"
            f"2. Lan Data con 1GB, 30 phut, 20 SMS, HSD {in_days(30)}\n" + FOOTER
        )
        assert len(await gateway_of(phone).store.outbound_sms()) == 1

    async def test_all_levels_none_is_not_a_bundle(self, phone: Phone) -> None:
        """Choosing no data, no SMS and no voice leads to "needs data, SMS or voice", then back to the cycles."""
        await open_menu(phone)
        screen = await phone.walk("3", "1", "1", "1", "1")
        assert not screen.end
        assert screen.text == "Goi can co it nhat Data, SMS hoac thoai.\n1. Chon lai\n" + FOOTER
        assert (await phone.send("1")).text == CYCLE_SCREEN

    async def test_not_enough_balance_for_the_bundle(self, phone: Phone) -> None:
        """3.000d cannot buy a 5.000d daily bundle: END with 2.000d missing, balance unchanged."""
        phone.msisdn = POOR
        name = await to_name_screen(phone, cycle="1", data="2", sms="1", voice="1")
        assert name.text.startswith("Tong: 5.000d/ngay\n")
        await phone.send("Tiet kiem")
        poor = await phone.send("1")
        assert poor.end
        assert poor.text == "TKC khong du de mua goi Tiet kiem. Quy khach can nap them 2.000d."
        assert await balance_of(phone) == "TKC cua quy khach: 3.000d."


# ---- KNDL loyalty ----------------------------------------------------------------------------------
PENDING = (
    "Yeu cau dang ky KNDL dang cho xac nhan. Chon 1 trong 10 phut (hoac soan XN gui 9237).\n"
    "1. Xac nhan dang ky\n" + FOOTER
)


async def register(phone: Phone) -> Screen:
    await open_menu(phone)
    nonmember = await phone.send("4")
    assert nonmember.text == (
        "Quy khach chua tham gia Ket noi dai lau. Diem hien co: 1.250.\n1. Dang ky (mien phi)\n" + FOOTER
    )
    assert (await phone.send("1")).text == PENDING
    return await phone.send("1")


class TestKndl:
    async def test_nonmember_registers_in_two_steps(self, phone: Phone) -> None:
        """Register, confirm: END as a "Than thiet" member keeping 1.250 points; Account shows the tier."""
        joined = await register(phone)
        assert joined.end
        assert joined.text == "Chuc mung quy khach da la hoi vien KNDL hang Than thiet. Diem: 1.250."
        await open_menu(phone)
        assert (await phone.send("1")).text.startswith("TKC: 200.000d\nDiem KNDL: 1.250\nHang: Than thiet\n")

    async def test_member_sees_points_and_tier(self, phone: Phone) -> None:
        """Entering KNDL again as a member shows the tier and points."""
        await register(phone)
        await open_menu(phone)
        member = await phone.send("4")
        assert member.text == "KNDL hang Than thiet\nDiem: 1.250\n1. Doi diem\n2. Lich su diem\n3. Chuyen diem\n" + FOOTER

    async def test_pending_registration_is_shared_by_a_new_dialogue(self, phone: Phone) -> None:
        """After "1 Dang ky", a new dialogue entering KNDL shows the pending confirmation, which completes."""
        await open_menu(phone)
        await phone.walk("4", "1")
        pending = await phone.dial("*090*4#")
        assert pending.text == PENDING
        joined = await phone.send("1")
        assert joined.end and "hang Than thiet" in joined.text

    async def test_confirmation_expires(self, phone_with: PhoneFactory) -> None:
        """With a 1 s confirmation window, confirming 1.1 s later says the request expired; still not a member."""
        phone = await phone_with(services={"kndl_confirm_s": 1})
        await open_menu(phone)
        pending = await phone.walk("4", "1")
        assert pending.text.startswith("Yeu cau dang ky KNDL dang cho xac nhan.")
        await asyncio.sleep(1.1)
        expired = await phone.send("1")
        assert expired.end
        assert "het han" in expired.text and "DK gui 9237" in expired.text
        await open_menu(phone)
        assert (await phone.send("4")).text.startswith("Quy khach chua tham gia Ket noi dai lau.")

    async def test_gold_member_sees_gold_and_points(self, phone: Phone) -> None:
        """84909999999 is a Gold ("Vang") member with 52.000 points."""
        phone.msisdn = GOLD
        await open_menu(phone)
        member = await phone.send("4")
        assert member.text == "KNDL hang Vang\nDiem: 52.000\n1. Doi diem\n2. Lich su diem\n3. Chuyen diem\n" + FOOTER
        rewards = await phone.send("1")
        assert rewards.text == (
            "Doi diem lay:\n1. Goi D15 3 ngay (1.500 diem)\n2. Goi C90N 30 ngay (9.000 diem)\n"
            "3. 10.000d vao TKC (1.000 diem)\n4. 50.000d vao TKC (5.000 diem)\n" + FOOTER
        )

    async def test_redeem_credit_exactly_once(self, phone: Phone) -> None:
        """R-10K takes 1.000 points for 10.000d of credit, once, even when the hop is repeated."""
        phone.msisdn = GOLD
        await open_menu(phone)
        confirm = await phone.walk("4", "1", "3")
        assert confirm.text == "Doi 1.000 diem lay 10.000d vao TKC?\n1. Dong y\n2. Khong\n" + FOOTER
        done = await phone.send("1")
        assert done.end
        assert done.text == "Doi diem thanh cong: 10.000d vao TKC. Diem con lai: 51.000. TKC: 160.000d."
        assert await phone.repeat() == done
        assert await balance_of(phone) == "TKC cua quy khach: 160.000d."
        await open_menu(phone)
        assert (await phone.send("4")).text.startswith("KNDL hang Vang\nDiem: 51.000\n")

    async def test_a_package_for_points_says_it_renews_at_its_money_price(self, phone: Phone) -> None:
        """R-C90N: the confirm screen says C90N renews at 90.000d/30 ngay from the main balance;
        redeeming takes 9.000 points, no money, and C90N then renews (Tu gia han: Co)."""
        phone.msisdn = GOLD
        await open_menu(phone)
        confirm = await phone.walk("4", "1", "2")
        assert confirm.text == (
            "Doi 9.000 diem lay goi C90N 30 ngay. Het han, goi tu gia han voi gia 90.000d/30 ngay, "
            "tru vao TKC (khong tru diem). Doi diem?\n1. Dong y\n2. Khong\n" + FOOTER
        )
        done = await phone.send("1")
        assert done.end
        assert done.text == "Doi diem thanh cong: goi C90N 30 ngay. Diem con lai: 43.000. TKC: 150.000d."
        await open_menu(phone)
        assert "Tu gia han: Co" in (await phone.walk("1", "1", "1")).text

    async def test_not_enough_points(self, phone: Phone) -> None:
        """A new member with 1.250 points cannot take R-C90N (9.000): 7.750 missing, nothing deducted."""
        await register(phone)
        await open_menu(phone)
        poor = await phone.walk("4", "1", "2", "1")
        assert poor.end
        assert poor.text == "Khong du diem de doi goi C90N 30 ngay. Quy khach can them 7.750 diem."
        await open_menu(phone)
        assert (await phone.send("4")).text.startswith("KNDL hang Than thiet\nDiem: 1.250\n")
        assert await balance_of(phone) == "TKC cua quy khach: 200.000d."


# ---- value-added services ----------------------------------------------------------------------------
VAS_LIST = (
    "Dich vu GTGT dang dung. Chon de huy:\n1. Nhac cho FunRing 9.000d/thang\n2. mClip xem video 3.000d/ngay\n" + FOOTER
)


class TestVas:
    async def test_list_shows_subscriptions_with_prices(self, phone: Phone) -> None:
        """Both paid subscriptions are listed with their price and period."""
        await open_menu(phone)
        assert (await phone.send("5")).text == VAS_LIST

    async def test_cancel_one_after_confirmation(self, phone: Phone) -> None:
        """Cancelling FunRing asks first, ENDs, and the list then shows only mClip."""
        await open_menu(phone)
        confirm = await phone.walk("5", "1")
        assert confirm.text == "Huy dich vu Nhac cho FunRing (9.000d/thang)?\n1. Dong y\n2. Khong\n" + FOOTER
        done = await phone.send("1")
        assert done.end
        assert done.text == "Da huy dich vu Nhac cho FunRing. Quy khach khong bi tru cuoc dich vu nay nua."
        await open_menu(phone)
        assert (await phone.send("5")).text == (
            "Dich vu GTGT dang dung. Chon de huy:\n1. mClip xem video 3.000d/ngay\n" + FOOTER
        )

    async def test_declining_keeps_the_subscription(self, phone: Phone) -> None:
        """"2 Khong" (no) on the confirmation returns to the unchanged list."""
        await open_menu(phone)
        assert (await phone.walk("5", "2", "2")).text == VAS_LIST

    async def test_subscriber_without_vas_gets_an_end(self, phone: Phone) -> None:
        """A subscriber with no paid services is told so in an END."""
        phone.msisdn = POOR
        await open_menu(phone)
        screen = await phone.send("5")
        assert screen.end
        assert screen.text == "Quy khach khong dung dich vu GTGT nao co tinh phi."


# ---- feedback --------------------------------------------------------------------------------------
MESSAGE_PROMPT = "Nhap noi dung gop y (toi da 160 ky tu):\n" + FOOTER


class TestFeedback:
    async def test_four_topics(self, phone: Phone) -> None:
        """Feedback offers the four topics in order."""
        await open_menu(phone)
        assert (await phone.send("6")).text == (
            "Gop y ve:\n1. Cham soc khach hang\n2. San pham, dich vu, khuyen mai\n3. Chat luong mang\n4. Y kien khac\n" + FOOTER
        )

    async def test_too_long_and_blank_messages_are_asked_again(self, phone: Phone) -> None:
        """161 characters or a blank message re-ask with the reason; nothing is stored."""
        await open_menu(phone)
        assert (await phone.walk("6", "1")).text == MESSAGE_PROMPT
        long = await phone.send("x" * 161)
        assert long == Screen("Noi dung dai qua 160 ky tu.\n" + MESSAGE_PROMPT, False)
        blank = await phone.send("   ")
        assert blank == Screen("Noi dung khong duoc de trong.\n" + MESSAGE_PROMPT, False)
        assert await gateway_of(phone).backend.list_feedback() == []

    async def test_valid_message_thanks_and_is_stored(self, phone: Phone) -> None:
        """A valid message ENDs with thanks and is stored with its topic and text."""
        await open_menu(phone)
        message = "Song yeu o quan 7, goi hay bi rot"
        thanks = await phone.walk("6", "3", message)
        assert thanks.end
        assert thanks.text == "Cam on quy khach da gop y ve chat luong mang. MobiFone se phan hoi som nhat."
        [stored] = await gateway_of(phone).backend.list_feedback()
        assert (stored.msisdn, stored.topic, stored.message) == (ALICE, "network", message)

    async def test_a_160_character_message_is_accepted(self, phone: Phone) -> None:
        """Exactly 160 characters is within the limit."""
        await open_menu(phone)
        thanks = await phone.walk("6", "4", "y" * 160)
        assert thanks.end and thanks.text.startswith("Cam on quy khach da gop y ve y kien khac.")
        [stored] = await gateway_of(phone).backend.list_feedback()
        assert stored.topic == "other" and stored.message == "y" * 160


# ---- language --------------------------------------------------------------------------------------
class TestLanguage:
    async def test_english_is_chosen_and_remembered(self, phone: Phone) -> None:
        """Choosing English ENDs in English, and the next dialogue (a new session) is in English."""
        await open_menu(phone)
        done = await phone.walk("7", "3")
        assert done == Screen("Language set to English.", True)
        home = await phone.dial("*090#")
        assert home.text.split("\n")[1:3] == ["1. My account", "2. Buy a package"]
        assert await balance_of(phone) == "Your main balance: 200,000 VND."

    async def test_vietnamese_with_diacritics(self, phone: Phone) -> None:
        """vi_dau shows diacritics from the next dialogue on, the main menu on two pages (option 1
        is "Tài khoản": "Tra cứu tài khoản" would take three); back to vi works too."""
        await open_menu(phone)
        assert (await phone.walk("7", "2")) == Screen("Đã chuyển sang Tiếng Việt có dấu.", True)
        home = await phone.dial("*090#")
        assert home.text == "MobiFone *090#\n1. Tài khoản\n2. Mua gói cước\n3. Tự tạo gói M090\n98.Xem thêm"
        assert home.text.endswith("\n98.Xem thêm")  # UCS-2: 80 characters a screen, so paged
        assert fits(home.text, ScreenBudget())
        back = await phone.walk("7", "1")  # an option works from any page of its screen
        assert back == Screen("Da chuyen sang Tieng Viet khong dau.", True)
        assert (await phone.dial("*090#")).text == MAIN_MENU

    async def test_a_long_vi_dau_end_pages_rather_than_drop(self, phone: Phone) -> None:
        """vi_dau: buying D30 ENDs with everything vi says (renewal, balance, the SMS notice) on
        two UCS-2 pages: page 1 is a CON with "98.Xem thêm" (another key shows it again), the
        last page ENDs; the purchase is made once."""
        await open_menu(phone)
        await phone.walk("7", "2")
        await phone.dial("*090#")
        confirm = await phone.walk("2", "1", "2")
        assert confirm.text.startswith("Gói D30: 7GB tốc độ cao trong 7 ngày.\n98.Xem thêm\n")  # a whole sentence
        first = await phone.send("1")
        assert first == Screen(f"Đăng ký thành công gói D30, HSD {in_days(7)}, tự gia hạn mỗi 7 ngày.\n98.Xem thêm", False)
        assert await phone.send("5") == first
        last = await phone.send("98")
        assert last == Screen("TKC còn 170.000đ. Tin nhắn xác nhận sẽ được gửi tới quý khách.", True)
        assert len(await gateway_of(phone).store.outbound_sms()) == 1
        assert fits(first.text, ScreenBudget()) and fits(last.text, ScreenBudget())

    async def test_json_language_field_sets_and_remembers(self, gateway_client: Any) -> None:
        """The JSON dialect's `language` field switches the dialogue, and is remembered."""
        english = Phone(gateway_client, "json", language="en")
        home = await english.dial("*090#")
        assert home.text.startswith("MobiFone *090#\n1. My account\n")
        account = await english.send("1")
        assert account.text.startswith("Balance: 200,000 VND\nKNDL points: 1,250\nTier: Not a member\n")
        plain = Phone(gateway_client, "json")
        assert (await plain.dial("*101#")).text == "Your main balance: 200,000 VND."


# ---- navigation and paging ----------------------------------------------------------------------------
async def read_pages(phone: Phone, first: Screen) -> list[str]:
    pages = [first.text]
    while MORE in pages[-1].split("\n"):
        pages.append((await phone.send("98")).text)
        assert len(pages) < 10, pages
    return pages


def page_words(pages: list[str]) -> list[str]:
    body = [line for page in pages for line in page.split("\n") if line not in (MORE, FOOTER)]
    return " ".join(body).split()


class TestNavigation:
    async def test_zero_walks_back_the_stack(self, phone: Phone) -> None:
        """Two levels deep, 0 returns to the buy menu and 0 again to the main menu."""
        await open_menu(phone)
        assert (await phone.walk("2", "1")).text == DATA_LIST
        assert (await phone.send("0")).text == BUY_MENU
        assert (await phone.send("0")).text == MAIN_MENU

    async def test_double_zero_goes_home_from_deep_inside(self, phone: Phone) -> None:
        """00 on a package confirmation goes to the main menu, which works as usual."""
        await open_menu(phone)
        await phone.walk("2", "1", "1")
        assert await phone.send("00") == Screen(MAIN_MENU, False)
        assert (await phone.send("2")).text == BUY_MENU
        assert (await phone.send("0")).text == MAIN_MENU  # home cleared the stack

    async def test_invalid_option_reshows_the_screen(self, phone: Phone) -> None:
        """An unknown option re-shows the same screen headed "Lua chon khong hop le.", and it still works."""
        await open_menu(phone)
        assert await phone.send("9") == Screen(INVALID + "\n" + MAIN_MENU, False)
        assert await phone.send("0") == Screen(INVALID + "\n" + MAIN_MENU, False)  # nothing to go back to
        assert (await phone.walk("2", "1")).text == DATA_LIST
        assert (await phone.send("5")).text == INVALID + "\n" + DATA_LIST
        assert (await phone.send("1")).text.startswith("Goi D15:")

    async def test_long_screens_are_paged_within_the_budget(self, phone_with: PhoneFactory) -> None:
        """At 90 septets the main menu pages with "98.Xem them"; 98 and 0 move between pages; nothing is cut."""
        phone = await phone_with(screen={"gsm7_limit": 90})
        budget = ScreenBudget(gsm7=90)
        first = await phone.dial("*090#")
        assert first.text.endswith("\n" + MORE) and not first.end
        pages = await read_pages(phone, first)
        assert len(pages) >= 2
        assert all(fits(page, budget) for page in pages), pages
        body = [line for page in pages for line in page.split("\n") if line != MORE]
        assert body == MAIN_LINES
        assert (await phone.send("0")).text == pages[-2]

    async def test_a_long_sentence_is_wrapped_at_words(self, phone_with: PhoneFactory) -> None:
        """The suggestion sentence spans pages at 90 septets without a cut word; 0 on page 2 returns to page 1."""
        phone = await phone_with(screen={"gsm7_limit": 90})
        budget = ScreenBudget(gsm7=90)
        await phone.dial("*090#")
        first = await phone.walk("2", "4")
        pages = await read_pages(phone, first)
        assert len(pages) >= 2
        assert all(fits(page, budget) for page in pages), pages
        assert all(page.endswith(FOOTER) for page in pages)
        assert page_words(pages) == (SUGGESTION + " 1. Dong y 2. Khong").split()
        for page in reversed(pages[:-1]):  # 0 walks back page by page, then leaves the screen
            assert (await phone.send("0")).text == page
        assert (await phone.send("0")).text.startswith("Mua goi cuoc\n")

    async def test_invalid_option_on_a_later_page_shows_the_reason(self, phone_with: PhoneFactory) -> None:
        """A wrong key on page 2 shows page 1 headed by "Lua chon khong hop le." (not a shifted page)."""
        phone = await phone_with(screen={"gsm7_limit": 90})
        await phone.dial("*090#")
        await phone.send("98")
        plain = await phone.send("0")
        wrong = await phone.send("9")
        assert fits(wrong.text, ScreenBudget(gsm7=90))
        # The reason heads page 1 in place of the heading "MobiFone *090#" (seen a moment ago),
        # so it pushes no choice off page 1.
        assert wrong.text.startswith(INVALID + "\n1. Tra cuu tai khoan\n")
        choices = [line for line in plain.text.split("\n") if line[:1].isdigit() and ". " in line]
        assert [line for line in wrong.text.split("\n") if line[:1].isdigit() and ". " in line] == choices


# ---- resume ---------------------------------------------------------------------------------------
class TestResume:
    async def test_dropped_dialogue_is_offered_and_restored(self, phone: Phone) -> None:
        """Redialled after a drop, "1.Tiep tuc" restores the exact screen and its back stack."""
        await open_menu(phone)
        left = await phone.walk("2", "1")
        await phone.abort()
        offer = await phone.dial("*090#")
        assert offer == Screen(RESUME_OFFER, False)
        assert await phone.send("1") == left
        assert (await phone.send("0")).text == BUY_MENU
        assert (await phone.send("0")).text == MAIN_MENU

    async def test_start_over_goes_to_the_main_menu(self, phone: Phone) -> None:
        """"2.Bat dau lai" opens the main menu."""
        await open_menu(phone)
        await phone.walk("3", "3", "2")
        offer = await phone.dial("*090#")
        assert offer.text == RESUME_OFFER
        assert await phone.send("2") == Screen(MAIN_MENU, False)

    async def test_no_offer_after_the_window(self, phone_with: PhoneFactory) -> None:
        """With a 1 s resume window, a redial 1.2 s after the drop opens the main menu."""
        phone = await phone_with(sessions={"resume_window_s": 1, "ttl_s": 5})
        await phone.dial("*090#")
        await phone.walk("2", "1")
        assert (await phone.dial("*090#")).text == RESUME_OFFER  # within the window
        await phone.send("1")
        await asyncio.sleep(1.2)
        assert await phone.dial("*090#") == Screen(MAIN_MENU, False)

    async def test_a_dialogue_ended_with_end_is_never_offered(self, phone: Phone) -> None:
        """After a purchase END, the next dial opens the main menu."""
        await open_menu(phone)
        assert (await phone.walk("2", "1", "1", "1")).end
        assert await phone.dial("*090#") == Screen(MAIN_MENU, False)
