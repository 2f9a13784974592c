"""Pretraining configs: what to read (DataConfig), how to train (TrainConfig), and the root PretrainConfig.

A TOML file names the three sections plus an optional model preset:

    preset = "llama-1m"          # optional: start from scratchlm.model PRESETS; [model] keys override it
    [model]
    d_model = 128
    [data]
    train_text = "../shared/data/tinyshakespeare/input.txt"
    tokenizer = "char"
    [train]
    lr = 3e-3
    max_time = 71

Every field below carries its recommended default and a docstring; `scratchlm pretrain --help` lists them.
Checks that need the data (vocab size) or the model (max_seq_len) run in `check_fit`, before any step.
"""

from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from scratchlm.config import ConfigError, apply_overrides, from_dict, load_toml, merge
from scratchlm.distributed.config import ParallelConfig
from scratchlm.model.config import ModelConfig


@dataclass
class DataConfig:
    """Where the tokens come from. Either an existing shard folder, or raw text that the run tokenizes itself."""

    shards: str | None = field(default=None, metadata={"help": "token-shard folder from `scratchlm data tokenize`"})
    """A token-shard folder (train_00000.bin ..., val_00000.bin ..., manifest.json) written by `scratchlm data
    tokenize` (a format-1 folder with one train.bin / val.bin reads too). The run keeps only a pointer to it
    (this path, resolved) rather than a copy. When set, `tokenizer` must be that shards' tokenizer folder (or left
    as "auto" to use the path recorded in the manifest). Several folders at fixed weights: `mix`."""
    train_text: str | None = field(default=None, metadata={"help": "raw text file to tokenize (when no shards)"})
    """A UTF-8 text file to tokenize into the run's data/ folder when `shards` is not set."""
    val_text: str | None = field(default=None, metadata={"help": "validation text file (else: tail of train_text)"})
    """Validation text. When unset, the last `val_fraction` of train_text's characters are held out (the split
    nanoGPT uses for Tiny Shakespeare: first 90% train, last 10% val)."""
    val_fraction: float = field(default=0.1, metadata={"range": (0.0, 0.5)})
    """Fraction of train_text held out (from its end) when val_text is not given."""
    doc_separator: str = ""
    """Split the text files into documents at this string (e.g. "<|endoftext|>" or "\\n\\n"); each document gets a
    BOS token in front. "" keeps each file as one document."""
    tokenizer: str = field(default="auto", metadata={"help": '"char", "bpe", a tokenizer folder, or "auto"'})
    """"char": one token per character of the training text; "bpe": train a byte-level BPE tokenizer of
    `vocab_size` on the training text; a folder: load that tokenizer; "auto": the shards' tokenizer, else "bpe"."""
    vocab_size: int = field(default=1024, metadata={"range": (260, 2**17)})
    """Vocabulary of the BPE tokenizer trained when tokenizer = "bpe" (specials included)."""
    vocab_from_tokenizer: bool = True
    """Set model.vocab_size to the tokenizer's vocabulary. False keeps model.vocab_size as written; it must then
    equal the tokenizer's (checked before training)."""
    packing: Literal["random", "docs"] = "random"
    """How training windows are cut: "random": windows at uniformly random offsets (nanoGPT); "docs": rows that
    start at a document's BOS, filled with whole documents in shuffled order (the last one cropped)."""
    mix: dict[str, Any] = field(default_factory=dict,
                                metadata={"help": "{NAME = {shards = DIR, weight = W}, ...}: mix shard folders"})
    """Train on several shard folders at fixed proportions (instead of `shards`), one entry per folder:

        [data.mix]
        web   = { shards = "runs/web_shards",   weight = 0.7 }
        books = { shards = "runs/books_shards", weight = 0.2 }
        code  = { shards = "runs/code_shards",  weight = 0.1 }

    Each global batch's rows are divided between the sources to these weights (normalised, with a note, when they
    do not sum to 1); every source stays within one row of its share over the whole run. metrics.jsonl logs the
    share of training tokens drawn from each so far as mix/NAME; validation reads every source's val split; a
    resumed run continues the mixture exactly. All folders must have been tokenized with the same tokenizer."""
    verify: bool = True
    """Check every shard file against the SHA-256 in its manifest.json before training (about 1 s per GB); a
    damaged file stops the run with its name. false skips it (the sizes are still checked)."""

    def __post_init__(self):
        check_mix(self.mix)
        if self.mix and (self.shards is not None or self.train_text is not None):
            other = "shards" if self.shards is not None else "train_text"
            raise ValueError(f"data.mix and data.{other} are both set: a run reads either one shard folder, a "
                             "mixture of several, or text; remove one of them")


