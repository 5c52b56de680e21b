"""What the server remembers about one dialogue between two hops."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import orjson


class Derived(list):  # type: ignore[type-arg]
    """A list in `vars` that the record keeps as a reference (`ref`) rather than its
    items: items recomputed from data the gateway has anyway (the catalogue), so
    Redis holds a few bytes instead of a package list. `ussd_gateway.services.derived`
    makes them and turns the references back into values (`hydrate`)."""

    __slots__ = ("ref",)

    def __init__(self, items: Any, ref: list[str]) -> None:
        super().__init__(items)
        self.ref = ref


class DerivedDict(dict):  # type: ignore[type-arg]
    """One such item (a package's view), kept as its reference too. Shared between
    dialogues: never change one in place."""

    __slots__ = ("ref",)

    def __init__(self, items: Any, ref: list[str]) -> None:
        super().__init__(items)
        self.ref = ref


REF = "$r"
"""The key of a reference as saved: `{"$r": ["packages", "data", "vi"]}`."""


def _default(value: Any) -> Any:
    """What orjson cannot write itself, and the subclasses it passes here."""
    if isinstance(value, (Derived, DerivedDict)):
        return {REF: value.ref}
    if isinstance(value, dict):
        return dict(value)
    if isinstance(value, (list, tuple)):
        return list(value)
    if isinstance(value, str):
        return str.__str__(value)
    if isinstance(value, int):
        return int(value)
    raise TypeError(f"cannot save {type(value).__name__} in a session record")


@dataclass(slots=True)
class SessionRecord:
    """One subscriber's current (or last) dialogue.

    The record is keyed by subscriber, not by gateway session id: a phone holds one USSD
    dialogue at a time, so a new session id for the same subscriber means the previous
    dialogue was dropped (and may be resumed) or ended.
    """

    session_id: str
    msisdn: str
    service_code: str
    menu: str
    screen: str
    lang: str
    stack: list[tuple[str, str]] = field(default_factory=list)
    """Screens shown before this one (menu, screen), for `0` back."""
    page: int = 0
    """Which page of the current screen is shown (`98` moves on)."""
    vars: dict[str, Any] = field(default_factory=dict)
    """What actions and inputs produced, for templates and conditions."""
    seq: int = 0
    """Hops taken in this dialogue; with `nonce` it makes idempotency keys."""
    nonce: str = ""
    """Made when the dialogue begins, unique to it. Idempotency keys are built from it,
    not from the gateway's session id: gateways recycle ids (SMPP's its_session_info
    number is 8 bits), and a key that repeats across dialogues answers a new purchase
    with an old one's result."""
    history: str = ""
    """The gateway's cumulative input history (Africa's Talking `text`) seen so far."""
    error: str = ""
    """A validation message to show above the current screen once."""
    started: float = 0.0
    updated: float = 0.0
    ended: bool = False
    resume_of: dict[str, Any] | None = None
    """While the "1 Continue / 2 Start over" prompt is shown: the dropped dialogue."""
    replaced: list[str] = field(default_factory=list)
    """Session ids of the subscriber's dialogues this one replaced (newest first, a
    few): a late answer in one of them must not be read as this one's input, nor
    start a dialogue of its own from its history."""
    menu_version: str = ""
    """The menu definitions' version (content hash) the dialogue began on: it keeps
    it until it ends, while new dialogues get a reloaded one. "" = the current one."""
    refs: bool = False
    """Loaded with references (`Derived`) still to turn back into values."""

    def to_bytes(self) -> bytes:
        """Compact JSON: fields at their defaults are left out, times kept to the ms
        (the Redis store holds a live session in under 700 bytes)."""
        data: dict[str, Any] = {
            "sid": self.session_id,
            "m": self.msisdn,
            "code": self.service_code,
            "menu": self.menu,
            "screen": self.screen,
            "lang": self.lang,
            "stack": self.stack,
            "vars": self.vars,
            "seq": self.seq,
            "n": self.nonce,
            "hist": self.history,
            "t0": int(self.started),  # whole seconds: it only says when the dialogue began
            "t": round(self.updated, 3),
        }
        if self.page:
            data["page"] = self.page
        if self.error:
            data["err"] = self.error
        if self.ended:
            data["end"] = True
        if self.resume_of is not None:
            data["resume"] = self.resume_of
        if self.replaced:
            data["rp"] = self.replaced
        if self.menu_version:
            data["mv"] = self.menu_version
        return orjson.dumps(data, default=_default, option=orjson.OPT_PASSTHROUGH_SUBCLASS)

    @classmethod
    def from_bytes(cls, raw: bytes | str) -> "SessionRecord":
        data = orjson.loads(raw)
        return cls(
            session_id=data["sid"],
            msisdn=data["m"],
            service_code=data["code"],
            menu=data["menu"],
            screen=data["screen"],
            lang=data["lang"],
            stack=[(m, s) for m, s in data["stack"]],
            page=data.get("page", 0),
            vars=data["vars"],
            seq=data["seq"],
            nonce=data.get("n", ""),
            history=data["hist"],
            error=data.get("err", ""),
            started=data["t0"],
            updated=data["t"],
            ended=data.get("end", False),
            resume_of=data.get("resume"),
            refs=b'"$r"' in raw if isinstance(raw, bytes) else '"$r"' in raw,
            replaced=data.get("rp", []),
            menu_version=data.get("mv", ""),
        )

    def snapshot(self) -> dict[str, Any]:
        """The parts of the dialogue a resume restores."""
        return {"menu": self.menu, "screen": self.screen, "stack": self.stack, "page": self.page, "vars": self.vars}
