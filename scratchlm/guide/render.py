"""The guide as one self-contained HTML file: stage map, stages, snippets, formulas, the run's figures.

No external asset of any kind (fonts, scripts, styles, images): the file opens offline, from a USB stick or an
email attachment, and prints to a clean book (one stage per page run) with the browser's Print -> Save as PDF.
"""

from __future__ import annotations

import html
import re
from pathlib import Path

from .extract import extract
from .highlight import highlight_python
from .math import to_mathml
from .run_data import Panel, RunData
from .stages import STAGES, Stage, Topic

ASSETS = Path(__file__).resolve().parent / "assets"


def slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def inline(text: str) -> str:
    """Our tiny markup on one paragraph: $math$, `code`, **strong**, *em*; everything else escaped."""
    out = []
    for i, part in enumerate(text.split("$")):
        if i % 2:  # between a pair of $
            out.append(to_mathml(part, display=False))
            continue
        s = html.escape(part, quote=False)
        s = re.sub(r"`([^`]+)`", r"<code>\1</code>", s)
        s = re.sub(r"\*\*([^*]+)\*\*", r"<strong>\1</strong>", s)
        s = re.sub(r"(?<![\w*])\*([^*\s][^*]*)\*(?![\w*])", r"<em>\1</em>", s)
        out.append(s)
    if len(text.split("$")) % 2 == 0:
        raise ValueError(f"unbalanced $ in guide text: {text[:60]!r}...")
    return "".join(out)


def paragraphs(text: str) -> str:
    text = re.sub(r"(?<=\w)-\n\s*(?=\w)", "-", text)  # "micro-<newline>batch" is one word
    paras = [" ".join(p.split()) for p in re.split(r"\n\s*\n", text.strip()) if p.strip()]
    return "".join(f"<p>{inline(p)}</p>" for p in paras)


def snippet_html(qualname: str) -> str:
    s = extract(qualname)
    short = qualname.removeprefix("scratchlm.")
    return (f'<details class="snippet" open><summary><span class="qn">{html.escape(short)}</span>'
            f'<span class="loc">{html.escape(s.location)}</span></summary>'
            f'<pre class="code"><code>{highlight_python(s.code)}</code></pre></details>')


def topic_html(stage: Stage, topic: Topic) -> str:
    parts = [f'<article class="topic" id="{stage.key}-{slug(topic.title)}">',
             f"<h3>{html.escape(topic.title)}</h3>", paragraphs(topic.text)]
    if topic.math:
        parts.append('<div class="math">' + "".join(to_mathml(m) for m in topic.math) + "</div>")
    parts += [snippet_html(q) for q in topic.code]
    parts.append("</article>")
    return "".join(parts)


def panel_html(p: Panel) -> str:
    title = f"<figcaption>{html.escape(p.title)}</figcaption>"
    if p.kind == "svg":
        return f'<figure class="panel">{title}{p.body}</figure>'
    if p.kind == "pre":
        return f'<figure class="panel">{title}<pre class="out">{html.escape(p.body)}</pre></figure>'
    if p.kind == "kv":
        rows = "".join(f"<tr><th>{html.escape(str(k))}</th><td>{html.escape(str(v))}</td></tr>" for k, v in p.rows)
        return f'<figure class="panel">{title}<table class="kv">{rows}</table></figure>'
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in p.header)
    rows = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in r) + "</tr>" for r in p.rows)
    return f'<figure class="panel">{title}<table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table></figure>'


def status_of(stage: Stage, run: RunData | None) -> str:
    if run is None:
        return "none"
    return "done" if run.done.get(stage.key) else "todo"


