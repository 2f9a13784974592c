"""A Hugging Face tokenizer.json loads as a scratchlm tokenizer with exactly the ids of the `tokenizers` library:
GPT-2's files (shared data), and Llama-3-style and Qwen2/SmolLM-style files trained here, offline."""

from __future__ import annotations

import json

import pytest

tokenizers = pytest.importorskip("tokenizers")

from tokenizers import (AddedToken, Regex, Tokenizer, decoders, models, normalizers,  # noqa: E402
                        pre_tokenizers, trainers)

from scratchlm.tokenizer import BPETokenizer, load_tokenizer  # noqa: E402
from scratchlm.tokenizer.hf_load import HFTokenizer, load_hf_tokenizer  # noqa: E402
from tests.conftest import builtin_corpus, shared_path  # noqa: E402

LLAMA3_PATTERN = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
                  r"|\s*[\r\n]+|\s+(?!\S)|\s+")
QWEN2_PATTERN = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
                 r"|\s*[\r\n]+|\s+(?!\S)|\s+")
LLAMA3_SPECIALS = ["<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"]
QWEN2_SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]

MIXED = ("Hello, world! It's 2024-06-01; we'll test 1234567 numbers & 3.14159 and DON'T SHOUT.\n"
         "def f(x):\n\treturn x**2  # code\n\n\n    if (a[i] != b) { y += 0x1F; }\n"
         "中文分词测试，日本語のテキスト。 Русский текст, ёжик! العربية نص جميل 😀👍🏽 👨‍👩‍👧\n"
         "   odd\u00a0white\u2003space\r\n\x0b\x0c end   \t  caf\u0065\u0301 ﬁ ① ²  ")


def _corpus() -> list[str]:
    """TinyWorld English plus the mixed text in pieces, so the merges cover every script of MIXED a little."""
    lines = MIXED.splitlines()
    return builtin_corpus(60_000) + [" ".join(lines[i % len(lines)] for i in range(k, k + 3)) for k in range(60)]


def _train(pattern: str, trainer_specials=(), later_specials=(), later_plain=(), normalizer=None,
           ignore_merges=False, vocab_size=900) -> dict:
    """A byte-level BPE tokenizer.json trained by `tokenizers` with the given split regex: specials passed to the
    trainer take the first ids (SmolLM), added later they take the last (Llama 3, Qwen2)."""
    tok = Tokenizer(models.BPE())
    if normalizer is not None:
        tok.normalizer = normalizer
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(pattern), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=list(trainer_specials), show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(_corpus(), trainer)
    tok.add_special_tokens(list(later_specials))
    tok.add_tokens([AddedToken(t, special=False, normalized=False) for t in later_plain])
    data = json.loads(tok.to_str())
    data["model"]["ignore_merges"] = ignore_merges
    return data


@pytest.fixture(scope="module")
def llama3_json() -> dict:
    return _train(LLAMA3_PATTERN, later_specials=LLAMA3_SPECIALS, ignore_merges=True)


@pytest.fixture(scope="module")
def qwen2_json() -> dict:
    # Qwen2: NFC normalizer, one digit per chunk, non-special added tokens for tool calls; specials first (SmolLM)
    return _train(QWEN2_PATTERN, trainer_specials=QWEN2_SPECIALS, later_plain=["<tool_call>", "</tool_call>"],
                  normalizer=normalizers.NFC())


def _folder(tmp_path, data: dict, config: dict | None = None):
    (tmp_path / "tokenizer.json").write_text(json.dumps(data), encoding="utf-8")
    if config is not None:
        (tmp_path / "tokenizer_config.json").write_text(json.dumps(config), encoding="utf-8")
    return tmp_path


def _check_same_ids(data: dict, tok, texts) -> None:
    ref = Tokenizer.from_str(json.dumps(data))
    for text in texts:
        want = ref.encode(text, add_special_tokens=False).ids
        assert tok.encode(text, allowed_special="all") == want, text
        assert tok.decode(want) == ref.decode(want, skip_special_tokens=False)
    assert tok.encode_batch(list(texts), allowed_special="all") == [ref.encode(t, add_special_tokens=False).ids
                                                                    for t in texts]


