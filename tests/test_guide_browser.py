"""The guide in a real headless Chromium, driven over the DevTools protocol: it loads without console errors,
the stage map navigates, search filters, the theme and code toggles work, and printing gives a PDF with one
section per stage, each starting a page.

No automation package: Chromium's --remote-debugging-pipe speaks CDP as NUL-terminated JSON on file descriptors
3 (in) and 4 (out). Skips cleanly without Chromium (Debian: apt-get install chromium; CI installs it)."""

from __future__ import annotations

import base64
import json
import os
import re
import subprocess
import time
from pathlib import Path

import pytest

from scratchlm.guide import build_guide
from scratchlm.guide.pdf import find_chromium, html_to_pdf
from scratchlm.guide.stages import STAGES

CHROMIUM = find_chromium()
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="Chromium not installed (apt-get install chromium)")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--remote-debugging-pipe"]


class Browser:
    """Just enough of the DevTools protocol: send a command, wait for its reply, keep the events seen meanwhile."""

    def __init__(self, binary: str, profile: Path):
        cmd_r, self._w = os.pipe()
        self._r, reply_w = os.pipe()

        def fds():  # the child reads commands on fd 3 and writes replies on fd 4
            os.dup2(cmd_r, 3)
            os.dup2(reply_w, 4)

        self.proc = subprocess.Popen([binary, *FLAGS, f"--user-data-dir={profile}", "--window-size=1280,900",
                                      "about:blank"], preexec_fn=fds, pass_fds=(3, 4),
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        os.close(cmd_r)
        os.close(reply_w)
        self._buf, self._id, self.events = b"", 0, []
        self.session = None

    def _read_message(self, deadline: float) -> dict:
        while b"\0" not in self._buf:
            if time.monotonic() > deadline:
                raise TimeoutError("Chromium did not answer")
            chunk = os.read(self._r, 1 << 20)
            if not chunk:
                raise RuntimeError("Chromium closed the pipe")
            self._buf += chunk
        raw, self._buf = self._buf.split(b"\0", 1)
        return json.loads(raw)

    def send(self, method: str, params: dict | None = None, timeout: float = 60, page: bool = True) -> dict:
        self._id += 1
        msg = {"id": self._id, "method": method, "params": params or {}}
        if page and self.session:
            msg["sessionId"] = self.session
        os.write(self._w, json.dumps(msg).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while True:
            reply = self._read_message(deadline)
            if reply.get("id") == self._id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})
            self.events.append(reply)

    def wait_event(self, method: str, timeout: float = 30) -> dict:
        deadline = time.monotonic() + timeout
        for ev in self.events:
            if ev.get("method") == method:
                return ev
        while True:
            ev = self._read_message(deadline)
            self.events.append(ev)
            if ev.get("method") == method:
                return ev

    def open(self, url: str) -> None:
        target = self.send("Target.createTarget", {"url": "about:blank"}, page=False)["targetId"]
        self.session = self.send("Target.attachToTarget", {"targetId": target, "flatten": True},
                                 page=False)["sessionId"]
        for domain in ("Page", "Runtime", "Log"):
            self.send(f"{domain}.enable")
        self.send("Page.navigate", {"url": url})
        self.wait_event("Page.loadEventFired")

    def js(self, expression: str):
        r = self.send("Runtime.evaluate", {"expression": expression, "returnByValue": True, "awaitPromise": True})
        if "exceptionDetails" in r:
            raise AssertionError(f"{expression}: {r['exceptionDetails']}")
        return r["result"].get("value")

    def until(self, expression: str, timeout: float = 5.0):
        deadline = time.monotonic() + timeout
        while True:
            v = self.js(expression)
            if v or time.monotonic() > deadline:
                return v
            time.sleep(0.1)

    def errors(self) -> list[str]:
        out = []
        for ev in self.events:
            m, p = ev.get("method"), ev.get("params", {})
            if m == "Runtime.exceptionThrown":
                d = p.get("exceptionDetails", {})
                out.append((d.get("exception", {}).get("description") or d.get("text", ""))[:300])
            elif m == "Runtime.consoleAPICalled" and p.get("type") in ("error", "assert"):
                out.append(json.dumps(p.get("args", []))[:300])
            elif m == "Log.entryAdded" and p.get("entry", {}).get("level") == "error":
                out.append(p["entry"].get("text", "")[:300])
        return out

    def close(self) -> None:
        try:
            self.send("Browser.close", page=False, timeout=5)
        except (RuntimeError, TimeoutError, OSError):
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        os.close(self._w)
        os.close(self._r)


