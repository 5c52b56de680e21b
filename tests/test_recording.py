"""Recording sessions as transcripts: `sim --record` round trips through replay, and
the server's live recording (sampled, MSISDNs masked, bounded, harmless) writes
transcripts that replay green with the number given back."""

from __future__ import annotations

import asyncio
import io
import sys
from pathlib import Path
from typing import Any

import pytest
import structlog.testing
from helpers import make_settings
from test_transcripts import ROOT, serving

from ussd_gateway.app.config import ConfigError, load_settings
from ussd_gateway.core.hop import Hop, HopKind, Reply
from ussd_gateway.app.recording import LiveRecorder, sampled, stable_fragment, transcript_text
from ussd_gateway.app.server import GATEWAY
from ussd_gateway.testkit.sim import run_sim
from ussd_gateway.testkit.transcripts import load_transcript, load_transcripts, make_channel, run_transcript
from ussd_gateway.app.wiring import build_gateway


def scripted(*answers: str) -> Any:
    """The subscriber's keypresses; Ctrl-D (EOFError) once they run out."""
    queue = list(answers)

    def read(_prompt: str) -> str:
        if not queue:
            raise EOFError
        return queue.pop(0)

    return read


async def replay(path: Path, endpoint: Any, kind: str, **variables: str) -> Any:
    channel = endpoint.channel(kind)
    try:
        return await run_transcript(load_transcript(path), channel, variables=variables)
    finally:
        await channel.close()


class TestSimRecord:
    async def test_a_purchase_recorded_then_replayed(self, tmp_path: Path) -> None:
        """sim --record over HTTP writes a transcript that replays green, as another subscriber too."""
        target = tmp_path / "bought.toml"
        async with serving() as endpoint:
            code = await asyncio.to_thread(
                run_sim, url=endpoint.url, msisdn="84910008001", code="*090#", read=scripted("2", "1", "1", "1"), out=io.StringIO(), record=str(target)
            )
            assert code == 0
            text = target.read_text()
            assert 'msisdn = "{msisdn}"' in text and 'msisdn = "84910008001"' in text
            assert 'send = "2"' in text and "expect_end = true" in text
            assert 'expect_contains = "Dang ky thanh cong goi D15, HSD"' in text  # cut before the date
            for kind, number in (("json", "84910008002"), ("africastalking", "84910008003")):
                result = await replay(target, endpoint, kind, msisdn=number)
                assert result.ok, result.error
                assert len(result.steps) == 6

    async def test_a_hang_up_is_recorded(self, tmp_path: Path) -> None:
        """Ctrl-D becomes `hangup = true`; the replay drops the dialogue the same way."""
        target = tmp_path / "dropped.toml"
        async with serving() as endpoint:
            await asyncio.to_thread(
                run_sim, url=endpoint.url, msisdn="84910008011", code="*090#", read=scripted("1"), out=io.StringIO(), record=str(target)
            )
            transcript = load_transcript(target)
            assert transcript.steps[-1].action == "hangup"
            result = await replay(target, endpoint, "json", msisdn="84910008012")
            assert result.ok, result.error
            phone = make_channel("json", url=endpoint.url)
            resumed = await phone.dial("84910008012", "*090#")
            await phone.close()
            assert "chua hoan tat" in resumed.text

    async def test_recorded_over_smpp_replays_on_every_channel(self, tmp_path: Path) -> None:
        """A session recorded through the SMSC simulator replays over SMPP and HTTP alike."""
        target = tmp_path / "smpp.toml"
        async with serving("smpp") as endpoint:
            code = await asyncio.to_thread(
                run_sim, url="", smpp=endpoint.smpp, msisdn="84910008021", code="*090#", read=scripted("6", "2", "Tot lam"), out=io.StringIO(), record=str(target)
            )
            assert code == 0
            for kind, number in (("smpp", "84910008022"), ("json", "84910008023"), ("africastalking", "84910008024")):
                result = await replay(target, endpoint, kind, msisdn=number)
                assert result.ok, f"{kind}: {result.error}"

    async def test_the_cli_flag(self, tmp_path: Path) -> None:
        """`ussd-gateway sim --record FILE` with piped answers writes the file and says so."""
        target = tmp_path / "cli.toml"
        async with serving() as endpoint:
            process = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "ussd_gateway.cli", "sim", "--url", endpoint.url, "--msisdn", "84910008031", "--record", str(target),
                cwd=ROOT, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
            )  # fmt: skip
            out, err = await asyncio.wait_for(process.communicate(b"5\n"), 30)
            assert process.returncode == 0, err.decode()
            assert f"recorded 2 screen(s) to {target}" in out.decode()
            result = await replay(target, endpoint, "africastalking", msisdn="84910008032")
            assert result.ok, result.error

    def test_stable_fragment(self) -> None:
        """The expected text is the first line, cut before a date and at a word boundary."""
        assert stable_fragment("\nTKC: 200.000d\nDiem") == "TKC: 200.000d"
        assert stable_fragment("Da huy tu gia han goi MAX90. Goi van dung den 04/12/2026.") == "Da huy tu gia han goi MAX90. Goi van dung den"
        long = "Goi y: C90N (120GB, 1050 phut), 90.000d/thang. Tiet kiem 60.000d/thang so voi hien nay."
        assert stable_fragment(long) == "Goi y: C90N (120GB, 1050 phut), 90.000d/thang. Tiet kiem"
        assert stable_fragment("") == ""

    def test_braces_in_screens_are_escaped(self) -> None:
        """A screen with braces is expected literally, not read as a placeholder."""
        from ussd_gateway.app.recording import RecordedHop
        from ussd_gateway.testkit.transcripts import parse_transcript

        text = transcript_text([RecordedHop(None, "Ma {x}", False)], msisdn="84910008041", code="*090#")
        assert parse_transcript(text).steps[1].contains == ("Ma {{x}}",)


