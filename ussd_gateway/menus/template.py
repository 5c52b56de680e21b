"""Screen templates: `{path}` and `{path|filter}` over the session's variables.

Deliberately tiny: dotted lookups into dicts and lists, and a fixed set of filters.
No attribute access and no expressions, so a menu file can never reach into Python.
Templates are parsed once when the menus are compiled.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

_FIELD = re.compile(r"\{([A-Za-z_][A-Za-z0-9_.]*)(?:\|([a-z_]+))?\}")

from ussd_gateway.core.formats import data_size, day, money, number, upper

_MISSING = object()


def lookup(variables: Mapping[str, Any], path: str) -> Any:
    """The value at a dotted `path` (`pkg.price`, `items.0.name`), or None."""
    value: Any = variables
    for part in path.split("."):
        if isinstance(value, Mapping):
            value = value.get(part, _MISSING)
        elif isinstance(value, list) and part.isdigit() and int(part) < len(value):
            value = value[int(part)]
        else:
            return None
        if value is _MISSING:
            return None
    return value


FILTERS: dict[str, Callable[[Any, str], str]] = {
    "money": money,
    "number": number,
    "mb": data_size,
    "date": day,
    "upper": upper,
}


class TemplateError(ValueError):
    """A template names an unknown filter or is malformed."""


class Template:
    """A parsed template; `render(vars, lang)` is cheap and never raises on missing data
    (a missing variable renders as empty, which `menus check` reports beforehand)."""

    __slots__ = ("source", "_parts", "paths")

    def __init__(self, source: str) -> None:
        self.source = source
        parts: list[str | tuple[str, Callable[[Any, str], str] | None]] = []
        paths: list[str] = []
        position = 0
        for match in _FIELD.finditer(source):
            parts.append(source[position : match.start()])
            path, filter_name = match.group(1), match.group(2)
            if filter_name is not None and filter_name not in FILTERS:
                raise TemplateError(f"unknown filter {filter_name!r} in {source!r}; known: {', '.join(sorted(FILTERS))}")
            parts.append((path, FILTERS[filter_name] if filter_name else None))
            paths.append(path)
            position = match.end()
        parts.append(source[position:])
        if any(isinstance(p, str) and ("{" in p or "}" in p) for p in parts):
            raise TemplateError(f"unbalanced or malformed braces in {source!r}")
        self._parts = tuple(p for p in parts if p != "")
        self.paths = tuple(paths)

    @property
    def is_static(self) -> bool:
        return not self.paths

    def render(self, variables: Mapping[str, Any], lang: str) -> str:
        if not self.paths:
            return self.source
        out: list[str] = []
        for part in self._parts:
            if isinstance(part, str):
                out.append(part)
                continue
            path, apply = part
            value = lookup(variables, path)
            if apply is not None:
                out.append(apply(value, lang))
            else:
                out.append("" if value is None else str(value))
        return "".join(out)


# ---- conditions (router `when`) -------------------------------------------------------
_CONDITION = re.compile(
    r"^\s*(?P<neg>not\s+)?(?P<left>[A-Za-z_][A-Za-z0-9_.]*)\s*"
    r"(?:(?P<op>==|!=|>=|<=|>|<)\s*(?P<right>'[^']*'|-?\d+|[A-Za-z_][A-Za-z0-9_.]*))?\s*$"
)

_OPS: dict[str, Callable[[Any, Any], bool]] = {
    "==": lambda a, b: a == b,
    "!=": lambda a, b: a != b,
    ">=": lambda a, b: a is not None and b is not None and a >= b,
    "<=": lambda a, b: a is not None and b is not None and a <= b,
    ">": lambda a, b: a is not None and b is not None and a > b,
    "<": lambda a, b: a is not None and b is not None and a < b,
}


def compile_condition(source: str) -> Callable[[Mapping[str, Any]], bool]:
    """Compile `path`, `not path`, or `path OP value` (value: 'text', an integer, `true`,
    `false`, or another path) into a predicate over the session variables."""
    match = _CONDITION.match(source)
    if match is None:
        raise TemplateError(f"condition {source!r} is not `path`, `not path` or `path OP value`")
    left, op, right, negate = match.group("left"), match.group("op"), match.group("right"), bool(match.group("neg"))
    if op is None:
        def truthy(variables: Mapping[str, Any]) -> bool:
            return bool(lookup(variables, left)) != negate
        return truthy
    if right.startswith("'"):
        constant: Any = right[1:-1]
        get_right: Callable[[Mapping[str, Any]], Any] = lambda _v: constant
    elif right.lstrip("-").isdigit():
        constant = int(right)
        get_right = lambda _v: constant
    elif right in ("true", "false"):
        constant = right == "true"
        get_right = lambda _v: constant
    else:
        get_right = lambda v: lookup(v, right)
    compare = _OPS[op]

    def check(variables: Mapping[str, Any]) -> bool:
        return compare(lookup(variables, left), get_right(variables)) != negate

    return check


def resolve_args(spec: Mapping[str, str], variables: Mapping[str, Any]) -> dict[str, Any]:
    """`args` values are variable paths (`pkg.code`) or quoted literals (`'data'`)."""
    resolved: dict[str, Any] = {}
    for name, source in spec.items():
        if len(source) >= 2 and source[0] == source[-1] == "'":
            resolved[name] = source[1:-1]
        else:
            resolved[name] = lookup(variables, source)
    return resolved
