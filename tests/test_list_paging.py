"""Paged lists as subscribers see them (property tests over the engine's paginator).

The rules: a list item is never split across pages; an error line never pushes items
off page 1 (it stands in for the heading when it would); no page holds a heading alone
while items remain; every item stays reachable with 98. Checked on the real buy list
in every language, with and without the invalid-entry line, for random item texts."""

from __future__ import annotations

import re
import string

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ussd_gateway.menus.compiler import load_menus
from ussd_gateway.menus.engine import Engine
from ussd_gateway.menus.text import fits

MENUS = load_menus()


async def _no_action(*_args: object) -> str:
    return "ok"


ENGINE = Engine(MENUS, _no_action)
SCREEN = MENUS.screen("buy:list")
CHOICE = re.compile(r"^\d+\. ")

codes = st.text(alphabet=string.ascii_uppercase + string.digits, min_size=1, max_size=8)
packages = st.lists(
    st.builds(lambda code, price, days: {"code": code, "price": price, "validity_days": days},
              codes, st.integers(0, 9_999_999), st.integers(1, 365)),
    min_size=1, max_size=12,
)
PROPS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _pages(items: list[dict], lang: str, error: bool) -> list[str]:
    variables = {"packages": items, "category_label": "Data"}
    message = ENGINE.system_text("invalid_option", lang) if error else ""
    return ENGINE.paginate_screen(SCREEN, variables, lang, has_footer=True, error=message)


def _item_lines(items: list[dict], lang: str) -> list[str]:
    return [line for line in ENGINE.screen_lines(SCREEN, {"packages": items, "category_label": "Data"}, lang) if CHOICE.match(line)]


def _shares_page(items: list[dict], lang: str) -> bool:
    """Whether the error line and the first item fit one page with 98 and the footer."""
    chrome = [ENGINE.system_text("more", lang), ENGINE.system_text("back", lang) + " " + ENGINE.system_text("home", lang)]
    return fits("\n".join([ENGINE.system_text("invalid_option", lang), _item_lines(items, lang)[0], *chrome]), ENGINE.budget)


class TestListPaging:
    @PROPS
    @given(packages, st.sampled_from(["vi", "vi_dau", "en"]), st.booleans())
    def test_items_whole_and_all_reachable(self, items: list[dict], lang: str, error: bool) -> None:
        """Every item shows, whole, on exactly one page, in order; every page fits."""
        pages = _pages(items, lang, error)
        assert all(fits(page, ENGINE.budget) for page in pages)
        shown = [line for page in pages for line in page.split("\n") if CHOICE.match(line)]
        assert shown == _item_lines(items, lang)

    @PROPS
    @given(packages, st.sampled_from(["vi", "vi_dau", "en"]))
    def test_error_never_pushes_items_off_page_one(self, items: list[dict], lang: str) -> None:
        """With the invalid-entry line, page 1 shows the error and at least one item
        (the error takes the heading's place if it must), never the error and the
        heading alone."""
        plain, with_error = _pages(items, lang, False), _pages(items, lang, True)
        first = with_error[0].split("\n")
        assert first[0] == ENGINE.system_text("invalid_option", lang)
        count = lambda page: sum(1 for line in page.split("\n") if CHOICE.match(line))  # noqa: E731
        if _shares_page(items, lang):
            assert count(with_error[0]) >= min(1, count(plain[0]))

    @PROPS
    @given(packages, st.sampled_from(["vi", "vi_dau", "en"]), st.booleans())
    def test_no_page_is_only_a_heading(self, items: list[dict], lang: str, error: bool) -> None:
        """Every page shows at least one item. (Known limit: an error line and the first
        item that cannot share one UCS-2 page with 98 and the footer leave the error
        alone on page 1; the item is on page 2, reachable.)"""
        pages = _pages(items, lang, error)
        for index, page in enumerate(pages):
            if error and index == 0 and not _shares_page(items, lang):
                continue
            assert any(CHOICE.match(line) for line in page.split("\n")), page


def test_main_menu_in_two_pages_with_diacritics() -> None:
    """vi_dau's main menu takes two UCS-2 pages (it took three), every option on one."""
    pages = ENGINE.paginate_screen(MENUS.screen("main:home"), {}, "vi_dau", has_footer=False)
    assert len(pages) == 2
    shown = [line for page in pages for line in page.split("\n") if CHOICE.match(line)]
    assert [line.split(".")[0] for line in shown] == [str(n) for n in range(1, 9)]
