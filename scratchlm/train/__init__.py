"""Pretraining: token shards -> a trained Transformer, with exact resume, budgets, metrics and checkpoints.

    from scratchlm.train import load_pretrain_config, pretrain
    cfg = load_pretrain_config("configs/shakespeare_cpu.toml", ["train.max_time=71"])
    summary = pretrain(cfg, "runs/shakespeare")      # -> {"val_loss": ..., "val_bpb": ..., ...}

Files: config.py (what to train), data.py + loader.py (tokens in), optim.py + schedule.py (how to update),
loop.py (the loop), checkpoint.py (state out and back in), stopping.py (Ctrl-C, SIGTERM, non-finite weights),
metrics.py (what to watch).
"""

from .config import DataConfig, PretrainConfig, TrainConfig, load_pretrain_config
from .loop import Trainer, pretrain
from .stopping import Interrupted, TrainingStopped

__all__ = ["DataConfig", "TrainConfig", "PretrainConfig", "load_pretrain_config", "Trainer", "TrainingStopped",
           "Interrupted", "pretrain"]
