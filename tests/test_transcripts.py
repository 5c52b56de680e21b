"""Session transcripts: every transcript in sessions/transcripts passes over every
channel (Africa's Talking, JSON, SMPP through the SMSC simulator) against real servers
on real ports; broken transcripts fail with a precise message; the format's errors
point at the line; captures and arithmetic work."""

from __future__ import annotations

import asyncio
import dataclasses
import functools
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from helpers import make_settings

from ussd_gateway.channels.smpp.config import BindSettings
from ussd_gateway.testkit.smsc import SmscSimulator
from ussd_gateway.app.config import Settings, SmppSettings
from ussd_gateway.testkit.redis_server import RedisServer
from ussd_gateway.testkit.replay import run_many
from ussd_gateway.app.server import create_app
from ussd_gateway.testkit.transcripts import (
    Transcript,
    TranscriptError,
    TranscriptResult,
    Mismatch as _Mismatch,
    as_number,
    load_transcript,
    load_transcripts,
    make_channel,
    parse_transcript,
    render_template,
    run_transcript,
)

ROOT = Path(__file__).resolve().parent.parent
FOLDER = ROOT / "sessions" / "transcripts"
FILES = sorted(FOLDER.glob("*.toml"))
RELAXED_DEADLINES = {"redis_timeout_ms": 2000, "hop_deadline_ms": 5000, "lock_ttl_ms": 6000}
RUNS = [("africastalking", "memory"), ("json", "memory"), ("smpp", "memory"), ("json", "redis")]


# ---- a real gateway on a real port, over HTTP or bound to the SMSC simulator ---------------
@dataclass
class Endpoint:
    url: str
    smpp: str | None
    app: web.Application

    def channel(self, kind: str) -> Any:
        return make_channel(kind, url=self.url, smpp=self.smpp)


@asynccontextmanager
async def serving(kind: str = "json", *, settings: Settings | None = None, redis_url: str = "") -> AsyncIterator[Endpoint]:
    """A fresh gateway (fresh demo backend) on 127.0.0.1; for `smpp`, bound as an ESME
    to a fresh SMSC simulator whose control API the channel drives."""
    # The menus' acceptance suite, not a timing test: sixteen transcripts share this
    # process with the server, so a pause of the test process (a full collection of a
    # heap grown over the whole suite) must not turn a hop into the busy END.
    settings = settings or make_settings(redis_url, sessions=RELAXED_DEADLINES)
    smsc: SmscSimulator | None = None
    if kind == "smpp":
        smsc = SmscSimulator(port=0, control_port=0, enquire_link_s=None)
        await smsc.start()
        bind = BindSettings(
            name="replay", password="secret", port=smsc.port, short_codes=("9237", "999"), response_timeout_s=2.0, reconnect_min_s=0.05, reconnect_max_s=0.5
        )
        settings = dataclasses.replace(settings, smpp=SmppSettings(binds=(bind,)))
    app = create_app(settings)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        if smsc is not None:
            await smsc.wait_bound(timeout=5)
        yield Endpoint(f"http://127.0.0.1:{port}", f"127.0.0.1:{smsc.control_port}" if smsc else None, app)
    finally:
        await runner.cleanup()
        if smsc is not None:
            await smsc.stop()


async def _flush(redis_url: str) -> None:
    import redis.asyncio as aioredis

    client = aioredis.Redis.from_url(redis_url)
    try:
        await client.flushdb()
    finally:
        await client.aclose()


@functools.cache
def _suite(kind: str, store: str, redis_url: str) -> dict[str, TranscriptResult]:
    """Every transcript over one channel against one fresh gateway, concurrently (one
    subscriber's transcripts in turn); computed once, asserted per transcript."""

    async def run() -> dict[str, TranscriptResult]:
        transcripts = load_transcripts([FOLDER])
        if redis_url:
            await _flush(redis_url)  # a fresh demo backend: the named subscribers as seeded
        async with serving(kind, redis_url=redis_url) as endpoint:
            results = await run_many(transcripts, lambda: endpoint.channel(kind), concurrency=16)
        return {Path(r.path or "").name: r for r in results}

    return asyncio.run(run())


