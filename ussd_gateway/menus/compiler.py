"""Load menu definition files (TOML) and compile each into one `transitions` machine.

TOML rather than YAML: the standard library parses it (`tomllib`), and it has no
implicit typing, so an option key `00` or `09` stays the string the subscriber types
(YAML 1.1 reads `00` as the integer 0 and `09` as a string, silently).

Everything is resolved here, once, at start-up: targets are qualified, templates parsed,
conditions and validators compiled, action names bound to callables. The machines are
built with `model=None`; each hop fires events against a light per-hop cursor
(transitions' own recommendation for many models). A definition that does not compile
stops the server with every problem listed; `ussd-gateway menus check` prints the same.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from transitions import Machine

from ussd_gateway.menus.model import KINDS, LANGUAGES, ActionFn, Keyword, Menu, MenuSet, Option, Route, Screen, Text, Validator
from ussd_gateway.menus.template import Template, TemplateError, compile_condition



def _definitions_dir() -> Path:
    """The shipped menu definitions: `menus/definitions` of the checkout, where an
    operator edits them; an installed wheel carries the same files inside the package."""
    checkout = Path(__file__).resolve().parents[2] / "menus" / "definitions"
    return checkout if checkout.is_dir() else Path(__file__).parent / "definitions"


DEFINITIONS_DIR = _definitions_dir()
COMMON_FILE = "_common.toml"
NAV_KEYS = frozenset({"0", "00", "98"})
REQUIRED_TEXTS = (
    "back", "home", "more", "yes", "no", "invalid_option", "busy", "unknown_service",
    "expired", "resume", "resume_continue", "resume_restart",
)


class MenuError(ValueError):
    """The menu definitions do not compile; `problems` lists every one found."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("\n".join(problems))


class _Problems:
    def __init__(self) -> None:
        self.items: list[str] = []

    def add(self, where: str, message: str) -> None:
        self.items.append(f"{where}: {message}")


# ---- validators -----------------------------------------------------------------------
def _validator_check(rule: str, spec: Mapping[str, Any]) -> Callable[[str], bool]:
    if rule == "length":
        low, high = int(spec.get("min", 0)), int(spec.get("max", 10_000))
        return lambda value: low <= len(value) <= high
    if rule == "regex":
        pattern = re.compile(spec["pattern"])
        return lambda value: pattern.fullmatch(value) is not None
    if rule == "integer":
        low, high = int(spec.get("min", -(10**18))), int(spec.get("max", 10**18))
        def integer(value: str) -> bool:
            return value.isascii() and value.isdigit() and low <= int(value) <= high
        return integer
    if rule == "not_blank":
        return lambda value: value.strip() != ""
    raise ValueError(f"unknown validator rule {rule!r} (known: length, regex, integer, not_blank)")


