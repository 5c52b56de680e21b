"""The menu map (`ussd-gateway menus graph`, GET /menus/graph): every screen, option,
action and outcome is drawn, paging screens are marked, labels survive any text, and
the SVG is real SVG from Graphviz."""

from __future__ import annotations

import re
import shutil
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from helpers import make_settings

from ussd_gateway.menus.check import worst_case_variables
from ussd_gateway.menus.compiler import DEFINITIONS_DIR, load_menus
from ussd_gateway.menus.engine import Engine
from ussd_gateway.menus.graph import (
    BADGE,
    build_graph,
    dot_escape,
    mermaid_escape,
    node_id,
    render_graph,
    to_dot,
    to_mermaid,
)
from ussd_gateway.menus.model import MenuSet
from ussd_gateway.cli import main
from ussd_gateway.app.server import GRAPH_CACHE, create_app

needs_dot = pytest.mark.skipif(shutil.which("dot") is None, reason="Graphviz's dot is not installed (apt-get install graphviz)")
SVG = "{http://www.w3.org/2000/svg}svg"


@pytest.fixture(scope="module")
def menus() -> MenuSet:
    return load_menus()


@pytest.fixture(scope="module")
def drawings(menus: MenuSet) -> tuple[str, str]:
    graph = build_graph(menus)
    return to_mermaid(graph), to_dot(graph)


def _mermaid_node_line(mermaid: str, qualified: str) -> str:
    found = [line for line in mermaid.splitlines() if line.strip().startswith(node_id(qualified) + "[")
             or line.strip().startswith(node_id(qualified) + "(") or line.strip().startswith(node_id(qualified) + "{")]
    assert len(found) == 1, f"{qualified}: {found}"
    return found[0]


def _dot_node_line(dot: str, qualified: str) -> str:
    found = [line for line in dot.splitlines() if line.strip().startswith(node_id(qualified) + " [label=")]
    assert len(found) == 1, f"{qualified}: {found}"
    return found[0]


def _mermaid_edges(mermaid: str) -> list[tuple[str, str, str]]:
    edges = []
    for line in mermaid.splitlines():
        match = re.fullmatch(r'\s*(\S+) -\.?->(?:\|"(.*)"\|)? (\S+)', line)
        if match:
            edges.append((match.group(1), match.group(2) or "", match.group(3)))
    return edges


def _dot_edges(dot: str) -> list[tuple[str, str, str]]:
    edges = []
    for line in dot.splitlines():
        match = re.fullmatch(r'\s*(\S+) -> (\S+?)(?: \[(.*)\])?;', line)
        if match:
            label = re.search(r'label="((?:[^"\\]|\\.)*)"', match.group(3) or "")
            edges.append((match.group(1), label.group(1) if label else "", match.group(2)))
    return edges


