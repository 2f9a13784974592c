"""An exported model behaves in transformers and lm-evaluation-harness exactly as in scratchlm: the same prompt
ids (BOS included), the same chat rendering, the same greedy replies ending at <|im_end|>, the same HellaSwag
log-likelihoods and accuracies, with no extra flags on the Hugging Face side."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

transformers = pytest.importorskip("transformers")

from conftest import SHARED_DATA, builtin_corpus  # noqa: E402

from scratchlm.cli.main import main  # noqa: E402
from scratchlm.eval.hellaswag import Item, evaluate_hellaswag, load_hellaswag  # noqa: E402
from scratchlm.eval.scoring import score_continuations, split_context_continuation  # noqa: E402
from scratchlm.inference.chat_template import chat_stop_token_ids, encode_chat, render_chat  # noqa: E402
from scratchlm.model import ModelConfig, Transformer  # noqa: E402
from scratchlm.runs import checkpoint_dir, save_model  # noqa: E402
from scratchlm.tokenizer import train_bpe_from_texts  # noqa: E402

QUESTION = "Where does the little cat sleep?"
REPLY = "The little cat sleeps in a warm box."
STORY = "Once upon a time there was a little dog. The dog liked to run in the park with his friend Tom."
CHAT = [{"role": "user", "content": QUESTION}]
# used when ../shared/data/hellaswag is absent, so the lm-eval comparison always runs
LOCAL_ITEMS = [Item("Cooking: A man puts a pan on the stove. He", ["adds oil and onions to the pan.", "flies to the moon.",
                    "reads a long book about cars.", "sings."], 0),
               Item("Garden: Anna waters the plants. She", ["waits for the seeds to grow.", "drives a bus.",
                    "paints the sky green with a brush.", "sleeps on the roof."], 1)]


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny matmuls: more threads only contend (6x slower on a loaded 2-core machine)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """A run (TinyWorld BPE tokenizer saved without a chat template; llama-tiny overfit on one chat turn, so that
    it answers and then writes <|im_end|>, and on one story, so that plain text goes on as text) and its
    `scratchlm export hf` folder."""
    root = tmp_path_factory.mktemp("hf_export")
    tok = train_bpe_from_texts(builtin_corpus(40_000) + [QUESTION + " " + REPLY, STORY] * 20, vocab_size=400)
    run = root / "run"
    tok.save(run / "tokenizer")  # no chat template: the export must add it
    torch.manual_seed(0)
    model = Transformer(ModelConfig.from_preset("llama-tiny", vocab_size=tok.vocab_size, max_seq_len=512))
    rows = [torch.tensor([encode_chat(tok, CHAT + [{"role": "assistant", "content": REPLY}],
                                      add_generation_prompt=False)]),  # (1, T)
            torch.tensor([[tok.bos_id] + tok.encode(STORY)])]  # (1, T'), a document as pretraining sees it
    opt = torch.optim.AdamW(model.parameters(), lr=5e-3)
    for _ in range(100):
        loss = sum(F.cross_entropy(model(ids[:, :-1]).flatten(0, 1)[:, :tok.vocab_size], ids[:, 1:].flatten())
                   for ids in rows)
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    save_model(checkpoint_dir(run, 100), model, model.config.to_dict())
    assert main(["export", "hf", "--run", str(run), "--out", str(root / "hf")]) == 0
    return tok, model, run, root / "hf"


def _cli_json(capsys, *argv) -> dict:
    capsys.readouterr()
    assert main(["generate", *map(str, argv), "--temperature", "0", "--json", "--device", "cpu"]) == 0
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def _ids(x) -> list[int]:
    """apply_chat_template's answer as a list: transformers 5 returns a BatchEncoding, 4.x a list."""
    if isinstance(x, dict) or hasattr(x, "input_ids"):
        x = x["input_ids"]
    return list(x[0] if x and isinstance(x[0], list) else x)


def test_exported_files_say_bos_chat_template_and_stop_tokens(exported):
    tok, _, _, hf_dir = exported
    cfg = json.loads((hf_dir / "tokenizer_config.json").read_text())
    assert cfg["add_bos_token"] is True and cfg["bos_token"] == "<|bos|>"
    assert json.loads((hf_dir / "tokenizer.json").read_text())["post_processor"]["type"] == "TemplateProcessing"
    assert "chat_template" in cfg
    gen = json.loads((hf_dir / "generation_config.json").read_text())
    st = tok.special_tokens
    assert gen["eos_token_id"] == [tok.eos_id, st["<|im_end|>"], st["<|im_start|>"], tok.bos_id]
    assert sorted(gen["eos_token_id"]) == sorted(chat_stop_token_ids(tok))  # exactly what our chat stops at


