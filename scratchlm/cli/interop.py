"""`scratchlm export hf` and `scratchlm import hf`: move models between our run folders and Hugging Face.

Export writes a folder that `transformers` loads as LlamaForCausalLM (Llama-style runs) or GPT2LMHeadModel
(GPT-2-style runs): config.json, model.safetensors, generation_config.json and the run's tokenizer files.
Import reads a folder written by transformers' save_pretrained (Llama / SmolLM / TinyLlama or GPT-2
architecture; single or sharded safetensors, or pytorch_model.bin) into a run folder with
checkpoints/step_0000000/, ready for `scratchlm generate`, `eval`, or fine-tuning.

The weight mapping itself is scratchlm/model/hf.py; this module only does the file handling.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
from pathlib import Path

from scratchlm.cli.common import add_common, add_renamed, out_dir

log = logging.getLogger("scratchlm")
RAW = argparse.RawDescriptionHelpFormatter

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")
DTYPES = ("float32", "bfloat16", "float16")

EXPORT_EXAMPLES = """\
examples:
  # the best (else latest) checkpoint of a run, as a Hugging Face model folder
  scratchlm export hf --run runs/pretrain --out exports/tinyworld-5m
  # one particular checkpoint, stored in bfloat16 (half the size)
  scratchlm export hf --run runs/pretrain/checkpoints/step_0002000 --out exports/step2000 --dtype bfloat16

then, in Python:
  from transformers import AutoModelForCausalLM, AutoTokenizer
  model = AutoModelForCausalLM.from_pretrained("exports/tinyworld-5m")
  tok = AutoTokenizer.from_pretrained("exports/tinyworld-5m")
"""

IMPORT_EXAMPLES = """\
examples:
  # a folder written by transformers' save_pretrained (or downloaded from the Hub) into a run folder
  scratchlm import hf --input ~/models/SmolLM-135M --out runs/smollm
  scratchlm import hf --input ~/models/gpt2 --out runs/gpt2
  # then use it like any run
  scratchlm generate --run runs/gpt2 --prompt "Hello"

