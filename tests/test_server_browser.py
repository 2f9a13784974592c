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


# ----------------------------------------------------------------------------- long conversations (issue 20.3)

def printable(model: MarkovLM) -> MarkovLM:
    """Only printable ASCII, never a stop token: every answer is exactly max_tokens long."""
    with torch.no_grad():
        model.table[:, :32] = -1e4
        model.table[:, 127:] = -1e4
    return model


class CountingSlowMarkov(SlowMarkov):
    forwards = 0

    def forward(self, idx, *args, **kwargs):
        self.forwards += 1
        return super().forward(idx, *args, **kwargs)


class Flaky:
    """The app, except that the next POST /v1/chat/completions fails when `fail` is set: "500" answers an
    OpenAI-shaped error, "cut" starts a stream and ends it after one chunk without [DONE] (a dropped connection)."""

    def __init__(self, app):
        self.app, self.state, self.fail = app, app.state, None

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and scope["path"] == "/v1/chat/completions" and self.fail:
            fail, self.fail = self.fail, None
            if fail == "500":
                body = {"error": {"message": "the model fell over", "type": "server_error", "param": None,
                                  "code": None}}
                await send({"type": "http.response.start", "status": 500,
                            "headers": [(b"content-type", b"application/json")]})
                await send({"type": "http.response.body", "body": json.dumps(body).encode()})
            else:
                chunk = {"choices": [{"index": 0, "delta": {"content": "half an ans"}, "finish_reason": None}]}
                await send({"type": "http.response.start", "status": 200,
                            "headers": [(b"content-type", b"text/event-stream")]})
                await send({"type": "http.response.body", "body": f"data: {json.dumps(chunk)}\n\n".encode()})
            return
        await self.app(scope, receive, send)


