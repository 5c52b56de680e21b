"""Transcript templates: `{name}` placeholders, integer arithmetic (`{a - b}`) and formats (`{a|money}`).

A transcript says "the balance dropped by the price shown" in one line:
`{balance_before - price|money}`. This module checks placeholders when a transcript is
loaded (`check_template`), reads captured amounts as whole numbers (`as_number`) and
renders templates with the screens' own money and number filters (`render_template`),
evaluating only names, whole numbers, + - * // and parentheses.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Mapping

from ussd_gateway.core.formats import money
from ussd_gateway.core.formats import number as grouped_number

from ussd_gateway.testkit.transcripts.model import Mismatch

NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
"""A variable name: a word of letters, digits and `_`."""
_PLACEHOLDER = re.compile(r"\{\{|\}\}|\{([^{}]*)\}")


def _placeholders(text: str) -> list[tuple[str, str | None]]:
    out: list[tuple[str, str | None]] = []
    for match in _PLACEHOLDER.finditer(text):
        if match.group(1) is None:
            continue
        body = match.group(1)
        expression, _, fmt = body.partition("|")
        if fmt and fmt.strip() not in _FORMATS:
            raise ValueError(f"unknown format |{fmt.strip()} in {{{body}}} (use {', '.join('|' + f for f in _FORMATS)})")
        out.append((expression.strip(), fmt.strip() or None))
    return out


_ALLOWED_NODES = (ast.Expression, ast.BinOp, ast.UnaryOp, ast.Name, ast.Constant, ast.Add, ast.Sub, ast.Mult, ast.FloorDiv, ast.USub, ast.UAdd, ast.Load)


def _parse_expression(expression: str) -> ast.Expression:
    """`balance_before - price`: names, whole numbers, + - * // and parentheses only."""
    if not expression:
        raise ValueError("empty placeholder {} (write {name}, or {{ for a literal brace)")
    try:
        tree = ast.parse(expression, mode="eval")
    except SyntaxError:
        raise ValueError(f"{{{expression}}} is not a name or integer arithmetic (a - b, a + 1000, 2 * a)") from None
    for node in ast.walk(tree):
        if not isinstance(node, _ALLOWED_NODES) or isinstance(node, ast.Constant) and (
            not isinstance(node.value, int) or isinstance(node.value, bool)
        ):
            raise ValueError(f"{{{expression}}} may use names, whole numbers, + - * // and parentheses only")
    return tree


def as_number(name: str, value: str) -> int:
    """A captured amount as an integer: `200.000d`, `200,000 VND`, `1.250`, `-15000` all
    read as whole numbers (group separators and units are dropped)."""
    text = value.strip()
    negative = text.startswith("-")
    digits = re.sub(r"\D", "", text)
    if not digits:
        raise Mismatch(f"variable {name} = {value!r} is not a number, so it cannot be used in arithmetic")
    return -int(digits) if negative else int(digits)


_FORMATS = {  # the screens' own filters, so a computed amount reads as the screen shows it
    "money": money,
    "number": grouped_number,
    "int": lambda amount, lang: str(amount),
}


def _evaluate(node: ast.AST, variables: Mapping[str, str]) -> int:
    if isinstance(node, ast.Expression):
        return _evaluate(node.body, variables)
    if isinstance(node, ast.Constant):
        return int(node.value)
    if isinstance(node, ast.Name):
        if node.id not in variables:
            raise Mismatch(f"unknown variable {node.id!r} (known: {', '.join(sorted(variables)) or 'none'})")
        return as_number(node.id, variables[node.id])
    if isinstance(node, ast.UnaryOp):
        operand = _evaluate(node.operand, variables)
        return -operand if isinstance(node.op, ast.USub) else operand
    assert isinstance(node, ast.BinOp)
    left, right = _evaluate(node.left, variables), _evaluate(node.right, variables)
    if isinstance(node.op, ast.Add):
        return left + right
    if isinstance(node.op, ast.Sub):
        return left - right
    if isinstance(node.op, ast.Mult):
        return left * right
    if right == 0:
        raise Mismatch("division by zero")
    return left // right


def render_template(text: str, variables: Mapping[str, str], *, lang: str = "vi") -> str:
    """Replace `{…}` placeholders. `{name}` is the variable as captured; an expression
    (`{a - b}`) or a format (`{a|money}`) reads the values as numbers. `{{`/`}}` are
    literal braces. Raises Mismatch (a step failure) for unknown variables."""

    def replace(match: re.Match[str]) -> str:
        token = match.group(0)
        if token == "{{":
            return "{"
        if token == "}}":
            return "}"
        body = match.group(1)
        expression, _, fmt = body.partition("|")
        expression, fmt = expression.strip(), fmt.strip()
        if not fmt and NAME.match(expression):
            if expression not in variables:
                raise Mismatch(f"unknown variable {expression!r} (known: {', '.join(sorted(variables)) or 'none'})")
            return variables[expression]
        try:
            tree = _parse_expression(expression)
        except ValueError as error:
            raise Mismatch(str(error)) from None
        return _FORMATS[fmt or "int"](_evaluate(tree, variables), lang)

    return _PLACEHOLDER.sub(replace, text)


def check_template(text: str) -> None:
    """Raise ValueError when a `{…}` placeholder is malformed (checked at load)."""
    for expression, _filter in _placeholders(text):
        _parse_expression(expression)
