"""`ussd-gateway menus graph`: a map of every menu, as Mermaid, Graphviz DOT or SVG.

What is drawn:

- every screen, its shape by kind (menu: box, list: double-sided box, input:
  parallelogram, confirm: diamond, router: hexagon, action: cylinder, end: rounded and
  grey), labelled with its name and the start of its text (Vietnamese without
  diacritics unless another language is asked for);
- one cluster (DOT) or subgraph (Mermaid) per menu;
- the service codes (`*090#`, `*101#`) as entry nodes;
- options as edges labelled with their key and label; a list's pick, an input's
  answer (with its validators), a confirm's yes/no, a router's conditions in order
  (the last is `else`), and an action's outcomes; edges into another menu are dashed;
- action screens name the action they call with its arguments;
- screens that page at the longest data the demo catalogue can produce
  (`menus.check.worst_case_variables`, every language) carry a `98 ▸` badge with the
  languages and page counts, and a thick red outline.

Mermaid and DOT are written here; SVG is Graphviz's `dot -Tsvg` of the DOT (Debian
package `graphviz`), with `GraphvizMissing` when `dot` is not installed.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from ussd_gateway.menus.model import MenuSet, Screen
from ussd_gateway.menus.text import ScreenBudget

FORMATS = ("mermaid", "dot", "svg")
BADGE = "98 ▸"
SNIPPET = 42


class GraphvizMissing(RuntimeError):
    """Graphviz's `dot` is not installed (SVG needs it; Mermaid and DOT do not)."""


@dataclass(slots=True)
class Node:
    id: str
    kind: str
    """A screen kind, or `entry` for a service code."""
    title: str
    detail: str = ""
    menu: str = ""
    pages: dict[str, int] = field(default_factory=dict)
    """Languages in which the screen pages at the longest demo data -> page count."""

    @property
    def badge(self) -> str:
        if not self.pages:
            return ""
        return BADGE + " " + ", ".join(f"{lang} {count}p" for lang, count in self.pages.items())

    @property
    def lines(self) -> list[str]:
        return [line for line in (self.title, self.detail, self.badge) if line]


@dataclass(slots=True)
class Edge:
    source: str
    target: str
    label: str
    kind: str
    """option, pick, answer, yes, no, route, outcome, goto, service."""
    cross: bool = False
    """Into another menu."""


@dataclass(slots=True)
class Graph:
    menus: dict[str, list[Node]]
    entries: list[Node]
    edges: list[Edge]

    def node(self, qualified: str) -> Node:
        for nodes in self.menus.values():
            for node in nodes:
                if node.id == node_id(qualified):
                    return node
        raise KeyError(qualified)


def _ident(name: str) -> str:
    return re.sub(r"\W", "_", name, flags=re.ASCII)


def node_id(qualified: str) -> str:
    """A Mermaid- and DOT-safe identifier for `menu:screen` (or an entry code)."""
    if qualified.startswith("*") or qualified.startswith("#"):
        return "entry_" + "".join(c if c.isalnum() else "_" for c in qualified).strip("_")
    menu, _, screen = qualified.partition(":")
    return f"s_{_ident(menu)}__{_ident(screen)}"


def _oneline(text: str, limit: int = SNIPPET) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1].rstrip() + "…"


def paging_screens(menus: MenuSet, budget: ScreenBudget | None = None, demo_data: Path | None = None) -> dict[str, dict[str, int]]:
    """`menu:screen` -> {language: pages} for every displayed screen that pages at the
    longest demo data (the same worst case as `menus check`)."""
    from ussd_gateway.menus.check import rendering_engine, shown_screens

    engine = rendering_engine(menus, budget or ScreenBudget())
    # A service's first screen and the main menu are shown with an empty back stack,
    # so without the "0 back / 00 home" footer.
    bare = {menus.home, *menus.services.values(), *menus.push_entries}
    found: dict[str, dict[str, int]] = {}
    for lang, variables, screen in shown_screens(menus, demo_data):
        footer = screen.kind != "end" and screen.qualified not in bare
        pages = engine.paginate_screen(screen, variables, lang, has_footer=footer)
        if len(pages) > 1:
            found.setdefault(screen.qualified, {})[lang] = len(pages)
    return found


def _validators(screen: Screen) -> str:
    rules = [v.rule for v in screen.validators]
    return f" ({', '.join(rules)})" if rules else ""


