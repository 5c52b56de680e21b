"""Screen data made from the catalogue: built once per package and language, shared by
every dialogue, and saved in a session record as a reference, not as its items.

A list screen's items (the packages of a category) and a picked package used to ride
in every saved record (about 750 bytes of the 1.3 KB a session held in Redis after the
list screen) and were rebuilt with `dataclasses.asdict` on each visit. Now:

- `package_view` is cached per (package, language): the dict templates read;
- `packages_view` is cached per (catalogue, category, language): a `Derived` list;
- the record saves both as `{"$r": [kind, …]}`, and `hydrate` turns the references of
  a loaded record back into the same values (the catalogue is in memory; the HTTP
  backend fetches it once).

The views are shared: nothing may change one in place (actions build new dicts).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from ussd_gateway.core.formats import data_size, number
from ussd_gateway.sessions.record import REF, Derived, DerivedDict, SessionRecord
from ussd_gateway.backend.port import Catalogue, Package, SubscriberBackend

Word = Callable[..., str]
"""`word(key, lang, variables=None)`: a common text in a language."""

_CACHE_MAX = 4096
_package_views: dict[tuple[int, str, bool], tuple[Package, DerivedDict]] = {}
"""Keyed by the package object's id (a package holds a dict of descriptions, so it is
not hashable); the entry keeps the package, so an id reused by another object misses."""
_package_lists: dict[tuple[int, str, str, str], tuple[Catalogue, Derived]] = {}


def allowance(word: Word, lang: str, data_mb: int, voice_min: int, sms: int, *, none: str = "-") -> str:
    """`4GB, 1.050 phut, 50 SMS` in `lang`: counts grouped as the language writes
    numbers (`1.050` vi, `1,050` en), like points and money; `none` when all are 0."""
    parts: list[str] = []
    if data_mb:
        parts.append(data_size(data_mb, lang))
    if voice_min:
        parts.append(f"{number(voice_min, lang)} {word('unit_min', lang)}")
    if sms:
        parts.append(f"{number(sms, lang)} SMS")
    return ", ".join(parts) or none


def renewal(word: Word, lang: str, price: int, days: int, renews: bool = True) -> str:
    """How and when a package renews: `tu gia han 15.000d moi 3 ngay`, `... moi ngay`,
    or `khong tu gia han` when its renewal is off."""
    if not renews:
        return word("renew_off", lang)
    return word("renew_daily" if days == 1 else "renew_every", lang, {"price": price, "days": days})


def package_view(word: Word, lang: str, package: Package, renews: bool = True) -> DerivedDict:
    """What templates read of a package: its fields, `desc` (the catalogue's own
    description, else the allowance sums), `renews` and `renewal`; once per language
    and renewal setting."""
    key = (id(package), lang, renews)
    found = _package_views.get(key)
    if found is None or found[0] is not package:
        if len(_package_views) >= _CACHE_MAX:
            _package_views.clear()  # a catalogue that keeps changing: start over
        fields = {name: getattr(package, name) for name in package.__dataclass_fields__}
        fields["desc"] = package.description(lang) or allowance(word, lang, package.data_mb, package.voice_min, package.sms)
        fields["renews"] = renews
        fields["renewal"] = renewal(word, lang, package.price, package.validity_days, renews)
        found = _package_views[key] = (package, DerivedDict(fields, ["pkg", package.code, lang, _flag(renews)]))
    return found[1]


def packages_view(
    word: Word, lang: str, catalogue: Catalogue, category: str, held: Mapping[str, bool] | None = None
) -> Derived:
    """The views of one category's packages, once per catalogue, language and the
    renewal settings of the ones the subscriber holds (`held`: upper-case code ->
    renews; a package not held shows that it renews)."""
    packages = catalogue.in_category(category)
    flags = "".join(_flag((held or {}).get(p.code.upper(), True)) for p in packages)
    key = (id(catalogue), category, lang, flags)
    found = _package_lists.get(key)
    if found is None or found[0] is not catalogue:
        if len(_package_lists) >= _CACHE_MAX:
            _package_lists.clear()
        views = [package_view(word, lang, p, flag == "1") for p, flag in zip(packages, flags)]
        found = _package_lists[key] = (catalogue, Derived(views, ["packages", category, lang, flags]))
    return found[1]


def _flag(renews: bool) -> str:
    return "1" if renews else "0"


async def _resolve(ref: list[str], backend: SubscriberBackend, word: Word) -> Any:
    catalogue = await backend.catalogue()
    kind = ref[0]
    if kind == "packages":
        packages = catalogue.in_category(ref[1])
        flags = ref[3] if len(ref) > 3 else ""
        held = {p.code.upper(): flag == "1" for p, flag in zip(packages, flags)}
        return packages_view(word, ref[2], catalogue, ref[1], held)
    if kind == "pkg":
        package = next((p for p in catalogue.packages if p.code == ref[1]), None)
        if package is not None:
            return package_view(word, ref[2], package, len(ref) < 4 or ref[3] == "1")
    return None


async def _hydrate_vars(variables: dict[str, Any], backend: SubscriberBackend, word: Word) -> None:
    for name, value in variables.items():
        if type(value) is dict and REF in value:
            resolved = await _resolve(value[REF], backend, word)
            if resolved is not None:  # a package gone from the catalogue stays a reference
                variables[name] = resolved


async def hydrate(record: SessionRecord, backend: SubscriberBackend, word: Word) -> None:
    """Turn the references of a loaded record (its vars, and those of a dialogue it
    offers to resume) back into values."""
    await _hydrate_vars(record.vars, backend, word)
    if record.resume_of and isinstance(record.resume_of.get("vars"), dict):
        await _hydrate_vars(record.resume_of["vars"], backend, word)
    record.refs = False
