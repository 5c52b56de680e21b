"""The one message every channel speaks to the engine with.

Channel adapters (HTTP dialects, SMPP) normalise their wire format into a `Hop` and
render the `Reply` back; the dispatcher and the menu engine never see a wire format.
Channels translate; the dispatcher and the engine decide.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class HopKind(enum.Enum):
    """What the gateway says about the dialogue with this hop."""

    BEGIN = "begin"
    """The subscriber dialled a code: a new dialogue."""
    CONTINUE = "continue"
    """The subscriber answered the last screen."""
    ABORT = "abort"
    """The dialogue was released by the subscriber or the network; no reply is shown."""


@dataclass(frozen=True, slots=True)
class Hop:
    """One step of one dialogue, as every channel hands it to the dispatcher."""

    channel: str
    """Adapter name, used for metrics and logs (`africastalking`, `json`, `smpp`)."""
    session_id: str
    """The gateway's dialogue id; unique per dialogue, opaque to us."""
    msisdn: str
    """The subscriber, normalised to E.164 without `+` (`84901234567`)."""
    service_code: str
    """The base code dialled, e.g. `*090#` (inputs embedded in the code are in `inputs`).
    Empty on a continuation or release whose gateway does not repeat it: the dialogue
    keeps the code it began with (the dispatcher takes it from the session record)."""
    kind: HopKind
    inputs: tuple[str, ...] = ()
    """What the subscriber typed since the last hop. Usually one item; a first hop of
    `*090*2*1#` carries ("2", "1") and walks straight to that screen."""
    hop_key: str | None = None
    """Identifies this hop within its dialogue so a gateway retry is recognised and
    answered from the stored reply (Africa's Talking: the whole `text`; JSON: `seq`)."""
    language: str | None = None
    """A language the channel asks for (the simulator's `--lang`); remembered."""
    history: str | None = None
    """Gateways that send the whole `*`-joined input history every hop (Africa's
    Talking `text`) put it here instead of `inputs`; the dispatcher takes what is new
    from it relative to what the session has already seen."""


@dataclass(frozen=True, slots=True)
class Reply:
    """What the subscriber sees after a hop: one screen's text, and whether it ends."""

    text: str
    end: bool

    @classmethod
    def busy(cls, text: str) -> "Reply":
        """An END screen for when a dependency is down."""
        return cls(text=text, end=True)
