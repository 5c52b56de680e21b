"""The campaigns kept in Redis: create, preview, start, pause, resume, cancel, status, list.

Every gateway process (and the `ussd-gateway campaign` command) reads and writes the
same keys, so a campaign started from the CLI is sent by whichever server takes its
lease (`runner`). Keys (hash tag `{care}`): `camps` (the index), `camp:<id>` (the
definition, status, cursor, note), `camp:<id>:rows` (a CSV target's rows),
`camp:<id>:sent` (per subscriber: claimed, queued, opted out, capped, too long),
`camp:<id>:n` (the counts), `camp:<id>:h` (the counts per hour), `camp:<id>:retry`
(held at quiet hours, for the morning), `camp:<id>:conv` (the purchases attributed).
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from datetime import datetime, timedelta
from typing import Any

import orjson

from ussd_gateway.backend.port import SubscriberBackend, SubscriberProfile
from ussd_gateway.core.errors import BadRequest
from ussd_gateway.core.formats import LANGUAGES
from ussd_gateway.sessions.redis_store import subscriber_key

from ussd_gateway.campaigns.ledger import PREFIX
from ussd_gateway.campaigns.model import Campaign, CsvTarget, render, variables
from ussd_gateway.campaigns.settings import CampaignSettings

COUNTS = ("queued", "sent", "delivered", "failed", "expired", "opted_out", "capped", "too_long", "held", "conversions", "revenue")
"""What `status` reports (`held`: due when quiet hours began, sent the next morning;
`conversions` and `revenue`, in đồng: the purchases that followed, `attribution`)."""
HOURLY = ("sent", "delivered", "failed", "conversions")
"""The per-hour series (`failed` counts expired SMS too: neither reached the phone)."""
_MOVES = {
    "start": (("draft",), "running"),
    "pause": (("running",), "paused"),
    "resume": (("paused",), "running"),
    "cancel": (("draft", "running", "paused"), "cancelled"),
}


def key(campaign_id: str, part: str = "") -> str:
    return f"{PREFIX}:camp:{campaign_id}" + (f":{part}" if part else "")


class CampaignBook:
    """Campaign definitions, states and counts in Redis."""

    def __init__(
        self, client: Any, backend: SubscriberBackend, settings: CampaignSettings, *,
        store_prefix: str = "ussd", clock: Callable[[], float] = time.time,
    ) -> None:
        self.client = client
        self.backend = backend
        self.settings = settings
        self.store_prefix = store_prefix
        self.clock = clock

    # ---- definitions ---------------------------------------------------------------------
    async def create(self, campaign: Campaign, csv: CsvTarget | None = None) -> Campaign:
        """Store a new campaign as a draft (its CSV rows beside it).

        Raises:
            BadRequest: the name is taken, or a CSV campaign has no valid row.
        """
        if campaign.filter is None and (csv is None or not csv.rows):
            raise BadRequest("a campaign needs a target: a CSV with at least one MSISDN, or a filter")
        if not await self.client.hsetnx(key(campaign.id), "def", orjson.dumps(campaign.to_json())):
            raise BadRequest(f"a campaign named {campaign.id!r} exists already")
        pipe = self.client.pipeline(transaction=False)
        pipe.hset(key(campaign.id), mapping={"status": "draft", "cursor": 0, "note": ""})
        pipe.zadd(f"{PREFIX}:camps", {campaign.id: campaign.created_at})
        if csv is not None:
            for start in range(0, len(csv.rows), 5000):
                pipe.rpush(key(campaign.id, "rows"), *(orjson.dumps(row) for row in csv.rows[start : start + 5000]))
            pipe.hset(key(campaign.id), "targets", len(csv.rows))
        await pipe.execute()
        return campaign

    async def get(self, campaign_id: str) -> tuple[Campaign, dict[str, str]]:
        """The campaign and its state (`status`, `cursor`, `note`, `targets`).

        Raises:
            BadRequest: no campaign by that id.
        """
        raw = await self.client.hgetall(key(campaign_id))
        if not raw or b"def" not in raw:
            raise BadRequest(f"no campaign {campaign_id!r}")
        state = {k.decode(): v.decode() for k, v in raw.items() if k != b"def"}
        return Campaign.from_json(orjson.loads(raw[b"def"])), state

    async def ids(self) -> list[str]:
        return [raw.decode() for raw in await self.client.zrange(f"{PREFIX}:camps", 0, -1)]

    async def move(self, campaign_id: str, action: str) -> str:
        """start, pause, resume or cancel; returns the new status.

        Raises:
            BadRequest: the move is not possible from the campaign's status.
        """
        allowed, target = _MOVES[action]
        campaign, state = await self.get(campaign_id)
        if state.get("status") not in allowed:
            raise BadRequest(f"campaign {campaign_id!r} is {state.get('status')}: cannot {action} it")
        if action == "start" and campaign.filter is not None:
            count = sum([1 async for _ in self.targets(campaign, 0)])
            await self.client.hset(key(campaign_id), "targets", count)
        await self.client.hset(key(campaign_id), mapping={"status": target, "note": ""})
        return target

    # ---- targets -------------------------------------------------------------------------
    async def targets(self, campaign: Campaign, start: int, limit: int | None = None) -> AsyncIterator[tuple[int, str, dict[str, Any]]]:
        """(position, msisdn, variables) from `start`; a CSV target's variables are its
        row's (plus the account's, looked up by the runner when the texts need it)."""
        taken = 0
        if campaign.filter is not None:
            async for position, profile in self.backend.subscribers(campaign.filter, start):
                yield position, profile.msisdn, variables(profile)
                taken += 1
                if limit is not None and taken >= limit:
                    return
            return
        step = min(limit or 1000, 1000)
        position = start
        while limit is None or taken < limit:
            rows = await self.client.lrange(key(campaign.id, "rows"), position, position + step - 1)
            if not rows:
                return
            for raw in rows:
                msisdn, row = orjson.loads(raw)
                yield position, msisdn, row
                position += 1
                taken += 1
                if limit is not None and taken >= limit:
                    return

    async def account_variables(self, msisdn: str) -> dict[str, Any]:
        """A CSV row's subscriber's account variables (their name comes from the CSV)."""
        account = await self.backend.account(msisdn)
        package = account.packages[0] if account.packages else None
        profile = SubscriberProfile(
            msisdn=msisdn, tier=account.kndl.tier if account.kndl else "", points=account.points, balance=account.balance,
            package=package.code if package else "", expiry=package.expires if package else "", kndl=account.kndl is not None,
        )
        found = variables(profile)
        del found["name"]
        return found

    async def languages(self, msisdns: list[str]) -> list[str]:
        """Each subscriber's remembered language (from USSD), else `vi`."""
        pipe = self.client.pipeline(transaction=False)
        for msisdn in msisdns:
            pipe.get(subscriber_key(self.store_prefix, msisdn, "lang"))
        found = await pipe.execute()
        return [raw.decode() if raw and raw.decode() in LANGUAGES else "vi" for raw in found]

    # ---- reports -------------------------------------------------------------------------
    async def preview(self, campaign_id: str, sample: int = 3) -> dict[str, Any]:
        """What launching would send: the number of targets, the SMS parts they need
        (in Vietnamese; a subscriber who chose English may need another count), the
        too-long ones, and a few rendered texts in every language."""
        campaign, _state = await self.get(campaign_id)
        templates = campaign.templates()
        parts: dict[int, int] = {}
        targets = too_long = 0
        samples = []
        need_account = campaign.filter is None and campaign.needs_account()
        async for _position, msisdn, values in self.targets(campaign, 0):
            targets += 1
            if need_account and targets <= sample:
                values = {**await self.account_variables(msisdn), **values}
            text, size = render(campaign, templates, values, "vi")
            parts[size.parts] = parts.get(size.parts, 0) + 1
            too_long += size.parts > campaign.limits.max_parts
            if targets <= sample:
                rendered = {lang: render(campaign, templates, values, lang) for lang in LANGUAGES}
                samples.append({"msisdn": msisdn, **{lang: {"text": t, "size": s.describe()} for lang, (t, s) in rendered.items()}})
        return {
            "id": campaign.id, "name": campaign.name, "sender": campaign.sender, "target": campaign.target_kind,
            "targets": targets, "sms_parts": {str(k): v for k, v in sorted(parts.items())},
            "total_parts_vi": sum(k * v for k, v in parts.items()), "too_long": too_long,
            "max_parts": campaign.limits.max_parts, "samples": samples,
        }

    async def status(self, campaign_id: str) -> dict[str, Any]:
        campaign, state = await self.get(campaign_id)
        counts = {k.decode(): int(v) for k, v in (await self.client.hgetall(key(campaign_id, "n"))).items()}
        return {
            "id": campaign.id, "name": campaign.name, "status": state.get("status"), "note": state.get("note") or None,
            "sender": campaign.sender, "target": campaign.target_kind, "targets": int(state.get("targets") or 0),
            "handled": int(state.get("handled") or 0), **{name: counts.get(name, 0) for name in COUNTS},
            "waiting": max(0, counts.get("waiting", 0)), "follow_up": campaign.follow_up.code or None,
        }

    async def hourly(self, campaign_id: str) -> list[dict[str, Any]]:
        """Sent, delivered, failed (and expired) and conversions in each hour of the
        operator's clock, from the first hour anything happened to the last, every hour
        in between listed (zeros included): `[{"hour": "2025-06-02T10", "sent": 5, ...}]`."""
        await self.get(campaign_id)  # a 404 for an unknown campaign, not an empty chart
        raw = await self.client.hgetall(key(campaign_id, "h"))
        found: dict[str, dict[str, int]] = {}
        for field_, value in raw.items():
            hour, _, state = field_.decode().partition("|")
            state = "failed" if state == "expired" else state
            if state in HOURLY:
                counts = found.setdefault(hour, dict.fromkeys(HOURLY, 0))
                counts[state] += int(value)
        if not found:
            return []
        first, last = (datetime.strptime(h, "%Y-%m-%dT%H") for h in (min(found), max(found)))
        series = []
        while first <= last:  # wall-clock hours: the zone has no daylight saving
            hour = first.strftime("%Y-%m-%dT%H")
            series.append({"hour": hour, **found.get(hour, dict.fromkeys(HOURLY, 0))})
            first += timedelta(hours=1)
        return series


