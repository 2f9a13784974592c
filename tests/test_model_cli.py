"""`scratchlm import hf` / `scratchlm export hf` round trips through folders that transformers reads and writes."""

import argparse
import json

import pytest
import torch

transformers = pytest.importorskip("transformers")

from scratchlm.cli import interop  # noqa: E402
from scratchlm.model import ModelConfig, Transformer  # noqa: E402
from scratchlm.runs import checkpoint_dir, load_model_state, save_model  # noqa: E402


def _cli(*argv):
    parser = argparse.ArgumentParser()
    interop.register(parser.add_subparsers())
    args = parser.parse_args([str(a) for a in argv])
    return args.func(args)


def _load_run(run):
    cfg_dict, state = load_model_state(checkpoint_dir(run, 0))
    model = Transformer(ModelConfig.from_dict(cfg_dict)).eval()
    model.load_state_dict(state)
    return model


@pytest.mark.parametrize("arch,shard", [("llama", None), ("llama", "40KB"), ("gpt2", None)])
def test_import_folder_saved_by_transformers(tmp_path, arch, shard):
    torch.manual_seed(0)
    if arch == "llama":
        hf = transformers.LlamaForCausalLM(transformers.LlamaConfig(
            vocab_size=150, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, max_position_embeddings=64, tie_word_embeddings=True, rope_theta=5000.0))
    else:
        hf = transformers.GPT2LMHeadModel(transformers.GPT2Config(vocab_size=150, n_embd=64, n_layer=2, n_head=4,
                                                                  n_positions=64))
    hf.eval().save_pretrained(tmp_path / "hf", **({"max_shard_size": shard} if shard else {}))
    assert (tmp_path / "hf" / "model.safetensors.index.json").is_file() == bool(shard)
    assert _cli("import", "hf", "--from", tmp_path / "hf", "--out", tmp_path / "run") == 0
    assert (tmp_path / "run" / "checkpoints" / "step_0000000" / "model.safetensors").is_file()
    assert (tmp_path / "run" / "DONE").is_file() and (tmp_path / "run" / "config.toml").is_file()
    ours = _load_run(tmp_path / "run")
    idx = torch.randint(0, 150, (2, 13))
    with torch.no_grad():
        assert (ours(idx) - hf(idx).logits).abs().max() <= 1e-4
    with pytest.raises(FileExistsError, match="--overwrite"):
        _cli("import", "hf", "--from", tmp_path / "hf", "--out", tmp_path / "run")


@pytest.mark.parametrize("preset", ["llama-tiny", "gpt2-124m"])
def test_export_loads_with_auto_classes(tmp_path, preset):
    from scratchlm.tokenizer import train_bpe_from_texts

    tok = train_bpe_from_texts(["the cat sat on the mat. " * 20, "a dog ran in the park! 123"], vocab_size=300)
    run = tmp_path / "run"
    tok.save(run / "tokenizer")
    small = dict(d_model=64, n_layers=2, n_heads=4, max_seq_len=64) if preset.startswith("gpt2") else {}
    cfg = ModelConfig.from_preset(preset, vocab_size=tok.vocab_size, **small)
    torch.manual_seed(0)
    model = Transformer(cfg).eval()
    save_model(checkpoint_dir(run, 7), model, cfg.to_dict())

    assert _cli("export", "hf", "--run", run, "--out", tmp_path / "hf") == 0
    files = {p.name for p in (tmp_path / "hf").iterdir()}
    assert {"config.json", "model.safetensors", "generation_config.json", "tokenizer.json",
            "tokenizer_config.json", "special_tokens_map.json"} <= files
    hf = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "hf").eval()
    assert type(hf).__name__ == ("GPT2LMHeadModel" if preset.startswith("gpt2") else "LlamaForCausalLM")
    hf_tok = transformers.AutoTokenizer.from_pretrained(tmp_path / "hf")
    text = "the cat ran in the park"
    ids = hf_tok(text)["input_ids"]
    assert ids == [tok.bos_id] + tok.encode(text)  # BOS first, as `scratchlm generate` feeds the model
    idx = torch.tensor([ids])
    with torch.no_grad():
        assert (hf(idx).logits - model(idx)).abs().max() <= 1e-4
    gen = json.loads((tmp_path / "hf" / "generation_config.json").read_text())
    assert gen["eos_token_id"][0] == tok.eos_id == hf.config.eos_token_id  # then the chat stop tokens
    with pytest.raises(FileExistsError, match="not empty"):
        _cli("export", "hf", "--run", run, "--out", tmp_path / "hf")
    # bfloat16 export halves the file and still loads
    assert _cli("export", "hf", "--run", run, "--out", tmp_path / "hf16", "--dtype", "bfloat16") == 0
    hf16 = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "hf16", dtype=torch.bfloat16)
    assert next(hf16.parameters()).dtype == torch.bfloat16


def test_export_refuses_custom_architecture(tmp_path):
    cfg = ModelConfig(vocab_size=64, d_model=32, n_layers=1, n_heads=2, max_seq_len=16, qk_norm=True)
    save_model(checkpoint_dir(tmp_path / "run", 1), Transformer(cfg), cfg.to_dict())
    with pytest.raises(ValueError, match="qk_norm"):
        _cli("export", "hf", "--run", tmp_path / "run", "--out", tmp_path / "hf")
    assert not (tmp_path / "hf").exists()


def test_import_missing_folder_is_clear(tmp_path):
    with pytest.raises(FileNotFoundError, match="config.json"):
        _cli("import", "hf", "--from", tmp_path / "nope", "--out", tmp_path / "run")
