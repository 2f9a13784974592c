"""Issue 18.1, defaults that fit the content: a novel, a folder of Markdown notes, a Python repository and a chat
export each go through `data prepare` with no flags and keep >= 90% of their bytes; the presets still remove the
junk they are for; the web preset decides as before; every run ends with a table and, when most bytes go, a warning.

The four inputs are built here, on a bare machine: TinyWorld stories hard-wrapped at 70 columns under CHAPTER
headings (the novel), generated notes with headings, lists, tables, code and links, this repository's own scratchlm/
package (the Python repository) and TinyWorld instructions as OpenAI-style chat messages (the export).
"""

import json
import re
import textwrap
from pathlib import Path

import numpy as np
import pytest

from scratchlm.cli.main import main
from scratchlm.data.quality import PRESETS, QualityConfig, quality_reason
from scratchlm.data.sources import SourceConfig, input_kind, read_source

from conftest import builtin_corpus, shared_path

ROOT = Path(__file__).resolve().parents[1]
ROMAN = "I II III IV V VI VII VIII IX X XI XII XIII XIV XV XVI XVII XVIII XIX XX".split()


# ---------------------------------------------------------------------------------------------------- the inputs

def write_novel(path: Path, n_bytes: int = 300_000) -> Path:
    """TinyWorld stories as a hard-wrapped book: 20 chapters, 70 columns, blank lines between paragraphs."""
    docs = builtin_corpus(n_bytes)
    per = len(docs) // len(ROMAN)
    parts = []
    for c, numeral in enumerate(ROMAN):
        parts.append(f"CHAPTER {numeral}.")
        parts += [textwrap.fill(d, 70) for d in docs[c * per:(c + 1) * per]]
    path.write_text("\n\n".join(parts) + "\n", encoding="utf-8")
    return path


def write_notes(folder: Path, n: int = 60) -> Path:
    """Markdown notes as people keep them: headings, prose, bullet and todo lists, a table, a code block, links,
    tags; some long, some a few lines."""
    rng = np.random.default_rng(0)
    docs = builtin_corpus(400_000)
    picks = rng.permutation(len(docs))
    folder.mkdir(parents=True)
    for i in range(n):
        story, other = docs[picks[2 * i]], docs[picks[2 * i + 1]]
        sentences = re.split(r"(?<=[.!?]) ", other)
        parts = [f"# Note {i}", f"Tags: #notes #idea{i % 7}", story]
        kind = i % 6
        if kind == 0:
            parts.append("## To do\n\n" + "\n".join(f"- [{' x'[j % 2]}] {s}" for j, s in enumerate(sentences[:6])))
        elif kind == 1:
            parts.append("| day | what | hours |\n|-----|------|-------|\n" + "\n".join(
                f"| {d} | {s.split()[0]} {s.split()[-1]} | {h} |" for d, s, h in zip(["Mon", "Tue", "Wed"], sentences, [2, 3.5, 1])))
        elif kind == 2:
            parts.append("Some code I keep needing:\n\n```python\ndef count_words(text):\n    counts = {}\n"
                         "    for w in text.split():\n        counts[w] = counts.get(w, 0) + 1\n    return counts\n```")
        elif kind == 3:
            parts.append(f"See [the docs](https://example.org/docs/page-{i}) and [[Note {i + 1}]]. " + other)
        elif kind == 4:
            parts = parts[:1] + ["- " + s for s in sentences[:5]]  # a short list-only note
        else:
            parts.append("## Later\n\n" + other)
        (folder / f"note_{i:02d}.md").write_text("\n\n".join(parts) + "\n", encoding="utf-8")
    return folder


