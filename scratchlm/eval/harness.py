"""Our models inside EleutherAI's lm-evaluation-harness (`pip install lm-eval`), the field's standard eval runner.

    import lm_eval
    from scratchlm.eval.harness import ScratchLM

    lm = ScratchLM("runs/pretrain", device="cpu")
    out = lm_eval.simple_evaluate(model=lm, tasks=["hellaswag", "arc_easy"], limit=100)
    print(out["results"])

The harness asks a model three questions, each a list of `Instance`s whose `.args` hold the inputs:

- loglikelihood: (context, continuation) -> (log p(continuation | context), is it the greedy continuation);
  multiple-choice tasks (HellaSwag, ARC, PIQA, ...) are built on it. We answer with scoring.py, batched.
- loglikelihood_rolling: (text,) -> log p(text), for perplexity tasks (wikitext). We use bpb.py's sliding window.
- generate_until: (context, {"until": [...], "max_gen_toks": N, ...}) -> text; GSM8K and friends. The Engine.

Every text is scored as our pretraining saw documents: BOS first. For chat models pass --apply_chat_template
(`simple_evaluate(..., apply_chat_template=True)`): apply_chat_template below renders our ChatML, and prompts
that contain our special tokens are encoded with them. The other road, exporting to Hugging Face
(`scratchlm export hf --run RUN --out DIR`) and running `lm_eval --model hf --model_args pretrained=DIR`, gives the
same numbers (tests/test_hf_export_behaviour.py) unless a BPE merge crosses a context/continuation boundary, which
scoring.py splits differently; this class avoids the export and runs our own code.

Tasks download their datasets from the Hugging Face hub. Offline, write a task YAML over a local JSON file
(`dataset_path: json`, `dataset_kwargs: {data_files: {test: FILE}}`) and pass its folder to
`lm_eval.tasks.TaskManager(include_path=...)`, as tests/test_eval_harness.py does.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

try:  # the harness is optional: without it this module still imports, and ScratchLM works on plain tuples
    from lm_eval.api.model import LM as _HarnessLM
except ImportError:  # pragma: no cover - exercised where lm-eval is not installed
    _HarnessLM = object


class ScratchLM(_HarnessLM):
    """An lm-evaluation-harness model over a scratchlm run (or an existing Engine)."""

    def __init__(self, run: str | Path | None = None, device: str = "auto", dtype: str = "auto",
                 batch_size: int = 32, max_gen_toks: int = 256, engine: Any = None):
        if _HarnessLM is not object:
            super().__init__()
        if engine is None:
            if run is None:
                raise ValueError("ScratchLM needs a run folder (run=...) or an Engine (engine=...)")
            from scratchlm.inference.loading import load_engine

            engine = load_engine(run, device=device, dtype=dtype)
        self.engine, self.tok, self.model = engine, engine.tokenizer, engine.model
        self.batch_size, self.max_gen_toks = int(batch_size), int(max_gen_toks)
        self._specials = sorted(getattr(self.tok, "special_tokens", {}) or {}, key=len, reverse=True)

    @staticmethod
    def _args(requests) -> list[tuple]:
        return [r.args if hasattr(r, "args") else tuple(r) for r in requests]

    def _encode(self, text: str) -> list[int]:
        """BOS + text; a prompt that already holds our special tokens (a rendered chat) is encoded with them."""
        if any(s in text for s in self._specials):
            return self.tok.encode(text, allowed_special="all")
        bos = getattr(self.tok, "bos_id", None)
        return ([bos] if bos is not None else []) + self.tok.encode(text)

    # ------------------------------------------------------------------ the three request types
    def loglikelihood(self, requests, disable_tqdm: bool = False) -> list[tuple[float, bool]]:
        from .scoring import score_continuations, split_context_continuation

        pairs = []
        for context, continuation in self._args(requests):
            if any(s in context for s in self._specials):
                pairs.append((self._encode(context), self.tok.encode(continuation)))
            else:
                pairs.append(split_context_continuation(self.tok, context, continuation))
        return score_continuations(self.model, pairs, batch_size=self.batch_size, progress=not disable_tqdm,
                                   desc="loglikelihood")

    def loglikelihood_rolling(self, requests, disable_tqdm: bool = False) -> list[float]:
        from .bpb import bits_per_byte

        out = []
        for (text,) in (a[:1] for a in self._args(requests)):
            if not text:
                out.append(0.0)
                continue
            r = bits_per_byte(self.model, self.tok, text, batch_size=self.batch_size, device=str(self.engine.device))
            out.append(-r["loss"] * r["tokens"])
        return out

    def generate_until(self, requests, disable_tqdm: bool = False) -> list[str]:
        from scratchlm.inference.sampling import SamplingParams

        prompts, params = [], []
        room = self.engine.max_seq_len - 1
        for context, kwargs in self._args(requests):
            kwargs = dict(kwargs or {})
            until = kwargs.get("until", [])
            until = [until] if isinstance(until, str) else list(until)
            sample = bool(kwargs.get("do_sample", False)) and float(kwargs.get("temperature", 1.0)) > 0
            params.append(SamplingParams(max_new_tokens=int(kwargs.get("max_gen_toks", self.max_gen_toks)),
                                         temperature=float(kwargs.get("temperature", 1.0)) if sample else 0.0,
                                         stop=until, seed=0))
            ids = self._encode(context)
            prompts.append(ids if len(ids) <= room else ids[:1] + ids[-(room - 1):])  # keep BOS and the end
        texts: list[str] = []
        for i in range(0, len(prompts), self.batch_size):
            seqs = self.engine.generate(prompts[i : i + self.batch_size], params[i : i + self.batch_size])
            texts += [s.text for s in seqs]
        return texts

    # ------------------------------------------------------------------ chat models
    @property
    def tokenizer_name(self) -> str:
        return "scratchlm"

    def chat_template(self, chat_template: bool | str = False) -> str:
        from scratchlm.inference.chat_template import CHAT_TEMPLATE

        return CHAT_TEMPLATE

    def apply_chat_template(self, chat_history: list[dict], add_generation_prompt: bool = True) -> str:
        from scratchlm.inference.chat_template import render_chat

        return render_chat(chat_history, add_generation_prompt=add_generation_prompt)
