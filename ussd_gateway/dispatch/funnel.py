"""The menus' funnels: per screen, how many dialogues reached it, ended on it, and went
silent on it until they timed out.

Nothing here adds a Redis command to a hop. A hop only bumps counters in this
process's memory (a cell per compiled screen, made once, with its Prometheus children)
and notes the dialogue in an expiry index; a background task adds the counts to Redis
every few seconds (`sessions.funnel_store`, per-minute buckets every worker and
instance share) and looks at the dialogues whose timeout has passed:

- **reached**: a saved hop left the dialogue on the screen's first page with no error
  line: it arrived there (a move, a begin, `0` back to it). An invalid answer or a
  `98` page stays where it is and counts nothing.
- **ended**: the hop that shows the screen ended the dialogue (an END screen).
- **timed out**: no END, and either no hop came for `timeout_s` after this process's
  hop (checked with one read of the subscriber's key when the time passes: the saved
  record must still be that hop's, so a later hop on any process or instance takes the
  count over, and an END cancels it), or the subscriber dialled again before then
  (counted by the process that serves the new dial, which holds the dropped record).
  A release by the network or the phone (abort) counts here too, at its deadline.

Limits: a process that stops loses the timeouts it was waiting for (at most
`timeout_s` of them) and, if it is killed, up to `flush_s` of counts; a redial that
lands between a deadline and its check (a few ms) is counted by neither side.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable
from typing import Any

import orjson
import structlog

from ussd_gateway.core.metrics import Metrics
from ussd_gateway.menus.engine import RESUME_SCREEN
from ussd_gateway.sessions.funnel_store import EVENTS, SavedRecords, add_counts, minute_of
from ussd_gateway.sessions.record import SessionRecord
from ussd_gateway.core.tasks import cancel_and_wait


class _Cell:
    """One screen's counts since the last flush, and its Prometheus children."""

    __slots__ = ("reached", "ended", "timed_out", "m_reached", "m_ended", "m_timed_out")

    def __init__(self, metrics: Metrics, screen_id: str) -> None:
        self.reached = self.ended = self.timed_out = 0
        self.m_reached, self.m_ended, self.m_timed_out = (metrics.funnel.labels(screen_id, e) for e in EVENTS)


