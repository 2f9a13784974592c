"""The interactive build roadmap: one self-contained HTML page (and a PDF) that walks the whole build.

    stages.py    the content: each stage's explanation, formulas, code names and commands
    extract.py   cuts the named functions out of scratchlm's source when the guide is built
    highlight.py Python syntax highlighting (standard-library tokenizer)
    math.py      a LaTeX subset -> MathML, rendered by the browser offline
    run_data.py  a run folder's own numbers (loss curves, filter report, tokenizer, eval, samples, plan)
    plots.py     SVG line charts
    render.py    the HTML page (CSS and JS from assets/, inlined)
    pdf.py       the PDF through headless Chromium

    from scratchlm.guide import build_guide
    build_guide("guide.html", run="runs/demo", pdf="guide.pdf")
"""

from __future__ import annotations

from pathlib import Path


def build_html(run: str | Path | None = None) -> str:
    """The guide as an HTML string, with the numbers of run folder `run` when given."""
    from scratchlm import __version__

    from .render import render
    from .run_data import load_run

    return render(load_run(run) if run is not None else None, version=__version__)


def build_guide(out: str | Path, run: str | Path | None = None, pdf: str | Path | None = None) -> dict:
    """Write the HTML guide to `out` (and a PDF to `pdf`); returns {"html": path, "pdf": path or None}."""
    from scratchlm.runs import atomic_write_text

    from .pdf import html_to_pdf

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out, build_html(run))
    result = {"html": out, "pdf": None}
    if pdf is not None:
        result["pdf"] = html_to_pdf(out, Path(pdf))
    return result