def _explain(result: TranscriptResult) -> str:
    from ussd_gateway.testkit.replay import format_failure

    return format_failure(result, width=140)


class TestEveryTranscriptOverEveryChannel:
    @pytest.mark.parametrize("kind,store", RUNS, ids=[f"{k}-{s}" for k, s in RUNS])
    @pytest.mark.parametrize("path", FILES, ids=[p.stem for p in FILES])
    def test_transcript_passes(self, path: Path, kind: str, store: str, request: pytest.FixtureRequest) -> None:
        """The acceptance suite of the menus: this transcript passes over this channel."""
        redis_url = ""
        if store == "redis":
            server: RedisServer = request.getfixturevalue("redis_server")
            server.start()
            redis_url = server.url
        results = _suite(kind, store, redis_url)
        result = results[path.name]
        assert result.ok, _explain(result)
        assert result.steps and all(step.ok for step in result.steps)

    def test_the_folder_covers_every_service(self) -> None:
        """Every service of *090# and every keyword short code has transcripts."""
        transcripts = load_transcripts([FOLDER])
        assert len(transcripts) >= 30
        names = " ".join(t.name for t in transcripts)
        for service in ("main menu", "*101#", "account", "buy", "bundle", "kndl", "vas", "feedback", "language", "navigation", "resume", "keywords"):
            assert service in names, service
        msisdns = [t.msisdn for t in transcripts]
        named = {"84901234567", "84901111111", "84909999999", "84902222222", "84903333333", "84904444444"}
        fresh = [m for m in msisdns if m not in named]
        assert len(fresh) == len(set(fresh)), "each transcript on a fresh number has its own"


# ---- failures are precise ----------------------------------------------------------------------
def _transcript(text: str) -> Transcript:
    return parse_transcript(text, path="t.toml")