def write_chat_export(path: Path, n: int = 400) -> Path:
    """TinyWorld instructions as an OpenAI-style chat export: {"messages": [...]} per line, some with a system
    turn, some two exchanges long."""
    from scratchlm.data.tinyworld import iter_instructions

    it = iter_instructions("train", seed=0)
    with open(path, "w", encoding="utf-8") as f:
        for i in range(n):
            messages = [{"role": "system", "content": "You are a helpful assistant for children."}] if i % 3 == 0 else []
            for _ in range(1 + (i % 4 == 0)):
                r = next(it)
                messages += [{"role": "user", "content": r["instruction"] + (f"\n\n{r['input']}" if r["input"] else "")},
                             {"role": "assistant", "content": r["output"]}]
            f.write(json.dumps({"id": f"conv{i}", "messages": messages}) + "\n")
    return path


def prepare(inputs, out: Path, *flags) -> dict:
    """`scratchlm data prepare` with no flags but the inputs and -q; the report."""
    assert main(["data", "prepare", "--input", *map(str, inputs), "--workers", "1", "--out", str(out), "-q",
                 *flags]) == 0
    return json.loads((out / "report.json").read_text())


def kept(report: dict) -> float:
    return report["bytes_out"] / report["bytes_in"]


# ---------------------------------------------------------------------------------------------------- the goal

OWN_TEXT = {  # input -> (builder, the preset auto must choose)
    "novel": (lambda d: write_novel(d / "novel.txt"), "books"),
    "notes": (lambda d: write_notes(d / "notes"), "books"),
    "repo": (lambda d: ROOT / "scratchlm", "code"),
    "chat": (lambda d: write_chat_export(d / "chat.jsonl"), "chat"),
}


@pytest.mark.parametrize("name", list(OWN_TEXT))
def test_own_text_keeps_90_percent_of_its_bytes_with_no_flags(tmp_path, capsys, name):
    build, preset = OWN_TEXT[name]
    src = build(tmp_path)
    assert main(["data", "prepare", "--input", str(src), "--workers", "1", "--out", str(tmp_path / "out")]) == 0
    out = capsys.readouterr().out
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert kept(report) >= 0.90, (name, kept(report), format_report_lines(report))
    assert list(report["presets"]) == [preset] and out.startswith(f"preset {preset} (auto: ")
    if name == "novel":  # its chapters: not one giant document, nor thousands of paragraphs
        assert report["docs_in"] == len(ROMAN) and "split: chapters or blank-line paragraphs, joined to >= 2,000" in out
    if name == "repo":  # one document per source file
        assert report["docs_in"] == sum(1 for p in src.rglob("*") if p.suffix in (".py", ".js", ".css", ".html")
                                         and "__pycache__" not in p.parts and p.stat().st_size)


def format_report_lines(report):
    from scratchlm.data.pipeline import format_report

    return format_report(report)


def test_gutenberg_books_keep_90_percent_of_their_bytes_with_no_flags(tmp_path):
    """Real public-domain novels (Alice, Pride and Prejudice, Moby Dick), as a user would pass them."""
    books = sorted(shared_path("gutenberg").glob("*.txt"))
    assert books
    for book in books:
        report = prepare([book], tmp_path / book.stem)
        assert kept(report) >= 0.90, (book.name, kept(report))
        assert 10 <= report["docs_in"] <= 200, (book.name, report["docs_in"])  # chapters, give or take
        assert list(report["presets"]) == ["books"]


# ---------------------------------------------------------------------------------------------------- cutting text

