"""The guide: every named snippet still exists and is cut out exactly, formulas render, commands parse with the
real CLI, run folders are read into the right figures, and the page is self-contained."""

from __future__ import annotations

import argparse
import html
import importlib
import inspect
import json
import re
import shlex
import textwrap
from pathlib import Path

import pytest

from scratchlm.guide import build_html
from scratchlm.guide.extract import extract
from scratchlm.guide.highlight import highlight_python
from scratchlm.guide.math import to_mathml
from scratchlm.guide.plots import line_chart, nice_ticks
from scratchlm.guide.render import inline
from scratchlm.guide.run_data import load_run
from scratchlm.guide.stages import STAGES

REPO = Path(__file__).resolve().parents[1]
ALL_CODE = sorted({q for st in STAGES for t in st.topics for q in t.code})


def test_stages_cover_the_issue_list():
    keys = [s.key for s in STAGES]
    assert keys == ["data", "tokenizer", "model", "pretrain", "scaling", "posttrain", "inference", "eval"]
    titles = " ".join(t.title for s in STAGES for t in s.topics).lower()
    for topic in ("sources", "quality", "toxicity", "minhash", "bpe", "vocabulary", "embeddings", "rope",
                  "grouped-query", "swiglu", "rmsnorm", "block", "output head", "objective", "adamw", "schedules",
                  "clipping", "mixed precision", "activation checkpointing", "6nd", "chinchilla", "memory", "ddp",
                  "fsdp", "tensor", "pipeline", "sft", "dpo", "rlhf", "grpo", "kv cache", "sampling",
                  "speculative", "flash attention", "bits per byte", "hellaswag", "gsm8k"):
        assert topic in titles, topic
    for st in STAGES:
        assert st.commands, st.key
        assert all(t.code for t in st.topics if t.title not in ("Vocabulary size",)), st.key


@pytest.mark.parametrize("qualname", ALL_CODE)
def test_every_snippet_exists_and_round_trips(qualname):
    s = extract(qualname)  # raises LookupError when a name disappears: the guide cannot drift
    src_lines = (REPO / s.path).read_text(encoding="utf-8").splitlines()[s.start - 1:s.end]
    assert s.code == textwrap.dedent("\n".join(src_lines))
    assert s.code.lstrip().startswith(("def ", "class ", "@", "async def "))
    # the highlighter only adds markup: strip it and the exact source comes back
    assert html.unescape(re.sub(r"<[^>]+>", "", highlight_python(s.code))) == s.code


@pytest.mark.parametrize("module, attrs", [("scratchlm.model.layers", "apply_rope"),
                                           ("scratchlm.model.attention", "Attention.forward"),
                                           ("scratchlm.tokenizer.train", "learn_merges"),
                                           ("scratchlm.posttrain.dpo", "dpo_loss")])
def test_extract_matches_inspect(module, attrs):
    obj = importlib.import_module(module)
    for a in attrs.split("."):
        obj = getattr(obj, a)
    assert extract(f"{module}.{attrs}").code == textwrap.dedent(inspect.getsource(obj)).rstrip("\n")


def test_extract_fails_loudly():
    with pytest.raises(LookupError, match="not found"):
        extract("scratchlm.model.attention.Attention.no_such_method")
    with pytest.raises(LookupError, match="'nope' not found"):
        extract("scratchlm.nope.thing")
    with pytest.raises(LookupError, match="own code"):
        extract("torch.nn.Linear")


def test_highlight_marks_tokens():
    out = highlight_python('@dataclass\ndef f(x):  # why\n    return len("a") + 1\n')
    for frag in ('<span class="d">dataclass</span>', '<span class="k">def</span>', '<span class="f">f</span>',
                 '<span class="c"># why</span>', '<span class="b">len</span>', '<span class="s">&quot;a&quot;</span>',
                 '<span class="n">1</span>'):
        assert frag in out