class TestContent:
    def test_every_screen_of_every_menu_is_a_node(self, menus: MenuSet, drawings: tuple[str, str]) -> None:
        mermaid, dot = drawings
        count = 0
        for menu in menus.menus.values():
            assert f'subgraph menu_{menu.name}["{menu.name}"]' in mermaid
            assert f"subgraph cluster_{menu.name} {{" in dot
            for screen in menu.screens.values():
                assert screen.name in _mermaid_node_line(mermaid, screen.qualified)
                assert screen.name in _dot_node_line(dot, screen.qualified)
                count += 1
        assert count > 60

    def test_service_codes_are_entry_nodes(self, drawings: tuple[str, str]) -> None:
        mermaid, dot = drawings
        assert 'entry_090(("*090#"))' in mermaid and 'entry_101(("*101#"))' in mermaid
        assert ("entry_090", "", "s_main__home") in _mermaid_edges(mermaid)
        assert ("entry_101", "", "s_balance__start") in _dot_edges(dot)
        assert 'entry_090 [label="*090#", shape=doublecircle' in dot

    def test_every_option_is_a_labelled_edge(self, menus: MenuSet, drawings: tuple[str, str]) -> None:
        mermaid, dot = drawings
        m_edges, d_edges = _mermaid_edges(mermaid), _dot_edges(dot)
        for menu in menus.menus.values():
            for screen in menu.screens.values():
                for option in screen.options:
                    label = f"{option.key} {option.label.templates['vi'].source}"
                    edge = (node_id(screen.qualified), label, node_id(option.goto))
                    assert edge in m_edges, edge
                    assert edge in d_edges, edge
        # The main menu's "2" leads into another menu: a dashed edge.
        assert 's_main__home -.->|"2 Mua goi cuoc"| s_buy__start' in mermaid
        assert 's_main__home -> s_buy__start [label="2 Mua goi cuoc", style=dashed];' in dot

    def test_actions_name_their_call_and_outcomes_are_edges(self, menus: MenuSet, drawings: tuple[str, str]) -> None:
        mermaid, dot = drawings
        assert "call purchase(code=pkg.code)" in _mermaid_node_line(mermaid, "buy:purchase")
        assert '[("' in _mermaid_node_line(mermaid, "buy:purchase")  # the action shape
        assert "shape=cylinder" in _dot_node_line(dot, "buy:purchase")
        assert "call list_packages(category='data')" in _dot_node_line(dot, "buy:load_data")
        m_edges, d_edges = _mermaid_edges(mermaid), _dot_edges(dot)
        for outcome, target in (("ok", "buy__done"), ("insufficient", "advance__start"), ("unknown", "buy__none")):
            assert ("s_buy__purchase", outcome, f"s_{target}") in m_edges
            assert ("s_buy__purchase", outcome, f"s_{target}") in d_edges
        # Every outcome of every action, in both formats.
        for menu in menus.menus.values():
            for screen in menu.screens.values():
                for outcome, target in screen.outcomes.items():
                    assert (node_id(screen.qualified), outcome, node_id(target)) in m_edges

    def test_confirm_list_and_input_edges(self, drawings: tuple[str, str]) -> None:
        mermaid, _dot = drawings
        edges = _mermaid_edges(mermaid)
        assert ("s_buy__detail", "1 Dong y", "s_buy__purchase") in edges
        assert ("s_buy__detail", "2 Khong", "s_buy__start") in edges
        assert ("s_buy__list", "1..n pick pkg", "s_buy__picked") in edges
        assert any(a == "s_buy__picked" and b == "s_buy__detail" for a, _label, b in edges)
        assert ("s_bundle__name", "answer → bundle_name (not_blank, length, regex)", "s_bundle__review") in edges
        assert _mermaid_node_line(mermaid, "buy:detail").strip().startswith('s_buy__detail{"')  # confirm: a diamond
        assert _mermaid_node_line(mermaid, "bundle:name").strip().startswith('s_bundle__name[/"')  # input

    def test_screens_that_page_carry_the_badge(self, menus: MenuSet, drawings: tuple[str, str]) -> None:
        mermaid, dot = drawings

        async def no_action(*_args: object) -> str:
            return "ok"

        # account:packages lists every package a subscriber may hold: at the longest
        # demo data it pages in every language (the engine itself says so).
        engine = Engine(menus, no_action)
        screen = menus.screen("account:packages")
        for lang in ("vi", "vi_dau", "en"):
            pages = engine.paginate_screen(screen, worst_case_variables(menus, lang), lang, has_footer=True)
            assert len(pages) > 1
        line = _mermaid_node_line(mermaid, "account:packages")
        assert BADGE in line and "vi " in line and "vi_dau " in line and "en " in line
        assert re.search(r"class .*\bs_account__packages\b.* paged", mermaid)
        assert BADGE in _dot_node_line(dot, "account:packages") and "penwidth=3" in _dot_node_line(dot, "account:packages")
        # The main menu pages only with diacritics (UCS-2: 80 characters a screen).
        home = _mermaid_node_line(mermaid, "main:home")
        assert f"{BADGE} vi_dau" in home and " vi " not in home
        # A short END screen does not.
        assert BADGE not in _mermaid_node_line(mermaid, "balance:show")
        assert "penwidth" not in _dot_node_line(dot, "language:done")


ODD_MENU = '''
[menu]
name = "odd"
start = "route"
services = { "*199#" = "route" }

[screens.route]
kind = "router"
routes = [
  { when = "account.points >= 1000", goto = "rich" },
  { when = "lang == 'en'", goto = "rich" },
  { goto = "quoted" },
]

[screens.rich]
kind = "end"
text = { vi = "Giau", vi_dau = "Giàu", en = "Rich" }

[screens.quoted]
kind = "menu"
text = { vi = 'Gia "dac biet" <b>{x}</b> & #quot; a\\b', vi_dau = 'Giá "đặc biệt" <b>{x}</b> & #quot; a\\b', en = 'Price "special"' }

[[screens.quoted.options]]
key = "1"
goto = "main:home"
label = { vi = 'Ve "trang chu" | {x}', vi_dau = 'Về "trang chủ" | {x}', en = 'Home "page"' }
'''


@pytest.fixture(scope="module")
def odd_menus(tmp_path_factory: pytest.TempPathFactory) -> MenuSet:
    folder = tmp_path_factory.mktemp("definitions")
    for path in DEFINITIONS_DIR.glob("*.toml"):
        shutil.copy(path, folder / path.name)
    (folder / "odd.toml").write_text(ODD_MENU, encoding="utf-8")
    return load_menus(folder)


