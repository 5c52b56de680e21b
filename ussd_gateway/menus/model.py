"""Compiled menus: what a definition file becomes once it is loaded and checked."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from transitions import Machine

from ussd_gateway.core.formats import LANGUAGES  # noqa: F401  (the menu model's languages)
from ussd_gateway.menus.template import Template

KINDS = ("menu", "list", "input", "confirm", "router", "action", "end")
TRANSIENT_KINDS = frozenset({"router", "action"})
"""Screens that run and move on without showing anything."""


@dataclass(frozen=True, slots=True)
class Text:
    """One piece of screen text in every language."""

    templates: Mapping[str, Template]

    def render(self, variables: Mapping[str, Any], lang: str) -> str:
        return self.templates[lang].render(variables, lang)

    @property
    def paths(self) -> tuple[str, ...]:
        return tuple(p for t in self.templates.values() for p in t.paths)


@dataclass(frozen=True, slots=True)
class Option:
    key: str
    label: Text
    goto: str
    """Qualified target `menu:screen`."""


@dataclass(frozen=True, slots=True)
class Validator:
    rule: str
    check: Callable[[str], bool]
    error: Text


@dataclass(frozen=True, slots=True)
class Route:
    when: Callable[[Mapping[str, Any]], bool] | None
    source: str
    goto: str


ActionFn = Callable[["ActionContextLike"], Awaitable[str]]


class ActionContextLike:  # pragma: no cover - typing aid only
    """What an action receives; the concrete class lives in `ussd_gateway.services.actions`."""


@dataclass(slots=True)
class Screen:
    menu: str
    name: str
    kind: str
    text: Text | None = None
    options: list[Option] = field(default_factory=list)
    goto: str | None = None
    # list
    items: str | None = None
    item: Text | None = None
    store_as: str | None = None
    empty: Text | None = None
    # input
    store: str | None = None
    validators: list[Validator] = field(default_factory=list)
    # confirm
    yes: str | None = None
    no: str | None = None
    # router
    routes: list[Route] = field(default_factory=list)
    # action
    call: str | None = None
    args: dict[str, str] = field(default_factory=dict)
    outcomes: dict[str, str] = field(default_factory=dict)
    action: ActionFn | None = None
    # any displayed screen: whether the engine may split it over pages
    pageable: bool = True

    @property
    def qualified(self) -> str:
        return f"{self.menu}:{self.name}"

    @property
    def transient(self) -> bool:
        return self.kind in TRANSIENT_KINDS

    def targets(self) -> list[str]:
        """Every screen this one can lead to."""
        found = [o.goto for o in self.options]
        found += [t for t in (self.goto, self.yes, self.no) if t]
        found += [r.goto for r in self.routes]
        found += list(self.outcomes.values())
        return found


@dataclass(slots=True)
class Menu:
    """One definition file: its screens and the `transitions` machine compiled from them."""

    name: str
    start: str
    screens: dict[str, Screen]
    source: str
    machine: Machine | None = None
    triggers: dict[str, frozenset[str]] = field(default_factory=dict)
    """Per screen, the triggers valid there (checked before firing)."""
    push: tuple[str, ...] = ()
    """Qualified screens a USSD push may begin a dialogue on (`[menu] push = [...]`)."""


@dataclass(slots=True)
class Keyword:
    """An SMS keyword declared beside a service's menus (served by the SMS channel: keyword SMS arrive over SMPP or HTTP)."""

    short_code: str
    words: tuple[str, ...]
    call: str
    menu: str


@dataclass(slots=True)
class MenuSet:
    """Every compiled menu, the service codes that enter them, and the common texts."""

    menus: dict[str, Menu]
    services: dict[str, str]
    """Service code (`*090#`) -> qualified entry screen (`main:home`)."""
    home: str
    """Where `00` goes: the main menu."""
    texts: dict[str, Text]
    keywords: list[Keyword] = field(default_factory=list)

    def screen(self, qualified: str) -> Screen:
        menu, _, name = qualified.partition(":")
        return self.menus[menu].screens[name]

    @property
    def push_entries(self) -> list[str]:
        """Every screen a USSD push may begin on, "menu:screen"."""
        return [entry for menu in self.menus.values() for entry in menu.push]