MIX_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


def check_mix(mix: dict) -> None:
    """data.mix is {name: {shards: DIR, weight: W}} with W finite and > 0; a one-line error otherwise."""
    example = '{ shards = "runs/web_shards", weight = 0.7 }'
    for name, entry in mix.items():
        if not MIX_NAME.match(str(name)):
            raise ValueError(f"data.mix name {name!r} is not a plain name (letters, digits, _ . -): it becomes the "
                             "metric mix/NAME; e.g. web")
        if not isinstance(entry, dict):
            raise ValueError(f"data.mix.{name} must be a table like {name} = {example}, got {entry!r}")
        unknown = sorted(set(entry) - {"shards", "weight"})
        if unknown or "shards" not in entry or "weight" not in entry:
            what = f"has unknown key {unknown[0]!r}" if unknown else f"needs {'shards' if 'shards' not in entry else 'weight'}"
            raise ValueError(f"data.mix.{name} {what}: write {name} = {example}")
        if not isinstance(entry["shards"], str) or not entry["shards"]:
            raise ValueError(f"data.mix.{name}.shards must be a shard folder (a string), got {entry['shards']!r}")
        w = entry["weight"]
        if isinstance(w, bool) or not isinstance(w, (int, float)) or not math.isfinite(w) or w <= 0:
            raise ValueError(f"data.mix.{name}.weight must be a finite number > 0, got {w!r}; e.g. weight = 0.7")