class ChatPage:
    """The chat page of a running server in headless Chromium; every request body the page sends to
    /v1/chat/completions is kept in window.__sent."""

    def __init__(self, url: str, profile: str):
        self.cdp = CDP(CHROMIUM, profile)
        try:
            target = self.cdp.send("Target.createTarget", {"url": url + "/"})["targetId"]
            self.session = self.cdp.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
            self.wait("document.getElementById('model') && document.getElementById('model').textContent "
                      "!== 'connecting…'", "the page did not load the model list")
            self.js("""window.__sent = []; const fetch0 = window.fetch;
                       window.fetch = (url, opts) => { if (String(url).endsWith('/v1/chat/completions'))
                           window.__sent.push(JSON.parse(opts.body)); return fetch0(url, opts); }; true""")
        except BaseException:
            self.cdp.close()
            raise

    def js(self, expr: str):
        r = self.cdp.send("Runtime.evaluate", {"expression": expr, "returnByValue": True, "awaitPromise": True},
                          session=self.session)
        if "exceptionDetails" in r:
            raise RuntimeError(r["exceptionDetails"])
        return r["result"].get("value")

    def wait(self, expr: str, what: str, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while not self.js(expr):
            assert time.monotonic() < deadline, what
            time.sleep(0.05)

    def send(self, text: str, wait: bool = True) -> None:
        """Type a message and press Send; with wait, return once its turn is over (its stats line is shown)."""
        n = self.js("document.querySelectorAll('.stats').length")
        self.js(f"document.getElementById('prompt').value = {json.dumps(text)}; "
                "document.getElementById('send').click(); true")
        if wait:
            self.wait(f"document.querySelectorAll('.stats').length > {n}", f"no end to the turn {text!r}")

    def texts(self, selector: str) -> list[str]:
        return self.js(f"[...document.querySelectorAll({json.dumps(selector)})].map(e => e.textContent)")

    def close(self) -> None:
        self.cdp.close()


def test_default_max_tokens_fits_a_tiny_context(tmp_path):
    # the page used to send max_tokens 256 whatever the model: with a 64-token context every message got a 400
    tok = ByteTokenizer()
    engine = Engine(printable(MarkovLM(tok.vocab_size, seed=0, max_seq_len=64)), tok)
    with ServerThread(create_app(engine, model_id="mock")) as srv:
        page = ChatPage(srv.url, str(tmp_path / "profile"))
        try:
            default = page.js("document.getElementById('max_tokens').value")
            default_note = page.js("document.getElementById('max_tokens_note').textContent")
            page.js("document.getElementById('temperature').value = '0'; true")
            page.send("Hi")
            answer = page.texts(".msg.assistant")
            failed = page.js("document.querySelectorAll('.failed, .msg.error').length")
            page.js("""const m = document.getElementById('max_tokens'); m.value = '1000';
                       m.dispatchEvent(new Event('input')); m.dispatchEvent(new Event('change')); true""")
            clamped = page.js("document.getElementById('max_tokens').value")
            clamp_note = page.js("document.getElementById('max_tokens_note').textContent")
        finally:
            page.close()
    assert default == "16" and "64-token context" in default_note  # a quarter of the context
    assert failed == 0
    expected = engine.generate([encode_chat(tok, [{"role": "user", "content": "Hi"}])],
                               SamplingParams(max_new_tokens=16, temperature=0,
                                              stop_token_ids=chat_stop_token_ids(tok)))[0].text
    assert answer == [expected] and len(expected) == 16
    assert clamped == "32" and clamp_note.startswith("clamped to 32")  # at most half the context, and it says so


def test_long_conversation_trims_oldest_turns(tmp_path):
    tok = ByteTokenizer()
    engine = Engine(printable(MarkovLM(tok.vocab_size, seed=0, max_seq_len=160)), tok)
    # byte tokens: 44 for the system prompt, one message and the template, + 40 new tokens (the default for 160);
    # each earlier turn adds 66, so one fits beside the new message and two do not
    with ServerThread(create_app(engine, model_id="mock")) as srv:
        page = ChatPage(srv.url, str(tmp_path / "profile"))
        try:
            page.js("document.getElementById('system').value = 'Be brief.'; true")
            for i in range(6):
                page.send(f"msg {i}")
            answers = page.texts(".msg.assistant")
            failed = page.js("document.querySelectorAll('.failed, .msg.error').length")
            notes = page.texts(".note")
            left_out = page.js("document.querySelectorAll('.msg.left-out').length")
            sent = page.js("window.__sent")
        finally:
            page.close()
    assert failed == 0 and len(answers) == 6 and all(len(a) == 40 for a in answers)
    assert notes[-1] == "4 earlier turns left out to fit the model's 160-token context", notes
    assert left_out == 8  # 4 user/assistant pairs shown dimmed
    for body in sent:  # every request fits, and keeps the system prompt and the newest message
        assert len(encode_chat(tok, body["messages"])) + body["max_tokens"] <= 160
        assert body["messages"][0] == {"role": "system", "content": "Be brief."}
    last = sent[-1]["messages"]
    assert last[-1] == {"role": "user", "content": "msg 5"}
    assert [m["role"] for m in last] == ["system", "user", "assistant", "user"]
    assert last[1]["content"] == "msg 4" and last[2]["content"] == answers[4]


def test_failed_turn_is_not_resent(tmp_path):
    tok = ByteTokenizer()
    engine = Engine(printable(MarkovLM(tok.vocab_size, seed=0, max_seq_len=256)), tok)
    app = Flaky(create_app(engine, model_id="mock"))
    with ServerThread(app) as srv:
        page = ChatPage(srv.url, str(tmp_path / "profile"))
        try:
            page.send("first")
            app.fail = "500"
            page.send("second")
            app.fail = "cut"
            page.send("third")
            page.send("fourth")
            failed = page.js("[...document.querySelectorAll('.msg.failed')].map(e => e.dataset.failed)")
            sent = page.js("window.__sent")
        finally:
            page.close()
    assert len(failed) == 4  # the user and assistant bubbles of "second" and "third"
    assert "the model fell over" in failed[0] and "not sent again" in failed[0]
    assert "closed before the answer was complete" in failed[2]
    users = [m["content"] for m in sent[-1]["messages"] if m["role"] == "user"]
    assert users == ["first", "fourth"]
    assert "half an ans" not in json.dumps(sent[-1])


def test_stop_cancels_the_generation(tmp_path):
    tok = ByteTokenizer()
    model = printable(CountingSlowMarkov(tok.vocab_size, seed=0, max_seq_len=512))
    engine = Engine(model, tok)
    with ServerThread(create_app(engine, model_id="mock")) as srv:
        page = ChatPage(srv.url, str(tmp_path / "profile"))
        try:
            page.js("document.getElementById('max_tokens').value = '250'; true")  # 250 x 15 ms if never stopped
            page.send("go on forever", wait=False)
            page.wait("(document.querySelector('.msg.assistant') || {textContent: ''}).textContent.length >= 3",
                      "no streamed text to stop")
            page.js("document.getElementById('stop').click(); true")
            page.wait("document.querySelectorAll('.stats').length === 1", "Stop did not end the turn")
            stopped = page.js("document.querySelector('.msg.assistant').dataset.failed")
            stats = page.texts(".stats")
            buttons = page.js("[document.getElementById('send').disabled, document.getElementById('stop').disabled]")
            # the server runs one batch at a time: this turn is answered only once the stopped one has ended
            page.js("document.getElementById('max_tokens').value = '3'; true")
            page.send("short one")
            after = page.js("document.querySelectorAll('.msg.assistant')[1].className")
            sent = page.js("window.__sent")
        finally:
            page.close()
    assert stopped.startswith("stopped") and "finish: stopped" in stats[0]
    assert buttons == [False, True]
    assert "failed" not in after
    assert [m["content"] for m in sent[-1]["messages"]] == ["short one"]
    assert model.forwards < 125, f"the server ran {model.forwards} forwards for a reply stopped at a few tokens"


def test_message_longer_than_the_room_left(tmp_path):
    # 64-token context, 16 new tokens by default; a message of n bytes takes n + 20 tokens with the template
    tok = ByteTokenizer()
    engine = Engine(printable(MarkovLM(tok.vocab_size, seed=0, max_seq_len=64)), tok)
    with ServerThread(create_app(engine, model_id="mock")) as srv:
        page = ChatPage(srv.url, str(tmp_path / "profile"))
        try:
            page.send("y" * 40)  # 60 tokens: the answer gets the 4 left
            page.send("z" * 50)  # 70 tokens: cannot fit at all, so it is not sent
            page.send("ok")      # fits only without the 40-byte turn
            notes = page.texts(".note")
            answers = page.texts(".msg.assistant")
            failed = page.js("[...document.querySelectorAll('.msg.failed')].map(e => e.dataset.failed)")
            sent = page.js("window.__sent")
        finally:
            page.close()
    assert notes == ["answer limited to 4 tokens: the message takes 60 of the model's 64-token context",
                     "1 earlier turn left out to fit the model's 64-token context"]
    assert len(answers[0]) == 4 and sent[0]["max_tokens"] == 4
    assert len(failed) == 2 and failed[0].startswith("failed: this message takes 70 tokens")
    assert len(sent) == 2 and sent[1]["messages"] == [{"role": "user", "content": "ok"}]