# ---- live recording in the server ------------------------------------------------------------
def recording_settings(directory: Path, rate: float = 1.0, **changes: Any) -> Any:
    return make_settings(recording={"enabled": True, "sample_rate": rate, "directory": str(directory), **changes})


class TestLiveRecording:
    async def test_sampled_dialogues_are_masked_and_replay_green(self, tmp_path: Path) -> None:
        """sample_rate 1: an ended, a released, an abandoned and an SMPP dialogue become
        transcripts without the number, which replay green given --var msisdn."""
        directory = tmp_path / "recordings"
        numbers = ["84910006001", "84910006002", "84910006003", "84910006004"]
        async with serving(settings=recording_settings(directory)) as endpoint:
            bought = make_channel("json", url=endpoint.url)
            await bought.dial(numbers[0], "*090#")
            for key in ("2", "1", "1", "1"):
                screen = await bought.send(key)
            assert screen.end
            released = make_channel("json", url=endpoint.url)
            await released.dial(numbers[1], "*090#")
            await released.send("1")
            await released.hangup()
            abandoned = make_channel("africastalking", url=endpoint.url)
            await abandoned.dial(numbers[2], "*090#")
            await abandoned.send("6")
            for channel in (bought, released, abandoned):
                await channel.close()
        async with serving("smpp", settings=recording_settings(directory)) as endpoint:
            over_smpp = make_channel("smpp", smpp=endpoint.smpp)
            await over_smpp.dial(numbers[3], "*090#")
            assert (await over_smpp.send("5")).end
            await over_smpp.close()
        files = sorted(directory.glob("*.toml"))
        assert len(files) == 4, [f.name for f in files]
        texts = [f.read_text() for f in files]
        for text in texts:
            assert 'msisdn = "{msisdn}"' in text
            for number in numbers:
                assert number not in text and "0" + number[2:] not in text
                assert number[2:] not in text
        joined = "\n".join(texts)
        assert "8491****001" in joined and "hangup = true" in joined
        assert "released" in joined and "ended" in joined and "the server stopped" in joined
        async with serving() as endpoint:
            results = []
            for n, transcript in enumerate(load_transcripts([directory])):
                channel = endpoint.channel("json")
                results.append(await run_transcript(transcript, channel, variables={"msisdn": f"8491000610{n}"}))
                await channel.close()
        assert all(r.ok for r in results), [r.error for r in results]

    async def test_only_the_sample_is_recorded_whole(self, tmp_path: Path) -> None:
        """At sample_rate 0.5 about half the dialogues are written, each with all its hops."""
        directory = tmp_path / "half"
        async with serving(settings=recording_settings(directory, rate=0.5)) as endpoint:
            channels = [make_channel("json", url=endpoint.url) for _ in range(40)]
            for n, channel in enumerate(channels):
                await channel.dial(f"849100062{n:02d}", "*090#")
                await channel.send("1")
                await channel.send("0")
                assert (await channel.send("5")).end
                await channel.close()
        files = list(directory.glob("*.toml"))
        assert 8 <= len(files) <= 32
        for file in files:
            transcript = load_transcript(file)
            assert [s.action for s in transcript.steps] == ["dial", None, "send", "send", "send"]

    def test_sampling_is_deterministic_per_session(self) -> None:
        """The same session id always gets the same answer; the share follows the rate."""
        ids = [f"sess-{n}" for n in range(4000)]
        first = [sampled(i, 0.25) for i in ids]
        assert first == [sampled(i, 0.25) for i in ids]
        assert 0.2 < sum(first) / len(ids) < 0.3
        assert not any(sampled(i, 0.0) for i in ids) and all(sampled(i, 1.0) for i in ids)

    def test_off_by_default_and_configurable(self, tmp_path: Path) -> None:
        """No recorder unless [recording] enabled; the section is validated."""
        assert build_gateway(make_settings()).dispatcher.recorder is None
        config = tmp_path / "config.toml"
        config.write_text('[recording]\nenabled = true\nsample_rate = 0.5\ndirectory = "rec"\n')
        settings = load_settings(config, environ={})
        assert settings.recording.sample_rate == 0.5
        assert isinstance(build_gateway(settings).dispatcher.recorder, LiveRecorder)
        assert load_settings(config, environ={"USSD_RECORDING_SAMPLE_RATE": "0.1"}).recording.sample_rate == 0.1
        config.write_text("[recording]\nsample_rate = 2\n")
        with pytest.raises(ConfigError, match="sample_rate must be between 0 and 1"):
            load_settings(config, environ={})

    async def test_a_failing_recorder_never_breaks_a_hop(self, tmp_path: Path) -> None:
        """An unwritable directory or a recorder that raises: hops are answered as usual."""
        blocker = tmp_path / "file"
        blocker.write_text("not a folder")
        async with serving(settings=recording_settings(blocker / "sub")) as endpoint:
            channel = make_channel("json", url=endpoint.url)
            with structlog.testing.capture_logs() as logs:
                await channel.dial("84910006301", "*090#")
                assert (await channel.send("5")).end
                await endpoint.app[GATEWAY].dispatcher.recorder.flush()
            assert [e["event"] for e in logs if e["log_level"] == "warning"] == ["recording_not_written"]

            class Broken:
                def observe(self, *args: Any) -> None:
                    raise RuntimeError("disk on fire")

            endpoint.app[GATEWAY].dispatcher.recorder = Broken()
            screen = await channel.dial("84910006301", "*101#")
            assert screen.end and "100.000d" in screen.text
            await channel.close()

    async def test_buffers_are_bounded(self, tmp_path: Path) -> None:
        """Past max_open dialogues are skipped (counted); past max_hops a dialogue is cut."""
        recorder = LiveRecorder(tmp_path, 1.0, max_open=2, max_hops=3)
        for n in range(3):
            recorder.observe(Hop("json", f"s{n}", "84910006401", "*090#", HopKind.BEGIN), Reply("Menu", False))
        assert recorder.dropped == 1
        for _ in range(3):
            recorder.observe(Hop("json", "s0", "84910006401", "*090#", HopKind.CONTINUE, inputs=("0",)), Reply("Menu", False))
        await recorder.flush()
        texts = sorted(p.read_text() for p in tmp_path.glob("*.toml"))
        assert len(texts) == 2 and any("cut after 3 hops" in t for t in texts)

    async def test_retried_hops_are_recorded_once(self, tmp_path: Path) -> None:
        """A gateway retry answered from the saved reply is not a second step."""
        recorder = LiveRecorder(tmp_path, 1.0)
        begin = Hop("json", "r1", "84910006501", "*090#", HopKind.BEGIN)
        recorder.observe(begin, Reply("Menu", False), "begin")
        recorder.observe(begin, Reply("Menu", False), "replay")
        recorder.observe(Hop("json", "r1", "84910006501", "*090#", HopKind.CONTINUE, inputs=("5",)), Reply("Khong co", True), "continue")
        await recorder.flush()
        (only,) = list(tmp_path.glob("*.toml"))
        assert [s.action for s in load_transcript(only).steps] == ["dial", None, "send"]