def outline(pdf: bytes) -> list[tuple[str, int, float]]:
    """(title, page object number, y) of each PDF outline (bookmark) entry Chromium wrote."""
    out = []
    for m in re.finditer(rb"/Title\s*(\((?:[^()\\]|\\.)*\)|<[0-9A-Fa-f]+>)\s*/Dest\s*\[(\d+) 0 R /XYZ [\d.]+ ([\d.]+)", pdf):
        raw = m.group(1)
        if raw.startswith(b"<"):
            title = bytes.fromhex(raw[1:-1].decode()).decode("utf-16")
        else:
            title = raw[1:-1].decode("latin-1")
        out.append((title.lstrip("\ufeff"), int(m.group(2)), float(m.group(3))))
    return out


@pytest.fixture(scope="module")
def guide(tmp_path_factory):
    from test_guide import make_run  # the hand-made demo run folder of the non-browser tests

    tmp = tmp_path_factory.mktemp("guide")
    run = make_run(tmp / "demo")
    out = tmp / "guide.html"
    build_guide(out, run=run)
    return out


@pytest.fixture(scope="module")
def browser(guide, tmp_path_factory):
    b = Browser(CHROMIUM, tmp_path_factory.mktemp("profile"))
    try:
        b.open(guide.resolve().as_uri())
        yield b
    finally:
        b.close()


def test_loads_without_errors(browser):
    assert browser.js("document.title").startswith("Build an LLM")
    assert browser.js("document.querySelectorAll('section.stage').length") == len(STAGES)
    # MathML is laid out by the browser (a formula has width), the SVG charts are drawn
    assert browser.js("document.querySelector('.math math').getBoundingClientRect().width") > 20
    assert browser.js("document.querySelector('svg.chart polyline').getBBox().width") > 100
    assert browser.js("document.querySelectorAll('nav.map li[data-status=done]').length") == len(STAGES)
    assert browser.errors() == []


def test_navigation(browser):
    browser.js("document.querySelector('nav.map a[data-target=stage-inference]').click()")
    assert browser.until("location.hash === '#stage-inference' && "
                         "Math.abs(document.getElementById('stage-inference').getBoundingClientRect().top) < 120 && "
                         "document.querySelector('nav.map a.current').dataset.target === 'stage-inference'")
    browser.js("document.dispatchEvent(new KeyboardEvent('keydown', {key: 'n'}))")
    assert browser.until("document.querySelector('nav.map a.current').dataset.target === 'stage-eval'")
    browser.js("document.dispatchEvent(new KeyboardEvent('keydown', {key: 'p'}))")
    browser.js("document.dispatchEvent(new KeyboardEvent('keydown', {key: 'p'}))")
    assert browser.until("document.querySelector('nav.map a.current').dataset.target === 'stage-posttrain'")
    browser.js("document.querySelector('#stage-posttrain nav.pager a:last-child').click()")
    assert browser.until("location.hash === '#stage-inference'")
    assert browser.errors() == []


def search(browser, query: str) -> None:
    browser.js(f"{{ const s = document.getElementById('search'); s.value = {json.dumps(query)};"
               "s.dispatchEvent(new Event('input')); }")


VISIBLE_STAGES = "[...document.querySelectorAll('section.stage:not(.search-hidden)')].map(s => s.dataset.stage)"