def test_mathml_exact():
    assert to_mathml(r"\frac{a}{\sqrt{d}}", display=False) == (
        '<math display="inline" alttext="\\frac{a}{\\sqrt{d}}"><mfrac><mi>a</mi><msqrt><mi>d</mi></msqrt></mfrac></math>')
    assert to_mathml(r"x_i^2") == '<math display="block" alttext="x_i^2"><msubsup><mi>x</mi><mi>i</mi><mn>2</mn></msubsup></math>'
    m = to_mathml(r"\sum_{t=1}^{T} \log_2 p")
    assert "<munderover><mo largeop=\"true\" movablelimits=\"false\">\u2211</mo>" in m
    assert '<msub><mi mathvariant="normal">log</mi><mn>2</mn></msub><mo>\u2061</mo>' in m
    assert "<mspace" in to_mathml(r"\log p") and "<mspace" not in to_mathml(r"\log(p)")
    assert "<mtext>bits per byte</mtext>" in to_mathml(r"\text{bits per byte}")
    # spaces at the ends of \text survive (MathML trims plain ones); minus is U+2212, a prefix where a term starts
    assert "<mtext>\u00a0if\u00a0</mtext>" in to_mathml(r"0 \text{ if } j")
    assert '<mspace width="1em"/><mo form="prefix">\u2212</mo><mi>\u221e</mi>' in to_mathml(r"\quad -\infty")
    assert "<mi>a</mi><mo>\u2212</mo><mi>b</mi>" in to_mathml("a - b")
    assert "<mi>\u03b2</mi>" in to_mathml(r"\beta") and "<mi>\U0001d53c</mi>" in to_mathml(r"\mathbb{E}")


@pytest.mark.parametrize("bad", [r"\nosuch{x}", r"\frac{a}", r"x^", r"\left( x", "{x"])
def test_mathml_rejects_bad_input(bad):
    with pytest.raises(ValueError, match="formula"):
        to_mathml(bad)


def test_inline_markup():
    out = inline("a `b<c>` **d** *e* $x^2$")
    assert "<code>b&lt;c&gt;</code>" in out and "<strong>d</strong>" in out and "<em>e</em>" in out
    assert '<math display="inline"' in out
    with pytest.raises(ValueError, match="unbalanced"):
        inline("price $5")


def _parser_for(module: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="scratchlm")
    sub = parser.add_subparsers(dest="command")
    importlib.import_module(f"scratchlm.cli.{module}").register(sub)
    return parser


def test_stage_commands_parse_with_the_real_cli():
    for st in STAGES:
        for cmd in st.commands:
            argv = shlex.split(cmd)
            if argv[0] == "torchrun":  # torchrun --nproc_per_node N -m scratchlm ...
                argv = argv[argv.index("scratchlm"):]
            assert argv[0] == "scratchlm", cmd
            args = _parser_for(argv[1]).parse_args(argv[1:])
            assert args.command == argv[1]
            cfg = getattr(args, "config", None)
            assert cfg is None or (REPO / cfg).is_file(), f"{cmd}: {cfg} does not exist"


# ------------------------------------------------------------------------------------------------ run folders
def make_run(root: Path) -> Path:
    """A small demo-shaped run folder written by hand: data report, tokenizer, pretrain and sft runs, eval."""
    from scratchlm.tokenizer import train_bpe_from_texts

    (root / "data").mkdir(parents=True)
    (root / "data" / "report.json").write_text(json.dumps({
        "docs_in": 100, "bytes_in": 50_000, "docs_out": 80, "bytes_out": 42_000,
        "removed": {"gopher_word_count": {"docs": 15, "bytes": 5000, "examples": ["too short"]},
                    "c4_min_sentences": {"docs": 3, "bytes": 2000, "examples": []}},
        "dedup": {"exact_removed": 1, "near": {"edges": 4, "clusters": 1, "removed": 1, "largest": 2}}}))
    texts = ["Once upon a time there was a little dog named Max. " * 3, "Mia found 12 shiny stones by the sea."] * 20
    train_bpe_from_texts(texts, vocab_size=300).save(root / "tokenizer")
    from scratchlm.model import ModelConfig

    model_cfg = ModelConfig.from_preset("llama-tiny", vocab_size=300, max_seq_len=64).to_dict()
    for name, table in (("pretrain", "[train]\nlr = 0.003\n"), ("sft", "[sft]\nassistant_only = true\n[train]\n")):
        run = root / name
        (run / "checkpoints" / "step_0000010").mkdir(parents=True)
        (run / "checkpoints" / "step_0000010" / "config.json").write_text(json.dumps(model_cfg))
        (run / "checkpoints" / "step_0000010" / "model.safetensors").write_bytes(b"")  # complete, for the finder
        (run / "config.toml").write_text(table)
        rows = [{"step": s, "loss": 6 - s / 5, "lr": 1e-3} for s in range(1, 11)] + [{"step": 10, "val_loss": 4.1}]
        (run / "metrics.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n{\"step\": 11, \"lo")
        (run / "DONE").write_text(json.dumps({"steps": 10, "tokens": 10_240, "params": 12345, "val_loss": 4.1}))
    (root / "sft" / "eval").mkdir()
    (root / "sft" / "eval" / "tinyworld.json").write_text(json.dumps({"task": "tinyworld", "accuracy": 0.25, "n": 40}))
    (root / "report.json").write_text(json.dumps({"steps": {"tokenizer": {"bytes_per_token": 3.1}, "generate": {
        "samples": ["Once upon a time Max ran."], "speculative": {"acceptance_rate": 0.8, "identical_to_greedy": True}}}}))
    return root


