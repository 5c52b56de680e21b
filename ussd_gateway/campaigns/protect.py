"""What protects subscribers from care SMS: quiet hours and the opt-out keywords.

(The frequency cap across campaigns and "never twice in one campaign" are claimed in
one Redis script with each send: `runner`.)

Opt-out: `TC` or `TU CHOI` sent to a care short code stops every later campaign for
that subscriber; `DK CSKH` starts them again. The keywords join the SMS keyword router
(`services.keywords`), so they work over SMPP and `POST /sms` alike.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, time as clock_time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from ussd_gateway.core.errors import BadRequest
from ussd_gateway.services.keywords import KeywordContext, KeywordRouter

OPTOUT_KEY = "ussd:{care}:optout"

_REPLIES = {
    "out": {
        "vi": "Quy khach da tu choi nhan tin nhan cham soc khach hang. De nhan lai, soan DK CSKH gui {code}.",
        "vi_dau": "Quý khách đã từ chối nhận tin nhắn chăm sóc khách hàng. Để nhận lại, soạn DK CSKH gửi {code}.",
        "en": "You will no longer receive customer care messages. To receive them again, text DK CSKH to {code}.",
    },
    "in": {
        "vi": "Quy khach da dang ky nhan lai tin nhan cham soc khach hang. De tu choi, soan TC gui {code}.",
        "vi_dau": "Quý khách đã đăng ký nhận lại tin nhắn chăm sóc khách hàng. Để từ chối, soạn TC gửi {code}.",
        "en": "You will receive customer care messages again. To stop them, text TC to {code}.",
    },
    "help": {
        "vi": "Soan TC gui {code} de tu choi tin nhan cham soc khach hang, DK CSKH de nhan lai.",
        "vi_dau": "Soạn TC gửi {code} để từ chối tin nhắn chăm sóc khách hàng, DK CSKH để nhận lại.",
        "en": "Text TC to {code} to stop customer care messages, DK CSKH to receive them again.",
    },
}


def _minutes(value: str, key: str) -> int:
    try:
        hours, minutes = value.split(":")
        parsed = clock_time(int(hours), int(minutes))
    except ValueError:
        raise BadRequest(f"[campaigns] {key} must be HH:MM, got {value!r}") from None
    return parsed.hour * 60 + parsed.minute


class QuietHours:
    """Local times during which no care SMS goes out (`start` to `end`, over midnight
    when `start` > `end`). `clock` gives Unix time (tests set it)."""

    def __init__(self, start: str, end: str, timezone: str, clock: Callable[[], float]) -> None:
        self.start = _minutes(start, "quiet_start")
        self.end = _minutes(end, "quiet_end")
        self.zone = ZoneInfo(timezone)
        self.clock = clock

    def _local(self, at: float | None) -> datetime:
        return datetime.fromtimestamp(self.clock() if at is None else at, self.zone)

    def quiet(self, at: float | None = None) -> bool:
        """True inside quiet hours."""
        if self.start == self.end:
            return False
        local = self._local(at)
        minute = local.hour * 60 + local.minute
        if self.start < self.end:
            return self.start <= minute < self.end
        return minute >= self.start or minute < self.end

    def _next(self, minute_of_day: int, at: float | None) -> float:
        local = self._local(at)
        today = local.replace(hour=minute_of_day // 60, minute=minute_of_day % 60, second=0, microsecond=0)
        if today <= local:
            today = (local + timedelta(days=1)).replace(hour=minute_of_day // 60, minute=minute_of_day % 60, second=0, microsecond=0)
        return today.timestamp()

    def next_quiet(self, at: float | None = None) -> float:
        """Unix time quiet hours next begin (0 when there are none): an SMS queued now
        must be sent before it."""
        return 0.0 if self.start == self.end else self._next(self.start, at)

    def next_end(self, at: float | None = None) -> float:
        """Unix time the current quiet hours end."""
        return self._next(self.end, at)


class OptOuts:
    """The subscribers who sent `TC`: a Redis set every campaign consults."""

    def __init__(self, client: Any) -> None:
        self.client = client

    async def opt_out(self, msisdn: str) -> bool:
        return bool(await self.client.sadd(OPTOUT_KEY, msisdn))

    async def opt_in(self, msisdn: str) -> bool:
        return bool(await self.client.srem(OPTOUT_KEY, msisdn))

    async def is_out(self, msisdn: str) -> bool:
        return bool(await self.client.sismember(OPTOUT_KEY, msisdn))

    def install(self, router: KeywordRouter, short_codes: tuple[str, ...]) -> None:
        """Add `TC`, `TU CHOI` and `DK CSKH` on each care short code to the router."""

        async def care_keyword(ctx: KeywordContext) -> str:
            words = ctx.words
            if words[:1] == ["TC"] or words[:2] == ["TU", "CHOI"]:
                await self.opt_out(ctx.msisdn)
                key = "out"
            elif words[:2] == ["DK", "CSKH"]:
                await self.opt_in(ctx.msisdn)
                key = "in"
            else:
                key = "help"
            replies = _REPLIES[key]
            return replies.get(ctx.lang, replies["vi"]).format(code=ctx.short_code)

        for code in short_codes:
            for word in ("TC", "TU", "DK", "*"):
                router.add_route(code, word, care_keyword, "care")
