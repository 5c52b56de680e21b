"""`ussd-gateway menus check` finds every kind of broken definition, precisely."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from ussd_gateway.menus.compiler import DEFINITIONS_DIR, MenuError, load_menus


@pytest.fixture
def definitions(tmp_path: Path) -> Path:
    """A private copy of the shipped definitions to break."""
    target = tmp_path / "definitions"
    shutil.copytree(DEFINITIONS_DIR, target)
    return target


def check(directory: Path) -> tuple[int, str]:
    result = subprocess.run(
        [sys.executable, "-m", "ussd_gateway.cli", "menus", "check", "--dir", str(directory)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    return result.returncode, result.stdout + result.stderr


def edit(path: Path, old: str, new: str) -> None:
    text = path.read_text(encoding="utf-8")
    assert old in text, f"{old!r} not in {path.name}"
    path.write_text(text.replace(old, new, 1), encoding="utf-8")


class TestMenusCheck:
    def test_the_shipped_menus_pass(self) -> None:
        """The definitions in the repository are clean and fit their screens."""
        code, output = check(DEFINITIONS_DIR)
        assert code == 0, output
        assert "OK: 16 menus" in output

    def test_unknown_target(self, definitions: Path) -> None:
        """An option leading nowhere is named with its screen and target."""
        edit(definitions / "buy.toml", 'goto = "load_voice"', 'goto = "load_voyce"')
        code, output = check(definitions)
        assert code == 1
        assert "buy:start: leads to unknown screen 'buy:load_voyce'" in output

    def test_unreachable_screen(self, definitions: Path) -> None:
        """A screen nothing leads to is reported."""
        with (definitions / "vas.toml").open("a", encoding="utf-8") as f:
            f.write('\n[screens.orphan]\nkind = "end"\ntext = { vi = "a", vi_dau = "a", en = "a" }\n')
        code, output = check(definitions)
        assert code == 1
        assert "vas:orphan: unreachable" in output

    def test_dead_end(self, definitions: Path) -> None:
        """A menu with no way forward is a dead end."""
        with (definitions / "vas.toml").open("a", encoding="utf-8") as f:
            f.write('\n[screens.stuck]\nkind = "menu"\ntext = { vi = "a", vi_dau = "a", en = "a" }\n')
        edit(definitions / "vas.toml", 'on = { ok = "list", empty = "none" }', 'on = { ok = "list", empty = "stuck" }')
        code, output = check(definitions)
        assert code == 1
        assert "vas:stuck: dead end" in output

    def test_missing_translation(self, definitions: Path) -> None:
        """A text without one of the three languages is named, with the language."""
        edit(definitions / "vas.toml", ', en = "{svc.name} is cancelled. You will not be charged for it again." }', " }")
        code, output = check(definitions)
        assert code == 1
        assert "vas:cancelled text: missing translation 'en'" in output

    def test_end_screen_too_long_for_one_screen(self, definitions: Path) -> None:
        """An END that would need paging at the longest demo data is reported with its size."""
        edit(
            definitions / "balance.toml",
            'vi = "TKC cua quy khach: {account.balance|money}."',
            'vi = "TKC cua quy khach: {account.balance|money}. ' + "Chuc quy khach mot ngay vui ve. " * 6 + '"',
        )
        code, output = check(definitions)
        assert code == 1
        assert "balance:show (vi): renders" in output and "/182 gsm7" in output and "cannot page" in output

    def test_unknown_action_and_filter(self, definitions: Path) -> None:
        """Actions and template filters are resolved when the menus load, not on a hop."""
        edit(definitions / "vas.toml", 'call = "load_vas"', 'call = "load_vass"')
        edit(definitions / "balance.toml", "{account.balance|money}.\", vi_dau", "{account.balance|monee}.\", vi_dau")
        with pytest.raises(MenuError) as caught:
            load_menus(definitions)
        problems = "\n".join(caught.value.problems)
        assert "vas:start: action 'load_vass' is not defined" in problems
        assert "unknown filter 'monee'" in problems

    def test_reserved_navigation_key(self, definitions: Path) -> None:
        """Option keys 0, 00 and 98 belong to navigation."""
        edit(definitions / "buy.toml", 'key = "4"', 'key = "98"')
        code, output = check(definitions)
        assert code == 1
        assert "reserved for navigation" in output

    def test_a_broken_definition_stops_the_server(self, definitions: Path, tmp_path: Path) -> None:
        """`serve` refuses to start on definitions that do not compile, listing why."""
        edit(definitions / "buy.toml", 'goto = "load_voice"', 'goto = "load_voyce"')
        config = tmp_path / "config.toml"
        config.write_text(f'[menus]\ndirectory = "{definitions}"\n[http]\nport = 1\n', encoding="utf-8")
        result = subprocess.run(
            [sys.executable, "-m", "ussd_gateway.cli", "serve", "--config", str(config)],
            capture_output=True, text=True, timeout=60,
        )
        assert result.returncode == 2
        assert "load_voyce" in result.stderr