def build_graph(
    menus: MenuSet, *, lang: str = "vi", budget: ScreenBudget | None = None, demo_data: Path | None = None,
    paging: dict[str, dict[str, int]] | None = None,
) -> Graph:
    """The drawing's content, independent of its format."""
    if paging is None:
        paging = paging_screens(menus, budget, demo_data)
    texts = menus.texts
    yes = texts["yes"].templates[lang].source if "yes" in texts else "yes"
    no = texts["no"].templates[lang].source if "no" in texts else "no"
    graph = Graph(menus={}, entries=[], edges=[])
    for code, target in sorted(menus.services.items()):
        graph.entries.append(Node(node_id(code), "entry", code))
        graph.edges.append(Edge(node_id(code), node_id(target), "", "service", cross=True))
    for target in menus.push_entries:  # screens a USSD push begins on (no code dials them)
        push_id = "entry_push_" + node_id(target)
        graph.entries.append(Node(push_id, "entry", "USSD push"))
        graph.edges.append(Edge(push_id, node_id(target), "", "service", cross=True))
    for menu in menus.menus.values():
        nodes: list[Node] = []
        for screen in menu.screens.values():
            title = screen.name + (" (start)" if screen.name == menu.start else "")
            if screen.qualified == menus.home:
                title += " (home, 00)"
            if screen.kind == "action":
                args = ", ".join(f"{k}={v}" for k, v in screen.args.items())
                detail = f"call {screen.call}({args})"
            elif screen.text is not None:
                detail = _oneline(screen.text.templates[lang].source)
            elif screen.kind == "list":
                detail = f"list of {screen.items}"
            else:
                detail = ""
            nodes.append(Node(node_id(screen.qualified), screen.kind, title, detail, menu.name, dict(paging.get(screen.qualified, {}))))

            def edge(target: str, label: str, kind: str, screen: Screen = screen) -> None:
                graph.edges.append(
                    Edge(node_id(screen.qualified), node_id(target), label, kind, cross=target.partition(":")[0] != screen.menu)
                )

            for option in screen.options:
                edge(option.goto, f"{option.key} {_oneline(option.label.templates[lang].source, 28)}", "option")
            if screen.kind == "list" and screen.goto:
                edge(screen.goto, f"1..n pick {screen.store_as or 'item'}", "pick")
            elif screen.kind == "input" and screen.goto:
                edge(screen.goto, f"answer → {screen.store}{_validators(screen)}", "answer")
            elif screen.goto:
                edge(screen.goto, "", "goto")
            if screen.kind == "confirm" and screen.yes and screen.no:
                edge(screen.yes, f"1 {yes}", "yes")
                edge(screen.no, f"2 {no}", "no")
            for route in screen.routes:
                edge(route.goto, f"if {route.source}" if route.source else "else", "route")
            for outcome, target in screen.outcomes.items():
                edge(target, outcome, "outcome")
        graph.menus[menu.name] = nodes
    return graph


# ---- Mermaid -------------------------------------------------------------------------------
_MERMAID_SHAPES = {
    "menu": ('["', '"]'),
    "list": ('[["', '"]]'),
    "input": ('[/"', '"/]'),
    "confirm": ('{"', '"}'),
    "router": ('{{"', '"}}'),
    "action": ('[("', '")]'),
    "end": ('(["', '"])'),
    "entry": ('(("', '"))'),
}


def mermaid_escape(text: str) -> str:
    """Text safe inside a quoted Mermaid label: entity codes for what Mermaid or its
    HTML labels would read (`"`, `<`, `>`, `&`, a `#` that starts an entity, a backtick)."""
    text = re.sub(r"#(?=[A-Za-z0-9]+;)", "#35;", text)
    text = text.replace("&", "#38;").replace('"', "#quot;").replace("<", "#lt;").replace(">", "#gt;").replace("`", "#96;")
    return text


def to_mermaid(graph: Graph) -> str:
    out = ["flowchart LR"]
    for entry in graph.entries:
        opening, closing = _MERMAID_SHAPES["entry"]
        out.append(f"  {entry.id}{opening}{mermaid_escape(entry.title)}{closing}:::k_entry")
    for menu, nodes in graph.menus.items():
        out.append(f'  subgraph menu_{_ident(menu)}["{mermaid_escape(menu)}"]')
        out.append("    direction TB")
        for node in nodes:
            opening, closing = _MERMAID_SHAPES[node.kind]
            label = "<br/>".join(mermaid_escape(line) for line in node.lines)
            out.append(f"    {node.id}{opening}{label}{closing}:::k_{node.kind}")
        out.append("  end")
    for edge in graph.edges:
        arrow = "-.->" if edge.cross else "-->"
        label = f'|"{mermaid_escape(edge.label).replace("|", "#124;")}"|' if edge.label else ""
        out.append(f"  {edge.source} {arrow}{label} {edge.target}")
    paged = [node.id for nodes in graph.menus.values() for node in nodes if node.pages]
    if paged:
        out.append(f"  class {','.join(paged)} paged")
    out += [
        "  classDef k_entry fill:#fde68a,stroke:#b45309,color:#000",
        "  classDef k_menu fill:#e0f2fe,stroke:#0369a1,color:#000",
        "  classDef k_list fill:#e0f2fe,stroke:#0369a1,color:#000",
        "  classDef k_input fill:#ecfccb,stroke:#4d7c0f,color:#000",
        "  classDef k_confirm fill:#fef9c3,stroke:#a16207,color:#000",
        "  classDef k_router fill:#f3e8ff,stroke:#7e22ce,color:#000",
        "  classDef k_action fill:#ffedd5,stroke:#c2410c,color:#000",
        "  classDef k_end fill:#e5e7eb,stroke:#374151,color:#000",
        "  classDef paged stroke:#dc2626,stroke-width:3px",
    ]
    return "\n".join(out) + "\n"


