"""What the server remembers about one dialogue between two hops."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import orjson


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

    def to_bytes(self) -> bytes:
        return orjson.dumps(
            {
                "sid": self.session_id,
                "m": self.msisdn,
                "code": self.service_code,
                "menu": self.menu,
                "screen": self.screen,
                "lang": self.lang,
                "stack": self.stack,
                "page": self.page,
                "vars": self.vars,
                "seq": self.seq,
                "n": self.nonce,
                "hist": self.history,
                "err": self.error,
                "t0": self.started,
                "t": self.updated,
                "end": self.ended,
                "resume": self.resume_of,
                **({"rp": self.replaced} if self.replaced else {}),
                **({"mv": self.menu_version} if self.menu_version else {}),
            }
        )

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
            page=data["page"],
            vars=data["vars"],
            seq=data["seq"],
            nonce=data.get("n", ""),
            history=data["hist"],
            error=data["err"],
            started=data["t0"],
            updated=data["t"],
            ended=data["end"],
            resume_of=data["resume"],
            replaced=data.get("rp", []),
            menu_version=data.get("mv", ""),
        )

    def snapshot(self) -> dict[str, Any]:
        """The parts of the dialogue a resume restores."""
        return {"menu": self.menu, "screen": self.screen, "stack": self.stack, "page": self.page, "vars": self.vars}