def test_chapter_split_finds_documents(tmp_path, monkeypatch):
    import scratchlm.data.chapters as chapter_split

    def docs(text, name="a.txt", **kw):
        f = tmp_path / name
        f.write_text(text, encoding="utf-8")
        return [d["text"] for d in read_source(str(f), SourceConfig(text_split="auto", **kw))]

    para = "word " * 99 + "end."  # 499 characters
    chapters = "".join(f"Chapter {i}\n\n" + "\n\n".join([para] * (i + 4)) + "\n\n" for i in range(1, 5))
    got = docs(chapters)
    assert [d.split("\n", 1)[0] for d in got] == ["Chapter 1", "Chapter 2", "Chapter 3", "Chapter 4"]
    assert "".join(got).replace("\n", "") == chapters.replace("\n", "")  # nothing lost, nothing added
    # chapters shorter than min_doc_chars are joined to the next
    assert [d.count("Chapter") for d in docs(chapters, min_doc_chars=3000)] == [2, 1, 1]
    # no headings: paragraphs joined until a document holds 2,000 characters; a short tail joins the last one
    plain = docs("\n\n".join([para] * 9 + ["The end."]))
    assert [len(d) for d in plain] == [4 * 499 + 3 * 2, 4 * 499 + 3 * 2 + 2 + 499 + 2 + 8]
    # no blank line at all (one paragraph per line): lines are the paragraphs
    assert len(docs("\n".join([para] * 8))) == 2
    # source code is one document per file, whatever it holds
    code = "def f():\n    return 1\n\n\n\n" * 300
    assert docs(code, "m.py") == [code]
    # the choice is made on a bounded look-ahead (here: two headings in the first 4 KB); where it ends, mid-chapter
    # or mid-paragraph, changes nothing
    for ahead in (4000, 4321):
        monkeypatch.setattr(chapter_split, "LOOKAHEAD_BYTES", ahead)
        assert docs(chapters) == got
        assert docs("\n\n".join([para] * 9 + ["The end."])) == plain


def test_inputs_are_recognised_by_what_they_hold(tmp_path):
    chat = write_chat_export(tmp_path / "chat.jsonl", n=30)
    rows = tmp_path / "web.jsonl"
    rows.write_text("".join(json.dumps({"text": t}) + "\n" for t in builtin_corpus(20_000)))
    alpaca = tmp_path / "alpaca.json"
    alpaca.write_text(json.dumps([{"instruction": "Add 2 and 3.", "input": "", "output": "5"}] * 3))
    pairs = tmp_path / "prefs.jsonl"
    pairs.write_text(json.dumps({"prompt": "Hi?", "chosen": "Hello!", "rejected": "Go away."}) + "\n")
    assert [input_kind(str(p)) for p in (chat, rows, alpaca, pairs, ROOT / "scratchlm" / "config.py",
                                         ROOT / "README.md")] == ["chat", "rows", "chat", "chat", "code", "text"]
    # a chat row's text is its conversation; a preference pair's is the chosen answer, never the rejected one
    assert next(read_source(str(alpaca)))["text"] == "User: Add 2 and 3.\n\nAssistant: 5"
    assert next(read_source(str(pairs)))["text"] == "User: Hi?\n\nAssistant: Hello!"
    first = next(read_source(str(chat)))["text"]
    assert first.startswith("System: You are a helpful assistant") and "\n\nUser: " in first and "\n\nAssistant: " in first


# ---------------------------------------------------------------------------------------------------- junk still goes

def story(i: int = 0) -> str:
    return builtin_corpus(60_000)[10 + i]


def prose(i: int = 0) -> str:
    """A few stories in one paragraph: a document every preset keeps."""
    return " ".join(story(k) for k in range(10 * i, 10 * i + 6))


BOOKS_JUNK = {  # what a folder of prose should still lose under the books preset (test_data_pipeline's junk first)
    "gopher_word_count": lambda: "Too short to be a document.",
    "gopher_alpha_words": lambda: " ".join(["1234 5678 9012 the and of"] * 30),
    "c4_lorem_ipsum": lambda: prose() + " Lorem ipsum dolor sit amet.",
    "gopher_dup_line_frac": lambda: "The same line again.\n" * 200,
    "gopher_dup_line_char_frac": lambda: "\n".join([story(1) + " " + story(2), "A line.", "Another one.",
                                                     "And more.", story(1) + " " + story(2)]),  # a pasted twice
    "gopher_top_2gram": lambda: "cheap pills " * 200 + story(3),
    "gopher_mean_word_length": lambda: " ".join("a b c d e f g h i j k l m n o p".split() * 3),
}
CODE_JUNK = {
    "code_max_line_length": lambda: "var a=[" + ",".join(str(i) for i in range(400)) + "];\n",
    "code_mean_line_length": lambda: "\n".join("x_%d = '%s'" % (i, "ab" * 60) for i in range(30)),
    "code_alnum_frac": lambda: "+----+----+\n|    |    |\n" * 40,
    "code_generated": lambda: "# Generated by the protocol buffer compiler.  DO NOT EDIT!\nimport sys\n",
}


