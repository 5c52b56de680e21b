"""`[[smpp.binds]]` tables into `BindSettings`, starting from a named preset.

A preset is a TOML file of `smpp/presets/` holding `[smpp.binds.ussd]` keys: one USSD
gateway family's conventions (how a dialogue is named, which ops begin, continue and
release it, where the dialled code is). A checkout reads the folder in place; a wheel
carries it as `ussd_gateway.channels.smpp.presets_data`. Keys written in the bind's
own `[smpp.binds.ussd]` table override the preset's.
"""

from __future__ import annotations

import dataclasses
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ussd_gateway.channels.smpp.config import ALPHABETS, BindSettings, UssdDialect

__all__ = ["PRESETS_DIR", "BindConfigError", "bind_settings", "load_preset", "preset_names"]

DEFAULT_PRESET = "3gpp"


def _presets_dir() -> Path:
    """`smpp/presets` of the checkout, where an edit needs no reinstall; else the copy
    a wheel installs beside this module."""
    checkout = Path(__file__).resolve().parents[3] / "smpp" / "presets"
    return checkout if checkout.is_dir() else Path(__file__).parent / "presets_data"


PRESETS_DIR = _presets_dir()


class BindConfigError(ValueError):
    """A bind table that cannot be used; the message names the bind and the key."""


def preset_names() -> list[str]:
    """The presets shipped (file names without `.toml`)."""
    return sorted(p.stem for p in PRESETS_DIR.glob("*.toml"))


def load_preset(name: str) -> dict[str, Any]:
    """The `[smpp.binds.ussd]` keys of preset `name`.

    Raises:
        BindConfigError: no such preset, or its file is not valid TOML.
    """
    path = PRESETS_DIR / f"{name}.toml"
    if "/" in name or "\\" in name or not path.is_file():
        raise BindConfigError(f"unknown USSD preset {name!r} (known: {', '.join(preset_names())})")
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise BindConfigError(f"preset {path}: {exc}") from None
    return dict(data.get("ussd", {}))


def _ints(where: str, key: str, value: Any) -> tuple[int, ...]:
    if not isinstance(value, list) or not all(isinstance(v, int) and not isinstance(v, bool) for v in value):
        raise BindConfigError(f"{where}: {key} must be a list of integers, got {value!r}")
    return tuple(value)


def dialect(raw: Mapping[str, Any], where: str) -> UssdDialect:
    """`[smpp.binds.ussd]` (with `preset`) into a UssdDialect."""
    raw = dict(raw)
    name = str(raw.pop("preset", DEFAULT_PRESET))
    values = load_preset(name)
    values.update(raw)
    values["preset"] = name
    known = {f.name for f in dataclasses.fields(UssdDialect)}
    unknown = set(values) - known
    if unknown:
        raise BindConfigError(f"{where}: unknown [ussd] key(s) {', '.join(sorted(unknown))} (known: {', '.join(sorted(known))})")
    for key in ("op_begin", "op_continue", "op_abort", "op_push_confirm"):
        if key in values:
            values[key] = _ints(where, key, values[key])
    if "screen_data_coding" in values:
        screen = values["screen_data_coding"]
        if not isinstance(screen, Mapping) or set(screen) - {"gsm7", "ucs2"}:
            raise BindConfigError(f"{where}: [ussd] screen_data_coding takes gsm7 and ucs2, got {screen!r}")
        values["screen_data_coding"] = {"gsm7": 0x00, "ucs2": 0x08, **{k: _octet(where, k, v) for k, v in screen.items()}}
    try:
        made = UssdDialect(**values)
    except TypeError as exc:
        raise BindConfigError(f"{where}: [ussd] {exc}") from None
    choices = {
        "session_id_from": ("its_session_info", "user_message_reference", "receipted_message_id", "msisdn"),
        "code_from": ("short_message", "destination_addr"),
        "dcs": ("ussd", "smpp"),
        "op_other": ("refuse", "continue"),
    }
    for key, allowed in choices.items():
        if getattr(made, key) not in allowed:
            raise BindConfigError(f"{where}: [ussd] {key} must be one of {', '.join(allowed)}, got {getattr(made, key)!r}")
    if not made.session_mask & 0xFFFF or made.session_mask & made.end_bit:
        raise BindConfigError(f"{where}: [ussd] session_mask must name bits of its_session_info other than end_bit")
    return made


