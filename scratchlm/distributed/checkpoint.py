"""Sharded checkpoints with torch.distributed.checkpoint (DCP), and export to one safetensors file.

Each rank writes only its own shards (no gather onto rank 0, no rank holding the whole model), plus a
metadata file that records every tensor's global shape and where each piece lives. Loading reads the pieces
each rank needs *in its current layout*, so a run saved with FSDP on 8 ranks resumes with TP on 4, or in one
process: keys are the plain model's parameter names (`layers.3.attn.wq.weight`), whatever the wrapping.

    save_dcp(dir, model, optimizer)          every rank calls it (collective)
    load_dcp(dir, model, optimizer)          every rank calls it; model already parallelized the new way
    dcp_to_safetensors(dir, out, model_cfg)  one process, no torchrun: the folder inference/export read
"""

from __future__ import annotations

import pickle
import shutil
import warnings
from pathlib import Path

import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint.state_dict import (StateDictOptions, get_model_state_dict,
                                                     get_optimizer_state_dict, set_model_state_dict,
                                                     set_optimizer_state_dict)

# Optimizer state and param-group settings keyed by parameter name ("param_groups.layers.3.attn.wq.weight.lr")
# rather than as one "param_groups" list: pipeline stages hold different parameters, and DCP keeps a single
# copy of a key that every rank writes, so an unflattened list would come back as stage 0's on every stage.
_OPTIM = StateDictOptions(flatten_optimizer_state_dict=True)


# ---------------------------------------------------------------------------------------------- safe reading
# DCP's own reader unpickles `.metadata` with pickle.load and its planner reads non-tensor values with
# an unrestricted torch.load: a crafted sharded checkpoint would run code on --resume. We read both with
# an allowlist instead: the metadata may only build DCP's own record classes, torch.Size, dtypes, layouts and
# paths; values are read with weights_only=True (tensors and plain Python values).

def _dcp_metadata_class(module: str, name: str):
    import pathlib

    from torch.distributed.checkpoint import filesystem, metadata

    if module == "torch.distributed.checkpoint.metadata" and isinstance(getattr(metadata, name, None), type):
        return getattr(metadata, name)
    if (module, name) == ("torch.distributed.checkpoint.filesystem", "_StorageInfo"):
        return filesystem._StorageInfo
    if (module, name) == ("torch", "Size"):
        return torch.Size
    if module == "torch" and isinstance(getattr(torch, name, None), (torch.dtype, torch.layout, torch.memory_format)):
        return getattr(torch, name)
    if (module, name) == ("torch.serialization", "_get_layout"):  # layout by name, as torch's own safe loader allows
        return torch.serialization._get_layout
    if module == "pathlib" and name in ("Path", "PosixPath", "PurePosixPath", "WindowsPath", "PureWindowsPath"):
        return getattr(pathlib, name)
    if module == "collections" and name == "OrderedDict":
        import collections

        return collections.OrderedDict
    return None


class _MetadataUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        cls = _dcp_metadata_class(module, name)
        if cls is None:
            raise pickle.UnpicklingError(f"{module}.{name} is not allowed in a checkpoint's metadata")
        return cls


def read_dcp_metadata(path: str | Path):
    """A DCP checkpoint's index (.metadata), through the allowlist; ValueError in one line if it is not ours."""
    meta_path = Path(path) / ".metadata"
    try:
        with open(meta_path, "rb") as f:
            return _MetadataUnpickler(f).load()
    except Exception as e:  # noqa: BLE001 - any failure means a damaged or foreign file
        raise ValueError(f"{meta_path} is not a checkpoint index scratchlm reads ({type(e).__name__}: "
                         f"{str(e)[:120]}); it is never unpickled freely: resume from a checkpoint this "
                         "version of scratchlm wrote") from None


def _safe_reader(path: Path):
    from torch.distributed.checkpoint import FileSystemReader
    from torch.distributed.checkpoint.metadata import StorageMeta

    class SafeReader(FileSystemReader):
        def read_metadata(self, *args, **kwargs):  # DCP's reads .metadata with plain pickle.load
            metadata = read_dcp_metadata(self.path)
            if getattr(metadata, "storage_meta", None) is None:
                metadata.storage_meta = StorageMeta()
            metadata.storage_meta.load_id = self.load_id
            return metadata

    return SafeReader(str(path))