class TestFailuresArePrecise:
    async def test_wrong_text_names_the_step_and_both_screens(self) -> None:
        """A transcript expecting the wrong text fails at that step, with expected and actual."""
        transcript = _transcript('msisdn = "84910009001"\ndial = "*090#"\n\n[[steps]]\nsend = "2"\nexpect_contains = "Goi Vang"\n')
        async with serving() as endpoint:
            channel = endpoint.channel("json")
            result = await run_transcript(transcript, channel)
            await channel.close()
        assert not result.ok
        step = result.failed_step
        assert step is not None and step.index == 1 and step.line == 4
        assert step.expected == "the screen contains 'Goi Vang'"
        assert "Mua goi cuoc" in step.actual and step.actual.endswith("[CON]")
        assert result.error == "step 1 (send '2'): expected the screen contains 'Goi Vang'"

    async def test_end_mismatch_and_later_steps_not_run(self) -> None:
        """Expecting END on a CON screen fails there; the steps after it are not played."""
        transcript = _transcript(
            'msisdn = "84910009002"\ndial = "*090#"\n[[steps]]\nsend = "1"\nexpect_end = true\n[[steps]]\nsend = "1"\n'
        )
        async with serving() as endpoint:
            channel = endpoint.channel("africastalking")
            result = await run_transcript(transcript, channel)
            await channel.close()
        assert not result.ok and len(result.steps) == 2
        assert result.steps[-1].expected == "the dialogue ends (END)"
        assert "TKC: 100.000d" in result.steps[-1].actual

    async def test_missing_sms_shows_what_arrived(self) -> None:
        """An SMS that never comes fails after its timeout, listing what did arrive."""
        transcript = _transcript(
            'msisdn = "84910009003"\ndial = "*101#"\n[[steps]]\nexpect_sms = { contains = "D15", timeout = 0.3 }\n'
        )
        async with serving() as endpoint:
            channel = endpoint.channel("json")
            result = await run_transcript(transcript, channel)
            await channel.close()
        step = result.failed_step
        assert step is not None
        assert step.expected == "an SMS within 0.3s containing 'D15'"
        assert step.actual == "(no SMS arrived)"

    async def test_captures_flow_into_later_steps(self) -> None:
        """A regex's named groups are variables: arithmetic on them checks the balance drop."""
        transcript = _transcript(
            """msisdn = "84910009004"
dial = "*090#"
[[steps]]
send = "2"
[[steps]]
send = "1"
[[steps]]
send = "2"
expect_regex = 'Gia (?P<price>[\\d.]+d)'
[[steps]]
send = "1"
expect_contains = "TKC con {start - price|money}"
"""
        )
        async with serving() as endpoint:
            channel = endpoint.channel("json")
            result = await run_transcript(transcript, channel, variables={"start": "100.000d"})
            await channel.close()
        assert result.ok, _explain(result)
        assert "TKC con 70.000d" in result.steps[-1].actual

    async def test_wrong_arithmetic_fails(self) -> None:
        """The same check with a wrong starting balance fails with the computed amount."""
        transcript = _transcript(
            'msisdn = "84910009005"\ndial = "*101#"\n[[steps]]\nexpect_contains = "{start - 1000|money}"\n'
        )
        async with serving() as endpoint:
            channel = endpoint.channel("json")
            result = await run_transcript(transcript, channel, variables={"start": "100000"})
            await channel.close()
        assert result.failed_step is not None and result.failed_step.expected == "the screen contains '99.000d'"

    async def test_unknown_variable_fails_the_step(self) -> None:
        """A placeholder nobody defined fails the step, naming the variables known."""
        transcript = _transcript('msisdn = "84910009006"\ndial = "*101#"\n[[steps]]\nexpect_contains = "{nope}"\n')
        async with serving() as endpoint:
            channel = endpoint.channel("json")
            result = await run_transcript(transcript, channel)
            await channel.close()
        assert result.error is not None and "unknown variable 'nope' (known: msisdn)" in result.error

    async def test_answering_an_ended_dialogue_is_refused(self) -> None:
        """send after END (or a hang-up) fails the same way on every channel: dial first."""
        transcript = _transcript('msisdn = "84910009010"\ndial = "*101#"\n[[steps]]\nsend = "1"\n')
        async with serving("smpp") as endpoint:
            for kind in ("json", "africastalking", "smpp"):
                channel = endpoint.channel(kind)
                result = await run_transcript(transcript, channel)
                await channel.close()
                assert result.error == "step 1 (send '1'): expected an open dialogue to answer, but it has ended (END): dial again first"

    async def test_msisdn_placeholder_needs_a_variable(self) -> None:
        """A recorded transcript dials {msisdn}: without --var it fails before any hop."""
        transcript = _transcript('msisdn = "{msisdn}"\ndial = "*101#"\n')
        channel = make_channel("json", url="http://127.0.0.1:9")
        result = await run_transcript(transcript, channel)
        await channel.close()
        assert not result.ok and "--var" in (result.error or "")

    async def test_server_down_is_a_failed_step(self) -> None:
        """No server: the first step fails with the channel's reason; nothing raises."""
        transcript = _transcript('msisdn = "84910009007"\ndial = "*101#"\n')
        channel = make_channel("json", url="http://127.0.0.1:9")
        result = await run_transcript(transcript, channel)
        await channel.close()
        assert not result.ok and "cannot reach http://127.0.0.1:9" in (result.error or "")

    async def test_a_hung_server_fails_the_step_in_time(self) -> None:
        """A server that never answers fails the step after the step timeout, not later."""

        async def hang(request: web.Request) -> web.Response:
            await asyncio.sleep(30)
            return web.Response()

        app = web.Application()
        app.router.add_post("/ussd", hang)
        runner = web.AppRunner(app, shutdown_timeout=0.1)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        try:
            channel = make_channel("json", url=f"http://127.0.0.1:{runner.addresses[0][1]}")
            started = asyncio.get_running_loop().time()
            result = await run_transcript(_transcript('msisdn = "84910009011"\ndial = "*090#"\n'), channel, step_timeout_s=0.3)
            elapsed = asyncio.get_running_loop().time() - started
            await channel.close()
        finally:
            await runner.cleanup()
        assert elapsed < 1.5
        assert result.error == "step 0 (dial *090#): no answer within 0.3s"
        assert result.steps[0].actual == "(no answer in time)"

    async def test_same_subscriber_runs_in_turn(self) -> None:
        """run_many plays transcripts of one MSISDN one after another, others at once."""
        first = _transcript('msisdn = "84910009008"\ndial = "*090#"\n[[steps]]\nsend = "1"\n[[steps]]\nwait = 0.2\n[[steps]]\nhangup = true\n')
        second = _transcript('msisdn = "84910009008"\ndial = "*090#"\n[[steps]]\nexpect_contains = "chua hoan tat"\n')
        async with serving() as endpoint:
            results = await run_many([first, second] * 1, lambda: endpoint.channel("json"), concurrency=4)
        assert [r.ok for r in results] == [True, True], [r.error for r in results]