def test_llama3_style_same_ids_as_tokenizers(tmp_path, llama3_json):
    tok = load_tokenizer(_folder(tmp_path, llama3_json, {"bos_token": "<|begin_of_text|>",
                                                         "eos_token": "<|end_of_text|>"}))
    assert isinstance(tok, HFTokenizer)
    texts = [MIXED, "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nHi 12345<|eot_id|>", "", " ",
             "x" * 300, " " * 200 + "\n" * 5]
    _check_same_ids(llama3_json, tok, texts)
    # without allowed_special a special token's text is ordinary text, never the control token
    eot = tok.special_tokens["<|eot_id|>"]
    assert eot not in tok.encode("a<|eot_id|>b") and tok.decode(tok.encode("a<|eot_id|>b")) == "a<|eot_id|>b"
    assert tok.eos_id == tok.special_tokens["<|end_of_text|>"]
    assert tok.rank_consistency() is None  # trained by `tokenizers`: tiktoken's rule is safe for encode_batch


def test_qwen2_smollm_style_same_ids_as_tokenizers(tmp_path, qwen2_json):
    tok = load_tokenizer(_folder(tmp_path, qwen2_json, {"eos_token": "<|im_end|>", "pad_token": "<|endoftext|>"}))
    assert tok.special_tokens["<|endoftext|>"] == 0  # specials first, as SmolLM's
    texts = [MIXED, "<|im_start|>user\nWhat is 12+30?<|im_end|>\n<|im_start|>assistant\n<tool_call>{\"a\": 1}"
             "</tool_call><|im_end|>", "caf\u0065\u0301 au lait"]
    _check_same_ids(qwen2_json, tok, texts)
    # non-special added tokens are words: cut out even when no special token is allowed, as tokenizers does
    assert tok.encode("<tool_call>") == [qwen2_json["added_tokens"][-2]["id"]]
    assert (tok.eos_id, tok.pad_id, tok.bos_id) == (tok.special_tokens["<|im_end|>"], 0, None)