# ---- DOT -----------------------------------------------------------------------------------
_DOT_SHAPES = {
    "menu": 'shape=box, style=filled, fillcolor="#e0f2fe"',
    "list": 'shape=box, peripheries=2, style=filled, fillcolor="#e0f2fe"',
    "input": 'shape=parallelogram, style=filled, fillcolor="#ecfccb"',
    "confirm": 'shape=diamond, style=filled, fillcolor="#fef9c3"',
    "router": 'shape=hexagon, style=filled, fillcolor="#f3e8ff"',
    "action": 'shape=cylinder, style=filled, fillcolor="#ffedd5"',
    "end": 'shape=box, style="rounded,filled", fillcolor="#e5e7eb"',
    "entry": 'shape=doublecircle, style=filled, fillcolor="#fde68a"',
}


def dot_escape(text: str) -> str:
    """Text safe inside a double-quoted DOT string (a backslash would start an escape
    like `\\N` or `\\l`)."""
    return text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n").replace("\r", "")


def to_dot(graph: Graph) -> str:
    out = [
        "digraph menus {",
        '  graph [rankdir=LR, fontname="DejaVu Sans", compound=true, newrank=true, charset="UTF-8"];',
        '  node [fontname="DejaVu Sans", fontsize=10];',
        '  edge [fontname="DejaVu Sans", fontsize=9];',
    ]
    for entry in graph.entries:
        out.append(f'  {entry.id} [label="{dot_escape(entry.title)}", {_DOT_SHAPES["entry"]}];')
    for menu, nodes in graph.menus.items():
        out.append(f"  subgraph cluster_{_ident(menu)} {{")
        out.append(f'    label="{dot_escape(menu)}"; style=rounded; color="#64748b";')
        for node in nodes:
            extra = ', color="#dc2626", penwidth=3' if node.pages else ""
            label = dot_escape("\n".join(node.lines))
            out.append(f'    {node.id} [label="{label}", {_DOT_SHAPES[node.kind]}{extra}];')
        out.append("  }")
    for edge in graph.edges:
        attrs = [f'label="{dot_escape(edge.label)}"'] if edge.label else []
        if edge.cross:
            attrs.append("style=dashed")
        if edge.kind == "outcome":
            attrs.append('color="#c2410c"')
        out.append(f"  {edge.source} -> {edge.target}" + (f" [{', '.join(attrs)}]" if attrs else "") + ";")
    out.append("}")
    return "\n".join(out) + "\n"


def dot_to_svg(dot: str, *, timeout_s: float = 60.0) -> bytes:
    executable = shutil.which("dot")
    if executable is None:
        raise GraphvizMissing(
            "Graphviz's `dot` is not installed, and SVG needs it: `apt-get install graphviz` "
            "(or ask for --format mermaid or --format dot, which need nothing)"
        )
    done = subprocess.run([executable, "-Tsvg"], input=dot.encode("utf-8"), capture_output=True, timeout=timeout_s, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"dot -Tsvg failed ({done.returncode}): {done.stderr.decode(errors='replace')[:500]}")
    return done.stdout


def render_graph(
    menus: MenuSet, fmt: str = "mermaid", *, lang: str = "vi", budget: ScreenBudget | None = None, demo_data: Path | None = None
) -> bytes:
    """The map in `fmt` (mermaid, dot or svg), as bytes (UTF-8 text for the first two)."""
    if fmt not in FORMATS:
        raise ValueError(f"format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    graph = build_graph(menus, lang=lang, budget=budget, demo_data=demo_data)
    if fmt == "mermaid":
        return to_mermaid(graph).encode("utf-8")
    dot = to_dot(graph)
    if fmt == "dot":
        return dot.encode("utf-8")
    return dot_to_svg(dot)
