"""A tiny template language for TinyWorld sentences, and the `Teller` that fills it in.

    "[One day|One sunny morning], {A} went {L.to} with {B.name}."

  [a|b|c]    alternatives (an empty one makes the part optional). Expanded once, at import time, into a list of
             variants; every variant is its own sentence shape, which is where the corpus's variety comes from.
  {X}        the role X of the story's cast, as a subject: A (hero), B (friend), P (grown-up).
  {X.attr}   another form of a role: {A.obj} him/her, {A.pos} his/her, {A.refl} himself/herself, {A.name},
             {O.a} "a red kite", {O.the} "the kite", {L.to} "to the park", ... (see stories.py for the roles).
  {list}     a word drawn from a named list: {good} feelings, {bad} feelings, {col} colours, ...

Pronouns are chosen here, not in the templates: {A} becomes "she" only when the reader cannot be confused, i.e.
when Mia was mentioned earlier in this sentence and no other girl or woman was so far, or when Mia was mentioned
in this or the previous sentence and no other girl or woman was in either. Otherwise it is "Mia".
Speech inside quotes always uses names. That one rule keeps every pronoun correct however the parts combine.
A slot that starts a sentence (or a quote) is capitalised.
"""

from __future__ import annotations

import itertools
import re

from scratchlm.data.tinyworld.lexicon import PRONOUNS

_ALT = re.compile(r"\[([^\[\]]*)\]")
_SLOT = re.compile(r"\{([A-Za-z]+)(?:\.([A-Za-z0-9]+))?\}")
_PERSON_ATTR = {"": 0, "obj": 1, "pos": 2, "refl": 3}  # index into PRONOUNS[gender]


def expand(template: str) -> list[str]:
    """All spellings of a template: '[a|b] c' -> ['a c', 'b c']. Double spaces from empty options are removed."""
    pieces = _ALT.split(template)  # literal, options, literal, options, ...
    choices = [[p] if i % 2 == 0 else p.split("|") for i, p in enumerate(pieces)]
    out = []
    for combo in itertools.product(*choices):
        s = " ".join("".join(combo).split())  # collapse the spaces an empty option leaves
        s = s.replace(" ,", ",").replace(" .", ".")
        out.append(s)
    return out


def compile_sentence(text: str) -> tuple:
    """'{A} saw {O.a}.' -> ('', slot, ' saw ', slot, '.') with slots (var, attr, capitalise, inside_quotes)."""
    parts: list = []
    pos = 0
    for m in _SLOT.finditer(text):
        before = text[:m.start()]
        if m.start() > pos:
            parts.append(text[pos:m.start()])
        quoted = before.count('"') % 2 == 1
        tail = before.rstrip()
        starts = tail == "" or tail[-1] in ".!?" or (tail[-1] == '"' and quoted)
        parts.append((m.group(1), m.group(2) or "", starts, quoted))
        pos = m.end()
    if pos < len(text):
        parts.append(text[pos:])
    return tuple(parts)


class Part:
    """One story part: several options, each a sequence of sentences, each sentence a list of compiled variants.

    Rendering picks an option uniformly, then a spelling of each of its sentences uniformly, so an option with
    many spellings is not more likely than a plain one.
    """

    def __init__(self, *options: str | tuple[str, ...]):
        self.options = []
        for opt in options:
            sentences = (opt,) if isinstance(opt, str) else opt
            self.options.append(tuple([compile_sentence(v) for v in expand(s)] for s in sentences))

    def n_variants(self) -> int:
        """How many distinct sentence spellings this part can produce (before slots are filled)."""
        return sum(len(v) for opt in self.options for v in opt)

    def templates(self):
        for opt in self.options:
            for variants in opt:
                yield from variants