def stage_html(i: int, stage: Stage, run: RunData | None) -> str:
    status = status_of(stage, run)
    badge = {"done": '<span class="badge done">done in this run</span>',
             "todo": '<span class="badge todo">not run yet</span>', "none": ""}[status]
    out = [f'<section class="stage" id="stage-{stage.key}" data-stage="{stage.key}" data-status="{status}">',
           f'<h2><span class="num">{i + 1}</span> {html.escape(stage.title)} {badge}</h2>',
           f'<div class="intro topic">{paragraphs(stage.intro)}</div>']
    out += [topic_html(stage, t) for t in stage.topics]
    if run is not None:
        panels = run.panels.get(stage.key, [])
        out.append(f'<div class="run topic"><h3>In this run: <code>{html.escape(str(run.root))}</code></h3>')
        out.append("".join(panel_html(p) for p in panels) if panels else
                   "<p class=\"muted\">This run has no output for this stage yet; the command below makes it.</p>")
        out.append("</div>")
    cmds = "\n".join(f"$ {c}" for c in stage.commands)
    out.append(f'<div class="cmd topic"><h3>Run this stage</h3><pre class="sh">{html.escape(cmds)}</pre>'
               f'<p class="muted">Every command has worked examples in <code>--help</code>.</p></div>')
    prev = f'<a href="#stage-{STAGES[i - 1].key}">← {html.escape(STAGES[i - 1].title)}</a>' if i > 0 else "<span></span>"
    nxt = (f'<a href="#stage-{STAGES[i + 1].key}">{html.escape(STAGES[i + 1].title)} →</a>'
           if i + 1 < len(STAGES) else "<span></span>")
    out.append(f'<nav class="pager">{prev}{nxt}</nav></section>')
    return "".join(out)


def map_html(run: RunData | None) -> str:
    items = []
    for i, st in enumerate(STAGES):
        status = status_of(st, run)
        items.append(f'<li data-status="{status}"><a href="#stage-{st.key}" data-target="stage-{st.key}">'
                     f'<span class="dot"></span><span class="num">{i + 1}</span>'
                     f'<span class="t">{html.escape(st.title)}</span>'
                     f'<span class="s">{html.escape(st.summary)}</span></a></li>')
    progress = ""
    if run is not None:
        n = sum(run.done.get(st.key, False) for st in STAGES)
        progress = (f'<div class="progress" aria-label="{n} of {len(STAGES)} stages done">'
                    f'<div class="bar" style="width:{100 * n / len(STAGES):.0f}%"></div></div>'
                    f'<p class="muted" id="progress-text">{n} of {len(STAGES)} stages completed by '
                    f'<code>{html.escape(str(run.root))}</code></p>')
    return f'<nav id="map" class="map" aria-label="stages"><h2>The build, stage by stage</h2>{progress}' \
           f'<ol>{"".join(items)}</ol></nav>'


def render(run: RunData | None = None, version: str = "") -> str:
    """The whole guide as one HTML string."""
    css = (ASSETS / "guide.css").read_text(encoding="utf-8")
    js = (ASSETS / "guide.js").read_text(encoding="utf-8")
    subtitle = (f"with the results of <code>{html.escape(str(run.root))}</code>" if run is not None
                else "run <code>scratchlm guide --run runs/demo</code> to add your own run's numbers")
    body = "".join(stage_html(i, st, run) for i, st in enumerate(STAGES))
    # The cover comes before the stage map in the document, so a printed copy (and a screen reader, and the PDF's
    # text) opens with the title and then the contents; on screen the grid still puts the map in the left column.
    return f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="generator" content="scratchlm {html.escape(version)}">
<link rel="icon" href="data:,">
<title>Build an LLM from scratch — the scratchlm guide</title>
<style>{css}</style>
</head>
<body>
<header class="top">
  <a class="brand" href="#cover">scratchlm guide</a>
  <input id="search" type="search" placeholder="Search the guide (/)" aria-label="search" autocomplete="off">
  <span id="search-count" class="muted" aria-live="polite"></span>
  <button id="toggle-code" type="button" title="collapse or expand every code snippet">collapse code</button>
  <button id="theme" type="button" title="light / dark">dark</button>
  <button id="print" type="button" title="print or save as PDF">print</button>
</header>
<div class="layout">
<section id="cover" class="cover">
<h1>Build a large language model from scratch</h1>
<p class="lead">The whole build in {len(STAGES)} stages — data, tokenizer, model, pretraining, scaling, post-training,
inference and evaluation — {subtitle}.</p>
<p>Each stage explains the idea in a few paragraphs, gives the math, shows the code that implements it (cut out of
scratchlm's own source when this page was built, so it is the code you run), and ends with the command that runs
the stage. Keys: <kbd>/</kbd> search, <kbd>n</kbd>/<kbd>p</kbd> next/previous stage, <kbd>Esc</kbd> clear search.
Print (or Save as PDF) gives one stage per page run.</p>
<p class="muted">scratchlm {html.escape(version)}</p>
</section>
{map_html(run)}
<main>
<p id="no-results" class="muted" hidden>Nothing matches this search.</p>
{body}
</main>
</div>
<script>{js}</script>
</body>
</html>
"""
