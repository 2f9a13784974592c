"""Post-training: loss masks, packing, DPO / Bradley-Terry / GRPO maths by hand, LoRA merging, the chat template."""

from __future__ import annotations

import json
import math

import pytest
import torch

from scratchlm.inference.chat_template import CHAT_TEMPLATE, encode_chat, render_chat
from scratchlm.inference.testing import ByteTokenizer
from scratchlm.model import ModelConfig, Transformer
from scratchlm.posttrain.dpo import dpo_loss, sequence_logps
from scratchlm.posttrain.formats import load_preferences, load_sft, load_tasks, to_messages
from scratchlm.posttrain.grpo import group_advantages, grpo_loss
from scratchlm.posttrain.lora import LoRAConfig, adapters_disabled, apply_lora, merge_lora, merged_state_dict
from scratchlm.posttrain.packing import forward_batch
from scratchlm.posttrain.reward import bradley_terry_loss
from scratchlm.posttrain.tokenize import (IGNORE, encode_chat_with_mask, make_batches, make_example,
                                          make_reply_example, pack_rows, packed_batch, pad_batch)

TOK = ByteTokenizer()
CONV = [{"role": "system", "content": "Be kind."}, {"role": "user", "content": "Hi?"},
        {"role": "assistant", "content": "Hello!"}, {"role": "user", "content": "2+2?"},
        {"role": "assistant", "content": "4"}]


def tiny_model(seed: int = 0, **kw) -> Transformer:
    torch.manual_seed(seed)
    cfg = ModelConfig.from_preset("llama-tiny", vocab_size=TOK.vocab_size, max_seq_len=128, **kw)
    return Transformer(cfg).eval()


def _targets_text(ex) -> str:
    return TOK.decode([t for t in ex.y if t != IGNORE])


# ------------------------------------------------------------------------------------------- masking

def test_mask_covers_exactly_the_assistant_replies():
    ids, target = encode_chat_with_mask(TOK, CONV)
    assert ids == encode_chat(TOK, CONV, add_generation_prompt=False)  # the one template, same ids
    assert TOK.decode([i for i, t in zip(ids, target) if t]) == "Hello!<|im_end|>4<|im_end|>"
    ex = make_example(TOK, CONV, max_len=500)
    assert _targets_text(ex) == "Hello!<|im_end|>4<|im_end|>"
    assert all(y == IGNORE or y == x_next for y, x_next in zip(ex.y, ex.x[1:] + [ex.y[-1]]))
    full = make_example(TOK, CONV, max_len=500, assistant_only=False)
    assert all(y != IGNORE for y in full.y)  # full-sequence option: every next token is a target


def test_loss_only_on_assistant_tokens_with_packing():
    a = make_example(TOK, CONV, 500)
    b = make_example(TOK, [{"role": "user", "content": "Yo"}, {"role": "assistant", "content": "Hey there"}], 500)
    rows = pack_rows([a, b], seq_len=len(a) + len(b))
    assert len(rows) == 1
    batch = packed_batch(rows, len(a) + len(b), TOK.pad_id)
    got = TOK.decode([t for t in batch.y[0].tolist() if t != IGNORE])
    assert sorted(got.split("<|im_end|>")) == sorted(["Hello!", "4", "Hey there", ""])
    # the boundary: the last input of the first sample must not be trained to predict the next sample's BOS
    doc = batch.doc_ids[0]
    boundary = int((doc[1:] != doc[:-1]).nonzero()[0]) + 1
    assert batch.y[0, boundary - 1] == IGNORE and batch.positions[0, boundary] == 0
    # gradient check: the loss does not depend on logits at masked positions
    model = tiny_model()
    logits = forward_batch(model, batch).detach().requires_grad_(True)
    F = torch.nn.functional
    F.cross_entropy(logits.flatten(0, 1), batch.y.flatten(), ignore_index=IGNORE, reduction="sum").backward()
    scored = (batch.y[0] != IGNORE)
    assert torch.all(logits.grad[0][~scored] == 0) and torch.all(logits.grad[0][scored].abs().sum(-1) > 0)


