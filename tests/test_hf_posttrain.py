"""Post-training an imported Hugging Face model in its own chat template (TRL's way): the reply mask equals
transformers' {% generation %} assistant mask, a template without that tag still marks each reply through its
end-of-turn token, and `import hf` -> `sft` -> `dpo` -> `generate --chat` keeps the model's template."""

from __future__ import annotations

import json

import pytest

transformers = pytest.importorskip("transformers")
pytest.importorskip("tokenizers")
pytest.importorskip("jinja2")

from scratchlm.inference.chat_template import encode_chat, turn_end_id  # noqa: E402
from scratchlm.posttrain.tokenize import IGNORE, encode_chat_with_mask, make_reply_example  # noqa: E402
from scratchlm.tokenizer import load_tokenizer  # noqa: E402
from tests.test_hf_chat_template import CHATML, LLAMA3, SPECIALS, _folder, hf_tokenizer_json  # noqa: E402,F401

CONV = [{"role": "system", "content": "Be brief."},
        {"role": "user", "content": "What is 3 plus 4?"},
        {"role": "assistant", "content": "3 plus 4 is 7."},
        {"role": "user", "content": "And 10 times 2?"},
        {"role": "assistant", "content": "It is 20."}]


def _special_ids(tokenizer_json: str) -> dict[str, int]:
    return {t["content"]: t["id"] for t in json.loads(tokenizer_json)["added_tokens"]}


def test_reply_mask_equals_transformers_generation_mask(tmp_path, hf_tokenizer_json):
    d = _folder(tmp_path / "tok", hf_tokenizer_json, LLAMA3, "<|endoftext|>", "<|begin_of_text|>")
    tok, ref = load_tokenizer(d), transformers.AutoTokenizer.from_pretrained(str(d))
    for conv in (CONV, CONV[1:3], CONV[:3]):
        out = ref.apply_chat_template(conv, tokenize=True, return_dict=True, return_assistant_tokens_mask=True)
        ids, target = encode_chat_with_mask(tok, conv)
        assert ids == list(out["input_ids"])
        assert [int(t) for t in target] == list(out["assistant_masks"]) and any(target)
    ids, target = encode_chat_with_mask(tok, CONV, assistant_only=False)
    assert all(target)
    ids2, target2 = encode_chat_with_mask(tok, CONV[:2], add_generation_prompt=True)
    assert ids2 == ref.apply_chat_template(CONV[:2], add_generation_prompt=True, tokenize=True,
                                           return_dict=True)["input_ids"] and not any(target2)


def test_chatml_template_marks_each_reply_through_its_end_token(tmp_path, hf_tokenizer_json):
    """Qwen-like ChatML with a default system turn and no {% generation %} tag: reply + <|im_end|>, not the newline
    after it; every other token is context."""
    sp = _special_ids(hf_tokenizer_json)
    d = _folder(tmp_path / "tok", hf_tokenizer_json, CHATML, "<|im_end|>")
    tok = load_tokenizer(d)
    assert turn_end_id(tok) == sp["<|im_end|>"]
    ids, target = encode_chat_with_mask(tok, CONV[1:])
    assert ids == encode_chat(tok, CONV[1:], add_generation_prompt=False)
    spans, cur = [], []
    for i, t in zip(ids, target):
        if t:
            cur.append(i)
        elif cur:
            spans.append(cur)
            cur = []
    assert [tok.decode(s) for s in spans] == ["3 plus 4 is 7.<|im_end|>", "It is 20.<|im_end|>"]
    assert "You are helpful." in tok.decode(ids)  # the template's default system turn is part of what is trained on
    ex = make_reply_example(tok, CONV[1:2], "It is 7.", max_len=256)  # DPO / reward / GRPO: one reply to a prompt
    scored = [y for y in ex.y if y != IGNORE]
    assert tok.decode(scored) == "It is 7.<|im_end|>"
    assert ex.x[:len(ex.x) - len(scored) + 1] == encode_chat(tok, CONV[1:2], add_generation_prompt=True)


def test_unstable_template_is_refused(tmp_path, hf_tokenizer_json):
    # writes only the last assistant turn's content: earlier replies render differently once more turns follow
    odd = ("{% for m in messages %}{{ '<|im_start|>' + m.role + '\\n' }}{% if m.role != 'assistant' or loop.last %}"
           "{{ m.content }}{% endif %}{{ '<|im_end|>\\n' }}{% endfor %}"
           "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}")
    tok = load_tokenizer(_folder(tmp_path / "tok", hf_tokenizer_json, odd, "<|im_end|>"))
    with pytest.raises(ValueError, match=r"renders messages\[1\] \(assistant\) differently"):
        encode_chat_with_mask(tok, CONV[1:4] + [{"role": "assistant", "content": "20."}])


def test_import_sft_dpo_generate_keep_the_models_template(tmp_path, hf_tokenizer_json, capsys):
    import torch

    from scratchlm.cli.main import main

    sp = _special_ids(hf_tokenizer_json)
    vocab = max(sp.values()) + 1
    cfg = transformers.LlamaConfig(vocab_size=vocab, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                   num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128)
    torch.manual_seed(0)
    src = tmp_path / "hf"
    transformers.LlamaForCausalLM(cfg).save_pretrained(str(src))
    _folder(src, hf_tokenizer_json, LLAMA3, "<|endoftext|>", "<|begin_of_text|>")
    data, prefs = tmp_path / "sft.jsonl", tmp_path / "prefs.jsonl"
    data.write_text("".join(json.dumps({"instruction": f"Say {w}.", "output": f"{w}."}) + "\n"
                            for w in ("yes", "no", "maybe", "hello", "bye", "ok", "good", "bad")))
    prefs.write_text("".join(json.dumps({"instruction": f"Say {w}.", "chosen": f"{w}.", "rejected": "What?"}) + "\n"
                             for w in ("yes", "no", "maybe", "hello", "bye", "ok")))
    run, sft, dpo = tmp_path / "run", tmp_path / "sft", tmp_path / "dpo"
    common = ["--set", "train.seq_len=64", "--set", "train.micro_batch_size=2", "--set", "train.max_steps=2",
              "--device", "cpu", "-q"]
    assert main(["import", "hf", "--from", str(src), "--out", str(run)]) == 0
    assert main(["sft", "--base", str(run), "--data", str(data), "--out", str(sft), *common]) == 0
    assert main(["dpo", "--base", str(sft), "--data", str(prefs), "--out", str(dpo), *common]) == 0
    for r in (sft, dpo):  # the run keeps the model's template, so serving renders what training saw
        assert json.loads((r / "tokenizer" / "tokenizer_config.json").read_text())["chat_template"] == LLAMA3
    capsys.readouterr()
    assert main(["generate", "--run", str(dpo), "--chat", "--prompt", "Say yes.", "--max-new-tokens", "4",
                 "--temperature", "0", "--json"]) == 0
    assert json.loads(capsys.readouterr().out.splitlines()[0])["prompt"] == "Say yes."
