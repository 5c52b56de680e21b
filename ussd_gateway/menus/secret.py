"""Scratch-card PINs: which screens take one, and how they are masked wherever the
gateway keeps or writes what a subscriber typed.

The menus mark a secret input screen by what it stores (`store = "pin"`, see
`SECRET_STORES`). From that mark come the service codes that open on one (`*100#`,
so the inputs dialled with it, `*100*PIN#`, are secret) and the prompts of those
screens (an answer to a screen showing one is secret). The session record's input
history (`dispatch`) and live recordings (`app.recording`) mask those answers, and
anything shaped like a PIN as well.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

SECRET_STORES = frozenset({"pin"})
"""Input screens storing these variables are secret: every answer to them is masked."""
MASKED_PIN = "{pin}"
"""What stands for a PIN once masked. No keypad types braces, so it is never an input."""
PIN_LIKE = re.compile(r"\d{12,16}")
"""A scratch-card PIN as typed: masked wherever it appears as an input."""


def secret_screens(menus: Any) -> frozenset[str]:
    """The qualified names (`menu:screen`) of the secret input screens."""
    return frozenset(
        screen.qualified
        for menu in menus.menus.values()
        for screen in menu.screens.values()
        if screen.kind == "input" and screen.store in SECRET_STORES
    )


def secret_parts(menus: Any) -> tuple[frozenset[str], tuple[str, ...]]:
    """The service codes that open on a secret input screen (their dialled inputs are
    masked, `*100*PIN#`), and the prompts of secret input screens in every language
    (an answer to a screen showing one is masked)."""
    secret = secret_screens(menus)
    prompts: set[str] = set()
    for name in secret:
        screen = menus.screen(name)
        for lang in ("vi", "vi_dau", "en"):
            prompt = screen.text.render({}, lang).strip() if screen.text else ""
            if prompt:
                prompts.add(prompt)
    return secret_codes(menus), tuple(sorted(prompts))


def secret_codes(menus: Any) -> frozenset[str]:
    """The service codes that open on a secret input screen (`*100#`)."""
    secret = secret_screens(menus)
    return frozenset(code for code, target in menus.services.items() if target in secret)


def masked(value: str, secret: bool = False) -> str:
    """`MASKED_PIN` for an answer to a secret screen or anything shaped like a PIN."""
    return MASKED_PIN if secret or PIN_LIKE.fullmatch(value.strip()) else value


def masked_inputs(inputs: Iterable[str], first_secret: bool = False) -> tuple[str, ...]:
    """`inputs` with PINs masked; `first_secret`: the first answers a secret screen."""
    return tuple(masked(value, first_secret and n == 0) for n, value in enumerate(inputs))