class _Loader:
    def __init__(self, actions: Mapping[str, ActionFn], keyword_handlers: Mapping[str, Any] | None = None) -> None:
        self.actions = actions
        self.keyword_handlers = keyword_handlers or {}
        self.problems = _Problems()
        self.texts: dict[str, Text] = {}

    def text(self, where: str, raw: Any) -> Text | None:
        if raw is None:
            return None
        if isinstance(raw, str):
            raw = {lang: raw for lang in LANGUAGES}
        if not isinstance(raw, Mapping):
            self.problems.add(where, f"text must be a table of languages {LANGUAGES}, got {type(raw).__name__}")
            return None
        templates: dict[str, Template] = {}
        for lang in LANGUAGES:
            if lang not in raw or not isinstance(raw[lang], str):
                self.problems.add(where, f"missing translation {lang!r}")
                continue
            try:
                templates[lang] = Template(raw[lang])
            except TemplateError as exc:
                self.problems.add(where, str(exc))
        for extra in set(raw) - set(LANGUAGES):
            self.problems.add(where, f"unknown language {extra!r} (known: {', '.join(LANGUAGES)})")
        if len(templates) != len(LANGUAGES):
            return None
        return Text(templates)

    def qualify(self, menu: str, target: Any, where: str) -> str:
        if not isinstance(target, str) or not target:
            self.problems.add(where, f"target must be a screen name, got {target!r}")
            return f"{menu}:?"
        if ":" in target:
            return target
        return f"{menu}:{target}"

    def screen(self, menu: str, name: str, raw: Mapping[str, Any]) -> Screen:
        where = f"{menu}:{name}"
        kind = raw.get("kind")
        if kind not in KINDS:
            self.problems.add(where, f"kind {kind!r} is not one of {', '.join(KINDS)}")
            kind = "end"
        screen = Screen(menu=menu, name=name, kind=kind, pageable=bool(raw.get("pageable", kind != "end")))
        screen.text = self.text(f"{where} text", raw.get("text"))
        if kind in ("menu", "list", "input", "confirm", "end") and screen.text is None and kind != "list":
            self.problems.add(where, f"a {kind} screen needs `text`")
        for index, option in enumerate(raw.get("options", [])):
            key = str(option.get("key", ""))
            owhere = f"{where} option {key or index}"
            if not key or not key.isdigit():
                self.problems.add(owhere, "option key must be digits")
            elif key in NAV_KEYS:
                self.problems.add(owhere, f"key {key!r} is reserved for navigation (0 back, 00 main menu, 98 more)")
            if "goto" not in option:
                self.problems.add(owhere, "option has no `goto` target")
                continue
            label = self.text(f"{owhere} label", option.get("label"))
            if label is not None:
                screen.options.append(Option(key, label, self.qualify(menu, option["goto"], owhere)))
        keys = [o.key for o in screen.options]
        if len(keys) != len(set(keys)):
            self.problems.add(where, f"duplicate option keys {keys}")
        if "goto" in raw:
            screen.goto = self.qualify(menu, raw["goto"], where)
        if kind == "list":
            screen.items = raw.get("items")
            screen.item = self.text(f"{where} item", raw.get("item"))
            screen.store_as = raw.get("as", "item")
            screen.empty = self.text(f"{where} empty", raw.get("empty")) if "empty" in raw else None
            if not screen.items:
                self.problems.add(where, "a list screen needs `items` (the variable holding the list)")
            if screen.goto is None:
                self.problems.add(where, "a list screen needs `goto` (where a picked item leads)")
        if kind == "input":
            screen.store = raw.get("store")
            if not screen.store:
                self.problems.add(where, "an input screen needs `store` (the variable to keep the answer in)")
            if screen.goto is None:
                self.problems.add(where, "an input screen needs `goto`")
            for spec in raw.get("validate", []):
                rule = spec.get("rule", "")
                try:
                    check = _validator_check(rule, spec)
                except (ValueError, KeyError, re.error) as exc:
                    self.problems.add(f"{where} validator", str(exc))
                    continue
                error = self.text(f"{where} validator {rule} error", spec.get("error"))
                if error is not None:
                    screen.validators.append(Validator(rule, check, error))
        if kind == "confirm":
            if "yes" not in raw or "no" not in raw:
                self.problems.add(where, "a confirm screen needs `yes` and `no` targets")
            else:
                screen.yes = self.qualify(menu, raw["yes"], where)
                screen.no = self.qualify(menu, raw["no"], where)
        if kind == "router":
            routes = raw.get("routes", [])
            for route in routes:
                when = route.get("when")
                try:
                    predicate = compile_condition(when) if when else None
                except TemplateError as exc:
                    self.problems.add(where, str(exc))
                    continue
                screen.routes.append(Route(predicate, when or "", self.qualify(menu, route.get("goto"), where)))
            if not screen.routes or screen.routes[-1].when is not None:
                self.problems.add(where, "a router needs routes ending with one without `when` (the default)")
        if kind == "action":
            screen.call = raw.get("call")
            screen.args = {str(k): str(v) for k, v in raw.get("args", {}).items()}
            screen.outcomes = {str(k): self.qualify(menu, v, where) for k, v in raw.get("on", {}).items()}
            if screen.call not in self.actions:
                known = ", ".join(sorted(self.actions))
                self.problems.add(where, f"action {screen.call!r} is not defined (known: {known})")
            else:
                screen.action = self.actions[screen.call]
            if not screen.outcomes:
                self.problems.add(where, "an action needs `on` (outcome -> target)")
        return screen

    def menu(self, path: Path) -> tuple[Menu | None, list[Keyword], dict[str, str]]:
        try:
            raw = tomllib.loads(path.read_text(encoding="utf-8"))
        except (OSError, tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            self.problems.add(path.name, f"cannot be read: {exc}")
            return None, [], {}
        head = raw.get("menu", {})
        name = head.get("name") or path.stem
        start = head.get("start")
        if not start:
            self.problems.add(path.name, "[menu] needs `start` (the first screen)")
        screens = {sname: self.screen(name, sname, sraw) for sname, sraw in raw.get("screens", {}).items()}
        if start and start not in screens:
            self.problems.add(path.name, f"start screen {start!r} is not defined")
        services = {str(code): self.qualify(name, target, path.name) for code, target in head.get("services", {}).items()}
        # A service's own texts (its SMS replies), known as `menu.key` (`kndl.sms_joined`).
        for key, raw_text in raw.get("texts", {}).items():
            text = self.text(f"{path.name} texts.{key}", raw_text)
            if text is not None:
                self.texts[f"{name}.{key}"] = text
        keywords: list[Keyword] = []
        for spec in raw.get("keywords", []):
            call = spec.get("call")
            where = f"{path.name} keyword {spec.get('words')}"
            if call not in self.keyword_handlers:
                known = ", ".join(sorted(self.keyword_handlers))
                self.problems.add(where, f"keyword handler {call!r} is not defined (known: {known})")
            words = tuple(str(w).strip().upper() for w in spec.get("words", []))
            if not spec.get("short_code") or not words:
                self.problems.add(where, "a keyword needs `short_code` and `words` (`*` matches any other text)")
            keywords.append(Keyword(str(spec.get("short_code", "")), words, call or "", name))
        push = head.get("push", [])
        if not isinstance(push, list) or not all(isinstance(p, str) for p in push):
            self.problems.add(path.name, "[menu] push must be a list of screen names (entries a USSD push may begin on)")
            push = []
        entries = tuple(self.qualify(name, p, path.name) for p in push)
        menu = Menu(name=name, start=start or "", screens=screens, source=path.name, push=entries)
        return menu, keywords, services


def _build_machine(menu: Menu, on_invalid: Callable[[Any], None]) -> None:
    """One `transitions` machine per menu: states are screens (plus one exit state per
    screen of another menu it leads to), triggers are what a subscriber can do there."""
    states: list[str] = list(menu.screens)
    transitions: list[dict[str, Any]] = []
    triggers: dict[str, set[str]] = {name: set() for name in menu.screens}

    def local(target: str) -> str:
        target_menu, _, target_screen = target.partition(":")
        if target_menu == menu.name:
            return target_screen
        if target not in states:
            states.append(target)  # an exit state: the engine switches machines there
        return target

    def add(trigger: str, source: str, target: str, conditions: list[Callable[..., bool]] | None = None) -> None:
        transitions.append({"trigger": trigger, "source": source, "dest": local(target), "conditions": conditions or []})
        triggers[source].add(trigger)

    for screen in menu.screens.values():
        for option in screen.options:
            add(f"key_{option.key}", screen.name, option.goto)
        if screen.kind == "list" and screen.goto:
            add("pick", screen.name, screen.goto)
        if screen.kind == "input" and screen.goto:
            conditions = [_condition_from_validator(v) for v in screen.validators]
            add("submit", screen.name, screen.goto, conditions)
        if screen.kind == "confirm" and screen.yes and screen.no:
            add("yes", screen.name, screen.yes)
            add("no", screen.name, screen.no)
        for route in screen.routes:
            add("route", screen.name, route.goto, [_condition_from_route(route)] if route.when else None)
        for outcome, target in screen.outcomes.items():
            add(f"on_{outcome}", screen.name, target)
    menu.machine = Machine(
        model=None,
        states=states,
        transitions=transitions,
        initial=None,
        auto_transitions=False,
        send_event=True,
    )
    menu.triggers = {name: frozenset(found) for name, found in triggers.items()}


def _condition_from_validator(validator: Validator) -> Callable[..., bool]:
    def valid(event: Any) -> bool:
        if validator.check(event.kwargs["value"]):
            return True
        event.model.failed = validator
        return False
    return valid


def _condition_from_route(route: Route) -> Callable[..., bool]:
    assert route.when is not None
    when = route.when
    return lambda event: when(event.model.vars)


def load_menus(directory: Path | None = None, actions: Mapping[str, ActionFn] | None = None) -> MenuSet:
    """Load and compile every `*.toml` definition in `directory` (default: the packaged
    definitions). Raises `MenuError` listing every problem found."""
    from ussd_gateway.services.actions import ACTIONS  # the default tables; late imports avoid a cycle
    from ussd_gateway.services.keywords import KEYWORD_HANDLERS

    folder = directory or DEFINITIONS_DIR
    loader = _Loader(actions if actions is not None else ACTIONS, KEYWORD_HANDLERS)
    common_path = folder / COMMON_FILE
    texts: dict[str, Text] = {}
    home = ""
    if common_path.exists():
        common = tomllib.loads(common_path.read_text(encoding="utf-8"))
        home = common.get("home", "")
        for key, raw in common.get("texts", {}).items():
            text = loader.text(f"{COMMON_FILE} texts.{key}", raw)
            if text is not None:
                texts[key] = text
    else:
        loader.problems.add(COMMON_FILE, "missing (navigation and system texts live there)")
    for key in REQUIRED_TEXTS:
        if key not in texts and not any(p.startswith(f"{COMMON_FILE} texts.{key}") for p in loader.problems.items):
            loader.problems.add(COMMON_FILE, f"texts.{key} is missing")

    menus: dict[str, Menu] = {}
    services: dict[str, str] = {}
    keywords: list[Keyword] = []
    files = sorted(p for p in folder.glob("*.toml") if p.name != COMMON_FILE)
    if not files:
        loader.problems.add(str(folder), "no menu definitions (*.toml) found")
    for path in files:
        menu, found_keywords, found_services = loader.menu(path)
        if menu is None:
            continue
        if menu.name in menus:
            loader.problems.add(path.name, f"menu name {menu.name!r} is already used by {menus[menu.name].source}")
            continue
        menus[menu.name] = menu
        keywords += found_keywords
        for code, target in found_services.items():
            if code in services:
                loader.problems.add(path.name, f"service code {code} is already served by {services[code]}")
            services[code] = target

    if home and ":" not in home:
        home = f"{home}:{menus[home].start}" if home in menus else home + ":?"
    texts.update(loader.texts)
    seen_words: dict[tuple[str, str], str] = {}
    for keyword in keywords:
        for word in keyword.words:
            if (keyword.short_code, word) in seen_words:
                loader.problems.add(keyword.menu, f"keyword {word!r} to {keyword.short_code} is also declared by {seen_words[(keyword.short_code, word)]}")
            seen_words[(keyword.short_code, word)] = keyword.menu
    menu_set = MenuSet(menus=menus, services=services, home=home, texts=texts, keywords=keywords)
    _check_graph(menu_set, loader.problems)
    if loader.problems.items:
        raise MenuError(loader.problems.items)
    for menu in menus.values():
        _build_machine(menu, on_invalid=lambda _m: None)
    return menu_set


def _exists(menu_set: MenuSet, target: str) -> bool:
    menu, _, screen = target.partition(":")
    return menu in menu_set.menus and screen in menu_set.menus[menu].screens


def _check_graph(menu_set: MenuSet, problems: _Problems) -> None:
    """Unknown targets, unreachable screens and dead ends."""
    if not menu_set.home or not _exists(menu_set, menu_set.home):
        problems.add(COMMON_FILE, f"`home` {menu_set.home!r} is not a defined screen")
    if not menu_set.services:
        problems.add("menus", "no service code is declared (`[menu] services = {\"*090#\" = \"home\"}`)")
    for menu in menu_set.menus.values():
        for screen in menu.screens.values():
            for target in screen.targets():
                if not _exists(menu_set, target):
                    problems.add(screen.qualified, f"leads to unknown screen {target!r}")
            is_dead = screen.kind != "end" and not screen.targets()
            if is_dead:
                problems.add(screen.qualified, f"dead end: a {screen.kind} screen with nowhere to go (add options or targets, or make it `end`)")
    # Reachability: from service entries, push entries and home, through every target.
    seen: set[str] = set()
    for entry in menu_set.push_entries:
        if not _exists(menu_set, entry):
            problems.add(entry, "push entry is not a defined screen")
    entries = [menu_set.home, *menu_set.services.values(), *menu_set.push_entries]
    frontier = [t for t in entries if _exists(menu_set, t)]
    while frontier:
        current = frontier.pop()
        if current in seen:
            continue
        seen.add(current)
        frontier += [t for t in menu_set.screen(current).targets() if _exists(menu_set, t)]
    keyword_menus = {k.menu for k in menu_set.keywords}
    for menu in menu_set.menus.values():
        for screen in menu.screens.values():
            if screen.qualified not in seen and not (menu.name in keyword_menus and not menu.screens):
                problems.add(screen.qualified, "unreachable: no service code, option or route leads here")
