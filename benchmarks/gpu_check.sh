#!/usr/bin/env bash
# Everything a first GPU session should check, in one go (~8 minutes on one H100):
#   1. pytest -m gpu: the attention kernel SDPA picks for our GQA attention, CUDA-graph decode == eager decode,
#      bf16 decode beside transformers' generate (tests/test_gpu.py; -s shows the figures they print);
#   2. decode tokens/s, MFU and MBU of our engine, eager and compiled (benchmarks/decode_roofline.py).
# Results go to $OUT (or ./gpu_check_out): pytest.txt, decode_roofline.txt/.json, nvidia-smi.txt, env.txt.
#
#   bash benchmarks/gpu_check.sh            # from the repository root, with .venv holding a CUDA build of torch
set -u -o pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
OUT=${OUT:-gpu_check_out}
mkdir -p "$OUT"
nvidia-smi > "$OUT/nvidia-smi.txt" 2>&1 || echo "nvidia-smi not found" > "$OUT/nvidia-smi.txt"
"$PY" -c "import torch, transformers; print('torch', torch.__version__, 'cuda', torch.version.cuda,
'transformers', transformers.__version__); print(torch.cuda.get_device_name() if torch.cuda.is_available() else 'NO CUDA')" \
  2>&1 | tee "$OUT/env.txt"
"$PY" -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 2)" || {
  echo "gpu_check: $PY sees no CUDA GPU (a CPU build of torch?): install a CUDA build, or point PY at a python that has one"
  exit 2; }
status=0
# 1. the GPU tests (about 3 minutes, most of it compiling the decode graph and building the models)
timeout 300 "$PY" -m pytest -m gpu -q -s -rsx tests/test_gpu.py 2>&1 | tee "$OUT/pytest.txt" || status=1
# 2. decode roofline: a ~1.1B and a ~125M Llama in bf16, batch 1 and 16 (4 graph compiles, about 4 minutes)
timeout 360 "$PY" benchmarks/decode_roofline.py --sizes llama-1b llama-125m --batch 1 16 --prompt-len 128 \
  --new-tokens 256 --repeats 3 --json "$OUT/decode_roofline.json" 2>&1 | tee "$OUT/decode_roofline.txt" || status=1
echo "gpu_check: exit $status; results in $OUT"
exit $status
