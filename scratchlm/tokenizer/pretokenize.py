"""Pre-tokenization: the regex that cuts text into chunks before BPE, and the special tokens.

BPE never merges across chunk boundaries, so the split pattern decides what a token *can* be: with the GPT-4
pattern a token never spans a letter and a digit, never glues punctuation to the next word, and numbers are cut
into groups of at most three digits.

The three engines that run these patterns must agree on every string: Python's `regex` (our fallback encoder and
the trainer), Rust's fancy-regex (tiktoken) and Oniguruma (Hugging Face `tokenizers`). That is why the GPT-4
pattern is written in the form Llama 3's tokenizer.json uses: no possessive quantifiers and no `$` (Oniguruma reads
`$` as end of *line*), which gives the same chunks as tiktoken's cl100k_base pattern on ordinary text.
"""

from __future__ import annotations

import regex

# cl100k-style. `\p{N}{1,3}` is the digit group; `digits=` swaps its bound.
GPT4_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)"
    r"|[^\r\n\p{L}\p{N}]?\p{L}+"
    r"|\p{N}{1,3}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+"
    r"|\s+(?!\S)"
    r"|\s+"
)

# GPT-2's original pattern (case-sensitive contractions, unbounded digit runs).
GPT2_PATTERN = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"

PATTERNS = {"gpt4": GPT4_PATTERN, "gpt2": GPT2_PATTERN}

# The fixed special tokens, in id order. They take the ids right after the last merged token:
# id(SPECIAL_TOKENS[i]) = n_byte_and_merged_tokens + i, so with a full vocabulary <|endoftext|> = vocab_size - 8.
# <|endoftext|> is EOS and the document separator; <|im_start|>/<|im_end|> frame ChatML turns.
SPECIAL_TOKENS = (
    "<|endoftext|>",
    "<|bos|>",
    "<|pad|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|reserved_0|>",
    "<|reserved_1|>",
    "<|reserved_2|>",
)
EOS_TOKEN, BOS_TOKEN, PAD_TOKEN = "<|endoftext|>", "<|bos|>", "<|pad|>"


def build_pattern(pattern: str = "gpt4", digits: int | None = None) -> str:
    """The split regex for a named pattern ("gpt4", "gpt2") or a raw regex string.

    digits: longest run of digits kept in one chunk (1 = every digit alone, as Llama 2 and DeepSeek do;
    None = the pattern's own rule: 3 for gpt4, unbounded for gpt2).
    """
    if pattern in PATTERNS:
        pat = PATTERNS[pattern]
    elif any(c in pattern for c in "\\|[("):  # looks like a regex, not a name
        pat = pattern
    else:
        raise ValueError(f"unknown split pattern {pattern!r}; use one of {sorted(PATTERNS)} or a full regex")
    if digits is not None:
        if not 1 <= digits <= 64:
            raise ValueError(f"digits={digits} is out of range; use 1..64 (or leave unset for the pattern default)")
        if r"\p{N}{1,3}" in pat:
            pat = pat.replace(r"\p{N}{1,3}", r"\p{N}{1,%d}" % digits)
        elif r" ?\p{N}+" in pat:
            pat = pat.replace(r" ?\p{N}+", r" ?\p{N}{1,%d}" % digits)
        else:
            raise ValueError("digits= only applies to the named patterns gpt4 and gpt2; put the bound in your regex")
    try:
        regex.compile(pat)
    except regex.error as e:
        raise ValueError(f"split pattern does not compile: {e}; check the regex") from None
    return pat


def special_splitter(tokens) -> "regex.Pattern | None":
    """A regex with one capturing group that splits text around any of `tokens` (longest first)."""
    tokens = sorted(tokens, key=len, reverse=True)
    if not tokens:
        return None
    return regex.compile("(" + "|".join(regex.escape(t) for t in tokens) + ")")