# ---- the format's errors point at the line -----------------------------------------------------
class TestFormatErrors:
    def _error(self, text: str) -> TranscriptError:
        with pytest.raises(TranscriptError) as caught:
            parse_transcript(text, path="bad.toml")
        return caught.value

    def test_toml_syntax_error_has_the_line(self) -> None:
        """A TOML syntax error reports file:line."""
        error = self._error('msisdn = "1"\ndial = "*090#"\n[[steps]]\nsend = "1\n')
        assert str(error).startswith("bad.toml:4: not valid TOML")

    def test_unknown_key_suggests_the_right_one(self) -> None:
        """A misspelt key names the step, its line and the likely intended key."""
        error = self._error('msisdn = "84910000001"\ndial = "*090#"\n\n[[steps]]\nsend = "1"\nexpect_contain = "x"\n')
        assert str(error) == (
            "bad.toml:6: step 1: unknown key 'expect_contain' (did you mean 'expect_contains'?); known keys: "
            "description, dial, expect_contains, expect_end, expect_no_reply, expect_not_contains, expect_regex, expect_sms, hangup, send, sms, timeout, wait"
        )

    def test_two_actions_in_one_step(self) -> None:
        """send and dial in one step is refused with the fix."""
        error = self._error('msisdn = "84910000001"\ndial = "*090#"\n[[steps]]\nsend = "1"\ndial = "*101#"\n')
        assert error.line == 5 and "one action per step" in str(error)

    def test_missing_msisdn(self) -> None:
        """Who dials is required."""
        assert "needs `msisdn" in str(self._error('dial = "*090#"\n'))

    def test_first_action_must_dial_or_sms(self) -> None:
        """Without a top-level dial the first step must dial or send an SMS."""
        error = self._error('msisdn = "84910000001"\n[[steps]]\nsend = "1"\n')
        assert error.line == 2 and "first action must dial" in str(error)

    def test_bad_regex(self) -> None:
        """An invalid regular expression is caught at load, with its line."""
        error = self._error('msisdn = "84910000001"\ndial = "*090#"\n[[steps]]\nexpect_regex = "Gia (\\\\d+"\n')
        assert error.line == 4 and "not a valid regular expression" in str(error)

    def test_bad_placeholder(self) -> None:
        """Placeholders allow names and integer arithmetic only."""
        error = self._error('msisdn = "84910000001"\ndial = "*090#"\n[[steps]]\nexpect_contains = "{a.b}"\n')
        assert error.line == 4 and "names, whole numbers" in str(error)
        error = self._error('msisdn = "84910000001"\ndial = "*090#"\n[[steps]]\nexpect_contains = "{a|euro}"\n')
        assert "unknown format |euro" in str(error)

    def test_wrong_types(self) -> None:
        """expect_end must be a boolean, wait a bounded number, sms a table."""
        assert "expect_end must be true" in str(self._error('msisdn = "1"\ndial = "*090#"\n[[steps]]\nexpect_end = "yes"\n'))
        assert "wait must be a number" in str(self._error('msisdn = "1"\ndial = "*090#"\n[[steps]]\nwait = 9999\n'))
        assert "sms must be a table" in str(self._error('msisdn = "1"\nsms = "DK"\n'))
        assert "expect_end applies to USSD screens" in str(
            self._error('msisdn = "1"\ndial = "*090#"\n[[steps]]\nsms = { to = "9237", text = "DK" }\nexpect_end = true\n')
        )

    def test_step_that_does_nothing(self) -> None:
        """An empty step is a mistake, not a no-op."""
        error = self._error('msisdn = "1"\ndial = "*090#"\n[[steps]]\ndescription = "x"\n')
        assert error.line == 3 and "does nothing" in str(error)

    def test_files_and_folders(self, tmp_path: Path) -> None:
        """A folder expands to its *.toml sorted; a missing path or empty folder is an error."""
        (tmp_path / "b.toml").write_text('msisdn = "1"\ndial = "*101#"\n')
        (tmp_path / "a.toml").write_text('name = "first"\nmsisdn = "1"\ndial = "*101#"\n')
        (tmp_path / "notes.txt").write_text("ignored")
        assert [t.name for t in load_transcripts([tmp_path])] == ["first", "b"]
        with pytest.raises(TranscriptError, match="no such file or folder"):
            load_transcripts([tmp_path / "missing.toml"])
        (tmp_path / "empty").mkdir()
        with pytest.raises(TranscriptError, match="without any"):
            load_transcripts([tmp_path / "empty"])
        (tmp_path / "c.toml").write_text("msisdn = \n")
        with pytest.raises(TranscriptError, match=r"c\.toml:1: not valid TOML"):
            load_transcript(tmp_path / "c.toml")

    def test_sub_folders_are_searched(self, tmp_path: Path) -> None:
        """A folder's sub-folders count too (testers group transcripts by service);
        hidden folders do not."""
        (tmp_path / "kndl").mkdir()
        (tmp_path / "kndl" / "register.toml").write_text('name = "register"\nmsisdn = "1"\ndial = "*090#"\n')
        (tmp_path / "top.toml").write_text('name = "top"\nmsisdn = "1"\ndial = "*101#"\n')
        (tmp_path / ".git").mkdir()
        (tmp_path / ".git" / "config.toml").write_text("not = a transcript\n")
        assert [t.name for t in load_transcripts([tmp_path])] == ["register", "top"]


class TestTemplates:
    def test_plain_variables_and_braces(self) -> None:
        """{name} is the value as captured; {{ and }} are literal braces."""
        assert render_template("{a} {{x}}", {"a": "200.000d"}) == "200.000d {x}"

    def test_arithmetic_on_amounts(self) -> None:
        """Amounts read as whole numbers; results formatted as money in the language."""
        values = {"before": "200.000d", "price": "15.000d"}
        assert render_template("{before - price|money}", values) == "185.000d"
        assert render_template("{before - price|money}", values, lang="vi_dau") == "185.000đ"
        assert render_template("{before - price|money}", values, lang="en") == "185,000 VND"
        assert render_template("{before - price}", values) == "185000"
        assert render_template("{(before - price) * 2 + 1|number}", values) == "370.001"
        assert render_template("{-price}", values) == "-15000"

    def test_as_number(self) -> None:
        """Group separators and units are dropped; text without digits is refused."""
        assert as_number("x", "200,000 VND") == 200000
        assert as_number("x", "-1.250") == -1250
        with pytest.raises(_Mismatch, match="not a number"):
            as_number("x", "Vang")
