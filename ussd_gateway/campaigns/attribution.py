"""Follow-up attribution: the purchases a campaign brought, counted on the campaign.

Last touch: when the SMSC takes a campaign SMS, the subscriber's *touch* is set
(`ussd:{MSISDN}:camp_touch`: the campaign, when, its window, the packages and channels
that count), replacing an earlier campaign's. A purchase that succeeds (USSD or a
keyword SMS; `backend.tap.PurchaseTap` reports it) within the window is that
campaign's conversion, and its price (whole đồng) its revenue.

Exactly once per purchase, in two scripts, each in one Redis Cluster slot:

1. the subscriber's slot: the decision, remembered under the purchase's idempotency
   key (`ussd:{MSISDN}:attr:<key>`, as long as the purchase's own record), so a
   replayed hop (the backend answers its first result) gets the same campaign even if
   another campaign's SMS arrived in between;
2. the campaign's slot (`{care}`): the conversion is added to a set keyed by the
   purchase (`camp:<id>:conv`), and counted (`conversions`, `revenue`, per hour too)
   only if it was not there.

A replay runs both again and counts nothing twice; a crash between them is mended by
the replay. Hops that buy nothing never reach this module.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from zoneinfo import ZoneInfo

import structlog

from ussd_gateway.backend.demo_storage import IDEMPOTENCY_TTL_S
from ussd_gateway.sessions.redis_store import subscriber_key

from ussd_gateway.campaigns.book import CampaignBook, key
from ussd_gateway.campaigns.ledger import hour_of
from ussd_gateway.campaigns.model import Campaign

TOUCH = "camp_touch"
ATTRIBUTION_TIMEOUT_S = 0.25
"""A purchase hop waits at most this long for its attribution (the screen matters more)."""

# KEYS: the purchase's decision, the subscriber's touch. ARGV: now, package code, channel, ttl.
# Returns the campaign id, or '' when the purchase is nobody's.
_DECIDE = """
local decided = redis.call('GET', KEYS[1])
if decided then return decided end
local campaign = ''
local touch = redis.call('GET', KEYS[2])
if touch then
  local id, at, window, packages, via = string.match(touch, '^([^|]*)|([^|]*)|([^|]*)|([^|]*)|(.*)$')
  if id and tonumber(ARGV[1]) - tonumber(at) <= tonumber(window)
     and (packages == '' or string.find(',' .. packages .. ',', ',' .. ARGV[2] .. ',', 1, true))
     and string.find(',' .. via .. ',', ',' .. ARGV[3] .. ',', 1, true) then
    campaign = id
  end
end
redis.call('SET', KEYS[1], campaign, 'EX', ARGV[4])
return campaign
"""
# KEYS: conversions (hash purchase -> price), counts, per-hour counts. ARGV: purchase, price, hour.
_COUNT = """
if redis.call('HSETNX', KEYS[1], ARGV[1], ARGV[2]) == 0 then return 0 end
redis.call('HINCRBY', KEYS[2], 'conversions', 1)
redis.call('HINCRBY', KEYS[2], 'revenue', ARGV[2])
redis.call('HINCRBY', KEYS[3], ARGV[3] .. '|conversions', 1)
return 1
"""


def channel_of(idempotency_key: str) -> str:
    """`sms` for a keyword purchase (its key is `sms:<message>`), else `ussd`."""
    return "sms" if idempotency_key.startswith("sms:") else "ussd"


class Attribution:
    """Touches subscribers when their campaign SMS goes, counts the purchases that follow."""

    def __init__(
        self, book: CampaignBook, *, store_prefix: str = "ussd", clock: Callable[[], float] = time.time,
    ) -> None:
        self.book = book
        self.client = book.client
        self.prefix = store_prefix
        self.clock = clock
        self.zone = ZoneInfo(book.settings.timezone)
        self.log = structlog.get_logger("ussd_gateway.campaigns")
        self._decide = self.client.register_script(_DECIDE)
        self._count = self.client.register_script(_COUNT)
        self._campaigns: dict[str, Campaign] = {}
        """Campaign definitions never change once created: read each once."""

    async def _campaign(self, campaign_id: str) -> Campaign:
        found = self._campaigns.get(campaign_id)
        if found is None:
            found, _state = await self.book.get(campaign_id)
            self._campaigns[campaign_id] = found
        return found

    def window_s(self, campaign: Campaign) -> float:
        return (campaign.follow_up.window_days or self.book.settings.attribution_days) * 86_400

    async def touch(self, campaign_id: str, msisdn: str, when: float) -> None:
        """The subscriber got this campaign's SMS (the SMSC took it): their last touch."""
        campaign = await self._campaign(campaign_id)
        window = self.window_s(campaign)
        f = campaign.follow_up
        value = f"{campaign_id}|{when:.0f}|{window:.0f}|{','.join(f.packages)}|{','.join(f.via)}"
        await self.client.set(subscriber_key(self.prefix, msisdn, TOUCH), value, ex=max(1, int(window)))

    async def purchased(self, msisdn: str, idempotency_key: str, code: str, price: int) -> str | None:
        """A purchase that succeeded (or its replay): the campaign it counts for, if any."""
        now = self.clock()
        decided = await self._decide(
            keys=[subscriber_key(self.prefix, msisdn, "attr:" + idempotency_key), subscriber_key(self.prefix, msisdn, TOUCH)],
            args=[now, code.upper(), channel_of(idempotency_key), IDEMPOTENCY_TTL_S],
        )
        campaign_id = decided.decode() if isinstance(decided, bytes) else str(decided or "")
        if not campaign_id:
            return None
        await self._count(
            keys=[key(campaign_id, "conv"), key(campaign_id, "n"), key(campaign_id, "h")],
            args=[f"{msisdn}|{idempotency_key}", int(price), hour_of(now, self.zone)],
        )
        return campaign_id

    async def on_purchase(self, msisdn: str, idempotency_key: str, code: str, price: int) -> None:
        """`purchased`, for the backend's tap: a failure costs the statistic, never the hop."""
        try:
            async with asyncio.timeout(ATTRIBUTION_TIMEOUT_S):
                await self.purchased(msisdn, idempotency_key, code, price)
        except Exception as error:  # redis errors: the purchase stands, only its attribution is lost
            self.log.warning("attribution_lost", error=f"{type(error).__name__}: {error}")