@pytest.mark.parametrize("preset,junk", [("books", BOOKS_JUNK), ("code", CODE_JUNK)])
def test_presets_still_remove_the_junk_they_are_for(tmp_path, preset, junk):
    from scratchlm.data.normalize import normalize_text
    from scratchlm.data.pipeline import document_reason, preset_config

    cfg = preset_config(preset)
    for reason, make in junk.items():
        assert document_reason(normalize_text(make(), cfg.normalize), cfg) == reason, reason
    good = [d["text"] for d in read_source(str(write_novel(tmp_path / "novel.txt", 60_000)), cfg.source)] \
        if preset == "books" else [p.read_text() for p in sorted((ROOT / "scratchlm" / "data").glob("*.py"))]
    assert all(document_reason(normalize_text(t, cfg.normalize), cfg) is None for t in good)


def test_chat_rows_are_never_web_filtered_but_blank_ones_go(tmp_path):
    f = tmp_path / "chat.jsonl"
    rows = [{"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello! {brace}"}]},
            {"messages": [{"role": "user", "content": " "}, {"role": "assistant", "content": ""}]},
            {"instruction": "2+2?", "input": "", "output": "4"}]
    f.write_text("".join(json.dumps(r) + "\n" for r in rows))
    report = prepare([f], tmp_path / "out")
    assert report["docs_out"] == 2 and set(report["removed"]) == {"empty"}  # short, braces: kept; blank: gone


def test_web_preset_decides_as_before(tmp_path):
    """The web preset is the old default, value for value; rows with a text field get it with no flags, and the
    junk of test_data_pipeline is removed for the same reasons."""
    from dataclasses import asdict

    from scratchlm.data.normalize import normalize_text
    from scratchlm.data.pipeline import PipelineConfig, document_reason, preset_config
    from scratchlm.data.quality import c4_clean_lines

    assert asdict(preset_config("web")) == asdict(PipelineConfig())
    assert PipelineConfig().filters == ["gopher_quality", "gopher_repetition", "c4", "fineweb"]
    assert PipelineConfig().c4_clean_lines and PipelineConfig().source.text_split == "file"
    assert PRESETS["web"].quality == {} and QualityConfig().min_words == 50 and QualityConfig().c4_drop_curly_brace
    web_junk = {"gopher_word_count": "Too short to be a document.",
                "gopher_alpha_words": " ".join(["1234 5678 9012 the and of"] * 30),
                "c4_lorem_ipsum": prose() + " Lorem ipsum dolor sit amet.",
                "c4_curly_brace": prose(1) + " function f() { return 1; }"}
    docs = builtin_corpus(200_000)[:300] + list(web_junk.values())
    f = tmp_path / "crawl.jsonl"
    f.write_text("".join(json.dumps({"text": t}) + "\n" for t in docs))
    cfg = PipelineConfig()
    cfg.dedup.exact = cfg.dedup.near = False
    expect = []
    for t in docs:
        text, _ = c4_clean_lines(normalize_text(t), cfg.quality)
        expect.append(document_reason(text, cfg))
    report = prepare([f], tmp_path / "out", "--set", "dedup.exact=false", "--set", "dedup.near=false")
    assert list(report["presets"]) == ["web"]
    assert report["docs_out"] == expect.count(None) and 0 < expect.count(None) < len(docs)
    assert {r: v["docs"] for r, v in report["removed"].items()} == {
        r: expect.count(r) for r in set(expect) - {None}}
    assert all(r in report["removed"] for r in web_junk)
    # the rule is the published one: quality_reason without a filter list is the web stack
    assert quality_reason(prose(1) + " { }", QualityConfig()) == "c4_curly_brace"


# ---------------------------------------------------------------------------------------------------- what is shown