@dataclass
class TrainConfig:
    """How to train. Defaults are sensible for small Llama-style models; configs/ holds tuned examples."""

    # -- batch and context
    seq_len: int = field(default=256, metadata={"range": (1, None)})
    """Tokens per training sequence (the context length trained). Must be <= model.max_seq_len."""
    micro_batch_size: int = field(default=16, metadata={"range": (1, None)})
    """Sequences per forward/backward pass on one device. Lower it if memory runs out."""
    global_batch_tokens: int = field(default=0, metadata={"range": (0, None)})
    """Tokens per optimizer step, over all devices and accumulation steps. 0: micro_batch_size * seq_len * world
    size (no accumulation). Must be a multiple of micro_batch_size * seq_len * world size."""

    # -- optimizer
    optimizer: Literal["adamw", "muon"] = "adamw"
    """"adamw": AdamW for everything. "muon": Muon (orthogonalised momentum) for the 2-D weight matrices inside
    the transformer blocks, AdamW for embeddings, output head, norms and biases (the nanoGPT speedrun split)."""
    lr: float = field(default=3e-4, metadata={"range": (0.0, None)})
    """Peak AdamW learning rate (reached after warmup)."""
    weight_decay: float = field(default=0.1, metadata={"range": (0.0, None)})
    """Decoupled weight decay, applied only to weight matrices (not norms, biases or, by default, embeddings)."""
    decay_embeddings: bool = False
    """Also decay the token/position embeddings (off by default: decaying them mostly shrinks rare tokens)."""
    beta1: float = field(default=0.9, metadata={"range": (0.0, 1.0)})
    """AdamW first-moment decay."""
    beta2: float = field(default=0.95, metadata={"range": (0.0, 1.0)})
    """AdamW second-moment decay. 0.95 (not 0.999) reacts faster to loss spikes: the LLM default since GPT-3."""
    eps: float = field(default=1e-8, metadata={"range": (0.0, None)})
    """AdamW epsilon."""
    muon_lr: float = field(default=0.02, metadata={"range": (0.0, None)})
    """Peak Muon learning rate for hidden matrices (optimizer = "muon"); it follows the same schedule as lr."""
    muon_momentum: float = field(default=0.95, metadata={"range": (0.0, 1.0)})
    """Muon's Nesterov momentum."""
    grad_clip: float = field(default=1.0, metadata={"range": (0.0, None)})
    """Clip the global gradient norm to this (0: off). The norm before clipping is logged as grad_norm."""

    # -- schedule
    schedule: Literal["cosine", "wsd", "constant"] = "cosine"
    """"cosine": linear warmup then cosine decay to min_lr_ratio * lr. "wsd": warmup, stable at lr, then linear
    decay to the floor over the last decay_fraction of training. "constant": warmup then flat."""
    warmup_steps: int = field(default=100, metadata={"range": (0, None)})
    """Linear warmup steps from 0 to the peak learning rate."""
    min_lr_ratio: float = field(default=0.1, metadata={"range": (0.0, 1.0)})
    """Floor of the decay, as a fraction of the peak learning rate."""
    decay_fraction: float = field(default=0.2, metadata={"range": (0.0, 1.0)})
    """For "wsd": fraction of the run spent decaying (the last 20% is the usual choice)."""

    # -- budgets (the first one reached stops the run; 0 = no limit; at least one must be set)
    max_steps: int = field(default=0, metadata={"range": (0, None)})
    """Stop after this many optimizer steps."""
    max_tokens: int = field(default=0, metadata={"range": (0, None)})
    """Stop after this many training tokens (global)."""
    max_time: float = field(default=0.0, metadata={"range": (0.0, None)})
    """Wall-clock budget in seconds for the training loop, its evaluations and the final evaluation included.
    With only a time budget, the schedule runs on the clock: its progress is elapsed / max_time."""

    # -- evaluation, samples, logging
    eval_every: int = field(default=250, metadata={"range": (0, None)})
    """Evaluate val loss and bits per byte every this many steps (0: only at the end)."""
    eval_tokens: int = field(default=0, metadata={"range": (0, None)})
    """Val tokens scored by the periodic evaluations (0: the whole val split). The final one scores all of it."""
    sample_every: int = field(default=0, metadata={"range": (0, None)})
    """Print and log a text sample every this many steps (0: only at the end)."""
    sample_tokens: int = field(default=64, metadata={"range": (0, None)})
    """Length of each text sample in tokens (0: no samples)."""
    sample_prompt: str = ""
    """Prompt for the samples ("" starts from BOS)."""
    log_every: int = field(default=10, metadata={"range": (1, None)})
    """Write a metrics.jsonl row (and TensorBoard scalars) every this many steps."""
    tensorboard: bool = True
    """Write TensorBoard event files under logs/."""
    wandb_project: str = field(default="", metadata={"help": "Weights & Biases project to log to too (--wandb)"})
    """Log every metrics.jsonl row to this Weights & Biases project as well ("": off), with the resolved config as
    wandb.config; the run is named after the run folder and kept under logs/wandb/. Needs `pip install wandb`
    (an error otherwise). Under torchrun only rank 0 logs. Same as the `--wandb PROJECT` flag."""
    wandb_mode: Literal["auto", "online", "offline"] = "auto"
    """"auto": online when a W&B login (`wandb login` or WANDB_API_KEY) and the server are found, else offline
    (WANDB_MODE, when set, decides); "online": a missing login is an error; "offline": write the run locally
    only. An offline run is uploaded later with `wandb sync logs/wandb/offline-run-...` (printed at the end)."""

    # -- checkpoints and guards
    ckpt_every: int = field(default=0, metadata={"range": (0, None)})
    """Save a checkpoint every this many steps (0: only at the end, and at each evaluation that is a new best)."""
    keep_last: int = field(default=2, metadata={"range": (1, None)})
    """Keep this many most recent checkpoints (the best one is kept in addition)."""
    max_bad_steps: int = field(default=5, metadata={"range": (1, None)})
    """Stop after this many consecutive steps with a non-finite loss or gradient (each one is skipped)."""

    # -- numerics and speed
    device: str = "auto"
    """"auto" (cuda > mps > cpu), "cpu", "cuda", "cuda:1", "mps"."""
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    """Autocast compute dtype; weights and optimizer state stay float32. "auto": bfloat16 on CUDA GPUs that
    support it and on CPUs with AVX512-BF16/AMX (2-2.5x faster matmuls on such a CPU), else float32. float16
    uses dynamic loss scaling (GradScaler)."""
    compile: bool = False
    """torch.compile the model (worth it for long runs; the first steps pay the compile time)."""
    activation_checkpointing: int = field(default=0, metadata={"range": (0, None)})
    """Recompute activations of every Nth block in the backward pass (0: off): less memory, ~30% more compute."""
    fused_optimizer: bool = True
    """Use the fused AdamW kernel where available (CUDA and CPU in torch >= 2.4), else foreach."""
    num_threads: int = field(default=0, metadata={"range": (0, None)})
    """CPU threads for torch (0: torch's default, one per core)."""
    deterministic: bool = False
    """torch.use_deterministic_algorithms(True): bitwise-reproducible runs and resumes on GPU (slower)."""
    peak_tflops: float = field(default=0.0, metadata={"range": (0.0, None)})
    """Device peak for MFU, in TFLOP/s (0: a datasheet table for known GPUs; on CPU a short matmul measurement)."""
    seed: int = 1337
    """Seed for initialisation, data order and dropout."""
    progress: bool = True
    """Show a progress bar with tokens/s and ETA."""


@dataclass
class PretrainConfig:
    """The root config of `scratchlm pretrain`: the model, the data and the training recipe."""

    preset: str | None = None
    """Optional model preset name (scratchlm.model PRESETS, e.g. "llama-5m", "gpt2-124m"); [model] keys override
    its fields."""
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    parallel: ParallelConfig = field(default_factory=ParallelConfig)
    """How the run is spread over the processes torchrun starts (dp, fsdp, tp, pp degrees; docs/distributed.md).
    Ignored in a plain single-process run."""


