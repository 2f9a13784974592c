"""One flag vocabulary across every command (README, "Flags"), checked on the real argparse tree:

--input  files/folders a command reads        --out     what it writes          --run  a model's run/checkpoint
--prompt literal text                         --data    a stage's dataset       --config/--set  its settings

Old spellings keep working for one release with a note on stderr; every --help example parses.
"""

from __future__ import annotations

import argparse
import json
import re
import shlex

import pytest

from scratchlm.cli.common import _Renamed
from scratchlm.cli.main import EPILOG, build_parser

PARSER = build_parser()


def _commands(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()):
    """(path, parser) of every command and subcommand, e.g. (("data", "toxicity", "score"), parser)."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield (*path, name), sub
                yield from _commands(sub, (*path, name))


COMMANDS = dict(_commands(PARSER))
LEAVES = {path: p for path, p in COMMANDS.items()
          if not any(isinstance(a, argparse._SubParsersAction) for a in p._actions)}


def _options(parser: argparse.ArgumentParser, visible: bool = True) -> dict[str, argparse.Action]:
    return {s: a for a in parser._actions for s in a.option_strings if (a.help != argparse.SUPPRESS) == visible}


# Commands whose settings are a dataclass config: each takes --config FILE and --set KEY=VALUE.
SETTINGS = {("pretrain",), ("sft",), ("dpo",), ("rl",), ("reward",), ("tokenizer", "train"), ("data", "prepare"),
            ("data", "filter"), ("data", "dedup"), ("data", "tokenize"), ("data", "toxicity", "train"),
            ("data", "toxicity", "distill"), ("data", "toxicity", "score"), ("data", "synth"), ("plan",)}
# Commands that use a trained model: it is named by --run.
MODEL_USERS = {("generate",), ("chat",), ("serve",), ("eval",), ("export", "hf")}


def test_the_tree_is_walked():
    assert len(LEAVES) >= 25 and SETTINGS <= set(LEAVES) and MODEL_USERS <= set(LEAVES)


@pytest.mark.parametrize("path", sorted(LEAVES), ids=" ".join)
def test_vocabulary(path):
    opts = _options(LEAVES[path])
    # the spellings that meant different things in different commands are gone from every --help
    for old in ("--text", "--model", "--from", "--field"):
        assert old not in opts, f"{' '.join(path)} still offers {old}"
    if path in SETTINGS:
        assert "--config" in opts and "--set" in opts, f"{' '.join(path)} has settings but no --config/--set"
    assert ("--config" in opts) == ("--set" in opts), f"{' '.join(path)}: --config and --set come together"
    if path in MODEL_USERS:
        assert "--run" in opts and opts["--run"].required, f"{' '.join(path)} names its model otherwise than --run"
    for old, action in _options(LEAVES[path], visible=False).items():  # hidden flags are old spellings only
        assert isinstance(action, _Renamed) and action.new.option_strings[0] in opts, (path, old)


def test_literal_text_is_prompt():
    assert "--prompt" in _options(LEAVES[("generate",)]) and "--prompt" in _options(LEAVES[("tokenizer", "encode")])


# (old command line, the same with the new spelling, the new flag)
RENAMED = [
    ("eval --run r --task bpb --text t.txt", "eval --run r --task bpb --data t.txt", "--data"),
    ("tokenizer encode -t tok --text hi", "tokenizer encode -t tok --prompt hi", "--prompt"),
    ("import hf --from hf --out r", "import hf --input hf --out r", "--input"),
    ("plan --model gpt2-124m", "plan --preset gpt2-124m", "--preset"),
    ("data toxicity score --input a.jsonl --model builtin", "data toxicity score --input a.jsonl "
     "--toxicity-model builtin", "--toxicity-model"),
    ("tokenizer train --input a.txt --field q --field a", "tokenizer train --input a.txt --text-field q "
     "--text-field a", "--text-field"),
    ("tokenizer stats -t tok --input a.txt --field q", "tokenizer stats -t tok --input a.txt --text-field q",
     "--text-field"),
    ("generate --run r --prompts-file p.txt", "generate --run r --input p.txt", "--input"),
]


@pytest.mark.parametrize("old,new,flag", RENAMED, ids=[r[0].split(" --")[0] + " " + r[2] for r in RENAMED])
def test_old_spelling_still_works_with_a_note(old, new, flag, capsys):
    parsed_old = build_parser().parse_args(shlex.split(old))
    err = capsys.readouterr().err
    parsed_new = build_parser().parse_args(shlex.split(new))
    assert capsys.readouterr().err == ""
    assert vars(parsed_old) == vars(parsed_new)
    old_flag = next(t for t in shlex.split(old) if t.startswith("--") and t not in shlex.split(new))
    lines = set(err.splitlines())  # one line (repeated for a repeated flag)
    assert len(lines) == 1 and old_flag in err and flag in err and "deprecated" in err, err


def test_old_and_new_spelling_together_are_refused(capsys):
    with pytest.raises(SystemExit) as e:
        build_parser().parse_args(shlex.split("eval --run r --text a.txt --data b.txt"))
    assert e.value.code == 2 and "not allowed with" in capsys.readouterr().err


def test_a_required_flag_is_still_required():
    with pytest.raises(SystemExit):
        build_parser().parse_args(["import", "hf", "--out", "r"])


@pytest.mark.parametrize("argv,message", [
    ([], "one of the arguments --prompt --input"),  # the either-or is still required
    (["--prompt", "hi", "--input", "p.txt"], "not allowed with"),
    (["--prompt", "hi", "--prompts-file", "p.txt"], "not allowed with"),  # the old spelling is in the group too
    (["--input", "p.txt", "--prompts-file", "p.txt"], "not allowed with"),
])
def test_generate_prompt_or_input(argv, message, capsys):
    with pytest.raises(SystemExit) as e:
        build_parser().parse_args(["generate", "--run", "r", *argv])
    assert e.value.code == 2 and message in capsys.readouterr().err


def _example_lines(text: str) -> list[list[str]]:
    """The argument lists of every `scratchlm ...` command in a --help epilog (continuations joined, comments,
    pipes, redirections and [optional] brackets dropped)."""
    commands = []
    for line in text.replace("\\\n", " ").splitlines():
        for part in line.split("|"):  # `echo hi | scratchlm ...`, `torchrun ... -m scratchlm ...`; prose is skipped
            m = re.match(r"\s*(?:torchrun .*?-m )?scratchlm\s+(.*)", part)
            if not m or "<command>" in part:
                continue
            tokens = shlex.split(m.group(1).replace("[", "").replace("]", ""), comments=True)
            for redirect in ("<", ">"):
                if redirect in tokens:
                    tokens = tokens[: tokens.index(redirect)]
            commands.append(tokens)
    return commands


@pytest.mark.parametrize("path", sorted(COMMANDS), ids=" ".join)
def test_help_examples_parse(path, capsys):
    examples = _example_lines(COMMANDS[path].epilog or "")
    if path in LEAVES:
        assert examples, f"`scratchlm {' '.join(path)} --help` shows no example"
    for tokens in examples:
        try:
            build_parser().parse_args(tokens)
        except SystemExit:
            pytest.fail(f"example `scratchlm {shlex.join(tokens)}` of `{' '.join(path)} --help` does not parse: "
                        f"{capsys.readouterr().err.strip()}")
        assert "deprecated" not in capsys.readouterr().err, f"example uses an old spelling: {shlex.join(tokens)}"


def test_top_level_examples_parse():
    examples = _example_lines(EPILOG)
    assert examples
    for tokens in examples:
        build_parser().parse_args(tokens)


# ---------------------------------------------------------------------------------------------- --config / --set
# tokenizer train and data tokenize take their settings as every other stage does: defaults <- --config <- flags <-
# --set, validated by scratchlm/config.py


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    d = tmp_path_factory.mktemp("flags")
    text = "".join(f"The cat {i} sat on the mat number {i * 7}. The dog ran after it.\n\n" for i in range(300))
    (d / "a.txt").write_text(text, encoding="utf-8")
    return d


def test_tokenizer_train_config_and_set(corpus, capsys):
    from scratchlm.cli.main import main
    from scratchlm.tokenizer import load_tokenizer

    (corpus / "tok.toml").write_text('[tokenizer]\nvocab_size = 400\npattern = "gpt2"\n', encoding="utf-8")
    assert main(["tokenizer", "train", "--input", str(corpus / "a.txt"), "--config", str(corpus / "tok.toml"),
                 "--set", "tokenizer.vocab_size=300", "--out", str(corpus / "tok"), "-q"]) == 0
    assert load_tokenizer(corpus / "tok").vocab_size == 300  # --set wins over the file
    resolved = (corpus / "tok" / "config.toml").read_text(encoding="utf-8")
    assert 'pattern = "gpt2"' in resolved and "vocab_size = 300" in resolved and "a.txt" in resolved
    # the run's config.toml trains the same tokenizer again, inputs included
    assert main(["tokenizer", "train", "--config", str(corpus / "tok" / "config.toml"), "--out", str(corpus / "tok2"),
                 "-q"]) == 0
    same = [(corpus / d / "tokenizer" / "tokenizer.json").read_bytes() for d in ("tok", "tok2")]
    assert same[0] == same[1]
    capsys.readouterr()


@pytest.mark.parametrize("argv,message", [
    (["--set", "tokenizer.vocab_sise=300"], "did you mean 'tokenizer.vocab_size'"),
    (["--char", "--vocab-size", "300"], "char vocabulary"),
    (["--char-specials"], "needs --char"),
])
def test_tokenizer_train_refuses_what_it_cannot_honour(corpus, capsys, argv, message):
    from scratchlm.cli.main import main

    out = corpus / "refused"
    assert main(["tokenizer", "train", "--input", str(corpus / "a.txt"), "--out", str(out), *argv]) == 2
    assert message in capsys.readouterr().err and not out.exists()


def test_tokenizer_train_needs_an_input(corpus, capsys):
    from scratchlm.cli.main import main

    assert main(["tokenizer", "train", "--out", str(corpus / "none")]) == 2
    assert "--input" in capsys.readouterr().err


def test_data_tokenize_config_and_set(corpus, capsys):
    import json

    from scratchlm.cli.main import main

    tok = corpus / "tok_for_shards"
    assert main(["tokenizer", "train", "--input", str(corpus / "a.txt"), "--vocab-size", "300", "--out", str(tok),
                 "-q"]) == 0
    (corpus / "shards.toml").write_text('val_fraction = 0.5\nshard_tokens = "1M"\n[source]\ntext_split = "line"\n',
                                        encoding="utf-8")
    assert main(["data", "tokenize", "--tokenizer", str(tok / "tokenizer"), "--input", str(corpus / "a.txt"),
                 "--config", str(corpus / "shards.toml"), "--set", "val_fraction=0.25", "--out",
                 str(corpus / "shards"), "-q"]) == 0
    manifest = json.loads((corpus / "shards" / "manifest.json").read_text())
    assert manifest["source"]["val_fraction"] == 0.25 and manifest["shard_tokens"] == 1_000_000
    assert sum(manifest["n_docs"].values()) == 300  # text_split = "line" from the file (the default, "file": 1)
    assert main(["data", "tokenize", "--tokenizer", str(tok / "tokenizer"), "--input", str(corpus / "a.txt"),
                 "--val-input", str(corpus / "a.txt"), "--val-fraction", "0.2", "--out", str(corpus / "x")]) == 2
    assert "--val-input" in capsys.readouterr().err and not (corpus / "x").exists()


def test_old_spellings_run_end_to_end(corpus, capsys):
    """Parsing alike is not enough: the handler must read the new name. Two commands whose handlers were edited."""
    import json

    from scratchlm.cli.main import main

    tok = corpus / "tok_e2e"
    assert main(["tokenizer", "train", "--input", str(corpus / "a.txt"), "--vocab-size", "300", "--out", str(tok),
                 "-q"]) == 0
    capsys.readouterr()
    outputs = []
    for flag in ("--prompt", "--text"):
        assert main(["tokenizer", "encode", "-t", str(tok), flag, "The cat sat"]) == 0
        outputs.append(capsys.readouterr())
    assert outputs[0].out == outputs[1].out and outputs[0].out.strip()
    assert outputs[0].err == "" and "use --prompt" in outputs[1].err

    (corpus / "docs.jsonl").write_text(json.dumps({"text": "a kind and friendly note"}) + "\n", encoding="utf-8")
    for flag in ("--toxicity-model", "--model"):
        out = corpus / f"scores{flag}.jsonl"
        assert main(["data", "toxicity", "score", "--input", str(corpus / "docs.jsonl"), flag, "builtin",
                     "--out", str(out)]) == 0
        assert "toxicity" in json.loads(out.read_text())
    assert "use --toxicity-model" in capsys.readouterr().err


# ------------------------------------------------------- plan, data synth, data toxicity score: --config / --set


def test_plan_flags_are_its_config_keys():
    """Each plan setting flag is a PlanConfig key and back: a flag missing from the config would be dropped unread."""
    import dataclasses

    from scratchlm.cli.plan import NOT_SETTINGS
    from scratchlm.plan.config import PlanConfig

    dests = {a.dest for a in LEAVES[("plan",)]._actions} - NOT_SETTINGS
    assert dests == {f.name for f in dataclasses.fields(PlanConfig)}


def test_plan_config_and_set(tmp_path, capsys):
    import json

    from scratchlm.cli.main import main

    (tmp_path / "pod.toml").write_text('gpus = 8\nfsdp = 8\nmfu = 0.3\ngpu = "A100-80GB"\n', encoding="utf-8")
    argv = ["plan", "--params", "1e9", "--tokens", "1e10", "--config", str(tmp_path / "pod.toml"), "--json"]
    assert main([*argv, "--mfu", "0.5", "--set", "gpu=H100"]) == 0
    plan = json.loads(capsys.readouterr().out)
    layout = plan["memory"]["requested"]["layout"]
    assert (plan["hardware"]["n_gpus"], layout["fsdp"]) == (8, 8)  # from the file
    assert plan["time"]["mfu"] == 0.5  # the flag over the file
    assert plan["hardware"]["name"] == "H100"  # --set over the file
    assert main(argv) == 0
    plan = json.loads(capsys.readouterr().out)
    assert (plan["time"]["mfu"], plan["hardware"]["name"]) == (0.3, "A100-80GB")


@pytest.mark.parametrize("argv,message", [
    (["--set", "gpus=eight"], "gpus: expected an integer"),
    (["--set", "mfuu=0.5"], "did you mean 'mfu'"),
    (["--set", "precision=fp16"], "precision: expected one of"),
])
def test_plan_bad_set_is_one_line(argv, message, capsys):
    from scratchlm.cli.main import main

    assert main(["plan", "--params", "1e9", *argv]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1, err


def test_data_synth_config_and_set(tmp_path, capsys):
    import json

    from scratchlm.cli.main import main

    (tmp_path / "tw.toml").write_text('size = "30KB"\ninstructions = 30\nseed = 3\n', encoding="utf-8")
    assert main(["data", "synth", "--config", str(tmp_path / "tw.toml"), "--seed", "1", "--set", "instructions=20",
                 "--out", str(tmp_path / "tw"), "-q"]) == 0
    m = json.loads((tmp_path / "tw" / "manifest.json").read_text())
    assert m["seed"] == 1  # the flag over the file
    assert m["files"]["instructions.jsonl"]["records"] == 20  # --set over the file
    assert 25_000 <= m["files"]["train.txt"]["bytes"] + m["files"]["val.txt"]["bytes"] <= 35_000
    for argv, message in ((["--set", "instructions=0"], "instructions: 0 is out of range"),
                          (["--set", "sise=1MB"], "did you mean 'size'"), (["--instructions", "0"], "--instructions")):
        assert main(["data", "synth", *argv, "--out", str(tmp_path / "bad")]) == 2
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1 and not (tmp_path / "bad").exists(), err


def test_data_toxicity_score_config_and_set(tmp_path, capsys):
    import json

    from scratchlm.cli.main import main

    docs = tmp_path / "docs.jsonl"
    docs.write_text("".join(json.dumps({"body": t, "y": y}) + "\n" for t, y in
                            (("a kind and friendly note", 0), ("you stupid idiot", 1))), encoding="utf-8")
    (tmp_path / "score.toml").write_text('toxicity_model = "builtin"\ntext_field = "body"\nthreshold = 0.9\n',
                                         encoding="utf-8")
    out = tmp_path / "s.jsonl"
    assert main(["data", "toxicity", "score", "--input", str(docs), "--config", str(tmp_path / "score.toml"),
                 "--label-field", "y", "--set", "threshold=0.25", "--out", str(out)]) == 0
    assert "threshold=0.25" in capsys.readouterr().out  # --set over the file; the model and field from the file
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["label"] for r in rows] == [0, 1] and all("toxicity" in r for r in rows)
    for argv, message in ((["--set", "threshold=2"], "threshold: 2.0 is out of range"),
                          (["--set", "toxicity_modle=builtin"], "did you mean 'toxicity_model'"),
                          ([], "give --toxicity-model")):
        assert main(["data", "toxicity", "score", "--input", str(docs), *argv, "--out", str(tmp_path / "b")]) == 2
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1 and not (tmp_path / "b").exists(), err


def test_generate_input_and_old_prompts_file_end_to_end(tiny_chat_run, tmp_path, capsys):
    """The handler reads the prompts from --input; --prompts-file reaches it too, with the note."""
    from scratchlm.cli.main import main

    (tmp_path / "p.txt").write_text("Once\nThe cat\n", encoding="utf-8")
    outputs = []
    for flag in ("--input", "--prompts-file"):
        assert main(["generate", "--run", str(tiny_chat_run), flag, str(tmp_path / "p.txt"), "--max-new-tokens", "3",
                     "--temperature", "0", "--json", "--device", "cpu"]) == 0
        outputs.append(capsys.readouterr())
    assert [json.loads(line)["prompt"] for line in outputs[0].out.splitlines()] == ["Once", "The cat"]
    assert outputs[0].out == outputs[1].out
    assert "deprecated" not in outputs[0].err and "--prompts-file is deprecated" in outputs[1].err
    assert "use --input" in outputs[1].err


@pytest.mark.parametrize("argv", [
    ["export", "hf", "--run", "r", "--out", "o", "--seed", "3"],
    ["import", "hf", "--input", "i", "--out", "o", "--seed", "3"],
    ["serve", "--run", "r", "--seed", "3"],
    ["data", "toxicity", "score", "--input", "x.jsonl", "--seed", "3"],
])
def test_commands_with_nothing_random_refuse_seed(argv, capsys):
    """A --seed that a command accepted and never used would be a silent no-op: these commands have no randomness of
    their own (the server takes a seed per request, as OpenAI's API does), so argparse refuses the flag."""
    with pytest.raises(SystemExit) as e:
        build_parser().parse_args(argv)
    assert e.value.code == 2 and "unrecognized arguments: --seed 3" in capsys.readouterr().err