async def create_from_spec(book: CampaignBook, spec: dict[str, Any]) -> dict[str, Any]:
    """A campaign from what the CLI and `POST /campaigns` take: `name`, `texts` {vi,
    vi_dau?, en?}, `sender`?, `csv` (its text) or `filter` (text or object), `limits`
    {max_parts?, max_messages?}, `follow_up` {code?, window_days?, packages?, via?}.
    Returns its id and what the CSV held.

    Raises:
        BadRequest: what is wrong, in one line.
    """
    from ussd_gateway.campaigns.model import FollowUp, Limits, make_campaign, parse_csv

    name, texts = spec.get("name"), spec.get("texts")
    if not isinstance(name, str) or not isinstance(texts, dict) or not all(isinstance(v, str) for v in texts.values()):
        raise BadRequest("a campaign needs a `name` and `texts` ({\"vi\": ..., \"vi_dau\": ..., \"en\": ...})")
    has_csv, has_filter = spec.get("csv") is not None, spec.get("filter") is not None
    if has_csv == has_filter:
        raise BadRequest("give the target as exactly one of `csv` (the file's text) or `filter`")
    csv = parse_csv(str(spec["csv"])) if has_csv else None
    try:
        limits = Limits(**(spec.get("limits") or {}))
    except TypeError as error:
        raise BadRequest(f"limits: {error}") from None
    follow_up = spec.get("follow_up")
    if follow_up is not None and not isinstance(follow_up, dict):
        raise BadRequest("follow_up is an object: {\"code\": \"*090*4#\", \"window_days\": 7, \"packages\": [\"MAX90\"], \"via\": [\"ussd\", \"sms\"]}")
    campaign = make_campaign(
        name, {k: v for k, v in texts.items() if v}, str(spec.get("sender") or book.settings.default_sender),
        filter_text=spec.get("filter"), csv_columns=csv.columns if csv else (), limits=limits,
        follow_up=FollowUp.from_json(follow_up),
    )
    await book.create(campaign, csv)
    report: dict[str, Any] = {"id": campaign.id, "target": campaign.target_kind}
    if csv is not None:
        report.update(rows=len(csv.rows), columns=list(csv.columns), invalid=len(csv.invalid), invalid_examples=csv.invalid[:5], duplicates=csv.duplicates)
    return report