def load_pretrain_config(path: str | Path | None = None, overrides: list[str] | None = None,
                         defaults: dict | None = None) -> PretrainConfig:
    """TOML file <- `--set` overrides -> a validated PretrainConfig (a model preset is expanded first)."""
    data: dict[str, Any] = dict(defaults or {})
    if path is not None:
        data = merge(data, load_toml(path))
    data = apply_overrides(data, overrides or [], PretrainConfig)
    preset = data.get("preset")
    if preset:
        try:
            # from_preset recomputes derived fields (ffn_hidden, ...) after the [model] overrides
            model = ModelConfig.from_preset(preset, **data.get("model", {}))
        except (TypeError, ValueError) as e:
            raise ConfigError(f"model: {e}") from None
        data = {**data, "model": model.to_dict()}
    return from_dict(PretrainConfig, data)


def config_dict(cfg: PretrainConfig) -> dict:
    """The resolved config as a nested dict (for config.toml and checkpoints)."""
    d = dataclasses.asdict(cfg)
    d["model"] = cfg.model.to_dict()
    return d


# ---------------------------------------------------------------------------------------------- fit checks

def batch_geometry(tc: TrainConfig, world_size: int = 1) -> tuple[int, int]:
    """(global_batch_tokens, grad_accum_steps) after checking that the global batch divides evenly.

    world_size is the number of data-parallel ranks (parallel.dp * parallel.fsdp): tensor- and pipeline-parallel
    ranks of one group work on the same rows."""
    per_step = tc.micro_batch_size * tc.seq_len * world_size
    total = tc.global_batch_tokens or per_step
    if total % per_step:
        lo = max(per_step, total // per_step * per_step)
        raise ConfigError(
            f"train.global_batch_tokens ({total}) is not a multiple of micro_batch_size x seq_len x world size "
            f"({tc.micro_batch_size} x {tc.seq_len} x {world_size} = {per_step}); set it to {lo} or {lo + per_step}")
    return total, total // per_step


def check_fit(cfg: PretrainConfig, tokenizer_vocab: int | None = None, world_size: int = 1) -> None:
    """Every check that can fail before the first step, each a one-line message naming the fix."""
    tc, mc = cfg.train, cfg.model
    if not (tc.max_steps or tc.max_tokens or tc.max_time):
        raise ConfigError("no budget: set at least one of train.max_steps, train.max_tokens, train.max_time")
    if tc.seq_len > mc.max_seq_len:
        raise ConfigError(f"train.seq_len ({tc.seq_len}) is longer than model.max_seq_len ({mc.max_seq_len}); "
                          f"lower train.seq_len or raise model.max_seq_len to {tc.seq_len}")
    par = cfg.parallel
    if par.sequence_parallel and par.tp > 1 and tc.seq_len % par.tp:
        raise ConfigError(f"train.seq_len ({tc.seq_len}) must be divisible by parallel.tp ({par.tp}) with "
                          f"sequence parallelism (each rank holds seq_len / tp positions); use seq_len = "
                          f"{tc.seq_len // par.tp * par.tp or par.tp}")
    batch_geometry(tc, world_size)
    if tokenizer_vocab is not None and mc.vocab_size != tokenizer_vocab:
        raise ConfigError(f"model.vocab_size ({mc.vocab_size}) does not match the tokenizer/shards vocabulary "
                          f"({tokenizer_vocab}); set model.vocab_size = {tokenizer_vocab} or "
                          "data.vocab_from_tokenizer = true")
    if tc.dtype == "float16" and tc.device == "cpu":
        raise ConfigError("train.dtype float16 is for GPUs (CPUs have no fast fp16 matmuls); use bfloat16 or float32")
    if tc.max_time and tc.max_time < 1:
        raise ConfigError(f"train.max_time ({tc.max_time}) is in seconds and too short to train; e.g. 60")
    d = cfg.data
    if d.shards is None and d.train_text is None and not d.mix:
        raise ConfigError("no data: set data.shards (a `scratchlm data tokenize` folder), data.mix or data.train_text")
    if (d.shards is not None or d.mix) and d.tokenizer in ("char", "bpe"):
        which = "data.shards is" if d.shards is not None else "the data.mix folders are"
        raise ConfigError(f'data.tokenizer = "{d.tokenizer}" would train a new tokenizer, but {which} already '
                          'tokenized; set data.tokenizer = "auto" or to the shards\' tokenizer folder')