Supported: model_type "llama" (Llama 2/3, SmolLM, TinyLlama) and "gpt2"; weights in model.safetensors,
sharded model-0000x-of-0000y.safetensors, or pytorch_model.bin. The HF tokenizer files are copied to
RUN/tokenizer/ when present.
"""


def register(subparsers) -> None:
    exp = subparsers.add_parser("export", help="export a run's model to another format (Hugging Face)",
                                description="Export a trained model to another ecosystem.",
                                epilog=EXPORT_EXAMPLES, formatter_class=RAW)
    exp.set_defaults(func=lambda args: _usage(exp))
    exp_sub = exp.add_subparsers(dest="format", metavar="FORMAT")
    p = exp_sub.add_parser("hf", help="a transformers model folder (LlamaForCausalLM / GPT2LMHeadModel)",
                           description="Write config.json, model.safetensors, generation_config.json and the "
                                       "tokenizer files, loadable with transformers' AutoModelForCausalLM.",
                           epilog=EXPORT_EXAMPLES, formatter_class=RAW)
    p.add_argument("--run", type=Path, required=True, help="run folder (best/latest checkpoint) or checkpoint folder")
    p.add_argument("--out", type=out_dir, required=True, help="folder to write the Hugging Face model into")
    p.add_argument("--overwrite", action="store_true", help="replace files in a non-empty --out")
    p.add_argument("--dtype", default="float32", choices=DTYPES, help="dtype of the saved weights")
    add_common(p, overrides=False, device=False, seed=False)
    p.set_defaults(func=export_hf)

    imp = subparsers.add_parser("import", help="import a model from another format (Hugging Face) into a run",
                                description="Bring an existing model into a scratchlm run folder.",
                                epilog=IMPORT_EXAMPLES, formatter_class=RAW)
    imp.set_defaults(func=lambda args: _usage(imp))
    imp_sub = imp.add_subparsers(dest="format", metavar="FORMAT")
    p = imp_sub.add_parser("hf", help="a transformers model folder (llama or gpt2 model_type)",
                           description="Convert a Hugging Face Llama-architecture or GPT-2 model folder into a run "
                                       "folder with checkpoints/step_0000000/.",
                           epilog=IMPORT_EXAMPLES, formatter_class=RAW)
    add_renamed(p, "--input", "--from", dest="src", type=Path, required=True, metavar="DIR",
                help="Hugging Face model folder")
    p.add_argument("--out", type=out_dir, required=True, help="run folder to create")
    p.add_argument("--overwrite", action="store_true", help="replace a finished run in --out")
    p.add_argument("--pad-vocab-multiple", type=int, default=None,
                   help="pad the embedding rows to a multiple of this (default: 64 for Llama, 1 for GPT-2)")
    add_common(p, overrides=False, device=False, seed=False)
    p.set_defaults(func=import_hf)


def _usage(parser: argparse.ArgumentParser) -> int:
    parser.print_help()
    return 2


# ---------------------------------------------------------------------------------------------- export
def export_hf(args) -> int:
    import torch
    from safetensors.torch import save_file

    from scratchlm.model import ModelConfig
    from scratchlm.model.hf import hf_config_from, hf_generation_config, to_hf_state_dict
    from scratchlm.runs import atomic_write, atomic_write_json, claim_out_dir, load_model_state, resolve_checkpoint

    ckpt = resolve_checkpoint(args.run)
    out = claim_out_dir(args.out, overwrite=args.overwrite, finished="config.json", check_only=True,
                        kind="export hf", inputs=[args.run])
    cfg_dict, state = load_model_state(ckpt)
    cfg = ModelConfig.from_dict(cfg_dict)
    tok_dir = _tokenizer_dir(ckpt)
    special = _special_token_ids(tok_dir) if tok_dir else {}
    # raises for models transformers cannot represent, before anything is written
    hf_config = hf_config_from(cfg, **{f"{name}_token_id": special.get(name) for name in ("bos", "eos", "pad")})
    hf_config["torch_dtype"] = args.dtype
    dtype = getattr(torch, args.dtype)
    tensors = {k: v.to(dtype) for k, v in to_hf_state_dict(state, cfg).items()}

    claim_out_dir(out, overwrite=args.overwrite, finished="config.json", kind="export hf", inputs=[args.run])
    atomic_write(out / "model.safetensors", lambda tmp: save_file(tensors, tmp, metadata={"format": "pt"}))
    if tok_dir:
        _write_hf_tokenizer(tok_dir, out)
    else:
        log.warning("no tokenizer folder found next to %s: exported the model without tokenizer files", ckpt)
    # generate() stops where `scratchlm generate` and `chat` stop: end of text, the end (or a skipped end) of a
    # chat turn, BOS (inference/chat_template.py: chat_stop_token_ids; Engine.default_stop_ids)
    stops = [special.get(name) for name in ("eos", "im_end", "im_start", "bos")]
    atomic_write_json(out / "generation_config.json",
                      hf_generation_config(cfg, stops, special.get("bos"), special.get("pad", special.get("eos"))))
    atomic_write_json(out / "config.json", hf_config)  # last: its presence marks a finished export
    n = sum(t.numel() for t in tensors.values())
    print(f"exported {ckpt} -> {out} ({hf_config['architectures'][0]}, {n:,} parameters, {args.dtype})")
    print(f"lm-eval: lm_eval --model hf --model_args pretrained={out} --tasks hellaswag")
    return 0


def _tokenizer_dir(ckpt: Path) -> Path | None:
    """RUN/tokenizer for a checkpoint RUN/checkpoints/step_X (the HF files must be there)."""
    for cand in (ckpt / "tokenizer", ckpt.parent.parent / "tokenizer"):
        if (cand / "tokenizer.json").is_file():
            return cand
    return None


def _write_hf_tokenizer(tok_dir: Path, out: Path) -> None:
    """The Hugging Face tokenizer files. Ours are written afresh by this version's tokenizer/hf.py, so a run saved
    before the export learned to add BOS and carry the chat template exports right; a foreign tokenizer (an
    imported run) is copied as it is."""
    if not (tok_dir / "scratchlm_tokenizer.json").is_file():
        for name in TOKENIZER_FILES:
            if (tok_dir / name).is_file():
                shutil.copyfile(tok_dir / name, out / name)
        return
    import tempfile

    from scratchlm.inference.chat_template import CHAT_TEMPLATE, IM_END, IM_START
    from scratchlm.tokenizer import load_tokenizer

    tok = load_tokenizer(tok_dir)
    saved = tok_dir / "tokenizer_config.json"
    saved = json.loads(saved.read_text(encoding="utf-8")).get("chat_template") if saved.is_file() else None
    chat = saved
    if {IM_START, IM_END} <= set(tok.special_tokens):
        chat = CHAT_TEMPLATE  # what `scratchlm generate --chat`, `chat` and `serve` render, whatever the run holds
        if saved not in (None, CHAT_TEMPLATE):
            log.warning("%s holds another chat_template; exported scratchlm's own, the one its chat uses", tok_dir)
    with tempfile.TemporaryDirectory() as tmp:
        tok.save(tmp, chat_template=chat)
        for name in TOKENIZER_FILES:
            shutil.copyfile(Path(tmp) / name, out / name)


def _special_token_ids(tok_dir: Path) -> dict[str, int]:
    """{"bos"|"eos"|"pad"|"im_start"|"im_end": id} from the HF tokenizer_config.json (names) and its added
    tokens (ids)."""
    path = tok_dir / "tokenizer_config.json"
    if not path.is_file():
        return {}
    tc = json.loads(path.read_text(encoding="utf-8"))
    ids = {v.get("content"): int(k) for k, v in tc.get("added_tokens_decoder", {}).items()}
    out = {}
    for name in ("bos", "eos", "pad"):
        tok = tc.get(f"{name}_token")
        tok = tok.get("content") if isinstance(tok, dict) else tok
        if tok in ids:
            out[name] = ids[tok]
    for name, tok in (("im_start", "<|im_start|>"), ("im_end", "<|im_end|>")):  # the chat turn markers
        if tok in ids:
            out[name] = ids[tok]
    return out


# ---------------------------------------------------------------------------------------------- import
def import_hf(args) -> int:
    from scratchlm.config import save_config
    from scratchlm.model.hf import from_hf_state_dict
    from scratchlm.runs import checkpoint_dir, mark_done, prepare_run_dir, save_model

    src = Path(args.src)
    if not (src / "config.json").is_file():
        raise FileNotFoundError(f"{src} has no config.json; point --input at a folder written by save_pretrained")
    hf_config = json.loads((src / "config.json").read_text(encoding="utf-8"))
    state = _read_hf_weights(src)
    cfg, sd = from_hf_state_dict(state, hf_config, pad_vocab_multiple=args.pad_vocab_multiple)

    run = prepare_run_dir(args.out, overwrite=args.overwrite, kind="import hf", inputs=[str(src)])
    ckpt = save_model(checkpoint_dir(run, 0), sd, cfg.to_dict(),
                      extra_meta={"step": 0, "source": str(src.resolve()), "format": "huggingface",
                                  "architecture": (hf_config.get("architectures") or [None])[0]})
    save_config({"model": cfg.to_dict(), "import": {"from": str(src.resolve())}}, run / "config.toml")
    # generation_config.json goes beside the tokenizer: its eos ids are the chat stop tokens (inference/hf_chat.py)
    copied = [n for n in TOKENIZER_FILES + ("generation_config.json", "chat_template.jinja") if (src / n).is_file()]
    for name in copied:
        shutil.copyfile(src / name, run / "tokenizer" / name)
    if "tokenizer.json" not in copied:
        log.warning("%s has no tokenizer.json: the run has weights but no tokenizer", src)
    else:
        from scratchlm.tokenizer.hf_load import load_hf_tokenizer

        try:  # read it now, so a tokenizer scratchlm cannot use is reported here rather than at `generate`
            tok = load_hf_tokenizer(run / "tokenizer")
        except ValueError as e:
            log.warning("the model is imported, but its tokenizer is not usable by scratchlm: %s", e)
        else:
            if tok.vocab_size > cfg.vocab_size:
                log.warning("the tokenizer has ids up to %d but the model only %d embeddings: ids past it will fail",
                            tok.vocab_size - 1, cfg.vocab_size)
    mark_done(run, {"stage": "import", "checkpoint": ckpt.name})
    n = sum(t.numel() for t in sd.values())
    print(f"imported {src} -> {ckpt} ({cfg.family}-style, {n:,} parameters)")
    return 0


def _read_hf_weights(src: Path) -> dict:
    """All tensors of a save_pretrained folder: model.safetensors, a sharded index, or pytorch_model.bin."""
    from safetensors.torch import load_file

    if (src / "model.safetensors").is_file():
        return load_file(str(src / "model.safetensors"))
    index = src / "model.safetensors.index.json"
    if index.is_file():
        shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        state = {}
        for shard in shards:
            state.update(load_file(str(src / shard)))
        return state
    if (src / "pytorch_model.bin").is_file():
        import torch

        return torch.load(src / "pytorch_model.bin", map_location="cpu", weights_only=True)
    raise FileNotFoundError(f"{src} has no model.safetensors, model.safetensors.index.json or pytorch_model.bin")
