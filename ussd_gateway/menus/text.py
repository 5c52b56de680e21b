"""Screen text: how much of a USSD screen a text uses, and how to page it.

One USSD string carries 160 octets: 182 septets of the GSM 03.38 default alphabet
(extension-table characters cost two septets, an escape plus the character), or 80
UTF-16 code units as soon as one character needs UCS-2. Vietnamese with diacritics
needs UCS-2, so a single "ố" shrinks a screen from 182 to 80 characters. The menu
engine measures every screen with this module and pages text that does not fit, since
text must never be cut.
"""

from __future__ import annotations

import functools
import re
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

__all__ = [
    "GSM7_BASIC_TABLE",
    "GSM7_ESC",
    "GSM7_EXTENSION_TABLE",
    "ScreenBudget",
    "fits",
    "gsm7_septets",
    "is_gsm7",
    "paginate",
    "screen_cost",
    "ucs2_units",
]

Encoding = Literal["gsm7", "ucs2"]

# GSM 03.38 basic table, in code order: GSM7_BASIC_TABLE[septet] is the character.
# 0x1B is ESC, which introduces the extension table; it is not text. Public so the
# SMS codec (channels/smpp/encoding.py) maps septets with the same table this module measures.
GSM7_BASIC_TABLE = (
    "@£$¥èéùìòÇ\nØø\rÅå"
    "Δ_ΦΓΛΩΠΨΣΘΞ\x1bÆæßÉ"
    " !\"#¤%&'()*+,-./"
    "0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§"
    "¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
GSM7_ESC = 0x1B
_GSM7_BASIC = frozenset(GSM7_BASIC_TABLE) - {chr(GSM7_ESC)}
# GSM 03.38 extension table, character -> code after ESC: each costs 2 septets.
GSM7_EXTENSION_TABLE: dict[str, int] = {
    "\f": 0x0A, "^": 0x14, "{": 0x28, "}": 0x29, "\\": 0x2F,
    "[": 0x3C, "~": 0x3D, "]": 0x3E, "|": 0x40, "€": 0x65,
}  # fmt: skip
_GSM7_EXTENSION = frozenset(GSM7_EXTENSION_TABLE)
_GSM7_ALL = _GSM7_BASIC | _GSM7_EXTENSION

# Menus are mostly ASCII ("khong dau"), so ASCII text takes a bytes.translate path:
# deleting every basic-table byte in C leaves only extension or foreign characters.
_ASCII_BASIC = bytes(sorted(ord(c) for c in _GSM7_BASIC if c.isascii()))
_ASCII_EXTENSION = bytes(sorted(ord(c) for c in _GSM7_EXTENSION if c.isascii()))

# Break points for word wrapping: a space that ends a word (so a cut never leaves a
# fragment that is empty or ends in a space).
_WORD_END = re.compile(r"(?<=[^ ]) ")


@dataclass(frozen=True, slots=True)
class ScreenBudget:
    """How much text one USSD screen holds, per encoding.

    Attributes:
        gsm7: septets per screen when every character is in the GSM 03.38 default
            alphabet (basic table + extension table).
        ucs2: UTF-16 code units per screen when any character needs UCS-2.
    """

    gsm7: int = 182
    ucs2: int = 80

    def __post_init__(self) -> None:
        if self.gsm7 < 1 or self.ucs2 < 1:
            raise ValueError(f"screen budget must be positive, got gsm7={self.gsm7} ucs2={self.ucs2}")


def gsm7_septets(text: str) -> int | None:
    """Septets `text` needs in the GSM 7-bit default alphabet.

    Extension-table characters (form feed ^ { } \\ [ ~ ] | €) count 2.

    Returns:
        The septet count, or None when some character is not in GSM 03.38 at all
        (the text then has to go out as UCS-2).
    """
    if text.isascii():
        rest = text.encode("ascii").translate(None, _ASCII_BASIC)
        if not rest:
            return len(text)
        if rest.translate(None, _ASCII_EXTENSION):
            return None  # a control character or "`", which GSM-7 lacks
        return len(text) + len(rest)
    chars = set(text)
    if not chars <= _GSM7_ALL:
        return None
    return len(text) + sum(text.count(c) for c in chars & _GSM7_EXTENSION)


def is_gsm7(text: str) -> bool:
    """True when every character of `text` is in GSM 03.38 (basic or extension table)."""
    return gsm7_septets(text) is not None


def ucs2_units(text: str) -> int:
    """UTF-16 code units `text` needs: a character outside the BMP counts 2."""
    if text.isascii():
        return len(text)
    # surrogatepass: a lone surrogate in a str is still one unit, not an error.
    return len(text.encode("utf-16-le", "surrogatepass")) // 2


def screen_cost(text: str, budget: ScreenBudget) -> tuple[int, int, Encoding]:
    """How much of a screen `text` uses.

    Returns:
        (used, limit, encoding): GSM-7 septets against `budget.gsm7` when the whole
        text is GSM-7, otherwise UTF-16 units against `budget.ucs2`.
    """
    septets = gsm7_septets(text)
    if septets is not None:
        return septets, budget.gsm7, "gsm7"
    return ucs2_units(text), budget.ucs2, "ucs2"


def fits(text: str, budget: ScreenBudget) -> bool:
    """True when `text` fits on one screen of `budget`."""
    used, limit, _ = screen_cost(text, budget)
    return used <= limit


def paginate(
    lines: Sequence[str],
    budget: ScreenBudget,
    *,
    more_line: str,
    footer_lines: Sequence[str] = (),
) -> list[str]:
    """Lay `lines` out on as few screens as the greedy rules below give.

    A screen is its lines joined by "\\n". When `lines` and `footer_lines` fit on one
    screen the result is that one screen. Otherwise every page ends with
    `footer_lines`, and every page but the last has `more_line` just before them.
    Each page is measured in its own encoding (GSM-7 when all its characters allow).

    Packing is greedy: whole lines go on the current page while they fit; a line that
    fits only on an empty page starts one; a line too long for any page is wrapped at
    spaces, filling the current page first. A blank line that does not fit on the
    current page is dropped instead of opening the next page with it. The one
    unavoidable cut: a single word longer than an empty page's room is split between
    code points (so a decomposed diacritic could land on the next page; menus use
    NFC or unaccented text). No word is ever dropped or truncated.

    Raises:
        ValueError: when `more_line` and `footer_lines` leave no room for body text,
            when `footer_lines` alone do not fit on a screen, or when one character
            of the text cannot fit on an otherwise empty page.
    """
    footer = list(footer_lines)
    _check_room(budget, more_line, tuple(footer))
    whole = "\n".join([*lines, *footer])
    if fits(whole, budget):
        return [whole]
    bodies = _Packer(budget, more_line, footer, lines).pack()
    return _render(bodies, budget, more_line, footer)


@functools.lru_cache(maxsize=256)
def _check_room(budget: ScreenBudget, more_line: str, footer: tuple[str, ...]) -> None:
    """Reject a footer/more-line pair that no body text could share a screen with.

    Cached (speed): every rendered screen is paginated, with the same few footers
    and "more" lines per language; only a successful check is cached (an exception
    is raised again every time)."""
    tail = [more_line, *footer]
    # Room for one GSM-7 or one UCS-2 character: either is enough for *some* text.
    if not any(fits("\n".join([probe, *tail]), budget) for probe in ("x", "ư")):
        raise ValueError(
            f"more_line {more_line!r} and footer_lines {list(footer)!r} leave no room for body text "
            f"on a screen of {budget.gsm7} septets / {budget.ucs2} UCS-2 units"
        )
    if not fits("\n".join(footer), budget):
        raise ValueError(f"footer_lines {list(footer)!r} do not fit on a screen by themselves")


def _render(bodies: list[list[str]], budget: ScreenBudget, more_line: str, footer: list[str]) -> list[str]:
    """Join page bodies into screens: "more" on all but the last, footer on all."""
    pages = ["\n".join([*body, more_line, *footer]) for body in bodies[:-1]]
    last = "\n".join([*bodies[-1], *footer])
    if fits(last, budget):
        return [*pages, last]
    # Only when budget.gsm7 < 2 * budget.ucs2: a UCS-2 more_line let this body fit,
    # but without it the page is GSM-7 and over that smaller limit. The body keeps
    # its "more" page and the footer closes on a page of its own.
    return [*pages, "\n".join([*bodies[-1], more_line, *footer]), "\n".join(footer)]


# Where a wrapped sentence reads best when cut: after a sentence ("ngày. Giá"), else
# after a clause ("30.000đ/7 ngày, tự gia hạn"), rather than mid-phrase ("Giá | 30.000đ").
_SENTENCE_END = re.compile(r"(?<=[.?!:;]) ")
_CLAUSE_END = re.compile(r"(?<=,) ")


def _phrase_cut(head: str, cut: int) -> int:
    """The cut to make in `head`, given `cut`, the longest whole-word prefix that fits:
    the last sentence end, else clause end, at or before it, as long as the page keeps
    at least half of that prefix (a page is not left nearly empty for a phrase)."""
    for boundary in (_SENTENCE_END, _CLAUSE_END):
        ends = [m.start() for m in boundary.finditer(head, 0, cut + 1) if m.start() <= cut]
        if ends and ends[-1] * 2 >= cut:
            return ends[-1]
    return cut


class _Packer:
    """Greedy page filler. `todo` holds the lines still to place; its head may be the
    unplaced tail of a line that was wrapped across pages."""

    def __init__(self, budget: ScreenBudget, more_line: str, footer: list[str], lines: Sequence[str]) -> None:
        self._budget = budget
        self._more_tail = [more_line, *footer]
        self._last_tail = footer
        # No text longer than this fits in either encoding (each character costs >= 1),
        # which bounds the look-ahead and prefix scans on long input.
        self._max_chars = max(budget.gsm7, budget.ucs2)
        self._bodies: list[list[str]] = []
        self._current: list[str] = []
        self._todo: deque[str] = deque(lines)

    def pack(self) -> list[list[str]]:
        """Return the body lines of each page, in order."""
        while self._todo:
            if self._rest_fits_last(self._current):
                self._current.extend(self._todo)
                break
            self._step()
        if self._current or not self._bodies:
            self._bodies.append(self._current)
        return self._bodies

    def _step(self) -> None:
        """Place the head of `todo`, or close the current page to make room for it."""
        head = self._todo[0]
        if self._fits_more([*self._current, head]):
            self._current.append(head)
            self._todo.popleft()
        elif not head.strip():
            # A blank line at a page break: it would only push text off the next screen.
            self._todo.popleft()
            self._flush()
        elif self._current and (self._fits_more([head]) or self._rest_fits_last([])):
            self._flush()  # the line fits whole on a fresh page: keep it whole
        else:
            self._wrap_head()

    def _wrap_head(self) -> None:
        """Put as many whole words of the head line as fit on the current page, ending
        the page at a phrase where one is near (see `_phrase_cut`)."""
        head = self._todo[0]
        cut = self._longest_fitting(head, (m.start() for m in _WORD_END.finditer(head)))
        if cut is not None:
            cut = _phrase_cut(head, cut)
            self._current.append(head[:cut])
            self._replace_head(head[cut:].lstrip(" "))
            self._flush()
        elif self._current:
            self._flush()  # not even the first word fits here: retry on an empty page
        else:
            self._hard_split_head()

    def _hard_split_head(self) -> None:
        """The first word is longer than an empty page's room: cut it between characters."""
        head = self._todo[0]
        first_space = _WORD_END.search(head)
        word_end = first_space.start() if first_space else len(head)
        cut = self._longest_fitting(head, range(1, word_end))
        if cut is None:
            encoding = "gsm7" if is_gsm7(head[0]) else "ucs2"
            raise ValueError(
                f"character {head[0]!r} ({encoding}) does not fit on a page next to the "
                f"more_line and footer_lines ({self._budget})"
            )
        self._current.append(head[:cut])
        self._replace_head(head[cut:])
        self._flush()

    def _longest_fitting(self, head: str, cuts: Iterable[int]) -> int | None:
        """The largest cut (ascending `cuts`) whose prefix `head[:cut]` fits on the
        current page, or None. Every cut is tried, not just up to the first misfit:
        a longer prefix can fit where a shorter one does not, when its extra character
        switches the page to UCS-2 and budget.ucs2 is the larger limit."""
        best = None
        for cut in cuts:
            if cut > self._max_chars:
                break
            if self._fits_more([*self._current, head[:cut]]):
                best = cut
        return best

    def _replace_head(self, tail: str) -> None:
        if tail:
            self._todo[0] = tail
        else:
            self._todo.popleft()

    def _flush(self) -> None:
        if self._current:
            self._bodies.append(self._current)
            self._current = []

    def _fits_more(self, body: list[str]) -> bool:
        """Whether `body` fits on a page that also carries more_line and the footer."""
        return fits("\n".join([*body, *self._more_tail]), self._budget)

    def _rest_fits_last(self, body: list[str]) -> bool:
        """Whether `body` plus every line still to place fits as the last page."""
        size = sum(len(line) + 1 for line in body)
        for line in self._todo:
            size += len(line) + 1
            if size > self._max_chars + 1:
                return False  # cheap exit before joining a long remainder
        return fits("\n".join([*body, *self._todo, *self._last_tail]), self._budget)
