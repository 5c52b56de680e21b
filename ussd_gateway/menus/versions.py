"""Menu versions: definitions that change while subscribers are in them.

A version is a content hash of the definition files (`definitions_version`). The
`VersionedEngine` holds the engine of the current version and of a few earlier ones
(`keep`, the current one included): a new dialogue starts on the current version and
its record carries that version (`SessionRecord.menu_version`), so every later hop of
it walks the same compiled menus even after a reload, on any process that holds that
version. A version no longer held (evicted, or never loaded by this process) falls
back to the current one.

To the dispatcher it is an `Engine` (same entry points); everything per dialogue
still lives in the record.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from ussd_gateway.core.hop import Reply
from ussd_gateway.sessions.record import SessionRecord

from ussd_gateway.menus.engine import Engine, Step
from ussd_gateway.menus.model import MenuSet

KEEP_VERSIONS = 3
"""Compiled versions kept in memory: the current one and two before it."""


def definitions_version(directory: Path) -> str:
    """A short content hash of every `*.toml` in `directory` (names and bytes): the
    same files give the same version on every process and machine."""
    digest = hashlib.sha256()
    for path in sorted(directory.glob("*.toml")):
        digest.update(path.name.encode() + b"\0")
        digest.update(path.read_bytes() + b"\0")
    return digest.hexdigest()[:8]


class VersionedEngine:
    """The current engine and a few previous ones, by version."""

    def __init__(self, version: str, engine: Engine, *, keep: int = KEEP_VERSIONS) -> None:
        self.keep = max(1, keep)
        self._engines: OrderedDict[str, Engine] = OrderedDict({version: engine})
        self.version = version
        self.history: list[str] = [version]
        """Versions made current, oldest first (a rollback goes back one step)."""

    # ---- versions ---------------------------------------------------------------------
    @property
    def current(self) -> Engine:
        return self._engines[self.version]

    @property
    def versions(self) -> list[str]:
        """Versions held, oldest first."""
        return list(self._engines)

    def holds(self, version: str) -> bool:
        return version in self._engines

    def install(self, version: str, engine: Engine) -> None:
        """Make `engine` current for new dialogues; keep at most `keep` versions
        (the least recently made current go first)."""
        self._engines[version] = engine
        self._make_current(version)

    def previous(self) -> str | None:
        """The version that was current before this one, if still held."""
        for version in reversed(self.history[:-1]):
            if version != self.version and version in self._engines:
                return version
        return None

    def rollback(self, to: str | None = None) -> str | None:
        """Make `to` (default: the previous version) current again; None when it is
        not held here."""
        target = to or self.previous()
        if target is None or target not in self._engines:
            return None
        self._make_current(target)
        return target

    def _make_current(self, version: str) -> None:
        self._engines.move_to_end(version)
        self.version = version
        if self.history[-1] != version:
            self.history = [*self.history[-(self.keep * 4) :], version]
        while len(self._engines) > self.keep:
            self._engines.popitem(last=False)

    def for_record(self, record: SessionRecord) -> Engine:
        return self._engines.get(record.menu_version) or self.current

    # ---- the Engine's entry points ------------------------------------------------------
    @property
    def menus(self) -> MenuSet:
        return self.current.menus

    def serves(self, service_code: str) -> bool:
        return self.current.serves(service_code)

    def system_text(self, key: str, lang: str, variables: Mapping[str, Any] | None = None) -> str:
        return self.current.system_text(key, lang, variables)

    async def start(self, *, previous: SessionRecord | None, **kwargs: Any) -> tuple[SessionRecord, Step]:
        """A new dialogue on the current version; a resume offer for a dropped one
        stays on that dialogue's version (it is the same dialogue), when held."""
        engine, version = self.current, self.version
        older = self._engines.get(previous.menu_version) if previous is not None and previous.menu_version else None
        if (
            older is not None
            and previous is not None
            and older is not engine
            and not kwargs.get("inputs")
            and older._resumable(previous, kwargs["service_code"], kwargs["now"])
        ):
            engine, version = older, previous.menu_version
        record, step = await engine.start(previous=previous, **kwargs)
        record.menu_version = version
        return record, step

    async def start_at(self, **kwargs: Any) -> tuple[SessionRecord, Step]:
        """A pushed dialogue, on the current version (`Engine.start_at`)."""
        engine, version = self.current, self.version
        record, step = await engine.start_at(**kwargs)
        record.menu_version = version
        return record, step

    async def advance(self, record: SessionRecord, inputs: tuple[str, ...]) -> Step:
        return await self.for_record(record).advance(record, inputs)

    def render(self, record: SessionRecord) -> Reply:
        return self.for_record(record).render(record)

    def __getattr__(self, name: str) -> Any:
        # Anything else (budget, default_lang, paginate_screen, ...) is the current engine's.
        return getattr(self.current, name)


EngineFactory = Callable[[MenuSet], Engine]
