"""The accelerators the planner knows: peak dense FLOP/s per precision, memory, memory bandwidth.

Numbers are the vendors' *dense* tensor-core peaks (the datasheets often print the 2:4-sparse figure, twice as
large; training does not use it). Real training reaches a fraction of peak, the MFU (model FLOPs utilisation):
30-50% is typical for well-tuned dense transformers (PaLM reported 46%, Llama 3 405B 38-43%).

Edit the catalog without touching code: a TOML file with one table per device, e.g.

    [H100]                 # override one field of a known device
    memory_gib = 93.6        # the H100 NVL (95830 MiB)
    [MI300X]               # or add a new one (every field but `note` required)
    bf16_tflops = 1307.4
    fp8_tflops = 2614.9
    fp32_tflops = 163.4
    memory_gib = 191.5
    bandwidth_gbs = 5300

and `scratchlm plan --hardware my_gpus.toml --gpu MI300X ...`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

GIB = 2**30


@dataclass(frozen=True)
class Hardware:
    """One accelerator (or one CPU socket). FLOP/s are dense peaks; None means the precision is not supported."""

    name: str
    bf16_tflops: float  # dense BF16/FP16 tensor-core peak with FP32 accumulation
    fp32_tflops: float  # plain FP32 (non-tensor-core) peak
    memory_gib: float  # device memory in GiB as the driver reports it (nvidia-smi MiB / 1024)
    bandwidth_gbs: float  # memory bandwidth, GB/s; bounds decode speed (every weight is read once per step)
    fp8_tflops: float | None = None  # dense FP8 tensor-core peak (Hopper and later, Ada)
    tf32_tflops: float | None = None  # dense TF32 tensor-core peak (Ampere and later)
    note: str = ""  # where the numbers come from

    @property
    def memory_bytes(self) -> float:
        # Datasheets round: an "80GB" H100 reports 81559 MiB, a "141GB" H200 143771 MiB. We store what the
        # driver reports; the CUDA context and allocator slack come off it separately (`reserve_gib`).
        return self.memory_gib * GIB

    def peak_flops(self, compute: str) -> float:
        """Peak FLOP/s for a matmul precision: 'bf16', 'fp16', 'fp8', 'tf32' or 'fp32'."""
        table = {
            "bf16": self.bf16_tflops,
            "fp16": self.bf16_tflops,
            "fp8": self.fp8_tflops,
            "tf32": self.tf32_tflops,
            "fp32": self.fp32_tflops,
        }
        if compute not in table:
            raise ValueError(f"unknown compute precision {compute!r}; use one of {', '.join(table)}")
        v = table[compute]
        if v is None:
            raise ValueError(f"{self.name} has no {compute} tensor cores; choose another --precision or --gpu")
        return v * 1e12


# Sources: NVIDIA A100 datasheet (2021), H100 datasheet (SXM5, 2023), H200 product brief (2024), HGX B200
# datasheet (per-GPU = 8-GPU figures / 8, sparse figures halved), L4 datasheet, Ada Lovelace whitepaper
# (RTX 4090: FP32-accumulate tensor rates, which is what BF16 training uses on GeForce cards).
CATALOG: dict[str, Hardware] = {
    hw.name: hw
    for hw in [
        Hardware("A100-40GB", bf16_tflops=312, fp32_tflops=19.5, tf32_tflops=156, memory_gib=40.0,
                 bandwidth_gbs=1555, note="A100 SXM4 40GB datasheet"),
        Hardware("A100-80GB", bf16_tflops=312, fp32_tflops=19.5, tf32_tflops=156, memory_gib=80.0,
                 bandwidth_gbs=2039, note="A100 SXM4 80GB datasheet"),
        Hardware("H100", bf16_tflops=989.4, fp8_tflops=1978.9, fp32_tflops=66.9, tf32_tflops=494.7,
                 memory_gib=79.6, bandwidth_gbs=3350, note="H100 SXM5 datasheet"),
        Hardware("H200", bf16_tflops=989.4, fp8_tflops=1978.9, fp32_tflops=66.9, tf32_tflops=494.7,
                 memory_gib=140.4, bandwidth_gbs=4800, note="H200 SXM product brief; H100 compute, more HBM3e"),
        Hardware("B200", bf16_tflops=2250, fp8_tflops=4500, fp32_tflops=75, tf32_tflops=1100,
                 memory_gib=179.1, bandwidth_gbs=8000, note="HGX B200 datasheet / 8"),
        Hardware("L4", bf16_tflops=121, fp8_tflops=242.5, fp32_tflops=30.3, tf32_tflops=60, memory_gib=22.5,
                 bandwidth_gbs=300, note="L4 datasheet"),
        Hardware("RTX4090", bf16_tflops=165.2, fp8_tflops=330.3, fp32_tflops=82.6, tf32_tflops=82.6,
                 memory_gib=24.0, bandwidth_gbs=1008, note="Ada whitepaper, FP32 accumulate"),
        # A CPU socket is wildly variable; this is a modest 32-core AVX-512 server part, to be edited.
        Hardware("CPU", bf16_tflops=2.0, fp32_tflops=2.0, memory_gib=64, bandwidth_gbs=100,
                 note="generic server CPU socket; edit with --hardware for your machine"),
    ]
}

# Names people type for the same device.
ALIASES = {
    "A100": "A100-80GB", "A100-80": "A100-80GB", "A100-40": "A100-40GB", "A100_40GB": "A100-40GB",
    "A100_80GB": "A100-80GB", "H100-SXM": "H100", "H100-80GB": "H100", "H200-SXM": "H200",
    "4090": "RTX4090", "RTX-4090": "RTX4090",
}


def load_catalog(path: str | Path | None = None) -> dict[str, Hardware]:
    """The built-in catalog, with the devices of a TOML file (see module docstring) overriding or added."""
    catalog = dict(CATALOG)
    if path is None:
        return catalog
    from scratchlm.config import load_toml

    data = load_toml(path)
    fields = {f.name for f in dataclasses.fields(Hardware)} - {"name"}
    for name, entry in data.items():
        if not isinstance(entry, dict):
            raise ValueError(f"{path}: '{name}' must be a table like [{name}] with bf16_tflops = ..., memory_gib = ...")
        unknown = set(entry) - fields
        if unknown:
            raise ValueError(f"{path}: [{name}] has unknown key(s) {sorted(unknown)}; valid keys: {sorted(fields)}")
        for k, v in entry.items():
            if k != "note" and not (isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0):
                raise ValueError(f"{path}: [{name}] {k} = {v!r} must be a positive number")
        base = lookup(name, catalog, strict=False)
        if base is not None:
            catalog[base.name] = dataclasses.replace(base, **entry)
        else:
            missing = {"bf16_tflops", "fp32_tflops", "memory_gib", "bandwidth_gbs"} - set(entry)
            if missing:
                raise ValueError(f"{path}: new device [{name}] needs {sorted(missing)}")
            catalog[name] = Hardware(name=name, **entry)
    return catalog


def lookup(name: str, catalog: dict[str, Hardware] | None = None, strict: bool = True) -> Hardware | None:
    """Find a device by name, case-insensitively, accepting common aliases ('A100' = 'A100-80GB')."""
    catalog = CATALOG if catalog is None else catalog
    by_lower = {k.lower(): v for k, v in catalog.items()}
    key = name.strip().lower()
    alias = {k.lower(): v.lower() for k, v in ALIASES.items()}.get(key, key)
    hw = by_lower.get(key) or by_lower.get(alias)
    if hw is None and strict:
        import difflib

        close = difflib.get_close_matches(name, list(catalog), n=1, cutoff=0.4)
        hint = f"did you mean {close[0]}? " if close else ""
        raise ValueError(f"unknown --gpu {name!r}; {hint}known: {', '.join(catalog)} "
                         "(add one with --hardware FILE.toml)")
    return hw
