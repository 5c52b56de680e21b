"""The web phone (`GET /sim`): a cheap check of the page as served, and end-to-end tests
in a real headless Chromium (Debian's `chromium` and `chromium-driver`, driven over
WebDriver by selenium) against a gateway on a real loopback port.

Without the browser the end-to-end tests are skipped locally, and fail in CI (CI=true)
with the command that installs it.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import signal
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from helpers import make_settings

from ussd_gateway.app.server import STATIC_DIR, create_app

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
WAIT_S = 10.0
"""The longest any single step may take in the browser."""


# ---- the page as served (no browser) ---------------------------------------------------


async def test_sim_page_is_served_self_contained(aiohttp_client) -> None:  # type: ignore[no-untyped-def]
    client = await aiohttp_client(create_app(make_settings()))
    response = await client.get("/sim")
    assert response.status == 200
    assert response.content_type == "text/html"
    html = await response.text()
    assert "<title>Web phone" in html
    csp = response.headers["Content-Security-Policy"]
    assert "connect-src 'self'" in csp and "script-src 'self'" in csp
    assert 'href="menus/graph?format=svg"' in html

    assets = re.findall(r'(?:src|href)="([^"]+)"', html)
    assert "static/sim.js" in assets and "static/sim.css" in assets
    bodies = {"sim.html": html}
    for asset in ("static/sim.js", "static/sim.css"):
        got = await client.get("/" + asset)
        assert got.status == 200, asset
        bodies[asset] = await got.text()
    for name, body in bodies.items():
        # Works offline: nothing is fetched from another host (no CDN, no web fonts).
        assert not re.search(r"(?:https?:)?//[a-z0-9.-]+\.[a-z]{2,}", body, re.I), name
        assert "@import" not in body and "url(" not in body, name
    js = bodies["static/sim.js"]
    # Server text is set as text, never parsed as HTML.
    for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval("):
        assert sink not in js, sink
    # Every form control has a label.
    for control in re.findall(r'<(?:input|select)[^>]*\bid="([^"]+)"', html):
        assert f'for="{control}"' in html, control


def test_static_dir_is_package_data() -> None:
    assert {"sim.html", "sim.js", "sim.css"} <= {p.name for p in STATIC_DIR.iterdir()}


# ---- a gateway on a real port, in a thread of its own ------------------------------------


class ServedGateway:
    """The app on 127.0.0.1:<free port>, served by its own event loop in a thread, so the
    (synchronous) WebDriver calls never block it."""

    def __init__(self, settings: Any = None) -> None:
        self.settings = settings or make_settings()
        self.loop = asyncio.new_event_loop()
        self.runner: web.AppRunner | None = None
        self.url = ""
        self._thread = threading.Thread(target=self.loop.run_forever, name="web-phone-gateway", daemon=True)

    def __enter__(self) -> ServedGateway:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self.loop).result(WAIT_S)
        return self

    async def _start(self) -> None:
        self.runner = web.AppRunner(create_app(self.settings), handle_signals=False)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        host, port = self.runner.addresses[0][:2]
        self.url = f"http://{host}:{port}"

    def __exit__(self, *exc: object) -> None:
        try:
            if self.runner is not None:
                asyncio.run_coroutine_threadsafe(self.runner.cleanup(), self.loop).result(WAIT_S)
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(WAIT_S)
            self.loop.close()


@pytest.fixture
def gateway() -> Iterator[ServedGateway]:
    """A fresh gateway (fresh demo subscribers) per test."""
    with ServedGateway() as served:
        yield served


# ---- the browser ------------------------------------------------------------------------


def _unavailable(reason: str) -> None:
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(
            f"{reason}: the web phone's browser tests must run in CI. Install the browser with "
            "`apt-get update && apt-get install -y chromium chromium-driver` (.ci/run does) "
            "and selenium with `pip install -e '.[test]'`.",
            pytrace=False,
        )
    pytest.skip(reason)


def _kill_leftovers(marker: str) -> None:
    """SIGKILL any process whose command line names this run's own profile folder: a
    browser that outlived its driver. Only our processes can carry that path."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if marker.encode() in cmdline:
            try:
                os.kill(int(entry.name), signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """One headless Chromium for this module, always quit (and killed if it lingers)."""
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        _unavailable("selenium is not installed")
    for binary in (CHROMIUM, CHROMEDRIVER):
        if not os.access(binary, os.X_OK):
            _unavailable(f"{binary} is missing")

    profile = tempfile.mkdtemp(prefix="web-phone-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        "--window-size=1280,900",
        f"--user-data-dir={profile}",
    ):
        options.add_argument(flag)
    service = Service(executable_path=CHROMEDRIVER, log_output=os.devnull)
    driver = None
    try:
        driver = webdriver.Chrome(service=service, options=options)
        driver.set_page_load_timeout(WAIT_S)
        driver.set_script_timeout(WAIT_S)
        yield driver
    finally:
        try:
            if driver is not None:
                driver.quit()
            else:
                service.stop()
        finally:
            _kill_leftovers(profile)
            shutil.rmtree(profile, ignore_errors=True)


class Page:
    """The web phone in the browser, with the few gestures the tests need."""

    def __init__(self, driver: Any, url: str) -> None:
        from selenium.webdriver.common.by import By
        from selenium.webdriver.common.keys import Keys
        from selenium.webdriver.support.ui import Select, WebDriverWait

        self.d, self.By, self.Keys, self.Select = driver, By, Keys, Select
        self.wait = WebDriverWait(driver, WAIT_S, poll_frequency=0.05)
        driver.get(url + "/sim")
        self.until(lambda: self.d.execute_script("return document.body.dataset.ready") == "true", "the page to start")

    def until(self, condition: Any, what: str) -> Any:
        return self.wait.until(lambda _: condition(), message=f"waiting for {what}")

    def el(self, element_id: str) -> Any:
        return self.d.find_element(self.By.ID, element_id)

    def text(self, element_id: str) -> str:
        return self.el(element_id).text

    def state(self) -> str:
        return self.el("ussd-dialog").get_attribute("data-state") or "closed"

    def set_field(self, element_id: str, value: str) -> None:
        field = self.el(element_id)
        field.clear()
        field.send_keys(value)
        # `change` fires when the field loses focus, as when a person tabs away.
        field.send_keys(self.Keys.TAB)

    def set_language(self, value: str) -> None:
        self.Select(self.el("language")).select_by_value(value)

    def dial(self, code: str | None = None) -> str:
        if code is not None:
            self.set_field("dial-code", code)
        self.el("call").click()
        return self.settle()

    def answer(self, value: str) -> str:
        field = self.el("ussd-answer")
        field.send_keys(value)
        field.send_keys(self.Keys.ENTER)  # Enter sends
        return self.settle()

    def settle(self) -> str:
        """Wait for the hop's answer; the dialog's state (continue, end, error, neterror)."""
        self.until(lambda: self.state() not in ("busy", "closed"), "the USSD answer")
        return self.state()

    def open_messages(self) -> None:
        self.el("tab-messages").click()

    def inbox(self) -> str:
        return self.text("inbox")


@pytest.fixture
def page(browser: Any, gateway: ServedGateway) -> Page:
    return Page(browser, gateway.url)


# ---- end to end --------------------------------------------------------------------------


def test_buy_d15_through_the_dialog_and_see_the_confirmation_sms(page: Page) -> None:
    started = time.monotonic()
    assert page.el("dial-code").get_attribute("value") == "*090#"  # the default code
    assert page.dial() == "continue"
    home = page.text("ussd-text")
    assert "1. Tra cuu tai khoan" in home and "2. Mua goi cuoc" in home
    assert page.el("ussd-answer").is_displayed() and page.el("ussd-send").is_displayed()
    assert page.el("ussd-cancel").is_displayed()

    assert page.answer("2") == "continue" and "Goi Data" in page.text("ussd-text")
    assert page.answer("1") == "continue" and "D15 15.000d" in page.text("ussd-text")
    assert page.answer("1") == "continue" and "Dang ky?" in page.text("ussd-text")
    assert page.answer("1") == "end"
    final = page.text("ussd-text")
    assert "Dang ky thanh cong goi D15" in final and "185.000d" in final
    assert page.el("ussd-ok").is_displayed() and not page.el("ussd-answer").is_displayed()

    # The trace: five hops, one session id, seq 0..4, each with its time in ms.
    hops = page.d.find_elements(page.By.CSS_SELECTOR, '#trace li[data-kind="ussd"]')
    assert len(hops) == 5
    session_id = page.text("session-id")
    assert re.fullmatch(r"web-[0-9a-f]{12}", session_id)
    assert page.text("session-seq") == "4"
    for seq, item in enumerate(hops):
        meta = item.find_element(page.By.CLASS_NAME, "hop-meta").text
        assert f"session {session_id} · seq {seq}" in meta
        assert re.fullmatch(r"\d+\.\d ms", item.find_element(page.By.CLASS_NAME, "hop-ms").text)
        assert "HTTP 200" in item.text
    assert '"event":"begin"' in hops[0].text and "1. Tra cuu tai khoan" in hops[0].text
    assert hops[-1].find_element(page.By.CLASS_NAME, "hop-resp").text.startswith("END Dang ky thanh cong")

    page.el("ussd-ok").click()
    assert page.state() == "closed"

    # The purchase confirmation SMS, queued for the subscriber, lands in the inbox.
    page.until(lambda: page.text("unread") == "1", "the unread badge")
    page.open_messages()
    page.until(lambda: "Da dang ky goi D15: 15.000d/3 ngay, tu gia han moi 3 ngay" in page.inbox(), "the confirmation SMS")
    assert "Huy gia han: HUY D15 gui 999. TKC 185.000d." in page.inbox() and "From MobiFone (queued)" in page.inbox()
    # Polling again later does not add it twice.
    page.el("inbox-refresh").click()
    page.until(lambda: "0 new" in page.d.find_elements(page.By.CSS_SELECTOR, "#trace li")[-1].text, "the refresh")
    assert page.inbox().count("goi D15") == 1
    assert time.monotonic() - started < 30


def test_english_cancel_and_escape(page: Page) -> None:
    page.set_language("en")
    assert page.dial() == "continue"
    assert "My account" in page.text("ussd-text") and "Buy a package" in page.text("ussd-text")
    assert '"language":"en"' in page.text("trace")
    # Cancel hangs up: an abort with the next seq, and the dialog closes.
    page.el("ussd-cancel").click()
    assert page.state() == "closed"
    page.until(lambda: '"event":"abort"' in page.text("trace"), "the abort in the trace")
    assert '"seq":1' in page.d.find_elements(page.By.CSS_SELECTOR, '#trace li[data-kind="ussd"]')[-1].text

    # A code with embedded inputs, the keypad, and Escape to hang up.
    page.el("dial-clear").click()
    for key in "*101#":
        page.d.find_element(page.By.CSS_SELECTOR, f'.key[data-key="{key}"]').click()
    assert page.el("dial-code").get_attribute("value") == "*101#"
    assert page.dial() == "end"
    page.el("ussd-ok").send_keys(page.Keys.ESCAPE)
    assert page.state() == "closed"


def test_sms_to_a_short_code_and_the_reply(page: Page) -> None:
    page.open_messages()
    page.set_field("sms-to", "9237")
    text = page.el("sms-text")
    text.send_keys("DK")
    text.send_keys(page.Keys.ENTER)
    page.until(lambda: "From 9237" in page.inbox(), "the reply")
    assert "To 9237" in page.inbox() and "DK" in page.inbox()
    replies = page.d.find_elements(page.By.CSS_SELECTOR, "#inbox li.sms.in")
    assert "dang ky KNDL" in replies[-1].text and "Soan XN gui 9237" in replies[-1].text
    last = page.d.find_elements(page.By.CSS_SELECTOR, "#trace li")
    assert any(item.get_attribute("data-kind") == "sms" and "HTTP 200" in item.text for item in last)

    # Text is shown as text: markup typed by the tester is not parsed.
    page.set_field("sms-to", "999")
    text.send_keys("<b id=x>KT</b>")
    text.send_keys(page.Keys.ENTER)
    page.until(lambda: "From 999" in page.inbox(), "the second reply")
    assert "<b id=x>KT</b>" in page.inbox()
    assert "Ma goi <B ID=X>KT</B> khong dung" in page.inbox()  # the server's echo (the whole typo), as text too
    assert not page.d.find_elements(page.By.CSS_SELECTOR, "#inbox b, #x")


def test_bad_msisdn_shows_the_servers_reason(page: Page) -> None:
    page.set_field("msisdn", "12ab")
    assert page.dial() == "error"
    error = page.text("ussd-error")
    assert "HTTP 400" in error
    assert "phone number '12ab' is not an MSISDN" in error
    assert page.el("ussd-ok").is_displayed()
    page.el("ussd-ok").click()

    # The other demo subscribers are offered, and a switch takes effect on the next dial.
    page.d.find_element(page.By.CSS_SELECTOR, '.chip[data-msisdn="84901111111"]').click()
    assert page.el("msisdn").get_attribute("value") == "84901111111"
    assert page.dial("*090*2*1*1*1*2#") == "end"  # D15 with 3.000d: the advance declined, refused politely
    assert "185.000d" not in page.text("ussd-text")
    assert "84901111111" in page.text("trace")


def test_network_error_is_shown_and_retry_resends_the_same_seq(page: Page, gateway: ServedGateway) -> None:
    assert page.dial() == "continue"
    # The server goes away: the next hop fails with a network error, and offers Retry.
    asyncio.run_coroutine_threadsafe(gateway.runner.cleanup(), gateway.loop).result(WAIT_S)  # type: ignore[union-attr]
    gateway.runner = None
    assert page.answer("1") == "neterror"
    assert "Network error" in page.text("ussd-error") and "seq 1" in page.text("ussd-error")
    assert page.el("ussd-retry").is_displayed()
    page.el("ussd-retry").click()
    assert page.settle() == "neterror"
    failed = page.d.find_elements(page.By.CSS_SELECTOR, "#trace li.failed")
    assert len(failed) == 2 and all('"seq":1' in item.text for item in failed)
    assert "network error" in failed[-1].text


# ---- USSD push ---------------------------------------------------------------------------


@pytest.fixture
def redis_gateway(redis_server: Any) -> Iterator[ServedGateway]:
    """A gateway on a freshly flushed real Redis."""
    import redis

    redis_server.start()
    client = redis.Redis.from_url(redis_server.url)
    try:
        client.flushdb()
    finally:
        client.close()
    # Generous store deadlines: a browser test on a busy machine must not read a slow
    # Redis as a down one (the busy END is tested elsewhere).
    settings = make_settings(redis_server.url, sessions={"redis_timeout_ms": 3000, "hop_deadline_ms": 5000, "lock_ttl_ms": 6000})
    with ServedGateway(settings) as served:
        yield served


def _post_push(url: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    import json
    import urllib.error
    import urllib.request

    request = urllib.request.Request(url + "/admin/ussd/push", data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=WAIT_S) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def test_a_push_rings_the_web_phone_and_its_answer_buys_once(browser: Any, redis_gateway: ServedGateway) -> None:
    page = Page(browser, redis_gateway.url)
    page.set_field("msisdn", "84901234567")
    status, body = _post_push(redis_gateway.url, {"msisdn": "84901234567", "entry": "offer:start", "vars": {"offer_code": "D15"}, "bind": "web"})
    assert status == 200 and body["bind"] == "web" and re.fullmatch(r"push-web-[0-9a-f]{12}", body["session_id"])
    page.until(lambda: page.state() == "continue", "the push to ring")
    offer = page.text("ussd-text")
    assert offer.startswith("Uu dai: goi D15") and "1. Dang ky" in offer and "2. Bo qua" in offer
    assert page.text("session-id") == body["session_id"]
    # While the push is on screen the subscriber is in a dialogue: a second push is refused.
    again, refused = _post_push(redis_gateway.url, {"msisdn": "84901234567", "entry": "offer:start", "vars": {"offer_code": "D15"}, "bind": "web"})
    assert again == 409 and refused["reason"] == "open_dialogue"
    assert page.answer("1") == "end"
    final = page.text("ussd-text")
    assert "Dang ky thanh cong goi D15" in final and "185.000d" in final  # 200.000d less one debit of 15.000d
    pushes = page.d.find_elements(page.By.CSS_SELECTOR, '#trace li[data-kind="push"]')
    hops = page.d.find_elements(page.By.CSS_SELECTOR, '#trace li[data-kind="ussd"]')
    assert len(pushes) == 1 and "CON Uu dai: goi D15" in pushes[0].text
    assert len(hops) == 1 and f"session {body['session_id']} · seq 1" in hops[0].text and '"event":"continue"' in hops[0].text
    page.el("ussd-ok").click()
    # A notify-only push shows with OK only.
    status, body = _post_push(redis_gateway.url, {"msisdn": "84901234567", "entry": "offer:start", "vars": {"offer_code": "D30"}, "bind": "web", "notify": True})
    assert status == 200 and body["end"]
    page.until(lambda: page.state() == "end", "the notice")
    assert page.text("ussd-text").startswith("Uu dai: goi D30") and not page.el("ussd-answer").is_displayed()


def test_a_push_for_another_number_does_not_ring(page: Page, gateway: ServedGateway) -> None:
    status, _body = _post_push(gateway.url, {"msisdn": "84909999999", "entry": "offer:start", "vars": {"offer_code": "D15"}, "bind": "web"})
    assert status == 200
    time.sleep(3.5)  # two polls of the page
    assert page.state() == "closed"
