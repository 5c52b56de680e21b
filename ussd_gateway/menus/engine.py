"""The menu engine: one step per hop over the compiled machines.

The dispatcher hands the engine a `SessionRecord` (where the dialogue is) and what the
subscriber typed; the engine moves the record, runs the actions the move passes
through, and renders the screen it lands on. It never replays earlier inputs: the
position is in the record (ussd-menu-builder's `1*2*7` replay is what we avoid).

Navigation common to every screen: `0` back (the previous page, else the previous
screen on the back stack), `00` the main menu, `98` the next page of a long screen.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from ussd_gateway.sessions.record import SessionRecord
from ussd_gateway.core.hop import Reply

from ussd_gateway.menus.model import LANGUAGES, MenuSet, Screen
from ussd_gateway.menus.text import ScreenBudget, paginate

RESUME_SCREEN = "__resume__"
MAX_TRANSIENT_STEPS = 32


class _Cursor:
    """The per-hop model `transitions` moves: a state name and the variables that
    router conditions read. Built per hop; the machines are built once."""

    __slots__ = ("state", "vars", "failed")

    def __init__(self, state: str, variables: dict[str, Any]) -> None:
        self.state = state
        self.vars = variables
        self.failed: Any = None


RunAction = Callable[[Screen, SessionRecord, int], Awaitable[str]]
"""Runs a screen's action for a record; the int numbers actions within one hop (for
idempotency keys). Returns the outcome name."""


@dataclass(frozen=True, slots=True)
class Step:
    reply: Reply
    lang_changed: str | None = None


_CHOICE = re.compile(r"^\d+\. ", re.MULTILINE)


def _choices(page: str) -> int:
    """How many numbered choices (`1. …`) a page shows."""
    return len(_CHOICE.findall(page))


class Engine:
    """Walks compiled menus. One instance serves every session (it holds no session
    state: everything per dialogue lives in the `SessionRecord`)."""

    def __init__(
        self,
        menus: MenuSet,
        run_action: RunAction,
        *,
        budget: ScreenBudget = ScreenBudget(),
        default_lang: str = "vi",
        resume_window_s: float = 120.0,
    ) -> None:
        self.menus = menus
        self.run_action = run_action
        self.budget = budget
        self.default_lang = default_lang
        self.resume_window_s = resume_window_s
        self._static_pages: dict[tuple[str, str, bool], list[str]] = {}
        self._static: dict[str, bool] = {}  # `_is_static` per screen: the menus do not change

    # ---- entry points -----------------------------------------------------------------
    def serves(self, service_code: str) -> bool:
        return service_code in self.menus.services

    def system_text(self, key: str, lang: str, variables: Mapping[str, Any] | None = None) -> str:
        return self.menus.texts[key].render(variables or {}, lang if lang in LANGUAGES else self.default_lang)

    async def start(
        self,
        *,
        session_id: str,
        msisdn: str,
        service_code: str,
        lang: str,
        inputs: tuple[str, ...],
        previous: SessionRecord | None,
        now: float,
        nonce: str = "",
    ) -> tuple[SessionRecord, Step]:
        """A new dialogue: offer to resume a dropped one, else enter the service and
        walk any inputs dialled with the code (`*090*2*1#`)."""
        entry = self.menus.services[service_code]
        record = SessionRecord(
            session_id=session_id, msisdn=msisdn, service_code=service_code, menu="", screen="", lang=lang, started=now, updated=now,
            nonce=nonce,
        )
        if previous is not None and not inputs and self._resumable(previous, service_code, now):
            record.menu, record.screen = entry.partition(":")[0], RESUME_SCREEN
            record.resume_of = previous.snapshot()
            return record, Step(self._render_resume(record))
        await self._arrive(record, entry, push=False, action_no=[0])
        reply, lang_changed = await self._walk(record, inputs)
        return record, Step(reply, lang_changed)

    async def start_at(
        self, *, entry: str, session_id: str, msisdn: str, service_code: str, lang: str, variables: Mapping[str, Any], now: float,
        nonce: str = "",
    ) -> tuple[SessionRecord, Step]:
        """A dialogue the network begins (a USSD push): enter the screen `entry`
        ("menu:screen") with `variables` already set, instead of a service's start.
        Its later hops walk on from there as any dialogue's do."""
        self.menus.screen(entry)  # KeyError: no such screen
        record = SessionRecord(
            session_id=session_id, msisdn=msisdn, service_code=service_code, menu="", screen="", lang=lang, started=now, updated=now,
            nonce=nonce, vars=dict(variables),
        )
        await self._arrive(record, entry, push=False, action_no=[0])
        return record, Step(self.render(record))

    async def advance(self, record: SessionRecord, inputs: tuple[str, ...]) -> Step:
        """One hop of an existing dialogue (usually one input; a shortcut chain walks on)."""
        reply, lang_changed = await self._walk(record, inputs)
        return Step(reply, lang_changed)

    def render(self, record: SessionRecord) -> Reply:
        """The screen the record is on, as the subscriber sees it now."""
        if record.screen == RESUME_SCREEN:
            return self._render_resume(record)
        pages = self._pages(record)
        page = min(record.page, len(pages) - 1)
        screen = self.menus.screen(f"{record.menu}:{record.screen}")
        return Reply(pages[page], end=screen.kind == "end" and page == len(pages) - 1)

    # ---- moving -------------------------------------------------------------------------
    async def _walk(self, record: SessionRecord, inputs: tuple[str, ...]) -> tuple[Reply, str | None]:
        lang_before = record.lang
        action_no = [0]
        remaining = list(inputs)
        while remaining:
            screen = self._current(record)
            if screen is not None and screen.kind == "end" and not self._pages_on(record, remaining[0]):
                break  # the dialogue is over: later inputs of a shortcut have no screen
            if screen is not None and screen.kind == "input" and len(remaining) > 1:
                # A free-text answer may itself contain `*` (the gateway joins with it).
                remaining = ["*".join(remaining)]
            await self._step(record, remaining.pop(0), action_no)
        reply = self.render(record)
        return reply, record.lang if record.lang != lang_before else None

    def _pages_on(self, record: SessionRecord, value: str) -> bool:
        """Whether `value` turns a page of the END screen the record is on (98 to a
        next page, 0 back to an earlier one)."""
        value = value.strip()
        if value == "0":
            return record.page > 0
        return value == "98" and record.page < len(self._pages(record)) - 1

    def _current(self, record: SessionRecord) -> Screen | None:
        if record.screen == RESUME_SCREEN:
            return None
        return self.menus.screen(f"{record.menu}:{record.screen}")

    async def _step(self, record: SessionRecord, value: str, action_no: list[int]) -> None:
        value = value.strip()
        # The error line stays while the subscriber pages with 98/0 (it is part of the
        # page layout: dropping it would shift every page and skip an item).
        paging = value == "98" or (value == "0" and record.page > 0)
        if not paging:
            record.error = ""
        if record.screen == RESUME_SCREEN:
            await self._answer_resume(record, value, action_no)
            return
        screen = self.menus.screen(f"{record.menu}:{record.screen}")
        if screen.kind == "end":
            # The dialogue is over. A long END (`pageable = true`) still pages: every
            # page but the last is a CON with "98", the last one ENDs; anything else
            # shows the same page again.
            if self._pages_on(record, value):
                record.page += 1 if value == "98" else -1
            return
        # Rendered only for "98": the current screen's pages are not needed otherwise.
        if value == "98" and record.page < len(self._pages(record)) - 1:
            record.page += 1
            return
        if value == "0" and (record.page > 0 or record.stack):
            if record.page > 0:
                record.page -= 1
            else:
                record.menu, record.screen = record.stack.pop()
                record.page = 0
            return
        if value == "00" and self.menus.home:
            record.stack.clear()
            await self._arrive(record, self.menus.home, push=False, action_no=action_no)
            return
        trigger, kwargs = self._trigger_for(screen, record, value)
        if trigger is None:
            record.error = self.system_text("invalid_option", record.lang)
            record.page = 0  # the error heads page 1: staying on page N showed a shifted page without it
            return
        cursor = _Cursor(screen.name, record.vars)
        machine = self.menus.menus[screen.menu].machine
        assert machine is not None
        moved = machine.events[trigger].trigger(cursor, **kwargs)
        if not moved:
            failed = cursor.failed
            record.error = failed.error.render(record.vars, record.lang) if failed else self.system_text("invalid_option", record.lang)
            record.page = 0  # as above: show the reason, which heads page 1
            return
        if screen.kind == "input" and screen.store:
            record.vars[screen.store] = kwargs["value"]
        target = cursor.state if ":" in cursor.state else f"{screen.menu}:{cursor.state}"
        await self._arrive(record, target, push=True, action_no=action_no)

    def _trigger_for(self, screen: Screen, record: SessionRecord, value: str) -> tuple[str | None, dict[str, Any]]:
        valid = self.menus.menus[screen.menu].triggers.get(screen.name, frozenset())
        if screen.kind == "input":
            return "submit", {"value": value}
        if screen.kind == "confirm":
            return {"1": "yes", "2": "no"}.get(value), {}
        if screen.kind == "list" and value.isdigit():
            items = self._items(screen, record)
            index = int(value)
            if 1 <= index <= len(items) and f"key_{value}" not in valid:
                record.vars[screen.store_as or "item"] = items[index - 1]
                return "pick", {}
        trigger = f"key_{value}"
        return (trigger if trigger in valid else None), {}

    async def _arrive(self, record: SessionRecord, target: str, *, push: bool, action_no: list[int]) -> None:
        """Land on `target`, running actions and routers until a screen to show."""
        if push and record.screen and record.screen != RESUME_SCREEN:
            here = (record.menu, record.screen)
            if (here[0] + ":" + here[1]) != target and (not record.stack or record.stack[-1] != here):
                record.stack.append(here)
        for _ in range(MAX_TRANSIENT_STEPS):
            menu_name, _, screen_name = target.partition(":")
            record.menu, record.screen, record.page = menu_name, screen_name, 0
            screen = self.menus.menus[menu_name].screens[screen_name]
            if screen.kind == "action":
                action_no[0] += 1
                outcome = await self.run_action(screen, record, action_no[0])
                trigger = f"on_{outcome}"
                if trigger not in self.menus.menus[menu_name].triggers[screen_name]:
                    trigger = "on_error"
                    if trigger not in self.menus.menus[menu_name].triggers[screen_name]:
                        raise LookupError(f"{target}: action {screen.call!r} returned {outcome!r}, which `on` does not handle")
                kwargs: dict[str, Any] = {}
            elif screen.kind == "router":
                trigger, kwargs = "route", {}
            else:
                return
            cursor = _Cursor(screen_name, record.vars)
            machine = self.menus.menus[menu_name].machine
            assert machine is not None
            if not machine.events[trigger].trigger(cursor, **kwargs):
                raise LookupError(f"{target}: no route matched")
            target = cursor.state if ":" in cursor.state else f"{menu_name}:{cursor.state}"
        raise RuntimeError(f"{target}: more than {MAX_TRANSIENT_STEPS} actions/routers in a row (a loop?)")

    # ---- resume -------------------------------------------------------------------------
    def _resumable(self, previous: SessionRecord, service_code: str, now: float) -> bool:
        return (
            not previous.ended
            and previous.service_code == service_code
            and previous.screen != RESUME_SCREEN
            and bool(previous.stack)
            and now - previous.updated <= self.resume_window_s
        )

    def _render_resume(self, record: SessionRecord) -> Reply:
        lines = [self.system_text(k, record.lang) for k in ("resume", "resume_continue", "resume_restart")]
        if record.error:
            lines.insert(0, record.error)
        return Reply("\n".join(lines), end=False)

    async def _answer_resume(self, record: SessionRecord, value: str, action_no: list[int]) -> None:
        snapshot = record.resume_of or {}
        if value == "1" and snapshot:
            record.menu, record.screen = snapshot["menu"], snapshot["screen"]
            record.stack = [(m, s) for m, s in snapshot["stack"]]
            record.page, record.vars = snapshot["page"], snapshot["vars"]
            record.resume_of = None
        elif value == "2" or (value == "1" and not snapshot):
            record.resume_of = None
            record.screen = ""
            await self._arrive(record, self.menus.services[record.service_code], push=False, action_no=action_no)
        else:
            record.error = self.system_text("invalid_option", record.lang)

    # ---- rendering ----------------------------------------------------------------------
    def _items(self, screen: Screen, record: SessionRecord) -> list[Any]:
        from ussd_gateway.menus.template import lookup

        found = lookup(record.vars, screen.items or "")
        return found if isinstance(found, list) else []

    def _pages(self, record: SessionRecord) -> list[str]:
        screen = self.menus.screen(f"{record.menu}:{record.screen}")
        has_footer = bool(record.stack) and screen.kind != "end"
        static = self._static.get(screen.qualified)
        if static is None:
            static = self._static[screen.qualified] = self._is_static(screen)
        cacheable = static and not record.error and screen.kind != "list"
        key = (screen.qualified, record.lang, has_footer)
        if cacheable and key in self._static_pages:
            return self._static_pages[key]
        pages = self.paginate_screen(screen, record.vars, record.lang, has_footer=has_footer, error=record.error)
        if cacheable:
            self._static_pages[key] = pages
        return pages

    @staticmethod
    def _is_static(screen: Screen) -> bool:
        texts = [screen.text] + [o.label for o in screen.options]
        return all(t is None or not t.paths for t in texts)

    def screen_lines(self, screen: Screen, variables: Mapping[str, Any], lang: str) -> list[str]:
        """The body of a screen before paging: its text, then its choices."""
        lines: list[str] = []
        if screen.text is not None:
            lines += screen.text.render(variables, lang).split("\n")
        if screen.kind == "list":
            from ussd_gateway.menus.template import lookup

            items = lookup(variables, screen.items or "")
            items = items if isinstance(items, list) else []
            if not items and screen.empty is not None:
                lines += screen.empty.render(variables, lang).split("\n")
            assert screen.item is not None
            for index, item in enumerate(items, start=1):
                scope = dict(variables)
                scope["item"] = item  # item templates always say `{item.…}`
                lines.append(f"{index}. {screen.item.render(scope, lang)}")
        for option in screen.options:
            lines.append(f"{option.key}. {option.label.render(variables, lang)}")
        if screen.kind == "confirm":
            lines.append("1. " + self.system_text("yes", lang))
            lines.append("2. " + self.system_text("no", lang))
        return lines

    def paginate_screen(
        self, screen: Screen, variables: Mapping[str, Any], lang: str, *, has_footer: bool, error: str = ""
    ) -> list[str]:
        lines = self.screen_lines(screen, variables, lang)
        footer = [self.system_text("back", lang) + " " + self.system_text("home", lang)] if has_footer else []
        more = self.system_text("more", lang)
        if not error:
            return paginate(lines, self.budget, more_line=more, footer_lines=footer)
        pages = paginate([error, *lines], self.budget, more_line=more, footer_lines=footer)
        if screen.kind in ("list", "menu") and screen.text is not None:
            # An error line must not push the choices off page 1 (UCS-2 pages are small,
            # and a page with the error and the heading alone hid the first item): if it
            # would, it stands in for the heading, which the subscriber saw a moment ago.
            heading = len(screen.text.render(variables, lang).split("\n"))
            plain = paginate(lines, self.budget, more_line=more, footer_lines=footer)
            if len(lines) > heading and (_choices(pages[0]) < _choices(plain[0]) or len(pages) > len(plain)):
                pages = paginate([error, *lines[heading:]], self.budget, more_line=more, footer_lines=footer)
        return pages
