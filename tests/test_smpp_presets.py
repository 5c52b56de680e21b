"""Each USSD preset of smpp/presets/ against the simulator emulating it, the preset
files themselves (found in the checkout, carried in a wheel), and bind configuration."""

from __future__ import annotations

import asyncio
import dataclasses
import tomllib
from pathlib import Path
from typing import Any

import pytest
from helpers import make_settings

from ussd_gateway.app.config import ConfigError, SmppSettings, parse_binds
from ussd_gateway.app.server import create_app
from ussd_gateway.channels.smpp.presets import PRESETS_DIR, bind_settings, preset_names
from ussd_gateway.testkit.smsc import SmscSimulator

SUB = "84977200002"
ROOT = Path(__file__).resolve().parents[1]


async def rig(aiohttp_client: Any, preset: str, **ussd: Any) -> tuple[SmscSimulator, Any]:
    smsc = SmscSimulator(port=0, preset=preset, enquire_link_s=None)
    await smsc.start()
    bind = bind_settings(
        {
            "name": "p", "port": smsc.port, "password": "secret", "short_codes": ["9237"],
            "response_timeout_s": 2.0, "reconnect_min_s": 0.05, "ussd": {"preset": preset, **ussd},
        },
        "test",
    )
    client = await aiohttp_client(create_app(dataclasses.replace(make_settings(""), smpp=SmppSettings(binds=(bind,)))))
    await smsc.wait_bound(timeout=5)
    return smsc, client


@pytest.mark.parametrize("preset", ["3gpp", "sixdee", "mica", "msisdn"])
class TestPresetAgainstItsSimulator:
    async def test_purchase_dialogue_with_repeated_answers(self, aiohttp_client: Any, preset: str) -> None:
        """*090# -> 2 -> 1 -> 1 -> 1 buys D15: the same answer "1" three times in a row is
        three answers (continuations carry no code for the non-3gpp presets)."""
        smsc, client = await rig(aiohttp_client, preset)
        try:
            dialogue = await smsc.start_ussd(SUB, "*090#")
            screen = await dialogue.next_screen(timeout=5)
            assert "1. Tra cuu tai khoan" in screen.text and not screen.end
            for answer in ("2", "1", "1", "1"):
                await dialogue.answer(answer)
                screen = await dialogue.next_screen(timeout=5)
            assert screen.end and "D15" in screen.text
            assert screen.pdu.fields["ussd_service_op"] == smsc.dialect.op_reply_end
        finally:
            await client.close()
            await smsc.stop()

    async def test_resend_answered_once_and_abort_then_resume(self, aiohttp_client: Any, preset: str) -> None:
        smsc, client = await rig(aiohttp_client, preset)
        try:
            dialogue = await smsc.start_ussd(SUB, "*090#")
            await dialogue.next_screen(timeout=5)
            smsc.resend_next_deliver()
            await dialogue.answer("2")
            assert "Goi" in (await dialogue.next_screen(timeout=5)).text
            with pytest.raises(TimeoutError):
                await dialogue.next_screen(timeout=0.4)
            await dialogue.abort()
            await asyncio.sleep(0.2)
            again = await smsc.start_ussd(SUB, "*090#")
            assert "1.Tiep tuc" in (await again.next_screen(timeout=5)).text
        finally:
            await client.close()
            await smsc.stop()

    async def test_a_one_screen_code_dialled_twice_answers_twice(self, aiohttp_client: Any, preset: str) -> None:
        smsc, client = await rig(aiohttp_client, preset)
        try:
            for _ in range(2):
                dialogue = await smsc.start_ussd(SUB, "*101#")
                screen = await dialogue.next_screen(timeout=5)
                assert screen.end
        finally:
            await client.close()
            await smsc.stop()


