"""Evaluation: HellaSwag at chance and loss at ln(vocab) for a random model, bits per byte two ways, batched
scoring against one-at-a-time, GSM8K answer extraction, TinyWorld grading, and the report card rebuilt from files."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from scratchlm.eval.bpb import bits_per_byte
from scratchlm.eval.bpb_docs import bpb_from_token_losses, document_bits_per_byte
from scratchlm.eval.gsm8k import build_prompt, evaluate_gsm8k, extract_answer, gold_answer, load_gsm8k, normalize_number
from scratchlm.eval.hellaswag import Item, evaluate_hellaswag, load_hellaswag, preprocess
from scratchlm.eval.results import format_table, is_chat_model, load_results, run_dir_of, save_result
from scratchlm.eval.scoring import score_continuations, split_context_continuation
from scratchlm.model import ModelConfig, Transformer

from conftest import SHARED_DATA as DATA, builtin_corpus, shared_path

HELLASWAG = DATA / "hellaswag" / "hellaswag_val_full.txt"
GSM8K = DATA / "gsm8k" / "test.jsonl"

TEXTS = ["Once upon a time there was a little cat. The cat liked milk and naps in the sun.",
         "Tom has 3 apples. He gives 1 to Mia. Now Tom has 2 apples.",
         "A man is sitting on a roof. He starts pulling up roofing on a roof.",
         "Grapes are fruits. Farmers grow grapes, and they grow on vines. Grapes taste sweet."]


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny models run fastest on one thread, and the CPU is shared
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def tok():
    from scratchlm.tokenizer import train_bpe_from_texts

    texts = TEXTS * 20 + builtin_corpus(100_000)  # TinyWorld fills the 512-token vocabulary on any machine
    if HELLASWAG.is_file():  # a vocabulary that fits HellaSwag's words, as a real model's would
        texts += [it.context + " " + " ".join(it.endings) for it in load_hellaswag(HELLASWAG, limit=200)]
    return train_bpe_from_texts(texts, vocab_size=512)


@pytest.fixture(scope="module")
def model(tok):
    torch.manual_seed(0)  # the standard init (std 0.02): near-uniform predictions, as at step 0 of training
    return Transformer(ModelConfig.from_preset("llama-tiny", vocab_size=tok.vocab_size)).eval()


# ----------------------------------------------------------------------------- a random model is at chance

def test_random_model_initial_loss_is_ln_vocab(model, tok):
    r = bits_per_byte(model, tok, " ".join(TEXTS) * 8)
    # logits of a fresh model are ~N(0, small): the prediction is near uniform, so the loss is ln V (6.238 here)
    assert r["loss"] == pytest.approx(math.log(tok.vocab_size), abs=0.05)
    assert r["bpb"] == pytest.approx(r["loss"] * r["tokens"] / math.log(2) / r["bytes"], rel=1e-9)


def test_random_model_hellaswag_is_chance(model, tok):
    shared_path("hellaswag/hellaswag_val_full.txt")
    n = 300
    r = evaluate_hellaswag(model, tok, load_hellaswag(HELLASWAG, limit=n), batch_size=64)
    assert r["n"] == n
    # a model that knows nothing is right 1 time in 4; over n items the count is Binomial(n, 1/4), standard
    # deviation sqrt(0.25 * 0.75 / 300) = 0.025. 3.5 sigma (p ~ 5e-4 for a true chance-level scorer) still
    # catches a broken scorer that reads the label (1.0) or always picks one index (the labels are balanced).
    sigma = math.sqrt(0.25 * 0.75 / n)
    assert abs(r["acc_norm"] - 0.25) < 3.5 * sigma, r
    assert abs(r["acc"] - 0.25) < 3.5 * sigma, r


# ----------------------------------------------------------------------------- bits per byte, two ways

def test_bpb_per_document_equals_token_sum_and_sliding_window(model, tok):
    from scratchlm.train.data import token_byte_lengths

    docs = TEXTS + ["Caf\u00e9 cr\u00e8me, na\u00efve r\u00e9sum\u00e9 \u2014 unicode costs more bytes than characters."]
    per_doc = document_bits_per_byte(model, tok, docs, batch_size=3)

    # way 2: per-token losses of each document (BOS + doc in one forward), summed over text tokens / their bytes
    token_bytes = torch.from_numpy(token_byte_lengths(tok))
    nll, targets = [], []
    for d in docs:
        ids = torch.tensor([[tok.bos_id] + tok.encode(d)])
        with torch.no_grad():
            logits = model(ids[:, :-1])
        nll.append(torch.nn.functional.cross_entropy(logits[0], ids[0, 1:], reduction="none"))
        targets.append(ids[0, 1:])
    token_sum = bpb_from_token_losses(torch.cat(nll), torch.cat(targets), token_bytes)

    # way 3: bpb.py's sliding-window scorer on each document, totals added up
    singles = [bits_per_byte(model, tok, d) for d in docs]
    nats = sum(r["loss"] * r["tokens"] for r in singles)
    n_bytes = sum(r["bytes"] for r in singles)

    assert per_doc["bytes"] == token_sum["bytes"] == n_bytes == sum(len(d.encode()) for d in docs)
    assert per_doc["bpb"] == pytest.approx(token_sum["bpb"], rel=1e-5)
    assert per_doc["bpb"] == pytest.approx(nats / math.log(2) / n_bytes, rel=1e-5)
    assert per_doc["perplexity"] == pytest.approx(math.exp(per_doc["loss"]))


def test_bpb_long_document_uses_the_sliding_window(model, tok):
    long_doc = " ".join(TEXTS) * 12  # longer than the 256-token context
    assert len(tok.encode(long_doc)) > model.config.max_seq_len
    r = document_bits_per_byte(model, tok, [long_doc, TEXTS[0]])
    a, b = bits_per_byte(model, tok, long_doc), bits_per_byte(model, tok, TEXTS[0])
    expected = (a["loss"] * a["tokens"] + b["loss"] * b["tokens"]) / math.log(2) / (a["bytes"] + b["bytes"])
    assert r["bpb"] == pytest.approx(expected, rel=1e-6)


# ----------------------------------------------------------------------------- scoring

def test_batched_scoring_equals_one_at_a_time(tok):
    torch.manual_seed(1)
    m = Transformer(ModelConfig.from_preset("llama-tiny", vocab_size=tok.vocab_size)).eval()
    with torch.no_grad():
        for p in m.parameters():
            if p.dim() == 2:
                p.mul_(4.0)  # peaked predictions: differences between rows are large, not lost in rounding
    reqs = [split_context_continuation(tok, t[:n], t[n:]) for t in TEXTS for n in (5, 20, 40)]
    batched = score_continuations(m, reqs, batch_size=4)
    for (ctx, cont), (lp, greedy) in zip(reqs, batched):
        ids = torch.tensor([ctx + cont])
        with torch.no_grad():
            logp = torch.log_softmax(m(ids[:, :-1])[0], dim=-1)
        want = sum(logp[len(ctx) - 1 + j, t].item() for j, t in enumerate(cont))
        assert lp == pytest.approx(want, abs=1e-4)
        assert greedy == all(logp[len(ctx) - 1 + j].argmax().item() == t for j, t in enumerate(cont))


def test_context_continuation_split_keeps_the_joined_tokenisation(tok):
    ctx, cont = split_context_continuation(tok, "The cat liked ", "milk and naps")
    assert ctx[0] == tok.bos_id
    assert ctx[1:] + cont == tok.encode("The cat liked milk and naps")  # the trailing space moved to the ending
    assert tok.decode(cont) == " milk and naps"
    with pytest.raises(ValueError, match="empty continuation"):
        score_continuations(SimpleNamespace(config=SimpleNamespace(max_seq_len=8), parameters=lambda: iter(()),
                                            eval=lambda: None), [([1], [])])


# ----------------------------------------------------------------------------- HellaSwag files

def test_hellaswag_jsonl_and_text_layouts_agree(tmp_path):
    rec = {"ind": 4, "activity_label": "Roof shingle removal", "ctx_a": "A man is sitting on a roof.", "ctx_b": "he",
           "ctx": "A man is sitting on a roof. he", "split": "val", "split_type": "indomain", "label": 3,
           "endings": ["is using wrap to wrap a pair of skis.", "is ripping level tiles off.",
                       "is holding a rubik's cube.", "starts pulling up roofing on a roof."], "source_id": "x"}
    (tmp_path / "h.jsonl").write_text(json.dumps(rec) + "\n" + json.dumps({**rec, "label": "0"}) + "\n")
    (tmp_path / "h.txt").write_text("Roof shingle removal: A man is sitting on a roof. He\n3\n"
                                    + "\n".join(rec["endings"]) + "\n")
    a = load_hellaswag(tmp_path / "h.jsonl")
    assert len(a) == 2 and a[1].label == 0
    assert a[0] == load_hellaswag(tmp_path / "h.txt")[0] == Item(
        "Roof shingle removal: A man is sitting on a roof. He", rec["endings"], 3)
    assert load_hellaswag(tmp_path / "h.jsonl", limit=1) == a[:1]
    assert preprocess("How to cook [title] Boil water. [step] Add salt.") == "How to cook. Boil water. Add salt."
    (tmp_path / "bad.txt").write_text("ctx\n7\na\nb\nc\nd\n")
    with pytest.raises(ValueError, match="label"):
        load_hellaswag(tmp_path / "bad.txt")
    with pytest.raises(FileNotFoundError, match="--data"):
        load_hellaswag(tmp_path / "missing.txt")


def test_hellaswag_shared_file_reads_all_items():
    shared_path("hellaswag/hellaswag_val_full.txt")
    items = load_hellaswag(HELLASWAG)
    assert len(items) == 10042 and all(len(it.endings) == 4 for it in items)
    assert items[0].context.startswith("Roof shingle removal: A man is sitting on a roof.")


# ----------------------------------------------------------------------------- GSM8K

@pytest.mark.parametrize("reply, want", [
    ("Janet sells 9 eggs.\nShe makes 9 * 2 = $18.\n#### 18", "18"),
    ("#### 1,000", "1000"),
    ("The total is $1,234.50.", "1234.5"),
    ("So the answer is 18.00 dollars.", "18"),
    ("He is -3 degrees colder, so the answer is -3", "-3"),
    ("16 - 3 = 13", "13"),  # a minus between numbers is subtraction, not a sign
    ("5-3=2", "2"),
    ("He owes -$5", "-5"),
    ("The price fell to $-5.", "-5"),
    ("0.50 of the cake", "0.5"),
    ("It has 1,000,000 stars.", "1000000"),
    ("#### 72\n\nQuestion: how about 5 more?", "72"),  # the marker wins over later numbers
    ("The answer: 42.", "42"),
    ("I do not know.", None),
])
def test_gsm8k_answer_extraction(reply, want):
    assert extract_answer(reply) == want


def test_gsm8k_number_normalisation():
    assert normalize_number("$1,000.00") == "1000"
    assert normalize_number("-0.0") == "0"
    assert normalize_number("3.140") == "3.14"
    assert normalize_number("abc") is None
    with pytest.raises(ValueError, match="####"):
        gold_answer("no marker 5")


def test_gsm8k_shared_test_set_parses():
    shared_path("gsm8k/test.jsonl")
    problems = load_gsm8k(GSM8K)
    assert len(problems) == 1319
    assert problems[0]["gold"] == "18"
    assert all(normalize_number(p["gold"]) == p["gold"] for p in problems)


class _ReplyEngine:
    """Stands in for Engine.generate: replies from a function of the prompt text."""

    def __init__(self, tokenizer, reply, max_seq_len=256):
        self.tokenizer, self.reply, self.max_seq_len = tokenizer, reply, max_seq_len
        self.prompts = []

    def generate(self, prompts, params):
        self.prompts += prompts
        return [SimpleNamespace(text=self.reply(self.tokenizer.decode(p))) for p in prompts]


def test_generation_batches_prompts_of_similar_length_and_keeps_the_callers_order():
    from scratchlm.eval.scoring import generate_in_batches

    batches = []

    class Recorder:
        def generate(self, prompts, params):
            batches.append([len(p) for p in prompts])
            return [SimpleNamespace(text=f"{len(p)} ids") for p in prompts]

    prompts = [[1] * k for k in (5, 1, 4, 2, 3)]
    # a batch shares one padded context: a long prompt beside short ones would cut their replies short
    assert generate_in_batches(Recorder(), prompts, None, batch_size=2) == ["5 ids", "1 ids", "4 ids", "2 ids", "3 ids"]
    assert batches == [[1, 2], [3, 4], [5]]


def test_gsm8k_grading_and_few_shot_prompts(tok):
    problems = [{"question": "What is 2 + 3?", "answer": "2 + 3 = 5\n#### 5", "gold": "5"},
                {"question": "What is 10 - 4?", "answer": "#### 6", "gold": "6"}]
    gold = {p["question"]: p["gold"] for p in problems}

    def right(prompt):
        q = prompt.rsplit("Question: ", 1)[1].split("\n")[0]
        return f"The answer is {int(gold[q]):,}.00\n#### {gold[q]}"

    shots = [{"question": "What is 1 + 1?", "answer": "1 + 1 = 2\n#### 2"}] * 3
    eng = _ReplyEngine(tok, right, max_seq_len=1024)
    r = evaluate_gsm8k(eng, problems, chat=False, shots=shots, max_new_tokens=16)
    assert r["exact_match"] == 1.0 and r["shots_used_mean"] == 3
    assert tok.decode(eng.prompts[0]).count("Question:") == 4
    wrong = evaluate_gsm8k(_ReplyEngine(tok, lambda p: "#### 7"), problems, max_new_tokens=16)
    assert wrong["exact_match"] == 0.0 and wrong["examples"][0]["pred"] == "7"
    # examples that do not fit the context are dropped, the question is kept
    ids, k = build_prompt(tok, "What is 2 + 3?", shots, chat=False, room=len(tok.encode(shots[0]["question"])) * 3)
    assert k < 3 and tok.decode(ids).endswith("Question: What is 2 + 3?\nAnswer:")
    chat_ids, _ = build_prompt(tok, "What is 2 + 3?", shots[:1], chat=True, room=1000)
    assert chat_ids.count(tok.special_tokens["<|im_start|>"]) == 4  # user, assistant, user, assistant prompt


# ----------------------------------------------------------------------------- TinyWorld

def test_tinyworld_tasks_graded_like_the_rl_reward(tok):
    from scratchlm.eval.tinyworld import evaluate_tinyworld, load_tinyworld_tasks

    tasks = load_tinyworld_tasks("val", n=40)
    assert tasks == load_tinyworld_tasks("val", n=40)  # deterministic
    by_q = {}
    for t in tasks:
        by_q[t["instruction"].strip()] = t["output"]

    def reference(prompt):  # the base prompt ends "Question: <instruction>\nAnswer:"
        return " " + by_q[prompt.rsplit("Question: ", 1)[1].rsplit("\nAnswer:", 1)[0]]

    r = evaluate_tinyworld(_ReplyEngine(tok, reference, max_seq_len=4096), tasks, chat=False)
    assert r["accuracy"] == 1.0 and r["n"] == 40
    assert set(r["by_kind"]) == {"arithmetic", "fact", "story_qa"}
    r = evaluate_tinyworld(_ReplyEngine(tok, lambda p: "I don't know.", max_seq_len=4096), tasks, chat=True)
    assert r["accuracy"] == 0.0 and r["mode"] == "chat"


def test_tinyworld_eval_holds_500_distinct_held_out_tasks(monkeypatch):
    import itertools

    from scratchlm.data.tinyworld import iter_tasks, tasks as tasks_module
    from scratchlm.eval.tinyworld import load_tinyworld_tasks

    tasks = load_tinyworld_tasks("val", n=500, seed=0)
    prompts = {(t["instruction"], t["input"]) for t in tasks}
    assert len(tasks) == 500 and len(prompts) == 500  # the raw stream repeats: ~375 distinct in its first 500
    assert {t["split"] for t in tasks} == {"val"} and {t["kind"] for t in tasks} == {"arithmetic", "fact", "story_qa"}
    train = {(t["instruction"], t["input"]) for t in itertools.islice(iter_tasks("train", 0), 20_000)}
    assert not prompts & train  # held out: no prompt of the eval is a training task
    assert load_tinyworld_tasks("val", n=500, seed=0) == tasks  # the same tasks for the same seed
    assert load_tinyworld_tasks("val", n=100, seed=0) == tasks[:100]  # a smaller eval is a prefix of a larger one

    one = next(iter_tasks("val", 0))
    monkeypatch.setattr(tasks_module, "iter_tasks", lambda split, seed: itertools.repeat(one))
    with pytest.raises(ValueError, match="distinct prompts"):
        load_tinyworld_tasks("val", n=3)


# ----------------------------------------------------------------------------- results and report card

def _fake_run(root: Path, tok, model) -> Path:
    from scratchlm.runs import checkpoint_dir, save_model

    tok.save(root / "tokenizer")
    ckpt = save_model(checkpoint_dir(root, 40), model, model.config.to_dict(), extra_meta={"stage": "sft"})
    rows = []
    for s in range(1, 41):
        rows.append({"step": s, "tokens": s * 2048, "loss": 6.0 * math.exp(-s / 15) + 1.5, "lr": 1e-3,
                     "elapsed": round(s * 0.25, 2)})
        if s % 10 == 0:
            rows.append({"step": s, "tokens": s * 2048, "val_loss": 6.1 * math.exp(-s / 15) + 1.6, "val_bpb": 2.5,
                         "elapsed": round(s * 0.25, 2)})
    (root / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (root / "config.toml").write_text("[train]\nseq_len = 128\nmax_steps = 40\n")
    (root / "logs").mkdir(exist_ok=True)
    (root / "logs" / "samples.txt").write_text("=== step 20\nOnce\n=== step 40\nOnce upon a time\n")
    save_result(ckpt, "hellaswag", {"task": "hellaswag", "n": 10, "acc": 0.3, "acc_norm": 0.4, "checkpoint": str(ckpt)})
    save_result(root, "gsm8k", {"task": "gsm8k", "n": 2, "exact_match": 0.5, "checkpoint": str(ckpt),
                                "examples": [{"question": "What is 2 + 3?", "reply": "#### 5", "gold": "5",
                                              "correct": True}]})
    return ckpt


def test_report_card_is_rebuilt_from_the_run_folder_alone(tmp_path, tok, model):
    from scratchlm.eval.report import write_report
    from scratchlm.model.accounting import flops_per_token

    ckpt = _fake_run(tmp_path, tok, model)
    assert run_dir_of(ckpt) == tmp_path and is_chat_model(ckpt)
    assert set(load_results(tmp_path)) == {"gsm8k", "hellaswag"}
    first = write_report(tmp_path).read_text()
    assert (tmp_path / "plots" / "loss.png").is_file()  # drawn from metrics.jsonl, as it was missing
    for needle in ("## Summary", f"{model.num_params():,}", "81,920", "## Loss curves", "plots/loss.png",
                   "| hellaswag | acc_norm 40.0% (n=10, 95% 16.8-68.7%), acc 30.0% (n=10, 95% 10.8-60.3%) |",
                   "| gsm8k | exact_match 50.0% (n=2, 95% 9.5-90.5%) |", "95% Wilson interval", "Once upon a time",
                   "What is 2 + 3?",
                   "seq_len = 128", "10.0 s"):
        assert needle in first, needle
    flops = flops_per_token(model.config, 128) * 40 * 2048
    assert f"{flops:.3e} FLOPs" in first

    (tmp_path / "report.md").unlink()
    shutil.rmtree(tmp_path / "plots")
    assert write_report(tmp_path).read_text() == first
    assert (tmp_path / "plots" / "loss.png").is_file()


def test_results_table():
    text = format_table({"hellaswag": {"task": "hellaswag", "acc": 0.25, "acc_norm": 0.3, "n": 400,
                                       "checkpoint": "runs/x/checkpoints/step_0000010"}})
    assert "acc_norm 30.0% (n=400, 95% 25.7-34.7%), acc 25.0% (n=400" in text and "step_0000010" in text
    md = format_table({"gsm8k": {"task": "gsm8k", "exact_match": 0.125, "n": 8}}, markdown=True)
    assert md.splitlines()[2] == "| gsm8k | exact_match 12.5% (n=8, 95% 2.2-47.1%) | 8 |  |"
    # a stored interval is shown as stored; a metric that is not a proportion prints as a number
    stored = {"task": "tinyworld", "accuracy": 0.124, "n": 500, "accuracy_ci": [0.098, 0.156]}
    assert format_table({"tinyworld": stored}).splitlines()[1].split()[1:7] == \
        ["accuracy", "12.4%", "(n=500,", "95%", "9.8-15.6%)", "500"]
    assert "bpb 1.2346" in format_table({"bpb": {"task": "bpb", "bpb": 1.23456, "tokens": 10}})


def test_accuracies_are_stored_with_n_and_a_wilson_interval(tok, model):
    from scratchlm.eval.tinyworld import evaluate_tinyworld, load_tinyworld_tasks
    from scratchlm.stats import count_of, wilson_interval

    tasks = load_tinyworld_tasks("val", n=20)
    answers = {t["instruction"].strip(): t["output"] for t in tasks[:5]}  # the first 5 answered right

    def reply(prompt):
        return " " + answers.get(prompt.rsplit("Question: ", 1)[1].rsplit("\nAnswer:", 1)[0], "no idea")

    r = evaluate_tinyworld(_ReplyEngine(tok, reply, max_seq_len=4096), tasks)
    assert (r["n"], r["correct"], r["accuracy"]) == (20, 5, 0.25)
    assert r["accuracy_ci"] == list(wilson_interval(5, 20))
    for kind, k in r["by_kind"].items():
        assert k["accuracy_ci"] == list(wilson_interval(k["correct"], k["n"])), kind
    problems = [{"question": "What is 2 + 3?", "answer": "#### 5", "gold": "5"}] * 4
    g = evaluate_gsm8k(_ReplyEngine(tok, lambda p: "#### 5", max_seq_len=4096), problems)
    assert (g["n"], g["correct"], g["exact_match_ci"]) == (4, 4, list(wilson_interval(4, 4)))
    items = [Item("Cats: The cat", ["liked milk.", "flew away.", "is a car.", "sang loudly."], 0)] * 3
    h = evaluate_hellaswag(model, tok, items)
    assert h["acc_ci"] == list(wilson_interval(count_of(h["acc"], 3), 3))
    assert h["acc_norm_ci"] == list(wilson_interval(count_of(h["acc_norm"], 3), 3))
