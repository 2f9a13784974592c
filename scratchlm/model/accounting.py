"""Parameter and FLOP counts from the config alone (no model built), equal to the real tensors.

Definitions, because papers differ:

- `count_params(cfg)`: every parameter tensor, tied weights once, padded vocab rows included (they are real
  memory). This is what the planner multiplies by bytes per parameter.
- `count_params(cfg, non_embedding=True)`: Kaplan et al.'s N: everything except the token embedding, the
  position embedding and the output head, i.e. the transformer blocks plus the final norm. The llama-* presets
  are named by it, and it is the N of scaling laws.
- `flops_per_token(cfg, seq_len)`: training FLOPs (forward + backward) per token, as in PaLM (Chowdhery et al.
  2022, appendix B) and nanoGPT's MFU:

      6 * N_matmul + 12 * n_layers * n_heads * head_dim * seq_len

  N_matmul counts the weights that take part in a matrix multiply per token: all linear layers of the blocks
  plus the output head (d_model * padded_vocab_size, tied or not); an embedding lookup is not a matmul, and
  norms/biases are elementwise and negligible. Each weight costs 2 FLOPs (multiply + add) forward and 4
  backward (gradients w.r.t. input and weight): 6. The attention term is Q K^T and A V: 2 * 2 * T * H * hd
  forward per layer, times 3 with the backward. It counts the full T x T score matrix, as PaLM does, although
  causal kernels skip the masked half; forward-only (inference) FLOPs are a third of the total.
"""

from __future__ import annotations

from .config import ModelConfig


def _block_params(cfg: ModelConfig) -> tuple[int, int]:
    """(matmul weights, other parameters) of one transformer block."""
    d, hd, H, KV, f = cfg.d_model, cfg.head_dim, cfg.n_heads, cfg.n_kv_heads, cfg.ffn_hidden
    n_mlp_in = 2 if cfg.activation == "swiglu" else 1  # w_gate + w_up, or w_up
    attn = d * H * hd + 2 * d * KV * hd + H * hd * d  # wq, wk, wv, wo
    mlp = n_mlp_in * d * f + f * d  # w_gate?, w_up, w_down
    other = 2 * _norm_params(cfg, d)  # attn_norm, mlp_norm
    if cfg.bias:
        other += H * hd + 2 * KV * hd + d  # biases of wq, wk, wv, wo
        other += n_mlp_in * f + d  # biases of w_gate?, w_up, w_down
    elif cfg.qkv_bias:
        other += H * hd + 2 * KV * hd  # biases of wq, wk, wv only (Qwen2)
    if cfg.qk_norm:
        other += 2 * hd  # q_norm, k_norm (RMSNorm over head_dim)
    return attn + mlp, other


def _norm_params(cfg: ModelConfig, dim: int) -> int:
    return 2 * dim if cfg.norm == "layernorm" and cfg.bias else dim


def count_params(cfg: ModelConfig, non_embedding: bool = False) -> int:
    """Number of parameters of Transformer(cfg); see the module docstring for `non_embedding`."""
    matmul, other = _block_params(cfg)
    n = cfg.n_layers * (matmul + other) + _norm_params(cfg, cfg.d_model)  # blocks + final norm
    if non_embedding:
        return n
    V, d = cfg.padded_vocab_size, cfg.d_model
    n += V * d  # tok_emb
    if cfg.pos_emb == "learned":
        n += cfg.max_seq_len * d  # pos_emb
    if not cfg.tie_embeddings:
        n += V * d  # lm_head
    return n


def matmul_params(cfg: ModelConfig) -> int:
    """Weights used in a matrix multiply per token: block linears + output head (N_matmul above)."""
    return cfg.n_layers * _block_params(cfg)[0] + cfg.d_model * cfg.padded_vocab_size


def flops_per_token(cfg: ModelConfig, seq_len: int | None = None, training: bool = True) -> float:
    """FLOPs per token at context length seq_len: forward + backward (training=True) or forward only."""
    seq_len = cfg.max_seq_len if seq_len is None else seq_len
    fwd = 2 * matmul_params(cfg) + 4 * cfg.n_layers * cfg.n_heads * cfg.head_dim * seq_len
    return float(3 * fwd if training else fwd)
