"""Tests for menus.text: GSM-7/UCS-2 measurement and screen paging."""

from __future__ import annotations

import string

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from ussd_gateway.menus.text import ScreenBudget, fits, gsm7_septets, is_gsm7, paginate, screen_cost, ucs2_units

DEFAULT = ScreenBudget()
MORE = "98 Xem them"

# The GSM 03.38 tables written out independently of the module, as a cross-check.
BASIC = (
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡" + string.ascii_uppercase + "ÄÖÑÜ§¿" + string.ascii_lowercase + "äöñüà"
)
EXTENSION = "\f^{}\\[~]|€"
VIETNAMESE = "ăâđêôơưạảấầẩẫậắằẳẵặẹẻẽếềểễệỉịọỏốồổỗộớờởỡợụủứừửữựỳỵỷỹ"


def reference_septets(text: str) -> int | None:
    """Character-by-character septet count from the tables above."""
    total = 0
    for char in text:
        if char in BASIC:
            total += 1
        elif char in EXTENSION:
            total += 2
        else:
            return None
    return total


def body_of(page: str, tail: list[str]) -> str:
    """The body part of `page`, which must end with the `tail` lines."""
    if not tail:
        return page
    suffix = "\n".join(tail)
    if page == suffix:
        return ""
    assert page.endswith("\n" + suffix), (page, tail)
    return page[: -len(suffix) - 1]


def split_bodies(pages: list[str], more: str, footer: list[str]) -> list[str]:
    """Check every page's ending and return the page bodies."""
    bodies = [body_of(page, [more, *footer]) for page in pages[:-1]]
    bodies.append(body_of(pages[-1], footer))
    return bodies


class TestMeasure:
    def test_basic_table_has_127_characters(self) -> None:
        """The reference basic table is 128 code points minus ESC."""
        assert len(set(BASIC)) == 127
        assert all(gsm7_septets(c) == 1 for c in BASIC)

    def test_ascii_counts_one_septet_each(self) -> None:
        """Plain ASCII menu text costs one septet per character."""
        assert gsm7_septets("1 Tra cuu tai khoan") == 19
        assert gsm7_septets("") == 0

    def test_extension_characters_count_two(self) -> None:
        """€ and { (extension table) cost an escape plus the character."""
        assert gsm7_septets("€") == 2
        assert gsm7_septets("{") == 2
        assert gsm7_septets("Gia 10€ {VAT}") == 13 + 3
        assert all(gsm7_septets(c) == 2 for c in EXTENSION)

    def test_characters_outside_gsm7(self) -> None:
        """ESC, backtick and Vietnamese diacritics are not GSM-7 text."""
        for text in ("\x1b", "`", "ố", "Số dư", "tab\there"):
            assert gsm7_septets(text) is None
            assert not is_gsm7(text)

    def test_vietnamese_diacritics_use_ucs2_limit(self) -> None:
        """'Số dư' needs UCS-2 and is measured against the 80-unit limit."""
        assert screen_cost("Số dư", DEFAULT) == (5, 80, "ucs2")
        assert screen_cost("So du", DEFAULT) == (5, 182, "gsm7")

    def test_ucs2_counts_utf16_units(self) -> None:
        """A character outside the BMP costs two UTF-16 units."""
        assert ucs2_units("Số dư") == 5
        assert ucs2_units("😀") == 2
        assert ucs2_units("a😀b") == 4

    def test_gsm7_boundary_182(self) -> None:
        """Exactly 182 septets fit; 183 do not; extension chars count double."""
        assert fits("a" * 182, DEFAULT)
        assert not fits("a" * 183, DEFAULT)
        assert fits("a" * 180 + "€", DEFAULT)
        assert not fits("a" * 181 + "€", DEFAULT)

    def test_ucs2_boundary_80(self) -> None:
        """Exactly 80 UCS-2 units fit; 81 do not."""
        assert fits("ố" * 80, DEFAULT)
        assert not fits("ố" * 81, DEFAULT)
        assert not fits("a" * 79 + "😀", DEFAULT)

    def test_budget_must_be_positive(self) -> None:
        """A zero-sized screen is a configuration error."""
        with pytest.raises(ValueError):
            ScreenBudget(gsm7=0)


