"""Every [train] setting takes effect in every post-training stage, or is refused by name (issue 19.4).

The model is made ready for training in one place (scratchlm/train/wrap.py), which pretraining and the four
post-training stages (sft, dpo, reward, rl) all use: activation checkpointing on the blocks (whichever path runs
them: the plain forward, packed rows, a pipeline stage), torch.compile around what the training step calls, LoRA
before either. These tests build each stage on a tiny base and look at what one training step actually does.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import scratchlm.model.transformer as transformer_module
from scratchlm.posttrain import load_stage_config
from scratchlm.posttrain.config import DPOConfig, GRPOConfig, RewardConfig, SFTConfig
from scratchlm.posttrain.dpo import DPOTrainer
from scratchlm.posttrain.grpo import GRPOTrainer
from scratchlm.posttrain.reward import RewardTrainer
from scratchlm.posttrain.sft import SFTTrainer

STAGES = {"sft": (SFTTrainer, SFTConfig), "dpo": (DPOTrainer, DPOConfig), "reward": (RewardTrainer, RewardConfig),
          "rl": (GRPOTrainer, GRPOConfig)}
N_LAYERS = 2


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Path:
    """root/base (a llama-tiny run with a BPE tokenizer) and the data files of every stage."""
    from scratchlm.model import ModelConfig, Transformer
    from scratchlm.runs import checkpoint_dir, save_model
    from scratchlm.tokenizer import train_bpe_from_texts

    root = tmp_path_factory.mktemp("settings")
    sums = [(a, b) for a in range(6) for b in range(5)]
    tok = train_bpe_from_texts([f"What is {a} plus {b}? {a} plus {b} is {a + b}." for a, b in sums] * 4,
                               vocab_size=300)
    torch.manual_seed(0)
    model = Transformer(ModelConfig.from_preset("llama-tiny", vocab_size=tok.vocab_size, max_seq_len=96,
                                                n_layers=N_LAYERS))
    tok.save(root / "base" / "tokenizer")
    save_model(checkpoint_dir(root / "base", 1), model, model.config.to_dict())
    rows = {
        "chats": [{"instruction": f"What is {a} plus {b}?", "input": "", "output": f"{a} plus {b} is {a + b}."}
                  for a, b in sums],
        "prefs": [{"instruction": f"What is {a} plus {b}?", "input": "", "chosen": f"{a + b}.",
                   "rejected": f"{a + b + 1}."} for a, b in sums],
        "tasks": [{"instruction": f"What is {a} plus {b}?", "answer": str(a + b)} for a, b in sums],
    }
    for name, rs in rows.items():
        (root / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rs))
    return root


def trainer(base: Path, stage: str, out: Path, *sets: str):
    cls, cfg_cls = STAGES[stage]
    data = {"sft": "chats", "dpo": "prefs", "reward": "prefs", "rl": "tasks"}[stage]
    common = [f"base={base / 'base'}", f"data={base / (data + '.jsonl')}", "train.max_steps=2",
              "train.device=cpu", "train.num_threads=1", "train.tensorboard=false", "train.progress=false"]
    if stage == "rl":
        common += ["task=tinyworld", "grpo.prompts_per_step=2", "grpo.group_size=2", "grpo.max_new_tokens=4",
                   "grpo.eval_tasks=4"]
    else:
        common += ["train.micro_batch_size=2", "train.seq_len=64", "max_val=4"]
    return cls(load_stage_config(cfg_cls, None, common + list(sets)), out)


class Counter:
    """Wraps a callable and counts its calls."""

    def __init__(self, fn):
        self.fn, self.calls = fn, 0

    def __call__(self, *a, **kw):
        self.calls += 1
        return self.fn(*a, **kw)


@pytest.mark.parametrize("stage,extra", [("sft", "sft.batching=pad"), ("sft", "sft.batching=pack"), ("dpo", ""),
                                         ("reward", ""), ("rl", "")])
@pytest.mark.parametrize("every", [0, 1])
def test_activation_checkpointing_takes_effect_in_every_stage(base, tmp_path, monkeypatch, stage, extra, every):
    spy = Counter(transformer_module.checkpoint)
    monkeypatch.setattr(transformer_module, "checkpoint", spy)
    t = trainer(base, stage, tmp_path / "run", f"train.activation_checkpointing={every}", *([extra] if extra else []))
    t.model.train()  # as fit() does before every step
    t.train_step()
    if every:
        assert spy.calls >= N_LAYERS, f"{stage}: no block recomputed its activations"
    else:
        assert spy.calls == 0


@pytest.mark.parametrize("stage", list(STAGES))
def test_compile_takes_effect_in_every_stage(base, tmp_path, stage):
    """train.compile wraps what the training step calls, and the step calls it (run eagerly here: the spy
    stands in for the compiled module, whose compile time the slow test pays)."""
    from torch._dynamo.eval_frame import OptimizedModule

    t = trainer(base, stage, tmp_path / "run", "train.compile=true")
    attr = "rm_forward" if stage == "reward" else "train_forward"
    assert isinstance(getattr(t, attr), OptimizedModule), f"{stage}: train.compile=true did not compile"
    spy = Counter(getattr(t, attr)._orig_mod)
    setattr(t, attr, spy)
    t.train_step()
    assert spy.calls > 0, f"{stage}: the training step does not go through the compiled module"
    off = trainer(base, stage, tmp_path / "off", "train.compile=false")
    assert not isinstance(getattr(off, attr), OptimizedModule)


@pytest.mark.parametrize("stage", ["sft", "dpo", "rl"])  # the reward model has no [lora] section: refused by name
def test_lora_takes_effect_in_every_stage(base, tmp_path, stage):
    t = trainer(base, stage, tmp_path / "run", "lora.rank=4")
    trainable = {n: p for n, p in t.trainable_module().named_parameters() if p.requires_grad}
    assert trainable and all(".lora_" in n for n in trainable), sorted(trainable)
    stepped = {id(p) for g in t.optimizer.param_groups for p in g["params"]}
    assert stepped == {id(p) for p in trainable.values()}  # the optimizer steps the adapters and nothing else
    frozen = {n: p.detach().clone() for n, p in t.model.named_parameters() if ".lora_" not in n}
    t.model.train()
    t.train_step()
    t.optimizer_step()
    assert all(torch.equal(p, frozen[n]) for n, p in t.model.named_parameters() if n in frozen)


def test_reward_model_refuses_lora(base, tmp_path):
    from scratchlm.config import ConfigError

    with pytest.raises(ConfigError, match="unknown config key 'lora.rank'"):
        trainer(base, "reward", tmp_path / "run", "lora.rank=4")


CHANGED = {"global_batch_tokens": "4096", "optimizer": "muon", "muon_lr": "0.05", "muon_momentum": "0.9",
           "eval_tokens": "1000", "sample_every": "5", "sample_tokens": "16", "sample_prompt": "Once",
           "peak_tflops": "100.0"}


@pytest.mark.parametrize("stage", list(STAGES))
@pytest.mark.parametrize("name", list(CHANGED) + ["seq_len", "micro_batch_size"])
def test_settings_a_stage_cannot_honour_are_refused(base, tmp_path, stage, name):
    from scratchlm.posttrain.config import stage_train_defaults

    if name in ("seq_len", "micro_batch_size") and stage != "rl":
        pytest.skip(f"{stage} uses train.{name}")
    value = CHANGED.get(name) or str(getattr(stage_train_defaults(STAGES[stage][1]), name) // 2)
    with pytest.raises(ValueError, match=rf"train.{name} = .* has no effect in scratchlm {stage}: .*remove the"):
        trainer(base, stage, tmp_path / "run", f"train.{name}={value}")
    assert not (tmp_path / "run").exists()  # refused before anything is written


def test_max_tokens_stops_a_posttraining_run(base, tmp_path):
    t = trainer(base, "sft", tmp_path / "run", "train.max_steps=0", "train.max_tokens=300")
    summary = t.fit()
    assert summary["stopped_by"] == "max_tokens" and 300 <= t.tokens and summary["steps"] < 20


def test_max_bad_steps_stops_a_posttraining_run(base, tmp_path, monkeypatch):
    from scratchlm.train.stopping import TrainingStopped

    t = trainer(base, "sft", tmp_path / "run", "train.max_steps=10", "train.max_bad_steps=3")
    monkeypatch.setattr(torch.nn.utils, "clip_grad_norm_", lambda params, clip: torch.tensor(float("nan")))
    with pytest.raises(TrainingStopped, match="3 non-finite steps in a row at step 2"):
        t.fit()
    assert t.bad_steps == 3


def test_deterministic_and_fused_optimizer_take_effect(base, tmp_path):
    was = torch.are_deterministic_algorithms_enabled()
    try:
        t = trainer(base, "sft", tmp_path / "a", "train.deterministic=true", "train.fused_optimizer=true")
        assert torch.are_deterministic_algorithms_enabled()
        assert t.optimizer.defaults.get("fused") is True
    finally:
        torch.use_deterministic_algorithms(was)
    t = trainer(base, "sft", tmp_path / "b", "train.fused_optimizer=false")
    assert not t.optimizer.defaults.get("fused") and t.optimizer.defaults.get("foreach") is True


def saved_activation_bytes(module: torch.nn.Module, x: torch.Tensor) -> int:
    """Bytes autograd keeps for the backward pass of module(x) (what activation checkpointing saves)."""
    total = 0

    def pack(t):
        nonlocal total
        total += t.numel() * t.element_size()
        return t

    module.train()
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = module(x)
    out.float().pow(2).mean().backward()
    return total


def test_activation_checkpointing_under_pipeline_parallelism_saves_activations():
    """A pipeline stage runs its blocks with the model's checkpointing (distributed/pp.py used to loop over
    them plainly, so train.activation_checkpointing did nothing under PP): the activations it keeps for the
    backward fall to a fraction, for the first stage (embedding + blocks) and a middle one (blocks only), with
    the same output and gradients."""
    from scratchlm.distributed.pp import build_stage
    from scratchlm.model import ModelConfig, Transformer

    cfg = ModelConfig.from_preset("llama-tiny", vocab_size=256, max_seq_len=128, n_layers=6, d_model=128, n_heads=4,
                                  n_kv_heads=4)
    idx = torch.randint(0, 256, (4, 128), generator=torch.Generator().manual_seed(0))
    for rank, x in ((0, idx), (1, torch.randn(4, 128, 128))):
        got = {}
        for every in (0, 1):
            torch.manual_seed(0)
            model = Transformer(cfg)
            model.set_activation_checkpointing(every)
            stage = build_stage(model, rank, 3)
            nbytes = saved_activation_bytes(stage, x)
            grads = [p.grad.clone() for p in stage.parameters() if p.grad is not None]
            got[every] = (nbytes, grads)
        (plain, g0), (ckpt, g1) = got[0], got[1]
        assert ckpt < 0.35 * plain, f"stage {rank}: {ckpt} bytes saved with checkpointing vs {plain} without"
        assert len(g0) == len(g1) and all(torch.allclose(a, b, atol=1e-6) for a, b in zip(g0, g1))


@pytest.mark.slow
def test_compiled_sft_matches_eager(base, tmp_path):
    """train.compile=true trains what eager trains (CPU inductor; ~1 minute of compiling)."""
    losses = {}
    for c in ("false", "true"):
        t = trainer(base, "sft", tmp_path / c, f"train.compile={c}", "train.seed=1", "sft.batching=pad")
        first = t.train_step()["loss"]
        t.optimizer_step()
        losses[c] = (first, t.train_step()["loss"])
    for eager, comp in zip(losses["false"], losses["true"]):
        assert abs(eager - comp) < 1e-4 * abs(eager), losses  # inductor reorders float32 sums (~2e-5 relative)
