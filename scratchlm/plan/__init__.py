"""The planner: the arithmetic of a training run before any of it runs.

    from scratchlm.plan import PlanRequest, make_plan, lookup, shape_for_preset
    plan = make_plan(PlanRequest(tokens=1e12, n_gpus=8, fsdp=8, mfu=0.4), shape_from_params(7e9), lookup("H100"))
    plan["compute"]["flops"], plan["time"]["days"], plan["memory"]["recommended"]

hardware.py  the GPU catalog (peak FLOP/s, memory, bandwidth), editable from TOML
compute.py   6ND + attention FLOPs, Chinchilla's 20 tokens/param and parametric fits, time from MFU
shape.py     the model numbers the arithmetic needs, from scratchlm.model or invented from N
memory.py    bytes of weights, gradients, optimizer states (ZeRO), activations (Korthikanti), KV cache
layout.py    dp x fsdp x tp x pp layouts: memory per GPU and a search for one that fits
planner.py   one request -> one plan (a JSON-ready dict, schema scratchlm.plan/v1)
report.py    the plan as a readable table
measure.py   the same quantities measured on real tensors (tests, benchmarks)
roofline.py  decode MFU and MBU: a measured tokens/s against peak FLOP/s and memory bandwidth
"""

from scratchlm.plan.compute import (BESIROGLU, HOFFMANN, LossFit, chinchilla_optimal, compute_optimal,
                                    training_flops, training_flops_per_token)
from scratchlm.plan.hardware import CATALOG, Hardware, load_catalog, lookup
from scratchlm.plan.layout import Layout, evaluate, memory_per_gpu, search
from scratchlm.plan.memory import (PRECISIONS, bytes_per_param, kv_cache_bytes, korthikanti_layer_bytes,
                                   model_state_bytes)
from scratchlm.plan.planner import SCHEMA, PlanRequest, make_plan
from scratchlm.plan.report import format_plan
from scratchlm.plan.shape import ModelShape, shape_for_preset, shape_from_params, shape_from_run

__all__ = [
    "BESIROGLU", "CATALOG", "HOFFMANN", "Hardware", "Layout", "LossFit", "ModelShape", "PRECISIONS", "PlanRequest",
    "SCHEMA", "bytes_per_param", "chinchilla_optimal", "compute_optimal", "evaluate", "format_plan",
    "korthikanti_layer_bytes", "kv_cache_bytes", "load_catalog", "lookup", "make_plan", "memory_per_gpu",
    "model_state_bytes", "search", "shape_for_preset", "shape_from_params", "shape_from_run", "training_flops",
    "training_flops_per_token",
]