class Funnel:
    """Counts the funnel events of the hops this process saves; see the module."""

    def __init__(
        self,
        engine: Any,
        metrics: Metrics,
        records: SavedRecords,
        *,
        timeout_s: float = 180.0,
        flush_s: float = 5.0,
        keep_s: int = 8 * 86_400,
        clock: Callable[[], float] = time.time,
        max_pending: int = 500_000,
        redis_timeout_s: float = 0.3,
    ) -> None:
        self.engine = engine
        self.metrics = metrics
        self.records = records
        self.timeout_s = timeout_s
        self.flush_s = flush_s
        self.keep_s = keep_s
        self.clock = clock
        self.max_pending = max_pending
        self.redis_timeout_s = redis_timeout_s
        """Each flush or check gives up after this: a frozen Redis must not keep a
        connection (and the pool's lock while connecting) away from the hops."""
        self._cells: dict[str, dict[str, _Cell]] = {}
        self._due: deque[tuple[float, str, str, float, _Cell]] = deque()
        """(deadline, msisdn, session id, record time, cell), in deadline order."""
        self._latest: dict[str, tuple[float, str, str, float, _Cell]] = {}
        """The newest entry per subscriber: an older one in `_due` is stale."""
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self.log = structlog.get_logger("ussd_gateway.funnel")

    # ---- the hop's side (cheap: no Redis, nothing built but one tuple) --------------------
    def saved(self, msisdn: str, record: SessionRecord, outcome: str = "continue") -> None:
        """A hop saved `record` (called after the commit)."""
        screens = self._cells.get(record.menu)
        cell = screens.get(record.screen) if screens is not None else None
        if cell is None and (cell := self._new_cell(record)) is None:
            return
        if not record.page and not record.error and outcome != "abort":  # a release moves nowhere
            cell.reached += 1
            cell.m_reached.inc()
        if record.ended:
            cell.ended += 1
            cell.m_ended.inc()
            self._latest.pop(msisdn, None)  # an earlier hop's check would only find the END
            return
        entry = (record.updated + self.timeout_s, msisdn, record.session_id, record.updated, cell)
        self._latest[msisdn] = entry
        self._due.append(entry)

    def replaced(self, previous: SessionRecord, now: float) -> None:
        """A new dial found `previous` open: it was dropped where it stood. Counted
        here unless its timeout already passed (then the expiry check counted it)."""
        if now < previous.updated + self.timeout_s:
            screens = self._cells.get(previous.menu)
            cell = screens.get(previous.screen) if screens is not None else None
            if cell is not None or (cell := self._new_cell(previous)) is not None:
                cell.timed_out += 1
                cell.m_timed_out.inc()

    def _new_cell(self, record: SessionRecord) -> _Cell | None:
        """The cell of a screen first seen; None for a name no compiled menu holds
        (labels stay bounded by the compiled screens)."""
        for_record = getattr(self.engine, "for_record", None)
        menus = (for_record(record) if for_record else self.engine).menus
        menu = menus.menus.get(record.menu)
        if menu is None or (record.screen not in menu.screens and record.screen != RESUME_SCREEN):
            return None
        cell = _Cell(self.metrics, record.menu + ":" + record.screen)
        self._cells.setdefault(record.menu, {})[record.screen] = cell
        return cell

    # ---- the background side --------------------------------------------------------------
    def start(self) -> None:
        self._stopping = False
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        """Stop, after adding the counts not yet in Redis (pending timeouts are lost)."""
        self._stopping = True
        if self._task is not None:
            # Bounded: a cancellation lost inside a Redis call's timeout is sent again;
            # the loop also ends at its next turn.
            await cancel_and_wait(self._task)
            self._task = None
        try:
            await self.flush()
        except Exception as exc:
            self.log.warning("funnel_flush_failed", error=str(exc) or exc.__class__.__name__)

    async def _run(self) -> None:
        tick = min(1.0, self.flush_s, self.timeout_s / 4)
        next_flush = self.clock() + self.flush_s
        while not self._stopping:
            await asyncio.sleep(tick)
            try:
                await self.check_timeouts()
                if self.clock() >= next_flush:
                    next_flush = self.clock() + self.flush_s
                    await self.flush()
            except Exception as exc:  # Redis down: counts stay in memory, tried again
                self.log.warning("funnel_flush_failed", error=str(exc) or exc.__class__.__name__)

    async def check_timeouts(self) -> int:
        """Confirm the dialogues whose timeout passed; returns how many timed out."""
        now = self.clock()
        while len(self._due) > self.max_pending:  # memory stays bounded: the oldest go unjudged
            dropped = self._due.popleft()
            if self._latest.get(dropped[1]) is dropped:
                del self._latest[dropped[1]]
        due = []
        while self._due and self._due[0][0] <= now:
            entry = self._due.popleft()
            if self._latest.get(entry[1]) is entry:
                del self._latest[entry[1]]
                due.append(entry)
        if not due:
            return 0
        try:
            async with asyncio.timeout(self.redis_timeout_s):
                saved = await self.records.many([entry[1] for entry in due])
        except Exception:
            for entry in reversed(due):  # tried again next time, unless a hop came since
                self._latest.setdefault(entry[1], entry)
                self._due.appendleft(entry)
            raise
        timed_out = 0
        for (_, _, session_id, updated, cell), raw in zip(due, saved):
            if not raw:  # gone (flushed, evicted): nothing to judge
                continue
            record = orjson.loads(raw)
            # Still this hop's record: no hop since, on any process, and no END.
            if record.get("sid") == session_id and record.get("t") == round(updated, 3) and not record.get("end"):
                cell.timed_out += 1
                cell.m_timed_out.inc()
                timed_out += 1
        return timed_out

    def _take_counts(self) -> dict[str, dict[tuple[str, str], int]]:
        counts: dict[str, dict[tuple[str, str], int]] = {}
        for menu, screens in self._cells.items():
            for screen, cell in screens.items():
                for event in EVENTS:
                    n = getattr(cell, event)
                    if n:
                        counts.setdefault(menu, {})[(screen, event)] = n
                        setattr(cell, event, 0)
        return counts

    async def flush(self) -> None:
        """Add the counts since the last flush to this minute's buckets."""
        counts = self._take_counts()
        if not counts:
            return
        try:
            async with asyncio.timeout(self.redis_timeout_s):
                await add_counts(self.records.client, minute_of(self.clock()), counts, keep_s=self.keep_s)
        except TimeoutError:
            # Redis may have applied them before going silent: dropped, not added twice.
            self.log.warning("funnel_counts_dropped", screens=sum(len(c) for c in counts.values()))
            return
        except Exception:
            for menu, screens in counts.items():  # put back: added next time
                for (screen, event), n in screens.items():
                    cell = self._cells[menu][screen]
                    setattr(cell, event, getattr(cell, event) + n)
            raise

    @property
    def pending(self) -> int:
        """Dialogues this process waits on (their timeout not yet passed)."""
        return len(self._latest)