def test_search(browser):
    search(browser, "speculative decoding")
    assert browser.js(VISIBLE_STAGES) == ["inference"]
    texts = browser.js("[...document.querySelectorAll('section.stage .topic:not(.search-hidden)')]"
                       ".map(t => t.textContent.toLowerCase())")
    assert texts and all("speculative" in t and "decoding" in t for t in texts)
    assert browser.js("document.getElementById('search-count').textContent").endswith(("section", "sections"))
    assert browser.js("document.querySelector('nav.map a[data-target=stage-inference]').parentElement"
                      ".classList.contains('hit')")
    search(browser, "minhash")
    assert "data" in browser.js(VISIBLE_STAGES)
    search(browser, "zzqx-no-such-words")
    assert browser.js(VISIBLE_STAGES) == []
    assert browser.js("document.getElementById('no-results').hidden") is False
    browser.js("document.getElementById('search').dispatchEvent(new KeyboardEvent('keydown', {key: 'Escape'}))")
    assert browser.js(VISIBLE_STAGES) == [s.key for s in STAGES]
    assert browser.errors() == []


def test_theme_and_code_toggles(browser):
    before = browser.js("document.documentElement.dataset.theme")
    bg = browser.js("getComputedStyle(document.body).backgroundColor")
    browser.js("document.getElementById('theme').click()")
    assert browser.js("document.documentElement.dataset.theme") != before
    assert browser.js("getComputedStyle(document.body).backgroundColor") != bg
    assert browser.js("[...document.querySelectorAll('details.snippet')].every(d => d.open)")
    browser.js("document.getElementById('toggle-code').click()")
    assert browser.js("[...document.querySelectorAll('details.snippet')].every(d => !d.open)")
    browser.js("document.getElementById('toggle-code').click()")
    assert browser.js("[...document.querySelectorAll('details.snippet')].every(d => d.open)")
    assert browser.errors() == []


def check_pdf(pdf: bytes) -> None:
    assert pdf.startswith(b"%PDF")
    n_pages = len(re.findall(rb"/Type\s*/Page\b", pdf))
    marks = outline(pdf)
    heads = []
    for i, st in enumerate(STAGES):
        found = [m for m in marks if m[0].startswith(f"{i + 1} {st.title}")]
        assert len(found) == 1, (st.title, [m[0] for m in marks][:40])
        heads.append(found[0])
    pages = [h[1] for h in heads]
    assert len(set(pages)) == len(STAGES)          # one section per stage, each on its own page
    assert all(h[2] > 700 for h in heads)          # ...starting at the top of that page (A4 is 842 pt high)
    assert n_pages >= len(STAGES) + 1


def test_print_to_pdf_via_devtools(browser):
    browser.js("document.documentElement.dataset.theme = 'dark'")  # print must still come out on white paper
    r = browser.send("Page.printToPDF", {"printBackground": True, "preferCSSPageSize": True,
                                         "generateDocumentOutline": True}, timeout=120)
    check_pdf(base64.b64decode(r["data"]))
    assert browser.errors() == []


def test_error_capture_works(browser):
    """The "no console errors" checks above could not fail if errors were not captured: make sure they are."""
    browser.js("console.error('probe-7f3a')")
    browser.send("Runtime.evaluate", {"expression": "setTimeout(() => { throw new Error('thrown-7f3a') }, 0)"})
    assert browser.until("new Promise(r => setTimeout(() => r(true), 100))")
    browser.send("Runtime.evaluate", {"expression": "1"})  # collect the events that arrived meanwhile
    joined = " ".join(browser.errors())
    assert "probe-7f3a" in joined and "thrown-7f3a" in joined


def test_cli_pdf(guide, tmp_path):
    """The `--pdf` path: a separate Chromium process with --print-to-pdf."""
    pdf = html_to_pdf(guide, tmp_path / "guide.pdf")
    check_pdf(pdf.read_bytes())
