"""A campaign as an operator writes it: name, texts, sender, target, limits.

Texts are templates in the menus' syntax (`{name}`, `{points|number}`,
`{balance|money}`, `{expiry|date}`), one per language (`vi` required; `vi_dau` and `en`
fall back to it); each subscriber gets the language they chose on USSD, else `vi`. The
target is a CSV of MSISDNs (a header row names per-row variables) or a filter over the
subscriber backend (`tier=Vang,Kim_cuong points>=10000 arpu=50000-200000 has=MAX90
lacks=D15 kndl=yes`).
"""

from __future__ import annotations

import csv
import io
import re
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from ussd_gateway.backend.port import SubscriberFilter, SubscriberProfile
from ussd_gateway.core.errors import BadRequest
from ussd_gateway.core.formats import LANGUAGES
from ussd_gateway.core.msisdn import normalise_msisdn
from ussd_gateway.menus.template import Template, TemplateError

from ussd_gateway.campaigns.sizing import SmsSize, sms_size

ACCOUNT_VARIABLES = ("name", "points", "tier", "balance", "package", "expiry")
"""What a template may use of the subscriber's account (plus a CSV's own columns)."""
STATUSES = ("draft", "running", "paused", "cancelled", "done")
_ID = re.compile(r"[^a-z0-9]+")
_SENDER = re.compile(r"[0-9]{3,15}|[A-Za-z0-9 ._-]{1,11}")
MAX_CSV_ROWS = 1_000_000


def campaign_id(name: str) -> str:
    """`Tri an Vang 12/2025` -> `tri-an-vang-12-2025`."""
    slug = _ID.sub("-", name.lower()).strip("-")[:48]
    if not slug:
        raise BadRequest(f"campaign name {name[:40]!r} needs letters or digits")
    return slug


@dataclass(frozen=True, slots=True)
class Limits:
    max_parts: int = 2
    """A subscriber's rendered text longer than this many SMS is not sent (counted `too_long`)."""
    max_messages: int = 0
    """Stop after queueing this many SMS; 0: the whole target."""


@dataclass(frozen=True, slots=True)
class FollowUp:
    """What counts as a purchase the campaign brought (follow-up attribution, last touch):
    one its subscriber makes within `window_days` of the SMS (0: `[campaigns]
    attribution_days`), through a channel of `via`, of one of `packages` (empty: any)."""

    code: str = ""
    """Where the text sends them (`*090*4#`, `MAX90 gui 999`): shown in `status`."""
    window_days: float = 0
    packages: tuple[str, ...] = ()
    via: tuple[str, ...] = ("ussd", "sms")

    @classmethod
    def from_json(cls, raw: dict[str, Any] | None) -> "FollowUp":
        """From what `create` takes (and what is stored).

        Raises:
            BadRequest: an unknown field, a bad channel or window.
        """
        raw = dict(raw or {})
        try:
            made = cls(
                code=str(raw.pop("code", "")), window_days=float(raw.pop("window_days", 0) or 0),
                packages=tuple(str(p).upper() for p in raw.pop("packages", ()) or ()),
                via=tuple(str(v).lower() for v in raw.pop("via", ("ussd", "sms")) or ("ussd", "sms")),
            )
        except (TypeError, ValueError) as error:
            raise BadRequest(f"follow_up: {error}") from None
        if raw:
            raise BadRequest(f"follow_up: unknown field(s) {', '.join(sorted(raw))} (code, window_days, packages, via)")
        if not set(made.via) <= {"ussd", "sms"} or not 0 <= made.window_days <= 90:
            raise BadRequest("follow_up: via is ussd and/or sms; window_days 0..90")
        if any(not re.fullmatch(r"[A-Z0-9_]{1,20}", p) for p in made.packages):
            raise BadRequest("follow_up: packages are package codes (MAX90, D15)")
        return made


@dataclass(frozen=True, slots=True)
class Campaign:
    id: str
    name: str
    texts: dict[str, str]
    sender: str
    filter: SubscriberFilter | None = None
    csv_columns: tuple[str, ...] = ()
    """Variables each CSV row carries (a CSV target's rows are kept beside the campaign)."""
    limits: Limits = field(default_factory=Limits)
    created_at: float = 0.0
    follow_up: FollowUp = field(default_factory=FollowUp)

    @property
    def target_kind(self) -> str:
        return "filter" if self.filter is not None else "csv"

    def templates(self) -> dict[str, Template]:
        vi = Template(self.texts["vi"])
        return {lang: Template(self.texts[lang]) if self.texts.get(lang) else vi for lang in LANGUAGES}

    def needs_account(self) -> bool:
        """True when a CSV target's texts use account variables its columns lack."""
        used = {path.split(".")[0] for t in self.templates().values() for path in t.paths}
        return bool(used & set(ACCOUNT_VARIABLES) - set(self.csv_columns))

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> "Campaign":
        wanted = raw.get("filter")
        if wanted is not None:
            wanted = SubscriberFilter(**{**wanted, "tiers": tuple(wanted.get("tiers", ()))})
        return cls(
            id=raw["id"], name=raw["name"], texts=dict(raw["texts"]), sender=raw["sender"], filter=wanted,
            csv_columns=tuple(raw.get("csv_columns", ())), limits=Limits(**raw.get("limits", {})),
            created_at=float(raw.get("created_at", 0.0)), follow_up=FollowUp.from_json(raw.get("follow_up")),
        )


