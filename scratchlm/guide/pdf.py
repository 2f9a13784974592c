"""The guide as a PDF, printed by headless Chromium from the HTML file (the same print stylesheet a reader's
Print -> Save as PDF uses: one stage per page run, code unfolded, light colours)."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome")
# No network, no first-run UI, no background services: printing a local file must not phone home.
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--disable-extensions", "--mute-audio")
HOW_TO_GET = ("no Chromium found to render the PDF. Install it (Debian/Ubuntu: sudo apt-get install chromium; "
              "macOS: brew install --cask chromium) or set CHROMIUM=/path/to/chrome, or open the HTML guide in any "
              "browser and use Print -> Save as PDF")


def find_chromium() -> str | None:
    """$CHROMIUM, else the first Chromium/Chrome on PATH."""
    env = os.environ.get("CHROMIUM")
    if env:
        return env if Path(env).is_file() or shutil.which(env) else None
    return next((p for p in map(shutil.which, CANDIDATES) if p), None)


def html_to_pdf(html_path: str | Path, pdf_path: str | Path, chromium: str | None = None,
                timeout: float = 180.0) -> Path:
    """Print `html_path` to `pdf_path` with headless Chromium. FileNotFoundError (with how to get it) if absent."""
    chromium = chromium or find_chromium()
    if chromium is None:
        raise FileNotFoundError(HOW_TO_GET)
    html_path, pdf_path = Path(html_path).resolve(), Path(pdf_path).resolve()
    pdf_path.parent.mkdir(parents=True, exist_ok=True)
    tmp_pdf = pdf_path.with_name(pdf_path.name + ".tmp")
    with tempfile.TemporaryDirectory(prefix="scratchlm-chromium-") as profile:
        cmd = [chromium, *FLAGS, f"--user-data-dir={profile}", "--no-pdf-header-footer",
               "--generate-pdf-document-outline", f"--print-to-pdf={tmp_pdf}", html_path.as_uri()]
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            raise RuntimeError(f"Chromium did not finish printing {html_path} within {timeout:.0f} s") from None
    if proc.returncode != 0 or not tmp_pdf.is_file() or tmp_pdf.stat().st_size == 0:
        tail = (proc.stderr or "").strip().splitlines()[-3:]
        tmp_pdf.unlink(missing_ok=True)
        raise RuntimeError(f"Chromium failed to print the PDF (exit {proc.returncode}): {' | '.join(tail)}")
    os.replace(tmp_pdf, pdf_path)
    return pdf_path
