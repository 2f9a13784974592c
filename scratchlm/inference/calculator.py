"""The built-in calculator tool: arithmetic parsed by hand, never handed to eval().

    calculate("3 + 4 * (2 - 0.5)")    # "9"
    calculate("1 / 3")                # "0.333333333333"
    calculate("__import__('os')")     # CalculatorError: unexpected character '_' at position 1; ...

Grammar (the usual precedence; unary minus binds tighter than * and /, as in Python):

    expr   := term (("+" | "-") term)*
    term   := unary (("*" | "/") unary)*
    unary  := ("-" | "+")* atom
    atom   := NUMBER | "(" expr ")"
    NUMBER := digits ["." digits] | "." digits

Why a parser and not `eval` with a filter: the text comes from a model, and a model's output is whatever its
prompt steered it to write; eval of "().__class__.__base__..." or "9**9**9" is code execution or a CPU lost for
hours. This parser knows six symbols and numbers, so there is nothing else it can be made to do.

Arithmetic is exact (fractions.Fraction), so 0.1 + 0.2 is 0.3 and a property test can compare against Python's
own exact arithmetic. The work is bounded: at most MAX_CHARS characters, MAX_DIGITS digits per number, MAX_DEPTH
nested parentheses, and every intermediate value below MAX_MAGNITUDE with a denominator below MAX_DENOMINATOR
(so no step multiplies numbers longer than ~60 digits). Anything outside the grammar or the bounds is a
CalculatorError (a ValueError) with a one-line message the model (or a person) can act on.
"""

from __future__ import annotations

from decimal import Decimal, localcontext
from fractions import Fraction

MAX_CHARS = 200
MAX_DIGITS = 30  # per number literal
MAX_DEPTH = 32  # nested parentheses
MAX_MAGNITUDE = 10**30  # |value| of every intermediate result
MAX_DENOMINATOR = 10**30  # 1/3/3/3... would otherwise grow without bound
SIGNIFICANT_DIGITS = 12  # a non-integer result is shown to this many significant digits

KNOWN = "numbers, + - * / and parentheses"


class CalculatorError(ValueError):
    """The expression is not arithmetic the calculator accepts, or its value is out of bounds."""


def calculate(expression: str) -> str:
    """The value of an arithmetic expression, formatted: "7", "-2.5", "0.333333333333"."""
    return format_number(evaluate(expression))


def evaluate(expression: str) -> Fraction:
    """The exact value of an arithmetic expression."""
    if not isinstance(expression, str):
        raise CalculatorError(f"the expression must be a string, got {type(expression).__name__}")
    if len(expression) > MAX_CHARS:
        raise CalculatorError(f"the expression has {len(expression)} characters; the limit is {MAX_CHARS}")
    parser = _Parser(_tokens(expression))
    value = parser.expr(0)
    if parser.peek() is not None:
        tok, pos = parser.peek()
        raise CalculatorError(f"unexpected {tok!r} at position {pos + 1}" +
                              ("; there is no '(' to close" if tok == ")" else "; put an operator between values"))
    return value


def format_number(value: Fraction) -> str:
    """An integer as digits; anything else as a decimal to SIGNIFICANT_DIGITS digits, without an exponent."""
    if value.denominator == 1:
        return str(value.numerator)
    with localcontext() as ctx:
        ctx.prec = SIGNIFICANT_DIGITS
        d = Decimal(value.numerator) / Decimal(value.denominator)
    text = format(d, "f")
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return "0" if text in ("-0", "") else text


def _tokens(text: str) -> list[tuple[str, int]]:
    """(token, position) pairs: numbers as their text, operators and parentheses as one character."""
    out = []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c in " \t":
            i += 1
        elif c in "+-*/()":
            if c == "*" and text[i + 1:i + 2] == "*":
                raise CalculatorError(f"'**' at position {i + 1} is not supported: the calculator knows {KNOWN}")
            out.append((c, i))
            i += 1
        elif c.isascii() and (c.isdigit() or c == "."):
            j = i
            while j < n and text[j].isascii() and (text[j].isdigit() or text[j] == "."):
                j += 1
            num = text[i:j]
            if num.count(".") > 1 or num == ".":
                raise CalculatorError(f"{num!r} at position {i + 1} is not a number")
            if sum(ch.isdigit() for ch in num) > MAX_DIGITS:
                raise CalculatorError(f"the number at position {i + 1} has more than {MAX_DIGITS} digits")
            out.append((num, i))
            i = j
        else:
            raise CalculatorError(f"unexpected character {c!r} at position {i + 1}; the calculator knows {KNOWN}")
    if not out:
        raise CalculatorError(f"the expression is empty; write arithmetic with {KNOWN}")
    return out


def _check(value: Fraction) -> Fraction:
    if abs(value) > MAX_MAGNITUDE:
        raise CalculatorError("a result exceeds 1e30 in size; the calculator keeps numbers below that")
    if value.denominator > MAX_DENOMINATOR:
        raise CalculatorError("a result needs more than 30 digits after the point; simplify the expression")
    return value


class _Parser:
    """Recursive descent over the token list; recursion only at '(' (bounded by MAX_DEPTH)."""

    def __init__(self, tokens: list[tuple[str, int]]):
        self.tokens, self.i = tokens, 0

    def peek(self) -> tuple[str, int] | None:
        return self.tokens[self.i] if self.i < len(self.tokens) else None

    def take(self) -> tuple[str, int]:
        tok = self.peek()
        if tok is None:
            raise CalculatorError("the expression ends too early; a value or ')' is missing at the end")
        self.i += 1
        return tok

    def expr(self, depth: int) -> Fraction:
        value = self.term(depth)
        while self.peek() is not None and self.peek()[0] in "+-":
            op = self.take()[0]
            rhs = self.term(depth)
            value = _check(value + rhs if op == "+" else value - rhs)
        return value

    def term(self, depth: int) -> Fraction:
        value = self.unary(depth)
        while self.peek() is not None and self.peek()[0] in "*/":
            op, pos = self.take()
            rhs = self.unary(depth)
            if op == "*":
                value = _check(value * rhs)
            elif rhs == 0:
                raise CalculatorError(f"division by zero (the '/' at position {pos + 1})")
            else:
                value = _check(value / rhs)
        return value

    def unary(self, depth: int) -> Fraction:
        sign = 1
        while self.peek() is not None and self.peek()[0] in "+-":  # a loop, not recursion: "------1" is flat
            if self.take()[0] == "-":
                sign = -sign
        return sign * self.atom(depth)

    def atom(self, depth: int) -> Fraction:
        tok, pos = self.take()
        if tok == "(":
            if depth >= MAX_DEPTH:
                raise CalculatorError(f"parentheses nest deeper than {MAX_DEPTH} levels")
            value = self.expr(depth + 1)
            close = self.peek()
            if close is None or close[0] != ")":
                raise CalculatorError(f"the '(' at position {pos + 1} is never closed")
            self.take()
            return value
        if tok[0].isdigit() or tok[0] == ".":
            return _check(Fraction(tok))
        raise CalculatorError(f"expected a number or '(' at position {pos + 1}, got {tok!r}")