class TestMeasureProperties:
    @given(st.text())
    def test_septets_match_reference(self, text: str) -> None:
        """gsm7_septets agrees with a per-character count from the tables."""
        assert gsm7_septets(text) == reference_septets(text)

    @given(st.text(), st.text())
    def test_septets_are_additive(self, a: str, b: str) -> None:
        """Septets of a concatenation are the sum when both parts are encodable."""
        sa, sb = gsm7_septets(a), gsm7_septets(b)
        if sa is not None and sb is not None:
            assert gsm7_septets(a + b) == sa + sb
        else:
            assert gsm7_septets(a + b) is None

    @given(st.text(alphabet=BASIC + EXTENSION), st.text(alphabet=BASIC + EXTENSION))
    def test_septets_additive_on_gsm7_text(self, a: str, b: str) -> None:
        """Additivity holds on text drawn only from the GSM alphabet."""
        assert gsm7_septets(a + b) == gsm7_septets(a) + gsm7_septets(b)  # type: ignore[operator]

    @given(st.text())
    def test_ucs2_units_match_utf16(self, text: str) -> None:
        """ucs2_units counts code points plus one per astral character."""
        assert ucs2_units(text) == len(text) + sum(ord(c) > 0xFFFF for c in text)


MAIN_MENU = [
    "MobiFone xin chao",
    "1 Tra cuu tai khoan",
    "2 Mua goi cuoc",
    "3 Tu tao goi M090",
    "4 Ket noi dai lau",
    "5 Dich vu GTGT",
    "6 Gop y",
    "7 Tu van goi cuoc",
]


class TestPaginate:
    def test_main_menu_fits_one_page(self) -> None:
        """A seven-option unaccented main menu is a single screen."""
        pages = paginate(MAIN_MENU, DEFAULT, more_line=MORE, footer_lines=["0 Thoat"])
        assert pages == ["\n".join([*MAIN_MENU, "0 Thoat"])]

    def test_twenty_options_are_paged(self) -> None:
        """A 20-option list pages with '98 Xem them' on every page but the last."""
        options = [f"{i} Goi D{i * 10} {i * 10}000d/30 ngay" for i in range(1, 21)]
        footer = ["99 Quay lai"]
        pages = paginate(options, DEFAULT, more_line=MORE, footer_lines=footer)
        assert len(pages) >= 2
        for page in pages[:-1]:
            assert page.endswith("\n98 Xem them\n99 Quay lai")
        assert MORE not in pages[-1]
        assert pages[-1].endswith("\n99 Quay lai")
        assert all(fits(page, DEFAULT) for page in pages)
        bodies = split_bodies(pages, MORE, footer)
        assert [line for body in bodies for line in body.split("\n")] == options

    def test_page_encoding_is_per_page(self) -> None:
        """One accented line makes only its own page UCS-2."""
        lines = ["a" * 100, "b" * 60, "Số dư " + "c" * 40]
        pages = paginate(lines, DEFAULT, more_line=MORE)
        assert pages == ["a" * 100 + "\n" + "b" * 60 + "\n" + MORE, "Số dư " + "c" * 40]
        assert screen_cost(pages[1], DEFAULT)[2] == "ucs2"

    def test_line_that_fits_an_empty_page_moves_whole(self) -> None:
        """A line that does not fit the space left starts the next page unsplit."""
        lines = ["x" * 150, "word " * 10]
        pages = paginate(lines, DEFAULT, more_line=MORE)
        assert pages == ["x" * 150 + "\n" + MORE, "word " * 10]

    def test_long_line_wraps_at_spaces_filling_current_page(self) -> None:
        """A line too long for any page fills the current page, then continues."""
        long_line = " ".join(f"w{i:03d}" for i in range(60))  # 299 characters
        pages = paginate(["Header", long_line], DEFAULT, more_line=MORE)
        assert all(fits(page, DEFAULT) for page in pages)
        first = body_of(pages[0], [MORE])
        assert first.startswith("Header\nw000 ")
        assert gsm7_septets(pages[0]) > DEFAULT.gsm7 - 5  # filled, not just moved on
        words = " ".join(split_bodies(pages, MORE, [])).split()
        assert words == ["Header", *long_line.split()]

    def test_oversized_word_is_hard_split(self) -> None:
        """A single word longer than an empty page is cut, and nothing is lost."""
        word = "A" * 400
        pages = paginate([word], DEFAULT, more_line=MORE, footer_lines=["0 Back"])
        assert all(fits(page, DEFAULT) for page in pages)
        bodies = split_bodies(pages, MORE, ["0 Back"])
        assert "".join(bodies) == word
        assert len(pages) == 3

    def test_blank_lines_inside_a_page_are_kept(self) -> None:
        """Blank separator lines survive within a page and cost one newline."""
        lines = ["Goi D10", "", "Gia 10000d", "", "1 Mua"]
        assert paginate(lines, DEFAULT, more_line=MORE) == ["\n".join(lines)]

    def test_blank_line_at_page_break_is_dropped(self) -> None:
        """A blank line that would open a new page is not carried over."""
        lines = ["x" * 170, "", "y" * 20]
        pages = paginate(lines, DEFAULT, more_line=MORE)
        assert pages == ["x" * 170 + "\n" + MORE, "y" * 20]

    def test_no_room_for_body_raises(self) -> None:
        """A footer that fills the screen leaves no room and is rejected."""
        with pytest.raises(ValueError, match="no room"):
            paginate(["hi"], ScreenBudget(gsm7=20, ucs2=10), more_line="9" * 10, footer_lines=["0" * 9])

    def test_character_that_cannot_fit_raises(self) -> None:
        """An accented character on a screen too small for UCS-2 text is an error."""
        budget = ScreenBudget(gsm7=40, ucs2=12)
        with pytest.raises(ValueError, match="does not fit"):
            paginate(["Số dư tài khoản chính"], budget, more_line=MORE)