def test_run_data_from_a_demo_folder(tmp_path):
    run = load_run(make_run(tmp_path / "demo"))
    assert run.done == {"data": True, "tokenizer": True, "model": True, "pretrain": True, "scaling": True,
                        "posttrain": True, "inference": True, "eval": True}
    titles = {k: [p.title for p in v] for k, v in run.panels.items()}
    assert "Filter report: documents removed by each rule" in titles["data"]
    table = run.panels["data"][0].rows
    assert table[0][1] == "100" and table[1][0] == "− gopher_word_count" and table[-1][1] == "80"
    assert any("tokens" in t for t in titles["tokenizer"])
    assert "pretrain: loss" in titles["pretrain"] and "sft: loss" in titles["posttrain"]
    svg = next(p.body for p in run.panels["pretrain"] if p.title == "pretrain: loss")
    assert svg.count("<polyline") == 1 and svg.count("<circle") == 1  # 10 train points (torn line skipped), 1 val
    assert any("Planner" in t for t in titles["scaling"])
    plan = dict(run.panels["scaling"][0].rows)
    assert plan["parameters N"].replace(",", "").isdigit()
    # an accuracy carries n and its 95% interval, computed from n for a result saved without one
    assert run.panels["eval"][0].rows == [("sft", "tinyworld", "accuracy 25.0% (n=40, 95% 14.2-40.2%)", "40")]
    assert "Once upon a time Max ran." in run.panels["inference"][0].body