class TestEscaping:
    def test_mermaid_escape_leaves_nothing_mermaid_would_read(self) -> None:
        escaped = mermaid_escape('Giá "đặc biệt" <b>{x}</b> & #quot; `y`')
        assert not set('"<>`&') & set(escaped)
        assert "Giá" in escaped and "đặc biệt" in escaped and "{x}" in escaped
        assert escaped.count("#quot;") == 2 and "#35;quot;" in escaped  # a literal "#quot;" stays literal

    def test_dot_escape(self) -> None:
        assert dot_escape('a "b" c\\d\ne') == 'a \\"b\\" c\\\\d\\ne'

    def test_routers_and_odd_text_in_mermaid(self, odd_menus: MenuSet) -> None:
        mermaid = to_mermaid(build_graph(odd_menus, lang="vi_dau"))
        line = _mermaid_node_line(mermaid, "odd:route")
        assert line.strip().startswith('s_odd__route{{"')  # a router: a hexagon
        edges = _mermaid_edges(mermaid)
        assert ("s_odd__route", "if account.points #gt;= 1000", "s_odd__rich") in edges
        assert ("s_odd__route", "if lang == 'en'", "s_odd__rich") in edges
        assert ("s_odd__route", "else", "s_odd__quoted") in edges
        assert ("entry_199", "", "s_odd__route") in edges
        quoted = _mermaid_node_line(mermaid, "odd:quoted")
        assert "Giá #quot;đặc biệt#quot; #lt;b#gt;{x}#lt;/b#gt; #38; #35;quot; a\\b" in quoted
        # Inside the brackets only entity codes: the label's own quotes are the delimiters.
        inner = quoted.strip()[len('s_odd__quoted["'):quoted.strip().rindex('"]')]
        assert '"' not in inner
        assert ("s_odd__quoted", "1 Về #quot;trang chủ#quot; #124; {x}", "s_main__home") in edges

    @needs_dot
    def test_odd_text_survives_graphviz(self, odd_menus: MenuSet) -> None:
        svg = render_graph(odd_menus, "svg", lang="vi_dau")
        root = ET.fromstring(svg)
        assert root.tag == SVG
        texts = " ".join(t.text or "" for t in root.iter("{http://www.w3.org/2000/svg}text"))
        assert 'Giá "đặc biệt" <b>{x}</b> & #quot; a\\b' in texts
        assert 'Về "trang chủ" | {x}' in texts
        assert 'if account.points >= 1000' in texts and "else" in texts


class TestOutputs:
    @needs_dot
    def test_svg_is_svg(self, menus: MenuSet) -> None:
        svg = render_graph(menus, "svg")
        root = ET.fromstring(svg)
        assert root.tag == SVG
        titles = {t.text for t in root.iter("{http://www.w3.org/2000/svg}title")}
        assert "s_main__home" in titles and "s_buy__purchase" in titles

    def test_cli_writes_each_format(self, tmp_path: Path) -> None:
        for fmt, head in (("mermaid", b"flowchart LR"), ("dot", b"digraph menus {")):
            out = tmp_path / f"menus.{fmt}"
            assert main(["menus", "graph", "--format", fmt, "--output", str(out)]) == 0
            assert out.read_bytes().startswith(head)
        if shutil.which("dot"):
            out = tmp_path / "menus.svg"
            assert main(["menus", "graph", "--format", "svg", "-o", str(out)]) == 0
            assert ET.parse(out).getroot().tag == SVG

    def test_cli_svg_without_graphviz_says_what_to_install(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
        import ussd_gateway.menus.graph as graph

        monkeypatch.setattr(graph.shutil, "which", lambda _name: None)
        assert main(["menus", "graph", "--format", "svg", "-o", str(tmp_path / "x.svg")]) == 2
        err = capsys.readouterr().err
        assert "apt-get install graphviz" in err and "--format mermaid" in err
        assert not (tmp_path / "x.svg").exists()

    @needs_dot
    async def test_server_serves_the_map(self, aiohttp_client) -> None:  # type: ignore[no-untyped-def]
        app = create_app(make_settings())
        client = await aiohttp_client(app)
        response = await client.get("/menus/graph?format=svg")
        assert response.status == 200 and response.content_type == "image/svg+xml"
        body = await response.read()
        assert ET.fromstring(body).tag == SVG
        assert app[GRAPH_CACHE]["svg"] == body  # rendered once, then served from the cache
        again = await client.get("/menus/graph?format=svg")
        assert await again.read() == body
        mermaid = await client.get("/menus/graph?format=mermaid")
        assert mermaid.status == 200 and mermaid.content_type == "text/plain" and mermaid.charset == "utf-8"
        assert (await mermaid.text()).startswith("flowchart LR")
        dot = await client.get("/menus/graph", params={"format": "dot"})
        assert dot.content_type == "text/vnd.graphviz" and (await dot.text()).startswith("digraph")
        bad = await client.get("/menus/graph?format=png")
        assert bad.status == 400 and "svg" in (await bad.json())["error"]
