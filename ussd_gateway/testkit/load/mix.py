"""The built-in dialogue mix: weighted walks through the services, each screen checked.

By default a load dialogue is a walk from a weighted mix of the services (`MIX`): the
*101# balance, account lookup, browsing and buying packages, KNDL, VAS, feedback, the
self-built bundle, language; some walks go back with `0` or home with `00`. Every screen
is checked against a fragment it must hold (in Vietnamese without diacritics, the
language of a new subscriber) and whether it is END. `plan_walk` draws one dialogue.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Step:
    """Send `value` (None: dial), then expect a screen holding `expect`, END or not."""

    value: str | None
    expect: str
    end: bool = False


@dataclass(frozen=True, slots=True)
class Walk:
    """One dialogue of the mix: the service it walks, the code it dials, its steps."""

    name: str
    code: str
    steps: tuple[Step, ...]


HOME = "MobiFone *090#"


def _detour(rng: random.Random) -> list[Step]:
    """Sometimes a subscriber wanders off from the main menu and comes back with 00."""
    if rng.random() < 0.15:
        return [Step("2", "Mua goi cuoc"), Step("00", HOME)]
    return []


def _walk_balance(rng: random.Random) -> list[Step]:
    return [Step(None, "TKC cua quy khach:", end=True)]


def _walk_account(rng: random.Random) -> list[Step]:
    steps = [Step(None, HOME), *_detour(rng), Step("1", "Diem KNDL"), Step("1", "Goi dang dung:")]
    if rng.random() < 0.5:
        steps.append(Step("0", "Diem KNDL"))  # back
    steps.append(Step("00", HOME))
    return steps


_CATEGORIES = (("1", "Goi Data:"), ("2", "Goi Thoai:"), ("3", "Goi Combo:"))


def _walk_browse(rng: random.Random) -> list[Step]:
    key, title = rng.choice(_CATEGORIES)
    other_key, other_title = rng.choice(_CATEGORIES)
    steps = [Step(None, HOME), *_detour(rng), Step("2", "Mua goi cuoc"), Step(key, title)]
    if rng.random() < 0.5:
        steps += [Step("0", "Mua goi cuoc"), Step(other_key, other_title)]  # back, another category
    steps += [Step(str(rng.randint(1, 2)), "Dang ky?"), Step("2", "Mua goi cuoc")]  # a detail, then "no"
    return steps


def _walk_buy(rng: random.Random) -> list[Step]:
    # The first two data packages (D15, D30) fit a new subscriber's 100.000d.
    return [
        Step(None, HOME), *_detour(rng), Step("2", "Mua goi cuoc"), Step("1", "Goi Data:"),
        Step(str(rng.randint(1, 2)), "Dang ky?"), Step("1", "Dang ky thanh cong goi", end=True),
    ]


def _walk_kndl(rng: random.Random) -> list[Step]:
    steps = [Step(None, HOME), *_detour(rng), Step("4", "chua tham gia Ket noi dai lau")]
    if rng.random() < 0.5:
        return steps + [Step("0", HOME)]
    return steps + [Step("1", "dang cho xac nhan"), Step("1", "Chuc mung", end=True)]


def _walk_vas(rng: random.Random) -> list[Step]:
    return [Step(None, HOME), *_detour(rng), Step("5", "khong dung dich vu GTGT", end=True)]


def _walk_feedback(rng: random.Random) -> list[Step]:
    message = rng.choice(("Song yeu o tang 3", "Goi cuoc hop ly", "Can them goi data dem"))
    return [
        Step(None, HOME), *_detour(rng), Step("6", "Gop y ve:"), Step(str(rng.randint(1, 4)), "Nhap noi dung gop y"),
        Step(message, "Cam on quy khach", end=True),
    ]


def _walk_bundle(rng: random.Random) -> list[Step]:
    name = f"LOAD {rng.randint(1, 999)}"
    return [
        Step(None, HOME), *_detour(rng), Step("3", "Chon chu ky"), Step("1", "Chon muc Data"),
        Step(str(rng.randint(1, 3)), "Chon muc SMS"), Step(str(rng.randint(2, 3)), "Chon muc thoai"),
        Step(str(rng.randint(1, 2)), "Dat ten cho goi"), Step(name, f"Goi {name}:"),
        Step("1", f"Dang ky thanh cong goi {name}", end=True),
    ]


def _walk_language(rng: random.Random) -> list[Step]:
    return [Step(None, HOME), Step("7", "Chon ngon ngu"), Step("1", "Da chuyen sang Tieng Viet khong dau", end=True)]


MIX: tuple[tuple[str, str, int, Callable[[random.Random], list[Step]]], ...] = (
    # (name, service code, weight, steps)
    ("balance", "*101#", 20, _walk_balance),
    ("account", "*090#", 14, _walk_account),
    ("browse", "*090#", 14, _walk_browse),
    ("buy", "*090#", 14, _walk_buy),
    ("kndl", "*090#", 9, _walk_kndl),
    ("vas", "*090#", 8, _walk_vas),
    ("feedback", "*090#", 7, _walk_feedback),
    ("bundle", "*090#", 8, _walk_bundle),
    ("language", "*090#", 5, _walk_language),
)


def plan_walk(rng: random.Random) -> Walk:
    """One dialogue of the built-in mix."""
    name, code, _weight, build = rng.choices(MIX, weights=[m[2] for m in MIX])[0]
    return Walk(name, code, tuple(build(rng)))