@pytest.mark.parametrize("pos_emb", ["rope", "learned"])
def test_packed_forward_equals_separate_forwards(pos_emb):
    kw = {} if pos_emb == "rope" else {"pos_emb": "learned"}
    model = tiny_model(**kw)
    exs = [make_example(TOK, [{"role": "user", "content": u}, {"role": "assistant", "content": r}], 500)
           for u, r in (("a", "bcd"), ("hello", "world!"), ("x" * 7, "y"))]
    batch = packed_batch([exs], 200, TOK.pad_id)
    with torch.no_grad():
        packed = forward_batch(model, batch)[0]
        t = 0
        for e in exs:
            alone = model(torch.tensor([e.x]))[0]
            torch.testing.assert_close(packed[t:t + len(e)], alone, rtol=1e-5, atol=1e-5)
            t += len(e)


def test_padded_batch_matches_solo_and_normaliser_counts_all_micro_batches():
    model = tiny_model()
    exs = [make_example(TOK, [{"role": "user", "content": "q" * n}, {"role": "assistant", "content": "r" * n}], 500)
           for n in (1, 5, 9, 3)]
    batches = make_batches(exs, 2, 100, TOK.pad_id, "pad", seed=1)
    # length-grouped: the two shortest share a batch, the two longest the other
    lengths = sorted(sorted(int(n) for n in (b.y != IGNORE).sum(1)) for b in batches)
    assert lengths == [[2, 4], [6, 10]]  # targets per row: reply + <|im_end|>
    assert sum(b.n_targets for b in batches) == sum(sum(y != IGNORE for y in e.y) for e in exs)
    F = torch.nn.functional
    with torch.no_grad():
        total = sum(F.cross_entropy(model(b.x).flatten(0, 1), b.y.flatten(), ignore_index=IGNORE, reduction="sum")
                    for b in batches)
        solo = sum(F.cross_entropy(model(torch.tensor([e.x]))[0], torch.tensor(e.y), ignore_index=IGNORE,
                                   reduction="sum") for e in exs)
    torch.testing.assert_close(total, solo, rtol=1e-5, atol=1e-4)


# ------------------------------------------------------------------------------------------- formats

def test_formats(tmp_path):
    p = tmp_path / "a.jsonl"
    p.write_text("\n".join(json.dumps(r) for r in [
        {"instruction": "Add", "input": "1 2", "output": "3"},
        {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]},
        {"conversations": [{"from": "human", "value": "hi"}, {"from": "gpt", "value": "yo"}]}]))
    a, b, c = load_sft(p)
    assert a == [{"role": "user", "content": "Add\n\n1 2"}, {"role": "assistant", "content": "3"}]
    assert b == c
    q = tmp_path / "p.json"
    q.write_text(json.dumps([
        {"instruction": "i", "input": "", "chosen": "good", "rejected": "bad"},
        {"conversations": [{"from": "human", "value": "h"}], "chosen": {"from": "gpt", "value": "g"},
         "rejected": {"from": "gpt", "value": "b"}}]))
    x, y = load_preferences(q)
    assert (x.prompt, x.chosen, x.rejected) == ([{"role": "user", "content": "i"}], "good", "bad")
    assert (y.prompt, y.chosen, y.rejected) == ([{"role": "user", "content": "h"}], "g", "b")
    t = tmp_path / "t.jsonl"
    t.write_text(json.dumps({"question": "q?", "answer": "so 1,234\n#### 1,234"}))
    assert load_tasks(t)[0]["answer"] == "1234"
    with pytest.raises(ValueError, match="unknown format"):
        to_messages({"text": "x"})


def test_shared_preference_files_parse():
    from conftest import shared_path

    a = shared_path("llms-from-scratch/instruction-data-with-preference.json")
    b = shared_path("llama-factory/dpo_en_demo.json")
    pa, pb = load_preferences(a), load_preferences(b)
    assert len(pa) == 1100 and len(pb) == 300 and all(p.chosen and p.rejected for p in pa + pb)


# ------------------------------------------------------------------------------------------- DPO

