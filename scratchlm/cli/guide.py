"""`scratchlm guide`: the interactive build roadmap as one self-contained HTML file (and a PDF)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

EXAMPLES = """\
examples:
  scratchlm guide --out guide.html                          # the book alone: every stage, its math and code
  scratchlm guide --run runs/demo --out guide.html          # plus your demo run's curves, reports and samples
  scratchlm guide --run runs/demo --out guide.html --pdf guide.pdf   # and a PDF (needs Chromium)
  scratchlm guide --run runs/pretrain --out pretrain.html   # a single stage's run folder works too

The HTML file has no external assets: open it offline in any browser. Keys: / search, n / p next / previous
stage. Print -> Save as PDF gives the same book as --pdf (one stage per page run).
--pdf uses headless Chromium (Debian/Ubuntu: apt-get install chromium; or set CHROMIUM=/path/to/chrome).
"""


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "guide", help="write the interactive build roadmap (HTML, optionally PDF)",
        description="Write the guide: every stage of building an LLM with its explanation, math, the package's "
                    "own code and the command that runs it; with --run, that run's own figures.",
        epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", type=Path, default=None,
                   help="a run folder (runs/demo, or one stage's run) whose results the guide shows")
    p.add_argument("--pdf", type=Path, default=None, help="also print the guide to this PDF (headless Chromium)")
    p.add_argument("--out", type=Path, default=Path("guide.html"), help="HTML file to write (default: guide.html)")
    # Only the logging flags of the common set: the guide has no seed, device or config.
    p.add_argument("-v", "--verbose", action="count", default=0, help="more logging (and tracebacks)")
    p.add_argument("-q", "--quiet", action="count", default=0, help="less logging")
    p.set_defaults(func=run)


def run(args) -> int:
    from scratchlm.guide import build_guide
    from scratchlm.guide.pdf import find_chromium

    if args.out.suffix.lower() not in (".html", ".htm"):
        raise ValueError(f"--out {args.out}: the guide is an HTML file; name it e.g. guide.html")
    if args.pdf is not None and find_chromium() is None:
        from scratchlm.guide.pdf import HOW_TO_GET

        # The HTML is still useful: write it, then say how to get the PDF.
        build_guide(args.out, run=args.run)
        print(f"wrote {args.out}")
        print(f"error: --pdf: {HOW_TO_GET}", file=sys.stderr)
        return 2
    result = build_guide(args.out, run=args.run, pdf=args.pdf)
    print(f"wrote {result['html']}  (open it in a browser: file://{Path(result['html']).resolve()})")
    if result["pdf"] is not None:
        print(f"wrote {result['pdf']}")
    return 0