def test_smollm_style_digits_then_bytelevel_regex(tmp_path):
    # SmolLM's pre-tokenizer: every digit alone, then GPT-2's regex inside ByteLevel; specials take ids 0..2
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True),
                                                 pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)])
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(_corpus(), trainers.BpeTrainer(
        vocab_size=700, special_tokens=QWEN2_SPECIALS, show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    data = json.loads(tok.to_str())
    hf = load_hf_tokenizer(_folder(tmp_path, data))
    assert "2 splits" in hf.rank_consistency()  # two splits in a row: no single regex for tiktoken
    _check_same_ids(data, hf, [MIXED, "<|im_start|>user\n12345 apples<|im_end|>", "x1y22z333 ٣٤"])


def test_gpt2_tokenizer_json_same_ids_as_tokenizers_and_tiktoken(tmp_path):
    d = shared_path("gpt2-tokenizer")
    ref = Tokenizer(models.BPE.from_file(str(d / "encoder.json"), str(d / "vocab.bpe")))
    ref.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    ref.decoder = decoders.ByteLevel()
    ref.add_special_tokens(["<|endoftext|>"])
    data = json.loads(ref.to_str())
    tok = load_hf_tokenizer(_folder(tmp_path, data))
    texts = [MIXED + "<|endoftext|>", "  many   spaces\n\n\nand 'quotes' isn't it"]
    _check_same_ids(data, tok, texts)
    assert tok.rank_consistency() is None
    ours = load_tokenizer(d)  # our tiktoken-rule loader of the same vocabulary agrees too
    assert ours.encode(MIXED) == tok.encode(MIXED)


def test_our_own_export_reads_back_with_the_same_ids(tmp_path):
    # our export lists every split of every token (several merges per token, as Llama 3's converted list) with
    # ignore_merges: the exact path must give our ids, and those of tokenizers
    from scratchlm.tokenizer import train_bpe_from_texts

    ours = train_bpe_from_texts(_corpus()[-80:], vocab_size=400)
    ours.save(tmp_path)
    hf = load_hf_tokenizer(tmp_path)
    assert "more than one merge" in hf.rank_consistency()
    text = MIXED + "<|im_start|>user\nhi<|im_end|>"
    assert hf.encode(text, allowed_special="all") == ours.encode(text, allowed_special="all")
    _check_same_ids(json.loads((tmp_path / "tokenizer.json").read_text(encoding="utf-8")), hf, [text])


def _abc_json(merges: list[str]) -> dict:
    from scratchlm.tokenizer.hf import bytes_to_unicode

    vocab = {c: i for i, c in enumerate(bytes_to_unicode().values())}
    for s in ("ab", "bc", "abc"):
        vocab[s] = len(vocab)
    return {"version": "1.0", "added_tokens": [], "normalizer": None, "post_processor": None,
            "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True},
            "decoder": {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True},
            "model": {"type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": None,
                      "end_of_word_suffix": None, "fuse_unk": False, "byte_fallback": False, "ignore_merges": False,
                      "vocab": vocab, "merges": merges}}


def test_merge_list_not_rank_consistent_still_same_ids(tmp_path):
    # merges [b c, a b, ab c]: "abc" is [a, bc] for Hugging Face, [abc] for tiktoken's concatenation-rank rule
    data = _abc_json(["b c", "a b", "ab c"])
    tok = load_hf_tokenizer(_folder(tmp_path, data))
    assert "disagree" in tok.rank_consistency()
    v = data["model"]["vocab"]
    assert tok.encode("abc") == [v["a"], v["bc"]]
    tiktoken_rule = BPETokenizer.from_ranks({tok.id_to_bytes(i): i for i in range(len(v))}, backend="python")
    assert tiktoken_rule.encode("abc") == [v["abc"]]  # what a rank-only loader would have said
    _check_same_ids(data, tok, ["abc abcd xabcab", "ab bc abc"])
    # ids follow positions, but "abc" (from a + bc) is not what its own bytes encode to ([ab, c]): caught too
    data = _abc_json(["a b", "b c", "a bc"])
    tok = load_hf_tokenizer(_folder(tmp_path, data))
    assert "does not encode to itself" in tok.rank_consistency()
    assert tok.encode("abc") == [v["ab"], v["c"]]
    _check_same_ids(data, tok, ["abc abcd xabcab", "ab bc abc"])


def test_reordered_merges_of_a_real_file_same_ids(tmp_path, llama3_json):
    data = json.loads(json.dumps(llama3_json))
    merges = data["model"]["merges"]
    data["model"]["merges"] = merges[:300] + merges[300:][::-1]  # still a valid file, different behaviour
    data["model"]["ignore_merges"] = False
    tok = load_hf_tokenizer(_folder(tmp_path, data))
    assert tok.rank_consistency() is not None
    _check_same_ids(data, tok, [MIXED])


def test_unsupported_kinds_fail_with_one_line(tmp_path, llama3_json):
    cases = {
        "WordPiece": json.loads(Tokenizer(models.WordPiece({"[UNK]": 0, "a": 1}, unk_token="[UNK]")).to_str()),
        "Unigram": json.loads(Tokenizer(models.Unigram([("<unk>", 0.0), ("a", -1.0)], 0)).to_str()),
    }
    lower = json.loads(json.dumps(llama3_json))
    lower["normalizer"] = json.loads(normalizers.Lowercase().__getstate__())
    cases["Lowercase"] = lower
    meta = json.loads(json.dumps(llama3_json))
    meta["pre_tokenizer"] = json.loads(pre_tokenizers.Metaspace().__getstate__())
    cases["Metaspace"] = meta
    for word, data in cases.items():
        with pytest.raises(ValueError, match=word) as e:
            load_tokenizer(_folder(tmp_path, data))
        assert "\n" not in str(e.value) and "scratchlm" in str(e.value)