def _octet(where: str, key: str, value: Any) -> int:
    if isinstance(value, str):
        try:
            value = int(value, 0)
        except ValueError:
            pass
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 0xFF:
        raise BindConfigError(f"{where}: data_coding for {key!r} must be 0..255, got {value!r}")
    return value


def bind_settings(table: Mapping[str, Any], where: str) -> BindSettings:
    """One `[[smpp.binds]]` table into BindSettings; every mistake is refused by name.

    Raises:
        BindConfigError: a missing name or password, an unknown key, a wrong type.
    """
    if not isinstance(table, Mapping) or not table.get("name"):
        raise BindConfigError(f"{where} needs a `name`")
    values = dict(table)
    where = f"{where} ({values['name']!r})"
    dialect_raw = values.pop("ussd", {})
    if not isinstance(dialect_raw, Mapping):
        raise BindConfigError(f"{where}: ussd must be a table ([smpp.binds.ussd])")
    known = {f.name for f in dataclasses.fields(BindSettings)} - {"ussd"}
    unknown = set(values) - known
    if unknown:
        raise BindConfigError(f"{where}: unknown key(s) {', '.join(sorted(unknown))} (known: {', '.join(sorted(known))})")
    if not isinstance(values.get("password"), str) or not values["password"]:
        raise BindConfigError(
            f"{where}: bind {values['name']!r} has no password; set the password the SMSC gave for "
            f"system_id {values.get('system_id', 'ussdgw')!r} (a bind never falls back to a default one)"
        )
    for key in ("short_codes", "service_codes"):
        if key in values:
            values[key] = tuple(str(v) for v in values[key])
    if "mo_data_coding_map" in values:
        mapping = values["mo_data_coding_map"]
        if not isinstance(mapping, Mapping):
            raise BindConfigError(f"{where}: mo_data_coding_map must be a table like {{\"0\" = \"ucs2\"}}")
        parsed: dict[int, str] = {}
        for key, alphabet in mapping.items():
            if alphabet not in ALPHABETS:
                raise BindConfigError(f"{where}: mo_data_coding_map[{key!r}] must be one of {', '.join(ALPHABETS)}, got {alphabet!r}")
            parsed[_octet(where, str(key), str(key))] = alphabet
        values["mo_data_coding_map"] = parsed
    if "mt_data_coding_map" in values:
        mapping = values["mt_data_coding_map"]
        if not isinstance(mapping, Mapping) or set(mapping) - {"gsm7", "ucs2"}:
            raise BindConfigError(f"{where}: mt_data_coding_map takes gsm7 and ucs2, got {mapping!r}")
        values["mt_data_coding_map"] = {k: _octet(where, k, v) for k, v in mapping.items()}
    if values.get("mode", "transceiver") not in ("transceiver", "transmitter_receiver"):
        raise BindConfigError(f"{where}: mode must be transceiver or transmitter_receiver")
    for key in ("tls", "tls_verify", "gsm7_packed"):
        if key in values and not isinstance(values[key], bool):
            raise BindConfigError(f"{where}: {key} must be true or false, got {values[key]!r}")
    try:
        bind = BindSettings(**values, ussd=dialect(dialect_raw, where))
    except TypeError as exc:
        raise BindConfigError(f"{where}: {exc}") from None
    if bind.tls and bind.tls_ca_file and not Path(bind.tls_ca_file).is_file():
        raise BindConfigError(f"{where}: tls_ca_file {bind.tls_ca_file!r} is not a file")
    return bind