def make_campaign(
    name: str, texts: dict[str, str], sender: str, *, filter_text: str | dict[str, Any] | None = None,
    csv_columns: tuple[str, ...] = (), limits: Limits | None = None, follow_up: FollowUp | None = None,
) -> Campaign:
    """A checked campaign: every text parses, uses only known variables and fits
    `max_parts` before rendering; the sender is a short code or brandname.

    Raises:
        BadRequest: what is wrong, in one line.
    """
    limits = limits or Limits()
    if not 1 <= limits.max_parts <= 10 or limits.max_messages < 0:
        raise BadRequest("max_parts must be 1..10 and max_messages 0 or more")
    if not texts.get("vi"):
        raise BadRequest("a campaign needs at least its Vietnamese text (vi)")
    unknown_langs = set(texts) - set(LANGUAGES)
    if unknown_langs:
        raise BadRequest(f"text languages are {', '.join(LANGUAGES)}; not {', '.join(sorted(unknown_langs))}")
    known = set(ACCOUNT_VARIABLES) | set(csv_columns)
    for lang, source in texts.items():
        try:
            template = Template(source)
        except TemplateError as error:
            raise BadRequest(f"text {lang}: {error}") from None
        for path in template.paths:
            if path.split(".")[0] not in known:
                raise BadRequest(f"text {lang}: unknown variable {{{path}}} (known: {', '.join(sorted(known))})")
    if not _SENDER.fullmatch(sender):
        raise BadRequest(f"sender {sender[:20]!r} must be a short code (digits) or a brandname of at most 11 characters")
    wanted = parse_filter(filter_text) if filter_text is not None else None
    return Campaign(campaign_id(name), name, dict(texts), sender, wanted, tuple(csv_columns), limits, time.time(), follow_up or FollowUp())


def parse_filter(spec: str | dict[str, Any]) -> SubscriberFilter:
    """`tier=Vang,Kim_cuong points>=10000 points<=50000 arpu=50000-200000 has=MAX90
    lacks=D15 kndl=yes` (or the same as a JSON object of SubscriberFilter's fields).

    Raises:
        BadRequest: a term it does not understand.
    """
    if isinstance(spec, dict):
        try:
            return SubscriberFilter(**{**spec, "tiers": tuple(spec.get("tiers", ()))})
        except TypeError as error:
            raise BadRequest(f"filter: {error}") from None
    values: dict[str, Any] = {}
    for term in spec.split():
        match = re.fullmatch(r"(tier|points|arpu|has|lacks|kndl)(>=|<=|=)(.+)", term)
        if match is None:
            raise BadRequest(f"filter term {term!r}: expected tier=, points>=, points<=, points=A-B, arpu..., has=, lacks=, kndl=yes|no")
        key, op, value = match.groups()
        try:
            if key == "tier":
                values["tiers"] = tuple(v.replace("_", " ") for v in value.split(","))
            elif key in ("has", "lacks"):
                values[f"{key}_package" if key == "has" else "lacks_package"] = value.upper()
            elif key == "kndl":
                if value.lower() not in ("yes", "no"):
                    raise ValueError
                values["kndl"] = value.lower() == "yes"
            elif op == ">=":
                values[f"{key}_min"] = int(value)
            elif op == "<=":
                values[f"{key}_max"] = int(value)
            else:
                low, _, high = value.partition("-")
                values[f"{key}_min"], values[f"{key}_max"] = int(low), int(high or low)
        except ValueError:
            raise BadRequest(f"filter term {term!r}: the value is not understood") from None
    return SubscriberFilter(**values)


@dataclass(frozen=True, slots=True)
class CsvTarget:
    rows: list[tuple[str, dict[str, str]]]
    columns: tuple[str, ...]
    invalid: list[str]
    """Rows whose number is not an MSISDN (the first few shown to the operator)."""
    duplicates: int


def parse_csv(text: str) -> CsvTarget:
    """MSISDNs, one a row, first column; a first row whose first cell is not a number
    is a header naming the other columns (per-row variables, e.g. `name`)."""
    reader = csv.reader(io.StringIO(text.lstrip("\ufeff")))
    rows: list[tuple[str, dict[str, str]]] = []
    columns: tuple[str, ...] = ()
    invalid: list[str] = []
    seen: set[str] = set()
    duplicates = 0
    for number, row in enumerate(reader):
        if not row or not row[0].strip():
            continue
        if number == 0 and not row[0].strip().lstrip("+").isdigit():
            columns = tuple(c.strip() for c in row[1:])
            continue
        try:
            msisdn = normalise_msisdn(row[0])
        except BadRequest:
            invalid.append(row[0][:20])
            continue
        if msisdn in seen:
            duplicates += 1
            continue
        seen.add(msisdn)
        rows.append((msisdn, {c: v.strip() for c, v in zip(columns, row[1:]) if c}))
        if len(rows) > MAX_CSV_ROWS:
            raise BadRequest(f"a CSV target holds at most {MAX_CSV_ROWS} subscribers")
    return CsvTarget(rows, columns, invalid, duplicates)


def variables(profile: SubscriberProfile | None, row: dict[str, str] | None = None) -> dict[str, Any]:
    """A subscriber's template variables: the account's, then the CSV row's."""
    found: dict[str, Any] = {}
    if profile is not None:
        found = {name: getattr(profile, name) for name in ACCOUNT_VARIABLES}
    found.update(row or {})
    return found


def render(campaign: Campaign, templates: dict[str, Template], values: dict[str, Any], lang: str) -> tuple[str, SmsSize]:
    """The text one subscriber gets and its size."""
    text = templates.get(lang, templates["vi"]).render(values, lang)
    return text, sms_size(text)
