"""The lm-evaluation-harness adapter: its methods on harness Instances, and a whole harness run on local tasks
whose numbers must equal our own HellaSwag scorer and bits per byte on the same model."""

from __future__ import annotations

import json
import math

import pytest
import torch

from scratchlm.eval.bpb import bits_per_byte
from scratchlm.eval.harness import ScratchLM
from scratchlm.eval.hellaswag import Item, evaluate_hellaswag
from scratchlm.inference.engine import Engine
from scratchlm.model import ModelConfig, Transformer

ITEMS = [Item("Cooking: A man puts a pan on the stove. He", ["adds oil and onions to the pan.", "flies to the moon.",
              "reads a long book about cars.", "sings."], 0),
         Item("Dogs: The little dog sees a ball. The dog", ["runs after the ball and brings it back.",
              "opens the fridge.", "writes a letter to the mayor of the town.", "is blue."], 0),
         Item("Garden: Anna waters the plants. She", ["waits for the seeds to grow.", "drives a bus.",
              "paints the sky green with a brush.", "sleeps on the roof."], 1)]
TEXTS = ["Once upon a time there was a little cat. The cat liked milk.", "Tom has 3 apples. He gives 1 to Mia."]


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def lm():
    from scratchlm.tokenizer import train_bpe_from_texts

    texts = TEXTS * 10 + [it.context + " " + " ".join(it.endings) for it in ITEMS] * 10
    tok = train_bpe_from_texts(texts, vocab_size=320)
    torch.manual_seed(0)
    model = Transformer(ModelConfig.from_preset("llama-tiny", vocab_size=tok.vocab_size)).eval()
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 2:
                p.mul_(4.0)  # peaked predictions, so the choices differ clearly
    return ScratchLM(engine=Engine(model, tok), batch_size=4)


def test_methods_on_plain_tuples(lm):
    from scratchlm.eval.scoring import score_continuations, split_context_continuation

    reqs = [("The cat", " liked milk."), ("Tom has 3", " apples.")]
    got = lm.loglikelihood(reqs, disable_tqdm=True)
    want = score_continuations(lm.model, [split_context_continuation(lm.tok, c, x) for c, x in reqs])
    assert got == want
    r = bits_per_byte(lm.model, lm.tok, TEXTS[0])
    assert lm.loglikelihood_rolling([(TEXTS[0],)], disable_tqdm=True)[0] == pytest.approx(-r["loss"] * r["tokens"])
    out = lm.generate_until([("Once upon a time", {"until": ["."], "max_gen_toks": 12})])
    assert len(out) == 1 and "." not in out[0]
    chat = lm.apply_chat_template([{"role": "user", "content": "hi"}])
    assert chat.endswith("<|im_start|>assistant\n")
    assert lm._encode(chat)[:2] == [lm.tok.bos_id, lm.tok.special_tokens["<|im_start|>"]]


def test_methods_on_harness_instances(lm):
    pytest.importorskip("lm_eval")
    from lm_eval.api.instance import Instance

    reqs = [Instance("loglikelihood", {}, ("The cat", " liked milk."), 0),
            Instance("loglikelihood", {}, ("Tom has 3", " apples."), 1)]
    assert lm.loglikelihood(reqs, disable_tqdm=True) == lm.loglikelihood([r.args for r in reqs], disable_tqdm=True)
    gen = [Instance("generate_until", {}, ("Once upon a time", {"until": ["\n"], "max_gen_toks": 5}), 0)]
    assert isinstance(lm.generate_until(gen)[0], str)


def _write_tasks(folder, mc_file, text_file):
    (folder / "scratch_mc.yaml").write_text(f"""\
task: scratch_mc
dataset_path: json
dataset_kwargs:
  data_files:
    test: {mc_file}
test_split: test
output_type: multiple_choice
doc_to_text: "{{{{context}}}}"
doc_to_target: label
doc_to_choice: endings
metric_list:
  - metric: acc
  - metric: acc_norm
""")
    (folder / "scratch_ppl.yaml").write_text(f"""\
task: scratch_ppl
dataset_path: json
dataset_kwargs:
  data_files:
    test: {text_file}
test_split: test
output_type: loglikelihood_rolling
doc_to_text: ""
doc_to_target: "{{{{text}}}}"
metric_list:
  - metric: bits_per_byte
    aggregation: bits_per_byte
    higher_is_better: false
""")


def test_harness_run_matches_our_own_scorers(lm, tmp_path, monkeypatch):
    lm_eval = pytest.importorskip("lm_eval")
    from lm_eval.tasks import TaskManager

    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "hf_cache"))
    mc, txt = tmp_path / "mc.jsonl", tmp_path / "text.jsonl"
    mc.write_text("".join(json.dumps({"context": it.context, "endings": it.endings, "label": it.label}) + "\n"
                          for it in ITEMS))
    txt.write_text("".join(json.dumps({"text": t}) + "\n" for t in TEXTS))
    tasks = tmp_path / "tasks"
    tasks.mkdir()
    _write_tasks(tasks, mc, txt)
    out = lm_eval.simple_evaluate(model=lm, tasks=["scratch_mc", "scratch_ppl"],
                                  task_manager=TaskManager(include_path=str(tasks)), bootstrap_iters=0,
                                  log_samples=False)
    res = out["results"]
    ours = evaluate_hellaswag(lm.model, lm.tok, ITEMS)
    assert res["scratch_mc"]["acc,none"] == pytest.approx(ours["acc"])
    assert res["scratch_mc"]["acc_norm,none"] == pytest.approx(ours["acc_norm"])
    # the harness's bits_per_byte: -sum log p / (ln 2 * total UTF-8 bytes) over all documents
    nats = sum(r["loss"] * r["tokens"] for r in (bits_per_byte(lm.model, lm.tok, t) for t in TEXTS))
    n_bytes = sum(len(t.encode()) for t in TEXTS)
    assert res["scratch_ppl"]["bits_per_byte,none"] == pytest.approx(nats / math.log(2) / n_bytes, rel=1e-5)
