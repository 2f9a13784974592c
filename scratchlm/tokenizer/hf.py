"""Hugging Face export: tokenizer.json, tokenizer_config.json and special_tokens_map.json, written as plain JSON.

The exported tokenizer must give exactly our ids. Our encoder works like tiktoken: inside a chunk, repeatedly merge
the adjacent pair whose *concatenation* has the lowest rank (leftmost on ties), and emit a chunk that is itself a
token directly. Hugging Face's BPE model instead applies the listed merges by list position. To make the two
agree, the merge list holds every split of every token into two tokens (x, y), ordered by the rank of x + y, so
"concatenation in the vocabulary" and "pair in the merge list" are the same test with the same priority; and
`ignore_merges` gives the whole-chunk shortcut. Bytes are shown with GPT-2's byte -> printable-character map.

BOS: every pretraining document starts with BOS (data/shards.py) and `scratchlm generate` prepends it, so
`tokenizer(text)` in transformers must prepend it too. The tokenizer.json post-processor (TemplateProcessing) is
what decides: `tokenizers` runs it, transformers 4.x's PreTrainedTokenizerFast ignores add_bos_token, and 5.25.0
keeps the post-processor even under add_bos_token=false (checked). tokenizer_config.json says add_bos_token=true
all the same, for tools that read it. `add_special_tokens=False` gives our ids without BOS, and
apply_chat_template passes it, its template writing the BOS itself.
"""

from __future__ import annotations

from functools import lru_cache

from .pretokenize import BOS_TOKEN, EOS_TOKEN, PAD_TOKEN


@lru_cache(maxsize=1)
def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible map from the 256 bytes to printable characters (space -> 'Ġ', newline -> 'Ċ')."""
    keep = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    mapping, n = {}, 0
    for b in range(256):
        if b in keep:
            mapping[b] = chr(b)
        else:
            mapping[b] = chr(256 + n)  # unprintable bytes move past Latin-1
            n += 1
    return mapping


def _show(token: bytes) -> str:
    m = bytes_to_unicode()
    return "".join(m[b] for b in token)


def all_splits_merges(token_bytes: list[bytes]) -> list[tuple[int, int]]:
    """Every (x, y) with bytes(x) + bytes(y) = a token, ordered by (rank of the token, rank of x)."""
    rank = {t: i for i, t in enumerate(token_bytes)}
    out = []
    for t in token_bytes:
        for cut in range(1, len(t)):
            x, y = rank.get(t[:cut]), rank.get(t[cut:])
            if x is not None and y is not None:
                out.append((x, y))
    return out


def _added_tokens(special_tokens: dict[str, int]) -> list[dict]:
    return [
        {"id": i, "content": s, "single_word": False, "lstrip": False, "rstrip": False, "normalized": False,
         "special": True}
        for s, i in sorted(special_tokens.items(), key=lambda kv: kv[1])
    ]


def bos_post_processor(special_tokens: dict[str, int]) -> dict | None:
    """A TemplateProcessing post-processor that puts BOS before each sequence (Llama's "<s> $A <s> $B"); None
    without a BOS token. Its special token is given by id as well, so `tokenizers` needs no lookup."""
    if BOS_TOKEN not in special_tokens:
        return None
    single = [{"SpecialToken": {"id": BOS_TOKEN, "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}]
    second = [{"SpecialToken": {"id": BOS_TOKEN, "type_id": 1}}, {"Sequence": {"id": "B", "type_id": 1}}]
    return {
        "type": "TemplateProcessing",
        "single": single,
        "pair": single + second,
        "special_tokens": {BOS_TOKEN: {"id": BOS_TOKEN, "ids": [special_tokens[BOS_TOKEN]], "tokens": [BOS_TOKEN]}},
    }


def bpe_tokenizer_json(token_bytes: list[bytes], pattern: str, special_tokens: dict[str, int]) -> dict:
    """tokenizer.json for a byte-level BPE vocabulary given as bytes in rank (= id) order."""
    shown = [_show(t) for t in token_bytes]
    merges = [f"{shown[x]} {shown[y]}" for x, y in all_splits_merges(token_bytes)]
    return {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": _added_tokens(special_tokens),
        "normalizer": None,
        "pre_tokenizer": {
            "type": "Sequence",
            "pretokenizers": [
                {"type": "Split", "pattern": {"Regex": pattern}, "behavior": "Isolated", "invert": False},
                {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": False, "use_regex": False},
            ],
        },
        "post_processor": bos_post_processor(special_tokens),
        "decoder": {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": False, "use_regex": False},
        "model": {
            "type": "BPE",
            "dropout": None,
            "unk_token": None,
            "continuing_subword_prefix": None,
            "end_of_word_suffix": None,
            "fuse_unk": False,
            "byte_fallback": False,
            "ignore_merges": True,
            "vocab": {s: i for i, s in enumerate(shown)},
            "merges": merges,
        },
    }


def char_tokenizer_json(chars: list[str], special_tokens: dict[str, int]) -> dict:
    """tokenizer.json for a char vocabulary: a BPE model with no merges splits text into characters."""
    return {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": _added_tokens(special_tokens),
        "normalizer": None,
        "pre_tokenizer": None,
        "post_processor": bos_post_processor(special_tokens),
        "decoder": {"type": "Fuse"},
        "model": {
            "type": "BPE",
            "dropout": None,
            "unk_token": None,
            "continuing_subword_prefix": None,
            "end_of_word_suffix": None,
            "fuse_unk": False,
            "byte_fallback": False,
            "ignore_merges": False,
            "vocab": {c: i for i, c in enumerate(chars)},
            "merges": [],
        },
    }


def tokenizer_config(special_tokens: dict[str, int], chat_template: str | None) -> dict:
    """tokenizer_config.json: loads as PreTrainedTokenizerFast; `tokenizer(text)` gives BOS + our ids, as
    `scratchlm generate` feeds the model (add_special_tokens=False: our ids alone)."""
    cfg = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": BOS_TOKEN if BOS_TOKEN in special_tokens else None,
        "eos_token": EOS_TOKEN if EOS_TOKEN in special_tokens else None,
        "pad_token": PAD_TOKEN if PAD_TOKEN in special_tokens else None,
        "unk_token": None,
        "add_bos_token": BOS_TOKEN in special_tokens,  # must agree with bos_post_processor
        "add_eos_token": False,
        "clean_up_tokenization_spaces": False,  # else decode() would rewrite " ." as "."
        "model_max_length": 1_000_000_000_000_000_019_884_624_838_656,  # transformers' "no limit" value
        "added_tokens_decoder": {str(t["id"]): {k: v for k, v in t.items() if k != "id"}
                                 for t in _added_tokens(special_tokens)},
    }
    named = {BOS_TOKEN, EOS_TOKEN, PAD_TOKEN}
    extra = [s for s, _ in sorted(special_tokens.items(), key=lambda kv: kv[1]) if s not in named]
    if extra:
        cfg["additional_special_tokens"] = extra
    if chat_template is not None:
        cfg["chat_template"] = chat_template
    return cfg


def special_tokens_map(special_tokens: dict[str, int]) -> dict:
    names = {"bos_token": BOS_TOKEN, "eos_token": EOS_TOKEN, "pad_token": PAD_TOKEN}
    out = {k: v for k, v in names.items() if v in special_tokens}
    extra = [s for s, _ in sorted(special_tokens.items(), key=lambda kv: kv[1]) if s not in names.values()]
    if extra:
        out["additional_special_tokens"] = extra
    return out