def test_every_run_ends_with_a_table_and_a_warning_when_most_bytes_go(tmp_path, capsys):
    novel = write_novel(tmp_path / "novel.txt", 120_000)
    # the web filters on a book's chapters: most of it goes (web pages are 5-20x shorter: Gopher's repeated n-gram
    # limits count a chapter's recurring names and phrases as spam), and the run says why and what to do
    assert main(["data", "prepare", "--input", str(novel), "--preset", "web", "--text-split", "chapter",
                 "--workers", "1", "--out", str(tmp_path / "web")]) == 0
    cap = capsys.readouterr()
    report = json.loads((tmp_path / "web" / "report.json").read_text())
    assert kept(report) < 0.5 and report["warnings"] and cap.err.count("warning:") == 1
    warning = next(line for line in cap.err.splitlines() if line.startswith("warning:"))
    top = max(report["removed"], key=lambda r: report["removed"][r]["bytes"] or 0)
    assert f"({top}: " in warning and "--set quality." in warning and "--preset books" in warning
    assert cap.out.startswith("preset web (--preset web, 1 file), split: chapters or blank-line paragraphs")
    table = cap.out[cap.out.index("documents"):]
    assert re.search(r"^read\s+[\d,]+\s+100\.0\s+[\d.]+ KB\s+100\.0$", table, re.M)
    assert re.search(r"^kept\s+[\d,]+\s+[\d.]+\s", table, re.M)
    for reason, r in report["removed"].items():  # a row per reason, in words, with at most two short examples
        assert re.search(rf"^  {reason}\s+{r['docs']:,}\s", table, re.M), reason
        shown = re.search(rf"^  {reason} .*\n((?:      e\.g\. .*\n)*)", table, re.M).group(1)
        assert 1 <= shown.count('e.g. "') <= 2 and all(len(x) <= 90 for x in re.findall(r'e\.g\. "(.*)"', shown))
    assert "removed by Gopher repetition" in table and "repeated 5-word phrases cover over 15% of the text" in table
    # the same book with no flags: no warning, nearly everything kept
    assert main(["data", "prepare", "--input", str(novel), "--workers", "1", "--out", str(tmp_path / "auto")]) == 0
    cap = capsys.readouterr()
    assert "warning" not in cap.err and cap.out.startswith("preset books (auto: plain text, 1 file), split: chapters")


def test_the_choice_is_printed_and_can_be_overridden(tmp_path, capsys):
    novel = write_novel(tmp_path / "novel.txt", 60_000)

    def run(*flags):
        code = main(["data", "filter", "--input", str(novel), "--workers", "1", "--out", str(tmp_path / "f"),
                     "--overwrite", *flags])
        cap = capsys.readouterr()
        report = tmp_path / "f" / "report.json"
        return code, cap.out.splitlines()[0] if cap.out else "", cap.err, json.loads(
            report.read_text()) if report.exists() else None

    code, line, _, rep = run("--preset", "prose")
    assert line == "preset books (--preset prose, 1 file), split: chapters or blank-line paragraphs, joined to >= 2,000 chars"
    assert list(rep["presets"]) == ["books"]
    code, line, _, rep = run("--set", "preset=code")
    assert line.startswith("preset code (--set preset=code, 1 file)") and rep["presets"]["code"]["config"]["filters"] == ["code"]
    # a threshold set by hand wins over the preset's
    code, _, err, rep = run("--set", "quality.min_words=5000")  # longer than any chapter: nothing kept, and why
    assert code == 2 and "gopher_word_count" in err and rep["presets"]["books"]["config"]["quality"]["min_words"] == 5000
    code, line, _, rep = run("--text-split", "paragraph")
    assert line.endswith("split: one document per blank-line paragraph") and rep["docs_in"] > 100
    code, _, err, _ = run("--preset", "bookz")
    assert code == 2 and err.strip() == "error: unknown preset 'bookz': choose auto, web, books, code, chat, none or prose (= books)"