class TestPresetFiles:
    def test_shipped_presets(self) -> None:
        assert {"3gpp", "sixdee", "mica", "msisdn"} <= set(preset_names())
        assert PRESETS_DIR == ROOT / "smpp" / "presets"

    def test_the_default_preset_is_the_default_dialect(self) -> None:
        from ussd_gateway.channels.smpp.config import UssdDialect

        assert bind_settings({"name": "b", "password": "x"}, "t").ussd == UssdDialect()

    def test_a_wheel_carries_the_presets(self) -> None:
        tool = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
        assert tool["package-dir"]["ussd_gateway.channels.smpp.presets_data"] == "smpp/presets"
        assert "*.toml" in tool["package-data"]["ussd_gateway.channels.smpp.presets_data"]
        assert "ussd_gateway.channels.smpp.presets_data" in tool["packages"]

    def test_explicit_keys_override_the_preset(self) -> None:
        bind = bind_settings({"name": "b", "password": "x", "ussd": {"preset": "sixdee", "op_reply_end": 17}}, "t")
        assert bind.ussd.op_reply_end == 17 and bind.ussd.op_abort == (0x81,) and bind.ussd.preset == "sixdee"

    @pytest.mark.parametrize(
        ("table", "message"),
        [
            ({"name": "b", "password": "x", "ussd": {"preset": "nope"}}, "unknown USSD preset 'nope'"),
            ({"name": "b", "password": "x", "ussd": {"bogus": 1}}, "unknown \\[ussd\\] key"),
            ({"name": "b", "password": "x", "mo_data_coding_map": {"0": "klingon"}}, "mo_data_coding_map"),
            ({"name": "b", "password": "x", "mo_data_coding_map": {"300": "ucs2"}}, "0..255"),
            ({"name": "b", "password": ""}, "'b' has no password"),
            ({"name": "b", "password": "x", "tls": True, "tls_ca_file": "/nonexistent.pem"}, "tls_ca_file"),
        ],
    )
    def test_mistakes_are_refused_by_name(self, table: dict[str, Any], message: str) -> None:
        with pytest.raises(ConfigError, match=message):
            parse_binds([table], "config.toml")

    def test_data_coding_maps(self) -> None:
        (bind,) = parse_binds(
            [{"name": "b", "password": "x", "mo_data_coding_map": {"0": "ucs2", "0x0F": "latin1"},
              "mt_data_coding_map": {"ucs2": 24}, "ussd": {"screen_data_coding": {"gsm7": 15}}}],
            "config.toml",
        )
        assert bind.mo_data_coding_map == {0: "ucs2", 15: "latin1"}
        assert bind.mt_data_coding_map == {"ucs2": 24}
        assert bind.ussd.screen_data_coding == {"gsm7": 15, "ucs2": 8}


class TestDataCodingOverridesOnTheWire:
    async def test_mo_map_and_screen_coding(self, aiohttp_client: Any) -> None:
        """mo_data_coding_map reads data_coding 0 as UCS-2 (an SMSC breaking the spec);
        screen_data_coding sends screens with data_coding 0x0F."""
        smsc = SmscSimulator(port=0, enquire_link_s=None)
        await smsc.start()
        bind = bind_settings(
            {"name": "p", "port": smsc.port, "password": "secret", "short_codes": ["9237"], "mo_data_coding_map": {"0": "ucs2"},
             "ussd": {"screen_data_coding": {"gsm7": 0x0F}}},
            "test",
        )
        client = await aiohttp_client(create_app(dataclasses.replace(make_settings(""), smpp=SmppSettings(binds=(bind,)))))
        try:
            await smsc.wait_bound(timeout=5)
            await smsc.send_deliver({
                "source_addr_ton": 1, "source_addr_npi": 1, "source_addr": SUB, "dest_addr_ton": 0, "dest_addr_npi": 1,
                "destination_addr": "9237", "esm_class": 0, "data_coding": 0, "short_message": "DIEM".encode("utf-16-be"),
            })
            assert "diem" in (await smsc.next_mt(SUB, timeout=5)).text
            dialogue = await smsc.start_ussd(SUB, "*101#")
            screen = await dialogue.next_screen(timeout=5)
            assert screen.pdu.fields["data_coding"] == 0x0F and "d" in screen.text
        finally:
            await client.close()
            await smsc.stop()


def test_smsc_cli_takes_a_preset() -> None:
    from ussd_gateway.cli import build_parser

    assert build_parser().parse_args(["smsc", "--preset", "mica"]).preset == "mica"
    assert SmscSimulator(preset="mica").dialect.session_id_from == "user_message_reference"
