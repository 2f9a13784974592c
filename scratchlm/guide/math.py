"""Formulas for the guide, rendered offline: a small LaTeX subset translated to MathML.

Browsers (Chromium 109+, Firefox, Safari) draw MathML Core natively, in print too, so the guide needs no KaTeX,
no fonts and no network. The subset is what a textbook page on transformers uses:

    x^2  x_i  x_{t+1}^{(k)}  \\frac{a}{b}  \\sqrt{d}  \\sum_{i=1}^{n}  \\log  \\exp  \\max  \\mathrm{softmax}
    \\text{ words }  \\alpha .. \\omega  \\cdot \\times \\le \\approx \\odot  \\hat{y} \\bar{x} \\tilde{p}
    \\mathbb{E}  \\mathcal{L}  \\lVert x \\rVert  \\left( .. \\right)  {grouping}

Anything outside it raises ValueError naming the command, so a typo in a stage text fails the guide's tests
instead of printing garbage.
"""

from __future__ import annotations

import html
import re

GREEK = {name: chr(cp) for name, cp in (
    ("alpha", 0x3B1), ("beta", 0x3B2), ("gamma", 0x3B3), ("delta", 0x3B4), ("epsilon", 0x3F5),
    ("varepsilon", 0x3B5), ("zeta", 0x3B6), ("eta", 0x3B7), ("theta", 0x3B8), ("iota", 0x3B9),
    ("kappa", 0x3BA), ("lambda", 0x3BB), ("mu", 0x3BC), ("nu", 0x3BD), ("xi", 0x3BE), ("pi", 0x3C0),
    ("rho", 0x3C1), ("sigma", 0x3C3), ("tau", 0x3C4), ("phi", 0x3D5), ("varphi", 0x3C6), ("chi", 0x3C7),
    ("psi", 0x3C8), ("omega", 0x3C9), ("Gamma", 0x393), ("Delta", 0x394), ("Theta", 0x398),
    ("Lambda", 0x39B), ("Pi", 0x3A0), ("Sigma", 0x3A3), ("Phi", 0x3A6), ("Psi", 0x3A8), ("Omega", 0x3A9))}

OPERATORS = {
    "cdot": "\u22c5", "times": "\u00d7", "le": "\u2264", "leq": "\u2264", "ge": "\u2265", "geq": "\u2265",
    "approx": "\u2248", "propto": "\u221d", "in": "\u2208", "to": "\u2192", "leftarrow": "\u2190",
    "odot": "\u2299", "sim": "\u223c", "neq": "\u2260", "mid": "\u2223", "pm": "\u00b1", "ll": "\u226a",
    "gg": "\u226b", "lVert": "\u2016", "rVert": "\u2016", "ldots": "\u2026", "cdots": "\u22ef",
    "equiv": "\u2261", "Rightarrow": "\u21d2", "forall": "\u2200", "cup": "\u222a", "cap": "\u2229",
    "lfloor": "\u230a", "rfloor": "\u230b", "lceil": "\u2308", "rceil": "\u2309", "langle": "\u27e8",
    "rangle": "\u27e9", "{": "{", "}": "}", "|": "\u2016", "setminus": "\u2216",
}
SYMBOLS = {"infty": "\u221e", "partial": "\u2202", "nabla": "\u2207", "ell": "\u2113", "top": "\u22a4"}
BIG_OPERATORS = {"sum": "\u2211", "prod": "\u220f", "int": "\u222b"}
FUNCTIONS = {"log", "ln", "exp", "max", "min", "sin", "cos", "arg", "softmax", "tanh", "lim", "det", "dim", "mod"}
ACCENTS = {"hat": "^", "bar": "\u00af", "tilde": "~", "vec": "\u2192", "dot": "\u02d9"}
SPACES = {",": "0.17em", ";": "0.28em", "quad": "1em", "qquad": "2em", " ": "0.25em", "!": "-0.17em"}
# Letter-like alphabets: the code points themselves, so the rendering does not depend on mathvariant support.
BLACKBOARD = {"E": "\U0001d53c", "R": "\u211d", "N": "\u2115", "Z": "\u2124", "P": "\u2119"}
CALLIGRAPHIC = {"L": "\u2112", "D": "\U0001d49f", "N": "\U0001d4a9", "O": "\U0001d4aa", "F": "\u2131",
                "H": "\u210b", "B": "\u212c", "M": "\u2133"}