def test_run_data_from_a_single_stage_run(tmp_path):
    make_run(tmp_path / "demo")
    run = load_run(tmp_path / "demo" / "pretrain")
    assert run.done["pretrain"] and run.done["model"] and not run.done["data"] and not run.done["posttrain"]
    with pytest.raises(FileNotFoundError, match="no such folder"):
        load_run(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no stage output"):
        load_run(tmp_path / "empty")


def test_plots():
    assert nice_ticks(0, 1) == pytest.approx([0, 0.2, 0.4, 0.6, 0.8, 1.0])
    assert nice_ticks(0, 730) == [0, 200, 400, 600]
    assert nice_ticks(3.2, 6.1)[0] >= 3.2 and nice_ticks(3.2, 6.1)[-1] <= 6.1
    svg = line_chart([("a", [(0, 1.0), (1, float("nan")), (2, 0.5)]), ("b", [])], "t")
    assert svg.startswith("<svg") and svg.count("<polyline") == 1
    assert line_chart([("a", [])], "t") == ""
    # the title names the chart for screen readers; the figure's caption shows it (drawn in the SVG, it printed twice)
    svg = line_chart([("a", [(0, 1.0), (1, 2.0)])], "run: loss")
    assert 'aria-label="run: loss"' in svg and ">run: loss<" not in svg


# ------------------------------------------------------------------------------------------------ the page
def test_page_is_self_contained_and_complete(tmp_path):
    page = build_html(make_run(tmp_path / "demo"))
    # nothing is fetched: no external URLs in src/href, no stylesheets or scripts by reference, no @import
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:|//)""", page)
    assert "<link rel=\"stylesheet\"" not in page and "@import" not in page and "<script src" not in page
    assert not re.search(r"url\((?!data:)", page)
    for st in STAGES:
        assert f'id="stage-{st.key}"' in page
        assert html.escape(st.commands[0]) in page
    assert page.count('<details class="snippet"') == len([q for st in STAGES for t in st.topics for q in t.code])
    assert page.count("<math") > 40
    assert "8 of 8 stages completed" in page
    bare = build_html(None)
    assert "stages completed" not in bare and "In this run" not in bare


def test_cli(tmp_path, capsys):
    from scratchlm.cli.main import main

    out = tmp_path / "g" / "guide.html"
    assert main(["guide", "--out", str(out)]) == 0
    assert out.read_text(encoding="utf-8").startswith("<!doctype html>")
    assert main(["guide", "--out", str(tmp_path / "g.txt")]) == 2
    assert main(["guide", "--run", str(tmp_path / "nope"), "--out", str(out)]) == 2
    assert "no such folder" in capsys.readouterr().err


def test_cli_pdf_without_chromium(tmp_path, capsys, monkeypatch):
    from scratchlm.cli.main import main

    monkeypatch.setenv("CHROMIUM", str(tmp_path / "no-chromium"))
    out = tmp_path / "guide.html"
    assert main(["guide", "--out", str(out), "--pdf", str(tmp_path / "guide.pdf")]) == 2
    captured = capsys.readouterr()
    assert out.is_file() and not (tmp_path / "guide.pdf").exists()
    assert "apt-get install chromium" in captured.err and "Save as PDF" in captured.err


def pdf_text(pdf: Path) -> str:
    """The PDF's text in reading order (poppler's pdftotext, else pypdf), spaces of any kind as one space."""
    import shutil
    import subprocess

    if shutil.which("pdftotext"):
        text = subprocess.run(["pdftotext", str(pdf), "-"], capture_output=True, text=True, check=True).stdout
    else:
        pypdf = pytest.importorskip("pypdf", reason="no PDF text extractor (apt-get install poppler-utils)")
        text = "\n".join(page.extract_text() for page in pypdf.PdfReader(pdf).pages)
    return " ".join(text.replace("\u00a0", " ").split())


def test_pdf_reads_title_contents_charts_and_math_in_order(tmp_path):
    """The printed guide as a reader meets it: the title, then the contents, then the stages; each chart's title
    once (its caption); a formula's words spaced as written."""
    from scratchlm.guide import build_guide
    from scratchlm.guide.pdf import find_chromium

    if find_chromium() is None:
        pytest.skip("Chromium not installed (apt-get install chromium)")
    run = make_run(tmp_path / "demo")
    text = pdf_text(build_guide(tmp_path / "guide.html", run=run, pdf=tmp_path / "guide.pdf")["pdf"])
    title = text.index("Build a large language model from scratch")
    contents = text.index("The build, stage by stage")
    assert title < contents < text.index(f"1 {STAGES[0].title}", contents)
    charts = [p.title for panels in load_run(run).panels.values() for p in panels if p.kind == "svg"]
    assert "pretrain: loss" in charts and "sft: learning rate" in charts
    for chart in charts:
        assert text.count(chart) == 1, chart
    # M_{ij} = 0 \text{ if } j \le i, \quad -\infty \text{ otherwise}: words apart from the symbols, no stray
    # space inside "-infinity" (letters come out as mathematical italic code points)
    # (pdftotext may put a neighbouring formula's line between its two halves)
    assert "\U0001d440\U0001d456\U0001d457 = 0 if \U0001d457 \u2264 \U0001d456," in text
    assert " \u2212\u221e otherwise " in text
    assert "\U0001d443(accept \U0001d451)" in text  # P(\text{accept } d)


def test_data_panel_accepts_dedup_rows_without_bytes(tmp_path):
    """The pipeline reports duplicates by count only (bytes None); the filter table must still render."""
    import json

    from scratchlm.guide.run_data import data_panels

    (tmp_path / "report.json").write_text(json.dumps({
        "docs_in": 10, "bytes_in": 1000, "docs_out": 7, "bytes_out": 700,
        "removed": {"gopher_word_count": {"docs": 2, "bytes": 200, "examples": ["x"]},
                    "near_duplicate": {"docs": 1, "bytes": None, "examples": []}},
        "dedup": {"exact_removed": 0, "near": {"removed": 1}},
    }))
    table = data_panels(tmp_path)[0]
    names = [r[0] for r in table.rows]
    assert "− gopher_word_count" in names and "− MinHash near-duplicates" in names
    assert "− near_duplicate" not in names  # counted once, in the dedup row
