"""`scratchlm generate`, `chat` and `serve` on a tiny run folder made in the test (random weights)."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import time

import pytest
import torch

from scratchlm.cli.main import main


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny models: one thread is fastest, and the CPU is shared
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def run(tiny_chat_run):
    return tiny_chat_run  # tests/conftest.py


def test_generate_prints_text_and_stats(run, capsys):
    rc = main(["generate", "--run", str(run), "--prompt", "Once upon", "--max-new-tokens", "12", "--temperature", "0",
               "--stats", "--device", "cpu"])
    out = capsys.readouterr()
    assert rc == 0 and out.out.strip()
    assert "tokens/s" in out.err


def test_generate_prompts_file_json_and_speculative(run, tmp_path, capsys):
    f = tmp_path / "p.jsonl"
    f.write_text('{"prompt": "Once"}\n{"prompt": "The cat"}\n')
    assert main(["generate", "--run", str(run), "--input", str(f), "--max-new-tokens", "5", "--json",
                 "--temperature", "0"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["prompt"] for r in rows] == ["Once", "The cat"]
    assert main(["generate", "--run", str(run), "--prompt", "The cat", "--max-new-tokens", "16", "--temperature", "0",
                 "--draft", str(run), "--stats"]) == 0
    err = capsys.readouterr().err
    assert "acceptance 100.0%" in err and "identical output: True" in err
    assert main(["generate", "--run", str(run), "--prompt", "x", "--prompt-lookup", "--stats",
                 "--max-new-tokens", "8"]) == 0


def test_read_prompts_takes_alpaca_records(tmp_path):
    from scratchlm.cli.generate import read_prompts

    f = tmp_path / "edits_val.jsonl"
    f.write_text('{"instruction": "Copy this text exactly.", "input": "Mia ran. ", "output": "Mia ran."}\n'
                 '{"instruction": " Tell me a story. ", "input": ""}\n{"prompt": "Once"}\n')
    assert read_prompts(f) == ["Copy this text exactly.\n\nMia ran.", "Tell me a story.", "Once"]
    for bad in ('{"instruction": 3}', '{"prompt": ["x"]}', '["x"]', '{"output": "x"}'):
        f.write_text(bad + "\n")
        with pytest.raises(ValueError, match=r'edits_val.jsonl:1 is not a JSON object with a "prompt"'):
            read_prompts(f)


def test_generate_bad_input_exit_2(run, tmp_path, capsys):
    assert main(["generate", "--run", str(tmp_path / "nope"), "--prompt", "x"]) == 2
    assert "error:" in capsys.readouterr().err
    assert main(["generate", "--run", str(run), "--prompt", "x", "--top-p", "0"]) == 2


def test_chat_from_a_pipe(run, monkeypatch, capsys):
    monkeypatch.setattr(sys, "stdin", io.StringIO("Hello\n/system Be brief.\n/history\nHi again\n/reset\n/exit\n"))
    assert main(["chat", "--run", str(run), "--max-new-tokens", "8", "--temperature", "0"]) == 0
    out = capsys.readouterr()
    assert "system prompt set" in out.err and "conversation reset" in out.err
    assert "[system] Be brief." in out.out


def test_chat_with_prompt_lookup_or_draft_says_what_plain_chat_says(run, monkeypatch, capsys):
    from scratchlm.inference.speculative import SpeculativeDecoder

    turns = "Hello\nRepeat: the cat sat on the mat\n/exit\n"
    base = ["chat", "--run", str(run), "--max-new-tokens", "12", "--temperature", "0"]
    outs, calls = [], []
    stream = SpeculativeDecoder.stream
    monkeypatch.setattr(SpeculativeDecoder, "stream", lambda self, *a, **k: calls.append(self) or stream(self, *a, **k))
    for extra in ([], ["--prompt-lookup"], ["--draft", str(run), "--gamma", "3"]):
        monkeypatch.setattr(sys, "stdin", io.StringIO(turns))
        assert main(base + extra) == 0
        outs.append(capsys.readouterr().out)
    assert len(outs[0]) > 2 and outs[1] == outs[0] and outs[2] == outs[0]  # (the random model writes newlines)
    assert [c.draft is None for c in calls] == [True, True, False, False]  # two turns each, speculative
    for bad, why in ((["--gamma", "6"], "add --draft RUN or --prompt-lookup"),
                     (["--prompt-lookup", "--tools", "calculator"], "--tools runs plain decoding")):
        monkeypatch.setattr(sys, "stdin", io.StringIO(turns))
        assert main(base + bad) == 2 and why in capsys.readouterr().err


def test_cli_modules_do_not_import_torch():
    code = ("import sys; import scratchlm.cli.generate, scratchlm.cli.chat, scratchlm.cli.serve; "
            "print('torch' in sys.modules, 'fastapi' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]


def test_serve_builds_the_app(run, monkeypatch, capsys):
    import scratchlm.inference.server as server

    seen = {}
    monkeypatch.setattr(server, "run_server", lambda app, host, port, log_level: seen.update(app=app, host=host, port=port))
    assert main(["serve", "--run", str(run), "--port", "8123", "--api-key", "k", "--device", "cpu"]) == 0
    assert seen["host"] == "127.0.0.1" and seen["port"] == 8123
    paths = {r.path for r in seen["app"].routes}
    assert {"/", "/v1/models", "/v1/completions", "/v1/chat/completions"} <= paths
    assert main(["serve", "--run", str(run), "--port", "0"]) == 2


@pytest.mark.slow
def test_serve_subprocess_answers_openai_client(run):
    openai = pytest.importorskip("openai")
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "scratchlm", "serve", "--run", str(run), "--port", str(port),
                             "--device", "cpu", "-q"], env={**os.environ, "OMP_NUM_THREADS": "1"}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="none", max_retries=0, timeout=10)
        deadline = time.monotonic() + 60
        while True:
            try:
                models = client.models.list()
                break
            except openai.APIConnectionError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise AssertionError(f"server did not start: {proc.stdout.read() if proc.poll() is not None else ''}")
                time.sleep(0.2)
        assert models.data[0].id == run.name
        r = client.chat.completions.create(model=run.name, messages=[{"role": "user", "content": "Hi"}],
                                           max_tokens=5, temperature=0)
        assert r.choices[0].finish_reason in ("stop", "length")
    finally:
        proc.terminate()
        proc.wait(timeout=10)
