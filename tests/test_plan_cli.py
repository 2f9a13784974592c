"""`scratchlm plan`: the examples of the issue, the JSON schema, run folders, errors, start-up cost."""

import json
import subprocess
import sys

import pytest

from scratchlm.cli.main import main


def run(capsys, *argv):
    rc = main(["plan", *argv])
    out, err = capsys.readouterr()
    return rc, out, err


def plan_json(capsys, *argv):
    rc, out, err = run(capsys, *argv, "--json")
    assert rc == 0, err
    return json.loads(out)


def test_issue_example_json(capsys):
    p = plan_json(capsys, "--params", "7e9", "--tokens", "1e12", "--gpu", "H100", "--gpus", "8", "--fsdp", "8",
                  "--mfu", "0.4")
    assert p["schema"] == "scratchlm.plan/v1" and p["mode"] == "forward"
    for key in ("budget", "model", "hardware", "compute", "time", "memory", "inference", "warnings"):
        assert key in p
    assert p["compute"]["flops_6nd"] == pytest.approx(4.2e22)
    assert p["compute"]["flops"] > p["compute"]["flops_6nd"]
    # time = FLOPs / (8 GPUs x 989.4 TFLOP/s x 0.4)
    assert p["time"]["seconds"] == pytest.approx(p["compute"]["flops"] / (8 * 989.4e12 * 0.4))
    req = p["memory"]["requested"]
    assert req["layout"]["fsdp"] == 8 and req["layout"]["zero"] == 3 and req["fits"]
    assert set(req["memory_per_gpu"]) >= {"params", "grads", "optimizer", "activations", "total"}
    assert p["memory"]["recommended"]["fits"]
    assert p["time"]["cost_usd"] is None
    # the names docs/plan.md promises (schema scratchlm.plan/v1)
    documented = {"params", "grads", "optimizer", "activations", "weight_copies", "recompute_buffer", "fsdp_buffers",
                  "total"}
    for lay in [req, p["memory"]["recommended"], *p["memory"]["alternatives"]]:
        assert set(lay["memory_per_gpu"]) <= documented
    assert set(p["compute"]["compute_optimal"]) == {"rule", "chinchilla", "hoffmann", "besiroglu",
                                                    "tokens_for_this_model"}


def test_cost_and_table(capsys):
    p = plan_json(capsys, "--params", "7e9", "--tokens", "1e12", "--gpus", "8", "--cost-per-gpu-hour", "2.5")
    assert p["time"]["cost_usd"] == pytest.approx(p["time"]["gpu_hours"] * 2.5)
    rc, out, _ = run(capsys, "--params", "7e9", "--tokens", "1e12", "--gpus", "8", "--cost-per-gpu-hour", "2.5")
    assert rc == 0
    for text in ("compute", "FLOPs", "wall clock", "$", "memory per GPU", "recommended layout", "KV cache"):
        assert text in out


def test_preset(capsys):
    p = plan_json(capsys, "--model", "gpt2-124m", "--gpu", "RTX4090")
    assert p["model"]["n_params"] == 124_439_808 and not p["model"]["derived"]
    assert p["compute"]["tokens"] == pytest.approx(20 * 124_439_808)
    from scratchlm.model import PRESETS, flops_per_token

    assert p["compute"]["flops_per_token"] == flops_per_token(PRESETS["gpt2-124m"], 1024)
    assert p["memory"]["requested"]["fits"]
    rc, out, _ = run(capsys, "--model", "gpt2-124m")
    assert rc == 0 and "gpt2-124m" in out and "124,439,808" in out


def test_run_folder(capsys, tmp_path):
    from scratchlm.model import ModelConfig, count_params

    cfg = ModelConfig.from_preset("llama-5m")
    ckpt = tmp_path / "run" / "checkpoints" / "step_0000100"
    ckpt.mkdir(parents=True)
    (ckpt / "model.safetensors").write_bytes(b"")  # the planner reads only config.json
    (ckpt / "config.json").write_text(json.dumps(cfg.to_dict()))
    p = plan_json(capsys, "--run", str(tmp_path / "run"), "--gpu", "CPU", "--tokens", "1e8")
    assert p["model"]["n_params"] == count_params(cfg) and p["model"]["source"] == "run"
    rc, _, err = run(capsys, "--run", str(tmp_path / "missing"))
    assert rc == 2 and "not found" in err


def test_inverse_mode(capsys):
    p = plan_json(capsys, "--gpus", "8", "--gpu", "H100", "--days", "7")
    assert p["mode"] == "inverse" and p["budget"]["source"] == "days"
    assert p["time"]["days"] == pytest.approx(7, rel=0.01)
    assert p["compute"]["tokens_per_param"] == pytest.approx(20)
    assert 1e9 < p["model"]["n_params"] < 1e10
    rc, out, _ = run(capsys, "--gpus", "8", "--gpu", "H100", "--days", "7")
    assert rc == 0 and out.startswith("inverse: the compute-optimal model")
    usd = plan_json(capsys, "--gpus", "8", "--budget-usd", "100000", "--cost-per-gpu-hour", "2")
    assert usd["time"]["cost_usd"] == pytest.approx(100000, rel=0.01)


def test_help_has_examples(capsys):
    with pytest.raises(SystemExit) as e:
        main(["plan", "--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert "examples:" in out and "scratchlm plan --params 7e9" in out and "--days 7" in out


@pytest.mark.parametrize("argv, message", [
    (["--gpu", "H10O", "--params", "1e9"], "did you mean H100"),
    (["--params", "1e9", "--preset", "gpt2-124m"], "give one model"),
    ([], "give a model"),
    (["--params", "7e9", "--gpus", "8", "--fsdp", "3"], "multiply to the GPU count"),
    (["--params", "7e9", "--tokens", "1e12", "--days", "3"], "not both"),
    (["--preset", "gpt2-small"], "did you mean"),
    (["--params", "1e9", "--mfu", "2"], "--mfu"),
    (["--budget-usd", "1000"], "--cost-per-gpu-hour"),
])
def test_bad_input_is_one_line_and_exit_2(capsys, argv, message):
    rc, _, err = run(capsys, *argv)
    assert rc == 2 and message in err and err.count("\n") == 1


def test_list_gpus(capsys):
    rc, out, _ = run(capsys, "--list-gpus")
    assert rc == 0 and "H200" in out and "RTX4090" in out


def test_params_mode_does_not_import_torch():
    code = ("import sys, io, contextlib; from scratchlm.cli.main import main\n"
            "with contextlib.redirect_stdout(io.StringIO()): main(['plan', '--params', '7e9', '--json'])\n"
            "print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"