def test_a_mixed_folder_gets_a_preset_per_file(tmp_path, capsys):
    src = tmp_path / "mine"
    src.mkdir()
    write_novel(src / "novel.txt", 60_000)
    write_chat_export(src / "chat.jsonl", n=50)
    (src / "tool.py").write_text((ROOT / "scratchlm" / "data" / "normalize.py").read_text())
    (src / "crawl.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in builtin_corpus(40_000)[:100]))
    (src / "node_modules").mkdir()  # installed files are not the user's text
    (src / "node_modules" / "lib.js").write_text("var x = 1;\n")
    assert main(["data", "prepare", "--input", str(src), "--workers", "1", "--out", str(tmp_path / "out")]) == 0
    out = capsys.readouterr().out
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert {n: p["files"] for n, p in report["presets"].items()} == {"books": 1, "chat": 1, "web": 1, "code": 1}
    for line in ("preset chat (auto: chat-shaped rows, 1 file), split: one document per row",
                 "preset web (auto: rows with a text field, 1 file), split: one document per row",
                 "preset code (auto: source code, 1 file), split: one document per file"):
        assert line in out
    assert "with preset books (1 file) " in out and "lib.js" not in json.dumps(report)


def test_code_and_chat_are_not_judged_by_tokens_per_word():
    """A tokenizer enables the tokens-per-word filter, tuned for prose (3.0): Python is 2.8 tokens a word under a
    BPE trained on it and 5.5 under one trained on prose, so the code, chat and none presets leave it off."""
    from scratchlm.data.pipeline import document_reason, preset_config

    class Bytes:  # one token per byte: ~6 tokens a word, like source code under a prose tokenizer
        def encode(self, text):
            return list(text.encode())

    source = (ROOT / "scratchlm" / "data" / "normalize.py").read_text()
    assert document_reason(source, preset_config("code"), Bytes()) is None
    assert document_reason("User: hi\n\nAssistant: " + source, preset_config("chat"), Bytes()) is None
    assert document_reason(prose(), preset_config("books"), Bytes()) == "token_word_ratio"
    assert document_reason(source, preset_config("code", overrides=["quality.max_tokens_per_word=3"]), Bytes()) \
        == "token_word_ratio"


def test_bad_inputs_to_the_new_readers_are_reported_not_fatal(tmp_path, capsys):
    rows = [{"messages": [1, 2]}, {"messages": [{"role": None, "content": "x"}]}, "{broken",
            {"conversations": [{"from": "human", "value": "Hi"}, {"from": "gpt", "value": "Hello"}]},
            {"instruction": "x", "output": None}, {"prompt": "p", "chosen": {"role": "assistant", "content": "c"}, "rejected": "r"}]
    f = tmp_path / "chat.jsonl"
    f.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    problems = []
    got = [d["text"] for d in read_source(str(f), SourceConfig(), problems)]
    assert got == ["User: Hi\n\nAssistant: Hello", "User: p\n\nAssistant: c"]
    assert [(p.problem, p.line) for p in problems] == [("missing_field", 1), ("missing_field", 2), ("bad_json", 3),
                                                        ("missing_field", 5)]
    # a line over max_doc_bytes inside a book: named and skipped, the chapters around it kept
    book = tmp_path / "book.txt"
    book.write_text("Chapter 1\n\n" + "word " * 500 + "\n\n" + "x" * 6000 + "\n\nChapter 2\n\n" + "more " * 500 + "\n")
    problems = []
    got = [d["text"] for d in read_source(str(book), SourceConfig(text_split="auto", max_doc_bytes=5000), problems)]
    assert [t.split("\n")[0] for t in got] == ["Chapter 1", "Chapter 2"] and "x" * 100 not in "".join(got)
    assert [(p.problem, p.line) for p in problems] == [("too_long", 5)]
    # settings out of range or unknown: one line, exit 2
    for flags, message in ((["--set", "preset=1"], "unknown preset 1: choose auto, web, books"),
                           (["--set", "source.min_doc_chars=0"], "source.min_doc_chars: 0 is out of range"),
                           (["--preset", "web", "--set", "quality.code_min_alnum_frac=2"], "out of range")):
        assert main(["data", "prepare", "--input", str(book), "--out", str(tmp_path / "o"), "-q", *flags]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and message in err, err