class Teller:
    """Renders compiled sentences for one story: holds the cast, the word lists, and who was just mentioned."""

    def __init__(self, rng, people: dict, forms: dict, lists: dict):
        self.r = rng.random
        self.people = people  # role -> Character/Grownup
        self.forms = forms  # role -> {attr: str | tuple[str, ...]}
        self.lists = lists  # name -> tuple of words
        self.cur: set = set()  # people mentioned in the sentence being written
        self.prev: set = set()  # ... and in the one before
        self.sentences: list[str] = []
        self.used: set = set()  # roles and lists that appeared in the text (questions may only ask about those)
        self.qa: list[tuple[str, str, str]] = []

    def pick(self, seq):
        return seq[int(self.r() * len(seq))]

    def tell(self, part: Part) -> None:
        for variants in self.pick(part.options):
            self.sentences.append(self.sentence(self.pick(variants)))

    def maybe(self, p: float, part: Part) -> None:
        if self.r() < p:
            self.tell(part)

    def sentence(self, compiled: tuple) -> str:
        self.prev, self.cur = self.cur, set()
        out = []
        for p in compiled:
            if p.__class__ is str:
                out.append(p)
                continue
            var, attr, cap, quoted = p
            who = self.people.get(var)
            if who is not None:
                w = self._person(who, attr, quoted)
            elif var in self.forms:
                w = self.forms[var][attr]
                if w.__class__ is tuple:
                    w = self.pick(w)
                self.used.add(var)
            else:
                w = self.pick(self.lists[var])
            out.append(w[0].upper() + w[1:] if cap else w)
        return "".join(out)

    def ask(self, question: str, answer: str, sentence: str) -> None:
        """Record a question the story answers: (question, short answer, answer sentence). Rendered on demand by
        `questions()`, since most stories are only read as text."""
        self.qa.append((question, answer, sentence))

    def questions(self) -> list[tuple[str, str, str]]:
        return [(self.plain(_compiled(q)), self.plain(_compiled(a), cap=False), self.plain(_compiled(s)))
                for q, a, s in self.qa]

    def plain(self, compiled: tuple, cap: bool = True) -> str:
        """Render without the story's context: people by name, except "his/her" for someone named just before."""
        out, named = [], []
        for p in compiled:
            if p.__class__ is str:
                out.append(p)
                continue
            var, attr, starts, _ = p
            who = self.people.get(var)
            if who is None:
                w = self.forms[var][attr]
                w = w[0] if w.__class__ is tuple else w
            elif attr == "pos":
                ok = who in named and all(o is who or o.gender != who.gender for o in named)
                w = PRONOUNS[who.gender][2] if ok else who.name + "'s"
            elif attr in _PERSON_ATTR or attr == "name":
                w = who.name
                named.append(who)
            else:
                w = self.forms["@" + who.name][attr]
            out.append(w[0].upper() + w[1:] if starts and cap else w)
        return "".join(out)


    def _pronoun_ok(self, who) -> bool:
        """Unambiguous: `who` was mentioned earlier in this sentence and nobody else of that gender was so far
        ("Dan brought his hat"), or `who` was mentioned in this or the last sentence and nobody else of that
        gender was in either."""
        rival_here = any(o is not who and o.gender == who.gender for o in self.cur)
        if rival_here:
            return False
        if who in self.cur:
            return True
        return who in self.prev and not any(o is not who and o.gender == who.gender for o in self.prev)

    def _person(self, who, attr: str, quoted: bool) -> str:
        i = _PERSON_ATTR.get(attr)
        if i is None:  # name, trait, home, ...: never a pronoun
            if attr == "name":
                if not quoted:
                    self.cur.add(who)
                return who.name
            return self.forms["@" + who.name][attr]
        if quoted:  # in speech a person is named ("Leo, look!")
            return who.name + "'s" if i == 2 else who.name
        # A pronoun when it is unambiguous: always for a second mention within a sentence ("Mia looked, but she
        # ..."), usually (3 in 4) across sentences so names still recur the way they do in children's books.
        if i == 3 or (self._pronoun_ok(who) and (who in self.cur or self.r() < 0.75)):
            self.cur.add(who)
            return PRONOUNS[who.gender][i]
        self.cur.add(who)
        return who.name + "'s" if i == 2 else who.name


_CACHE: dict[str, tuple] = {}


def _compiled(text: str) -> tuple:
    c = _CACHE.get(text)
    if c is None:
        c = _CACHE[text] = compile_sentence(text)
    return c