_TOKEN = re.compile(r"\\[a-zA-Z]+|\\.|[0-9]+(?:\.[0-9]+)?|[a-zA-Z]|\s+|.", re.S)


def _esc(s: str) -> str:
    return html.escape(s, quote=False)


class _Parser:
    def __init__(self, src: str):
        self.src = src
        found = [(m.group(), m.start()) for m in _TOKEN.finditer(src) if not m.group().isspace()]
        self.toks = [t for t, _ in found]
        self.starts = [p for _, p in found] + [len(src)]
        self.i = 0

    def error(self, what: str) -> ValueError:
        return ValueError(f"formula {self.src!r}: {what}; the guide's LaTeX subset is listed in scratchlm/guide/math.py")

    def peek(self) -> str | None:
        return self.toks[self.i] if self.i < len(self.toks) else None

    def take(self) -> str:
        if self.i >= len(self.toks):
            raise self.error("unexpected end")
        self.i += 1
        return self.toks[self.i - 1]

    def group_text(self) -> str:
        """The raw source of a {...} argument (for \\text, \\mathrm), spaces kept."""
        if self.take() != "{":
            raise self.error("expected { after a text command")
        start, depth = self.starts[self.i - 1] + 1, 1  # just after the {: leading spaces are kept too
        while depth:
            t = self.take()
            depth += {"{": 1, "}": -1}.get(t, 0)
        return self.src[start:self.starts[self.i - 1]]

    def row(self, stop: str | None = None) -> str:
        items = []
        while True:
            t = self.peek()
            if t is None:
                if stop is not None:
                    raise self.error(f"missing {stop}")
                break
            if t == stop or (stop == "}" and t == "}"):
                self.take()
                break
            if t == "\\right":
                break
            items.append(self.scripted())
        return items[0] if len(items) == 1 else "<mrow>" + "".join(items) + "</mrow>"

    def arg(self) -> str:
        if self.peek() == "{":
            self.take()
            return self.row("}")
        return self.atom()

    def scripted(self) -> str:
        t = self.peek()
        base = self.atom()
        big = t in ("\\sum", "\\prod")
        # A function name takes its scripts first (log_2), then the invisible "function application" operator.
        is_function = t is not None and t.startswith("\\") and t[1:] in FUNCTIONS
        sub = sup = None
        while self.peek() in ("_", "^"):
            kind = self.take()
            if kind == "_":
                sub = self.arg()
            else:
                sup = self.arg()
        apply = "<mo>\u2061</mo>" if is_function else ""
        if is_function and self.peek() not in ("(", "\\left", None):
            apply += '<mspace width="0.17em"/>'  # "log p": browsers put no space after a function name
        if sub is None and sup is None:
            return base + apply
        if big:  # limits under and over the operator, as in display math
            if sub is not None and sup is not None:
                return f"<munderover>{base}{sub}{sup}</munderover>"
            return f"<munder>{base}{sub}</munder>" if sub is not None else f"<mover>{base}{sup}</mover>"
        if sub is not None and sup is not None:
            return f"<msubsup>{base}{sub}{sup}</msubsup>{apply}"
        return (f"<msub>{base}{sub}</msub>" if sub is not None else f"<msup>{base}{sup}</msup>") + apply

    def atom(self) -> str:
        t = self.take()
        if t == "{":
            return self.row("}")
        if t in ("}", "^", "_"):
            raise self.error(f"unexpected {t}")
        if t.startswith("\\"):
            return self.command(t[1:])
        if t[0].isdigit():
            return f"<mn>{t}</mn>"
        if t.isalpha():
            return f"<mi>{t}</mi>"
        if t == "'":
            return "<mo>\u2032</mo>"
        if t in "()[]|":  # plain fences keep their size; \\left/\\right make stretchy ones
            return f'<mo stretchy="false">{t}</mo>'
        if t in "-+":
            # the minus sign, not the hyphen; and a sign that starts a term (after = , ( \\quad ...) is a prefix
            # operator with no space before its operand ("-\\infty" printed "- \u221e" after a \\quad)
            sign = "\u2212" if t == "-" else "+"
            return f'<mo form="prefix">{sign}</mo>' if self._starts_term() else f"<mo>{sign}</mo>"
        return f"<mo>{_esc(t)}</mo>"

    def _starts_term(self) -> bool:
        """Whether the token just taken opens a term: first of all, or after an operator, fence, comma or space."""
        prev = self.toks[self.i - 2] if self.i >= 2 else None
        if prev is None or prev in "=<>,;:([{^_+-*/|!" or prev in ("\\left", "\\quad", "\\qquad"):
            return True
        return prev.startswith("\\") and (prev[1:] in OPERATORS or prev[1:] in SPACES)

    def command(self, name: str) -> str:
        if name == "frac":
            return f"<mfrac>{self.arg()}{self.arg()}</mfrac>"
        if name == "sqrt":
            return f"<msqrt>{self.arg()}</msqrt>"
        if name == "text":
            # MathML trims the spaces at either end of a token, so "0 \\text{ if } j" printed "0if j": the end
            # spaces become no-break spaces, which are kept (and extracted as spaces from the PDF).
            text = self.group_text()
            core = " ".join(text.split())
            lead, trail = "\u00a0" if text[:1].isspace() else "", "\u00a0" if text[-1:].isspace() else ""
            return f"<mtext>{lead}{_esc(core)}{trail}</mtext>"
        if name in ("mathrm", "operatorname"):
            return f'<mi mathvariant="normal">{_esc(self.group_text().strip())}</mi>'
        if name in ("mathbf", "boldsymbol"):
            return f'<mi mathvariant="bold">{_esc(self.group_text().strip())}</mi>'
        if name in ("mathbb", "mathcal"):
            letter = self.group_text().strip()
            table = BLACKBOARD if name == "mathbb" else CALLIGRAPHIC
            if letter not in table:
                raise self.error(f"\\{name}{{{letter}}} is not in the table")
            return f"<mi>{table[letter]}</mi>"
        if name in ACCENTS:
            return f'<mover accent="true">{self.arg()}<mo>{ACCENTS[name]}</mo></mover>'
        if name == "left":
            delim = self.delimiter()
            return f'<mrow><mo stretchy="true">{delim}</mo>{self._until_right()}</mrow>'
        if name == "right":
            raise self.error("\\right without \\left")
        if name in GREEK:
            return f"<mi>{GREEK[name]}</mi>"
        if name in BIG_OPERATORS:
            return f'<mo largeop="true" movablelimits="false">{BIG_OPERATORS[name]}</mo>'
        if name in FUNCTIONS:
            return f'<mi mathvariant="normal">{name}</mi>'
        if name in SYMBOLS:
            return f"<mi>{SYMBOLS[name]}</mi>"
        if name in OPERATORS:
            return f"<mo>{_esc(OPERATORS[name])}</mo>"
        if name in SPACES:
            return f'<mspace width="{SPACES[name]}"/>'
        raise self.error(f"unknown command \\{name}")

    def _until_right(self) -> str:
        items = []
        while self.peek() is not None and self.peek() != "\\right":
            items.append(self.scripted())
        if self.peek() is None:
            raise self.error("\\left without \\right")
        self.take()  # \right
        return "".join(items) + f'<mo stretchy="true">{self.delimiter()}</mo>'

    def delimiter(self) -> str:
        """The fence after \\left or \\right: ( [ | . (none) or a command such as \\lVert."""
        t = self.take()
        if t == ".":
            return ""
        return _esc(OPERATORS[t[1:]] if t.startswith("\\") and t[1:] in OPERATORS else t)


def to_mathml(latex: str, display: bool = True) -> str:
    """One formula as a <math> element; the LaTeX source is kept in alttext (screen readers, search, copy)."""
    body = _Parser(latex).row(None)
    mode = "block" if display else "inline"
    return f'<math display="{mode}" alttext="{html.escape(latex)}">{body}</math>'