def test_dpo_loss_by_hand():
    pc, pr = torch.tensor([-5.0, -7.0]), torch.tensor([-9.0, -6.0])
    rc, rr = torch.tensor([-6.0, -7.5]), torch.tensor([-8.0, -6.5])
    beta = 0.1
    losses, cr, rj = dpo_loss(pc, pr, rc, rr, beta)
    # pair 0: h = (-5 + 6) - (-9 + 8) = 2;  pair 1: h = 0.5 - 0.5 = 0
    expect = [-math.log(1 / (1 + math.exp(-0.2))), math.log(2)]
    torch.testing.assert_close(losses, torch.tensor(expect))
    torch.testing.assert_close(cr, torch.tensor([0.1, 0.05]))
    torch.testing.assert_close(rj, torch.tensor([-0.1, 0.05]))
    ls, _, _ = dpo_loss(pc, pr, rc, rr, beta, label_smoothing=0.1)
    s = 1 / (1 + math.exp(-0.2))
    torch.testing.assert_close(ls[0], torch.tensor(-0.9 * math.log(s) - 0.1 * math.log(1 - s)))
    ipo, _, _ = dpo_loss(pc, pr, rc, rr, beta, loss_type="ipo")
    torch.testing.assert_close(ipo, torch.tensor([(2 - 5) ** 2, (0 - 5) ** 2], dtype=torch.float))


def test_dpo_loss_is_ln2_when_policy_is_reference():
    model = tiny_model()
    c = make_reply_example(TOK, [{"role": "user", "content": "hi"}], "good answer", 100)
    r = make_reply_example(TOK, [{"role": "user", "content": "hi"}], "bad", 100)
    b = pad_batch([c, r], TOK.pad_id)
    with torch.no_grad():
        lp = sequence_logps(model(b.x), b.y)
    losses, cr, rj = dpo_loss(lp[:1], lp[1:], lp[:1].clone(), lp[1:].clone())
    torch.testing.assert_close(losses, torch.tensor([math.log(2)]))
    assert cr.item() == 0 and rj.item() == 0
    # and sequence_logps is the sum of per-token log-probs of the reply only
    with torch.no_grad():
        alone = torch.log_softmax(model(torch.tensor([c.x]))[0], -1)
    want = sum(alone[t, y] for t, y in enumerate(c.y) if y != IGNORE)
    torch.testing.assert_close(lp[0], want, rtol=1e-5, atol=1e-4)


