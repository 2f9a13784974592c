"""Hugging Face interop: the exported files give our exact ids in `tokenizers` and `transformers`, and our
trainer learns the same vocabulary as Hugging Face's BpeTrainer."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from scratchlm.tokenizer import (GPT2_PATTERN, GPT4_PATTERN, BPETokenizer, CharTokenizer, load_tokenizer,
                                 train_bpe_from_texts)

tokenizers = pytest.importorskip("tokenizers")
transformers = pytest.importorskip("transformers")

from conftest import SHARED_DATA as SHARED, builtin_corpus, shared_path  # noqa: E402

MIXED = (
    "The quick brown fox jumps over the lazy dog. It's 2024; they'll pay $1,234.56 (or 7890) tomorrow.\r\n"
    "Café, naïve, résumé, façade — Straße über alles. e\u0301 a\u0308 o\u0302 ſ K\n"
    "日本語のテキストです。中文文本也在这里。한국어 텍스트도 있습니다. Привет, мир! Γειά σου κόσμε.\n"
    "Emoji: 👍🏽 👨‍👩‍👧‍👦 🇫🇷 🎉🎉🎉 and tabs\tand   spaces   \n\n\n"
    "def f(x):\n    return x ** 2  # code, too\n  \t\n\u00a0\u3000 x\u2028y\x00z 'S 'LL 'Ve\n"
)


def _corpus() -> list[str]:
    # TinyWorld gives every machine enough distinct counts for 2000 tokens; the books in ../shared add variety
    texts = [MIXED] * 20 + builtin_corpus(200_000)
    for name in ("tinyshakespeare/input.txt", "gutenberg/pg11.txt"):
        if (SHARED / name).is_file():
            texts.append((SHARED / name).read_bytes().decode("utf-8")[:200_000])
    return texts


@pytest.fixture(scope="module", params=["gpt4", "gpt2"])
def saved(request, tmp_path_factory):
    tok = train_bpe_from_texts(_corpus(), 2000, pattern=request.param)
    d = tmp_path_factory.mktemp(f"tok_{request.param}")
    tok.save(d, chat_template="{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
                              "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
    hf_raw = tokenizers.Tokenizer.from_file(str(d / "tokenizer.json"))
    fast = transformers.PreTrainedTokenizerFast(tokenizer_file=str(d / "tokenizer.json"))
    auto = transformers.AutoTokenizer.from_pretrained(str(d))
    return load_tokenizer(d), hf_raw, fast, auto


def _samples() -> list[str]:
    out = [MIXED, "", " ", "\n\n", "a" * 3000, " " * 2000 + "x", "\r\n" * 100, "1234567890" * 10, "🎉" * 50]
    for name in ("tinystories/tinystories_val_head.txt", "gutenberg/pg1342.txt", "llama-factory/alpaca_en_demo.json",
                 "gsm8k/test.jsonl", "hh-rlhf/harmless-base_test.jsonl"):
        if (SHARED / name).is_file():
            data = (SHARED / name).read_bytes().decode("utf-8")
            out += [data[:100_000], data[-30_000:]]
    return out


def test_exported_tokenizer_gives_our_ids(saved):
    ours, hf_raw, fast, auto = saved
    for k, text in enumerate(_samples()):
        want = ours.encode(text, allowed_special="all")  # a few data files hold "<|endoftext|>"
        assert hf_raw.encode(text, add_special_tokens=False).ids == want
        if k % 3 == 0:  # the transformers wrappers are the same Rust tokenizer; a third of the texts suffice
            assert fast.encode(text, add_special_tokens=False) == want
            assert auto.encode(text, add_special_tokens=False) == want
            assert auto.decode(want) == text


@settings(max_examples=150, deadline=None)
@given(st.one_of(st.text(max_size=200),
                 st.lists(st.sampled_from(list("aé\u0301 \t\r\n\x00😀\u3000'sSKſl12.,") + ["  ", "\r\n", "'ll"]),
                          max_size=80).map("".join)))
def test_property_hf_equals_ours(saved, text):
    ours, hf_raw, _, _ = saved
    # Hugging Face always matches added special tokens, which is our allowed_special="all"
    assert hf_raw.encode(text, add_special_tokens=False).ids == ours.encode(text, allowed_special="all")


def test_special_tokens_and_chat_template(saved):
    ours, _, fast, auto = saved
    # Hugging Face always recognises added special tokens, i.e. our allowed_special="all"
    text = "<|bos|>hi<|endoftext|><|im_start|>user\nyo<|im_end|>\n<|pad|>"
    assert auto.encode(text, add_special_tokens=False) == ours.encode(text, allowed_special="all")
    assert (auto.eos_token_id, auto.bos_token_id, auto.pad_token_id) == (ours.eos_id, ours.bos_id, ours.pad_id)
    assert auto.convert_tokens_to_ids("<|im_start|>") == ours.special_tokens["<|im_start|>"]
    assert len(auto) == ours.vocab_size
    msgs = [{"role": "user", "content": "Hello!"}]
    rendered = auto.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
    assert rendered == "<|im_start|>user\nHello!<|im_end|>\n<|im_start|>assistant\n"
    assert auto(rendered, add_special_tokens=False)["input_ids"] == ours.encode(rendered, allowed_special="all")
    assert json.loads((Path(auto.name_or_path) / "special_tokens_map.json").read_text())["eos_token"] == "<|endoftext|>"


def test_same_vocabulary_as_hf_bpe_trainer():
    # Same counts -> same merges; ties are ordered differently (HF orders by its own ids), so compare as sets.
    from tokenizers import Regex, models, pre_tokenizers, trainers

    from scratchlm.tokenizer.hf import bytes_to_unicode

    texts = _corpus()
    for pattern in (GPT4_PATTERN, GPT2_PATTERN):
        hf = tokenizers.Tokenizer(models.BPE())
        hf.pre_tokenizer = pre_tokenizers.Sequence([
            pre_tokenizers.Split(Regex(pattern), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
        trainer = trainers.BpeTrainer(vocab_size=256 + 600, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                      show_progress=False)
        hf.train_from_iterator(texts, trainer)
        hf_merges = json.loads(hf.to_str())["model"]["merges"]
        hf_tokens = {"".join(m) if isinstance(m, list) else m.replace(" ", "") for m in hf_merges}
        ours = train_bpe_from_texts(texts, 256 + 500 + 8, pattern=pattern)  # 500 < 600: clear of the last tie
        show = bytes_to_unicode()
        our_tokens = {"".join(show[b] for b in ours.id_to_bytes(256 + i)) for i in range(len(ours.merges))}
        assert len(our_tokens) == 500
        assert our_tokens <= hf_tokens


def test_char_tokenizer_export(tmp_path):
    tok = CharTokenizer.train("hello world\nthe end.", special_tokens=True)
    tok.save(tmp_path)
    auto = transformers.AutoTokenizer.from_pretrained(str(tmp_path))
    text = "hello<|endoftext|>the world.\n"
    assert auto.encode(text, add_special_tokens=False) == tok.encode(text, allowed_special="all")
    assert auto.decode(tok.encode("the end.")) == "the end."


def test_gpt2_original_files_behind_our_interface(tmp_path):
    gpt2_dir = shared_path("gpt2-tokenizer")
    import tiktoken
    from tiktoken.load import data_gym_to_mergeable_bpe_ranks
    from tokenizers import models, pre_tokenizers

    ours = load_tokenizer(gpt2_dir)
    py = load_tokenizer(gpt2_dir, backend="python")
    assert (ours.vocab_size, ours.eos_id, ours.bos_id) == (50257, 50256, None)
    ref_tt = tiktoken.Encoding("gpt2", pat_str=GPT2_PATTERN, special_tokens={"<|endoftext|>": 50256},
                               mergeable_ranks=data_gym_to_mergeable_bpe_ranks(str(gpt2_dir / "vocab.bpe"),
                                                                               str(gpt2_dir / "encoder.json")))
    # the original merge list, applied by Hugging Face's BPE model (GPT-2's own algorithm)
    ref_hf = tokenizers.Tokenizer(models.BPE.from_file(str(gpt2_dir / "encoder.json"), str(gpt2_dir / "vocab.bpe")))
    ref_hf.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    ours.save(tmp_path)
    back = load_tokenizer(tmp_path)
    exported = tokenizers.Tokenizer.from_file(str(tmp_path / "tokenizer.json"))
    for text in [MIXED, "Hello world", *[t[:20_000] for t in _samples()[9:]]]:
        want = ref_tt.encode(text, disallowed_special=())
        assert ours.encode(text) == py.encode(text) == back.encode(text) == want
        assert ref_hf.encode(text).ids == want
        assert exported.encode(text, add_special_tokens=False).ids == ours.encode(text, allowed_special="all")
        assert ours.decode(want) == text


@pytest.mark.slow
def test_every_code_point_splits_alike_in_all_three_regex_engines(saved):
    # Python `regex`, tiktoken's fancy-regex and Oniguruma carry their own Unicode tables; a code point that one
    # of them classes differently (letter? digit? space?) would split text differently. Try each one in contexts.
    ours, hf_raw, _, _ = saved
    py = BPETokenizer(ours.merges, pattern=ours.pattern_name, backend="python")

    def text_for(cps):
        return "".join(f"x{chr(c)}x {chr(c)}1 '{chr(c)} {chr(c)}{chr(c)}\n" for c in cps)

    cps = [c for c in range(0x110000) if not 0xD800 <= c <= 0xDFFF]
    bad = []
    for i in range(0, len(cps), 4000):
        block = cps[i:i + 4000]
        text = text_for(block)
        want = ours.encode(text)
        if py.encode(text) != want or hf_raw.encode(text, add_special_tokens=False).ids != want:
            bad += [c for c in block if py.encode(text_for([c])) != ours.encode(text_for([c]))
                    or hf_raw.encode(text_for([c]), add_special_tokens=False).ids != ours.encode(text_for([c]))]
    assert not bad, [hex(c) for c in bad[:20]]