# Hypothesis inputs: words from ASCII, the GSM extension table and Vietnamese with
# diacritics, occasionally long enough to need a hard split.
ascii_words = st.text(alphabet=string.ascii_letters + string.digits + ".,:-()", min_size=1, max_size=10)
extension_words = st.text(alphabet="^{}\\[~]|€ab", min_size=1, max_size=6)
vietnamese_words = st.one_of(
    st.sampled_from(["Số", "dư", "tài", "khoản", "chính", "điểm", "tích", "lũy", "Kết", "nối", "dài", "lâu"]),
    st.text(alphabet=VIETNAMESE + "abcd", min_size=1, max_size=10),
)
long_words = st.text(alphabet=string.ascii_lowercase + "ố€", min_size=20, max_size=300)
words = st.one_of(ascii_words, ascii_words, extension_words, vietnamese_words, long_words)
text_lines = st.lists(words, max_size=12).map(" ".join)
budgets = st.builds(ScreenBudget, gsm7=st.integers(40, 300), ucs2=st.integers(20, 160))
more_lines = st.sampled_from(["98 Xem them", "9 More", "98 Xem thêm", "98 {more}"])
footers = st.sampled_from([[], ["0 Back"], ["0 Quay lai", "00 Menu chinh"], ["0 Về"]])
PAGING = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.filter_too_much])


def oversized(word: str, budget: ScreenBudget, more: str, footer: list[str]) -> bool:
    """Whether `word` alone overflows an empty non-last page."""
    return not fits("\n".join([word, more, *footer]), budget)


class TestPaginateProperties:
    @PAGING
    @given(st.lists(text_lines, max_size=25), budgets, more_lines, footers)
    def test_paging_invariants(self, lines: list[str], budget: ScreenBudget, more: str, footer: list[str]) -> None:
        """Pages fit, end right, keep every word in order, and cut only oversized words."""
        assume(fits("\n".join(["ư", more, *footer]), budget))
        pages = paginate(lines, budget, more_line=more, footer_lines=footer)

        assert all(fits(page, budget) for page in pages)
        whole = "\n".join([*lines, *footer])
        if fits(whole, budget):
            assert pages == [whole]
            return
        assert len(pages) >= 2
        bodies = split_bodies(pages, more, footer)

        produced = iter(" ".join(bodies).split())
        for word in " ".join(lines).split():
            piece, parts = next(produced), 1
            while piece != word:
                assert word.startswith(piece), (word, piece)
                piece += next(produced)
                parts += 1
            assert parts == 1 or oversized(word, budget, more, footer), word
        assert next(produced, None) is None

    @PAGING
    @given(st.lists(text_lines, max_size=25), budgets, more_lines, footers)
    def test_lines_kept_whole_when_they_fit(
        self, lines: list[str], budget: ScreenBudget, more: str, footer: list[str]
    ) -> None:
        """When every line fits an empty page, pages hold whole lines in order."""
        assume(fits("\n".join(["ư", more, *footer]), budget))
        assume(all(not oversized(line, budget, more, footer) for line in lines))
        pages = paginate(lines, budget, more_line=more, footer_lines=footer)
        body_lines = [line for body in split_bodies(pages, more, footer) if body for line in body.split("\n")]
        non_blank = [line for line in lines if line.strip()]
        assert [line for line in body_lines if line.strip()] == non_blank

    @PAGING
    @given(st.lists(st.one_of(ascii_words, vietnamese_words), max_size=6).map(" ".join), budgets, footers)
    def test_fitting_text_is_one_page(self, line: str, budget: ScreenBudget, footer: list[str]) -> None:
        """A text that fits with its footer comes back as exactly that one screen."""
        assume(fits("\n".join(["ư", MORE, *footer]), budget))
        whole = "\n".join([line, *footer])
        assume(fits(whole, budget))
        assert paginate([line], budget, more_line=MORE, footer_lines=footer) == [whole]