def test_pad_batch_rounds_widths_to_16_within_the_limit_and_no_log_prob_sees_it():
    c = make_reply_example(TOK, [{"role": "user", "content": "hi"}], "good answer", 100)
    r = make_reply_example(TOK, [{"role": "user", "content": "hi"}], "bad", 100)
    n = max(len(c), len(r))
    up = -(-n // 16) * 16
    assert up > n  # the case under test: rounding adds columns
    assert pad_batch([c, r], TOK.pad_id).x.shape == (2, n)  # no limit: the exact width
    assert pad_batch([c, r], TOK.pad_id, limit=100).x.shape == (2, up)
    assert pad_batch([c, r], TOK.pad_id, limit=n + 1).x.shape == (2, n + 1)  # never past the model's context
    assert pad_batch([c, r], TOK.pad_id, limit=n - 5).x.shape == (2, n)  # nor shorter than the longest row
    model = tiny_model()
    with torch.no_grad():
        exact, rounded = (pad_batch([c, r], TOK.pad_id, limit) for limit in (None, 100))
        torch.testing.assert_close(sequence_logps(model(rounded.x), rounded.y), sequence_logps(model(exact.x), exact.y))


# ------------------------------------------------------------------------------------------- reward model

def test_bradley_terry_loss_by_hand():
    rc, rr = torch.tensor([2.0, 0.0, -1.0]), torch.tensor([1.0, 0.0, 1.0])
    want = torch.tensor([math.log(1 + math.exp(-1)), math.log(2), math.log(1 + math.exp(2))]).mean()
    torch.testing.assert_close(bradley_terry_loss(rc, rr), want)


# ------------------------------------------------------------------------------------------- GRPO

def test_grpo_advantages_by_hand():
    r = torch.tensor([1.0, 0.0, 0.0, 1.0, 0.5, 0.5, 0.5, 0.5])
    adv = group_advantages(r, group_size=4)
    s = torch.tensor([1.0, 0, 0, 1]).std()  # unbiased std, as in the GRPO paper's code
    torch.testing.assert_close(adv[:4], torch.tensor([0.5, -0.5, -0.5, 0.5]) / (s + 1e-4))
    torch.testing.assert_close(adv[4:], torch.zeros(4))  # a group that all agree teaches nothing
    torch.testing.assert_close(group_advantages(r, 4, scale=False)[:4], torch.tensor([0.5, -0.5, -0.5, 0.5]))


def test_grpo_clipping_by_hand():
    # one token per sequence; ratios 1.5 and 0.5, advantages +1 and -1, eps 0.2
    old = torch.zeros(4, 1)
    logp = torch.log(torch.tensor([[1.5], [1.5], [0.5], [0.5]])).requires_grad_(True)
    adv = torch.tensor([1.0, -1.0, 1.0, -1.0])
    mask = torch.ones(4, 1)
    loss, stats = grpo_loss(logp, old, adv, mask, clip_eps=0.2)
    # min(r A, clip(r) A): 1.2 (clipped), -1.5, 0.5, -0.8 (clipped)
    torch.testing.assert_close(loss, -torch.tensor([1.2, -1.5, 0.5, -0.8]).mean())
    loss.backward()
    # clipped tokens get no gradient; the others get -A * ratio / N
    torch.testing.assert_close(logp.grad[:, 0], torch.tensor([0.0, 1.5, -0.5, 0.0]) / 4)
    assert stats["clip_frac"] == 0.5
    # KL to the reference (k3 estimator): zero when policy == reference, positive otherwise
    ref = torch.log(torch.tensor([[1.0], [1.5], [0.5], [0.5]]))
    loss_kl, st = grpo_loss(logp.detach(), old, adv, mask, clip_eps=0.2, ref_logp=ref, kl_coef=0.1)
    d = math.log(1 / 1.5)
    torch.testing.assert_close(torch.tensor(st["kl"]), torch.tensor((math.exp(d) - d - 1) / 4), rtol=1e-5, atol=1e-6)


# ------------------------------------------------------------------------------------------- LoRA

def test_lora_merged_equals_unmerged():
    model = tiny_model()
    x = torch.randint(0, TOK.vocab_size, (2, 17))
    with torch.no_grad():
        base = model(x)
    wrapped = apply_lora(model, LoRAConfig(rank=4, alpha=8))
    assert len(wrapped) == model.config.n_layers * 7  # per layer: wq wk wv wo w_gate w_up w_down
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and all(".lora_" in n for n in trainable)
    with torch.no_grad():
        torch.testing.assert_close(model(x), base)  # B = 0 at init: LoRA starts as the identity
        for n, p in model.named_parameters():
            if ".lora_b" in n:
                p.normal_(0, 0.05)
        unmerged = model(x)
        assert (unmerged - base).abs().max() > 1e-3
        with adapters_disabled(model):
            torch.testing.assert_close(model(x), base)
        state = merged_state_dict(model)
        fresh = tiny_model(seed=1)
        fresh.load_state_dict(state)  # base parameter names: loads into a plain Transformer
        torch.testing.assert_close(fresh(x), unmerged, rtol=1e-5, atol=1e-5)
        merge_lora(model)
        assert not any(".lora_" in n for n, _ in model.named_parameters())
        torch.testing.assert_close(model(x), unmerged, rtol=1e-5, atol=1e-5)


# ------------------------------------------------------------------------------------------- chat template

def test_chat_template_matches_hf_apply_chat_template(tmp_path):
    transformers = pytest.importorskip("transformers")
    from scratchlm.tokenizer.train import train_bpe_from_texts

    texts = ["The cat sat on the mat. 2+2 is 4. Hello there, how are you today?"] * 20
    tok = train_bpe_from_texts(texts, vocab_size=300)
    tok.save(tmp_path, chat_template=CHAT_TEMPLATE)
    hf = transformers.PreTrainedTokenizerFast.from_pretrained(str(tmp_path))
    for msgs in (CONV, CONV[:2], [{"role": "user", "content": "multi\nline  text"}]):
        for gen in (True, False):
            text = hf.apply_chat_template(msgs, tokenize=False, add_generation_prompt=gen)
            assert text == render_chat(msgs, add_generation_prompt=gen)
            ids = hf.apply_chat_template(msgs, tokenize=True, add_generation_prompt=gen)
            if isinstance(ids, dict) or hasattr(ids, "input_ids"):
                ids = ids["input_ids"]
            assert list(ids) == encode_chat(tok, msgs, add_generation_prompt=gen)
            if not gen and msgs[-1]["role"] == "assistant":  # the SFT ids are the template's ids too
                assert encode_chat_with_mask(tok, msgs)[0] == list(ids)


def test_preference_split_prefers_explicit_then_twin_then_holdout(tmp_path):
    import json

    from scratchlm.posttrain.loop import load_preference_split

    def write(path, n, tag):
        rows = [{"instruction": f"{tag} q{i}", "input": "", "chosen": "good", "rejected": "bad"} for i in range(n)]
        path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")

    data = tmp_path / "prefs.jsonl"
    write(data, 20, "train")
    train, val = load_preference_split(str(data), "", 0.25, seed=0)  # no twin: a seeded share is held out
    assert len(train) + len(val) == 20 and len(val) == 5
    assert load_preference_split(str(data), "", 0.25, seed=0) == (train, val)  # deterministic
    write(tmp_path / "prefs_val.jsonl", 3, "twin")
    train, val = load_preference_split(str(data), "", 0.25, seed=0)  # the *_val twin wins
    assert len(train) == 20 and len(val) == 3
    other = tmp_path / "other.jsonl"
    write(other, 2, "explicit")
    train, val = load_preference_split(str(data), str(other), 0.25, seed=0)  # an explicit val file wins
    assert len(val) == 2


def test_one_process_stages_refuse_torchrun(tmp_path, monkeypatch):
    # the reward model has no data-parallel path: N torchrun copies would race on one run folder
    from scratchlm.posttrain.config import RewardConfig
    from scratchlm.posttrain.reward import RewardTrainer

    monkeypatch.setenv("WORLD_SIZE", "2")
    for cls, cfg_cls in ((RewardTrainer, RewardConfig),):
        with pytest.raises(ValueError, match="runs in one process.*launch it without torchrun"):
            cls(cfg_cls(), tmp_path / cls.stage)
        assert not (tmp_path / cls.stage).exists()


def test_dpo_grad_accum_must_split_over_the_ranks():
    from types import SimpleNamespace

    from scratchlm.posttrain.config import DPOConfig, DPOOptions
    from scratchlm.posttrain.dpo import DPOTrainer

    stub = SimpleNamespace(dp_size=2, cfg=DPOConfig(dpo=DPOOptions(grad_accum=3)))
    with pytest.raises(ValueError, match="dpo.grad_accum = 3 is not a multiple of the 2 data-parallel ranks"):
        DPOTrainer.check_layout(stub)
    DPOTrainer.check_layout(SimpleNamespace(dp_size=2, cfg=DPOConfig(dpo=DPOOptions(grad_accum=4))))


def test_fsdp_resume_needs_a_checkpoint_with_complete_optimizer_shards(tmp_path):
    # a kill between a checkpoint and its per-rank optimizer shards leaves optim_dcp.tmp, not optim_dcp: that
    # checkpoint is skipped, and with none complete the resume stops with a message instead of half-loading
    from types import SimpleNamespace

    from scratchlm.posttrain.loop import SHARDED, PostTrainer

    ckpt = tmp_path / "checkpoints" / "step_0000002"
    ckpt.mkdir(parents=True)
    (ckpt / "model.safetensors").write_bytes(b"")
    (ckpt / (SHARDED + ".tmp")).mkdir()
    stub = SimpleNamespace(run_dir=tmp_path, sharded_optimizer=True, is_main=True, ctx=None)
    with pytest.raises(ValueError, match="no checkpoint .* has the sharded optimizer state an FSDP resume needs"):
        PostTrainer._resume(stub)


def test_a_run_resumed_at_the_end_of_an_epoch_starts_the_next():
    """SFT/DPO/GRPO/reward keep (epoch, cursor) in checkpoints, not the order. A SIGTERM that landed exactly at an
    epoch's end made the resumed run index past its rebuilt order (IndexError in SFT, empty batches in DPO)."""
    from scratchlm.posttrain.loop import next_epoch_position, shuffled

    built = []

    def build(e):
        built.append(e)
        return shuffled(4, 100 + e)

    order, cursor, epoch = next_epoch_position(None, 4, 2, build)  # resumed with epoch 2 spent
    assert (cursor, epoch) == (0, 3) and built == [2, 3] and order == shuffled(4, 103)
    order, cursor, epoch = next_epoch_position(None, 1, 2, build)  # resumed mid-epoch: the same order again
    assert (order, cursor, epoch) == (shuffled(4, 102), 1, 2)
    assert next_epoch_position(order, 3, 2, build) == (order, 3, 2)  # nothing to do mid-epoch
    assert sorted(shuffled(5, 0)) == list(range(5)) and shuffled(5, 0) == shuffled(5, 0)