def _safe_planner():
    from torch.distributed.checkpoint import DefaultLoadPlanner
    from torch.distributed.checkpoint._traverse import set_element

    class SafeLoadPlanner(DefaultLoadPlanner):
        def load_bytes(self, read_item, value) -> None:
            obj = torch.load(value, weights_only=True)  # DCP's own planner allows any object here
            if self.flatten_state_dict:
                set_element(self.original_state_dict, self.mappings[read_item.dest_index.fqn], obj)
            else:
                self.state_dict[read_item.dest_index.fqn] = obj

    return SafeLoadPlanner()


def _module(model) -> torch.nn.Module:
    return model.module if hasattr(model, "schedule") else model  # a Pipeline -> its stage


def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


def _state(module, optimizer) -> dict:
    state = {"model": get_model_state_dict(module)}
    if optimizer is not None:
        state["optim"] = get_optimizer_state_dict(module, optimizer, options=_OPTIM)
    return state


def save_dcp(path: str | Path, model, optimizer=None) -> Path:
    """Write a DCP checkpoint folder (model, and optimizer if given). Collective: call on every rank.

    Written to `path.tmp` and renamed by rank 0 once all ranks are done, so a crash never leaves a
    half-written checkpoint under the real name."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    rank0 = not _distributed() or dist.get_rank() == 0
    if rank0 and tmp.exists():
        shutil.rmtree(tmp)
    if _distributed():
        dist.barrier()
    dcp.save(_state(_module(model), optimizer), checkpoint_id=str(tmp))
    if _distributed():
        dist.barrier()
    if rank0:
        if path.exists():
            shutil.rmtree(path)
        tmp.rename(path)
    if _distributed():
        dist.barrier()
    return path


def load_dcp(path: str | Path, model, optimizer=None, no_dist: bool = False) -> None:
    """Load a DCP checkpoint into `model` (and `optimizer`) in place, resharding to the current layout.

    optimizer: a torch optimizer or a list of them. no_dist=True: only this process reads (e.g. rank 0 alone
    converting a checkpoint while a process group exists); otherwise every rank of the group must call it."""
    path = Path(path)
    if not (path / ".metadata").exists():
        raise FileNotFoundError(f"{path} is not a DCP checkpoint (no .metadata file); pass the folder save_dcp wrote")
    read_dcp_metadata(path)  # fails here, in one line, on a damaged or crafted index (DCP would wrap the error)
    module = _module(model)
    state = _state(module, optimizer)
    dcp.load(state, storage_reader=_safe_reader(path), planner=_safe_planner(), no_dist=no_dist)
    set_model_state_dict(module, state["model"])
    if optimizer is not None:
        set_optimizer_state_dict(module, optimizer, state["optim"], options=_OPTIM)


def dcp_to_safetensors(dcp_dir: str | Path, out_dir: str | Path, model_config, manifest: bool = True) -> Path:
    """Gather a DCP checkpoint into one model.safetensors + config.json (scratchlm.runs.save_model's folder).

    Runs in a single process (no torchrun); model_config is a ModelConfig or its dict. Needs memory for the
    whole model once."""
    from scratchlm.model import ModelConfig, Transformer
    from scratchlm.runs import save_model

    cfg = model_config if isinstance(model_config, ModelConfig) else ModelConfig.from_dict(model_config)
    with torch.device("meta"):
        model = Transformer(cfg)
    model.to_empty(device="cpu")
    model.init_weights()  # RoPE tables (not in the checkpoint); the weights are overwritten below
    with warnings.catch_warnings():  # "assuming the intent is to load in a single process": it is
        warnings.simplefilter("ignore", UserWarning)
        load_dcp(dcp_dir, model, no_dist=True)  # this process alone, even inside a torchrun job
    return save_model(out_dir, model, cfg.to_dict(), manifest=manifest)