def test_plain_text_greedy_generation_matches(exported, capsys):
    tok, _, run, hf_dir = exported
    hf_tok = transformers.AutoTokenizer.from_pretrained(hf_dir)
    hf = transformers.AutoModelForCausalLM.from_pretrained(hf_dir).eval()
    prompt = "Once upon a time"
    ids = hf_tok(prompt)["input_ids"]
    assert ids == [tok.bos_id] + tok.encode(prompt)  # BOS added as `scratchlm generate` adds it
    assert hf_tok(prompt, add_special_tokens=False)["input_ids"] == tok.encode(prompt)
    ours = _cli_json(capsys, "--run", run, "--prompt", prompt, "--max-new-tokens", 12)
    assert ours["finish_reason"] == "length"  # no stop token: both sides must run the full 12 tokens
    with torch.no_grad():
        out = hf.generate(torch.tensor([ids]), attention_mask=torch.ones(1, len(ids), dtype=torch.long),
                          max_new_tokens=12, do_sample=False)[0, len(ids):].tolist()
    assert len(out) == ours["tokens"] == 12
    assert hf_tok.decode(out) == ours["completion"]
    pipe = transformers.pipeline("text-generation", model=hf, tokenizer=hf_tok)
    assert pipe(prompt, max_new_tokens=12, do_sample=False)[0]["generated_text"] == prompt + ours["completion"]


def test_chat_greedy_reply_matches_and_stops_at_im_end(exported, capsys):
    tok, model, run, hf_dir = exported
    hf_tok = transformers.AutoTokenizer.from_pretrained(hf_dir)
    hf = transformers.AutoModelForCausalLM.from_pretrained(hf_dir).eval()
    text = hf_tok.apply_chat_template(CHAT, add_generation_prompt=True, tokenize=False)
    assert text == render_chat(CHAT, add_generation_prompt=True)
    prompt = _ids(hf_tok.apply_chat_template(CHAT, add_generation_prompt=True))
    assert prompt == encode_chat(tok, CHAT)  # one BOS: the template writes it, the tokenizer adds none
    ours = _cli_json(capsys, "--run", run, "--chat", "--prompt", QUESTION, "--max-new-tokens", 40)
    assert ours["finish_reason"] == "stop" and ours["completion"] == REPLY
    with torch.no_grad():
        out = hf.generate(torch.tensor([prompt]), attention_mask=torch.ones(1, len(prompt), dtype=torch.long),
                          max_new_tokens=40, do_sample=False)[0, len(prompt):].tolist()
    assert out[-1] == tok.special_tokens["<|im_end|>"]  # stopped at the end of the turn, not at max_new_tokens
    assert out[:-1] == tok.encode(REPLY) and len(out) - 1 == ours["tokens"]
    pipe = transformers.pipeline("text-generation", model=hf, tokenizer=hf_tok)
    answer = pipe(CHAT, max_new_tokens=40, do_sample=False)[0]["generated_text"][-1]
    assert answer == {"role": "assistant", "content": REPLY}


def _hellaswag_items() -> list[Item]:
    path = SHARED_DATA / "hellaswag" / "hellaswag_val_full.txt"
    return load_hellaswag(path, limit=6) if path.is_file() else LOCAL_ITEMS


def test_lm_eval_hf_route_scores_like_ours(exported, tmp_path, monkeypatch):
    lm_eval = pytest.importorskip("lm_eval")
    pytest.importorskip("accelerate", reason="lm-eval's hf model imports accelerate: pip install -e '.[hf]'")
    from lm_eval.tasks import TaskManager

    tok, model, _, hf_dir = exported
    items = _hellaswag_items()
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "hf_cache"))
    data = tmp_path / "hs.jsonl"
    data.write_text("".join(json.dumps({"context": it.context, "endings": it.endings, "label": it.label}) + "\n"
                            for it in items))
    tasks = tmp_path / "tasks"
    tasks.mkdir()
    (tasks / "scratch_hs.yaml").write_text(f"""\
task: scratch_hs
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
output_type: multiple_choice
doc_to_text: "{{{{context}}}}"
doc_to_target: label
doc_to_choice: endings
metric_list:
  - metric: acc
  - metric: acc_norm
""")
    # what `lm_eval --model hf --model_args pretrained=DIR --tasks scratch_hs --include_path TASKS` runs. The
    # command's default device, cuda:0, falls back to the CPU without a GPU; simple_evaluate's (HFLM's "cuda")
    # does not, hence device="cpu" here.
    out = lm_eval.simple_evaluate(model="hf", model_args=f"pretrained={hf_dir}", tasks=["scratch_hs"], device="cpu",
                                  task_manager=TaskManager(include_path=str(tasks)), bootstrap_iters=0,
                                  log_samples=True)
    want = score_continuations(model, [split_context_continuation(tok, it.context, " " + e)
                                       for it in items for e in it.endings])
    samples = sorted(out["samples"]["scratch_hs"], key=lambda s: s["doc_id"])
    got = [r[0][0] if isinstance(r[0], (list, tuple)) else r[0] for s in samples for r in s["resps"]]
    assert got == pytest.approx([ll for ll, _ in want], abs=1e-3)
    ours = evaluate_hellaswag(model, tok, items)
    res = out["results"]["scratch_hs"]
    assert (res["acc,none"], res["acc_norm,none"]) == (pytest.approx(ours["acc"]), pytest.approx(ours["acc_norm"]))
