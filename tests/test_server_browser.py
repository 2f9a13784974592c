"""The chat page at `/`, driven in a real headless Chromium over the DevTools protocol.

No browser-automation package is needed: Chromium's --remote-debugging-pipe speaks CDP as NUL-terminated JSON
over file descriptors 3 (commands in) and 4 (replies out). Skips cleanly when Chromium is not installed
(Debian: `apt-get install chromium`)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time

import pytest
import torch

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")

from scratchlm.inference.chat_template import chat_stop_token_ids, encode_chat  # noqa: E402
from scratchlm.inference.engine import Engine  # noqa: E402
from scratchlm.inference.sampling import SamplingParams  # noqa: E402
from scratchlm.inference.server import ServerThread, create_app  # noqa: E402
from scratchlm.inference.testing import ByteTokenizer, MarkovLM  # noqa: E402

CHROMIUM = next((p for p in (os.environ.get("CHROMIUM"), shutil.which("chromium"), shutil.which("chromium-browser"),
                             shutil.which("google-chrome")) if p), None)
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="Chromium not installed (apt-get install chromium)")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--remote-debugging-pipe"]


class SlowMarkov(MarkovLM):
    """A bigram model over printable ASCII that takes 15 ms per forward, so the answer arrives in many chunks."""

    def forward(self, idx, *args, **kwargs):
        time.sleep(0.015)
        return super().forward(idx, *args, **kwargs)


class CDP:
    """Minimal Chrome DevTools Protocol client over --remote-debugging-pipe."""

    def __init__(self, binary: str, user_dir: str):
        to_chrome_r, self._w = os.pipe()
        self._r, from_chrome_w = os.pipe()

        def fds():  # the child reads commands on fd 3 and writes replies on fd 4
            os.dup2(to_chrome_r, 3)
            os.dup2(from_chrome_w, 4)

        self.proc = subprocess.Popen([binary, *FLAGS, f"--user-data-dir={user_dir}", "about:blank"],
                                     # keep 3 and 4 open: preexec_fn runs before the other fds are closed
                                     preexec_fn=fds, pass_fds=(3, 4),
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        os.close(to_chrome_r)
        os.close(from_chrome_w)
        self._buf, self._id = b"", 0

    def send(self, method: str, params: dict | None = None, session: str | None = None, timeout: float = 30) -> dict:
        self._id += 1
        msg = {"id": self._id, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = session
        os.write(self._w, json.dumps(msg).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while True:  # skip events until our reply arrives
            while b"\0" not in self._buf:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"no reply to {method}")
                chunk = os.read(self._r, 1 << 16)
                if not chunk:
                    raise RuntimeError("Chromium closed the pipe")
                self._buf += chunk
            raw, self._buf = self._buf.split(b"\0", 1)
            reply = json.loads(raw)
            if reply.get("id") == self._id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})

    def close(self) -> None:
        try:
            self.send("Browser.close", timeout=5)
        except Exception:  # noqa: BLE001
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        os.close(self._w)
        os.close(self._r)


def test_chat_page_streams_an_answer(tmp_path):
    tok = ByteTokenizer()
    model = SlowMarkov(tok.vocab_size, seed=0, max_seq_len=512)
    with torch.no_grad():  # printable ASCII only, and never a stop token: a visible answer of exactly max_tokens
        allowed = torch.zeros(tok.vocab_size, dtype=torch.bool)
        allowed[32:127] = True
        model.table[:, ~allowed] = -1e4
    engine = Engine(model, tok)
    with ServerThread(create_app(engine, model_id="mock")) as srv:
        cdp = CDP(CHROMIUM, str(tmp_path / "profile"))
        try:
            target = cdp.send("Target.createTarget", {"url": srv.url + "/"})["targetId"]
            session = cdp.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]

            def js(expr: str):
                r = cdp.send("Runtime.evaluate", {"expression": expr, "returnByValue": True, "awaitPromise": True},
                             session=session)
                if "exceptionDetails" in r:
                    raise RuntimeError(r["exceptionDetails"])
                return r["result"].get("value")

            deadline = time.monotonic() + 30
            while js("document.getElementById('model') && document.getElementById('model').textContent") \
                    in (None, "connecting…"):
                assert time.monotonic() < deadline, "page did not load the model list"
                time.sleep(0.1)
            assert js("document.getElementById('model').textContent").startswith("mock")
            # count the distinct texts the answer bubble shows while streaming
            js("""window.__seen = new Set();
                  new MutationObserver(() => { const b = document.querySelector('.msg.assistant');
                      if (b) window.__seen.add(b.textContent); })
                  .observe(document.getElementById('messages'), {subtree: true, childList: true, characterData: true});
                  document.getElementById('temperature').value = '0';
                  document.getElementById('max_tokens').value = '40';
                  document.getElementById('prompt').value = 'Hello there';
                  document.getElementById('send').click(); true""")
            deadline = time.monotonic() + 60
            while js("(document.querySelector('.msg.assistant') || {dataset: {}}).dataset.state") != "done":
                assert time.monotonic() < deadline, "no answer within 60 s"
                time.sleep(0.1)
            answer = js("document.querySelector('.msg.assistant').textContent")
            seen = js("window.__seen.size")
            errors = js("document.querySelectorAll('.msg.error').length")
        finally:
            cdp.close()
    expected = engine.generate([encode_chat(tok, [{"role": "user", "content": "Hello there"}])],
                               SamplingParams(max_new_tokens=40, temperature=0,
                                              stop_token_ids=chat_stop_token_ids(tok)))[0].text
    assert errors == 0
    assert answer == expected and len(answer) == 40
    assert seen >= 5, f"the answer appeared in {seen} updates; expected a stream of many"
