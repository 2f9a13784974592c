"""The guide's content: eight stages of building an LLM, each a few topics.

A topic is a short explanation (our own words; a tiny markup: blank line = paragraph, `code`, *em*, **strong**,
$inline math$), display formulas in the LaTeX subset of math.py, and the qualified names of the functions that
implement it (extract.py cuts them out of the source when the guide is built). A stage adds the commands that run
it. Every name here is checked by tests/test_guide.py, so a rename breaks the test, not the book.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Topic:
    title: str
    text: str
    math: tuple[str, ...] = ()   # display formulas (LaTeX subset, see math.py)
    code: tuple[str, ...] = ()   # qualified names of functions/classes to show


@dataclass(frozen=True)
class Stage:
    key: str                     # anchor id and run-data key
    title: str
    summary: str                 # one line, for the stage map
    intro: str
    topics: tuple[Topic, ...]
    commands: tuple[str, ...] = field(default=())


DATA = Stage(
    "data", "Data", "sources, quality filters, toxicity, MinHash dedup",
    """A language model is a compressed picture of its training text, so the text decides most of what the
model can do. Web-scale corpora are mostly boilerplate, spam, machine-generated lists and copies of each other;
the data stage reads raw documents, throws away what would teach the model nothing (or the wrong thing), and
removes near-duplicates so no document is seen many times per epoch.""",
    (
        Topic("Sources", """Every input — plain text, JSONL, Parquet, compressed or not, a folder or a Hugging Face
dataset — is read as a stream of `{"id", "text"}` records. Text is normalised (Unicode NFC, valid UTF-8, unified
line endings) before any filter looks at it, so that the same document always gets the same decision.

scratchlm ships **TinyWorld**, a synthetic corpus of small stories, fact sheets, arithmetic and instructions,
generated from a seed. It is small enough to train on a laptop CPU and regular enough that a 5M-parameter model
visibly learns it.""", code=("scratchlm.data.sources.read_sources",)),
        Topic("Quality filters", """Quality filtering is a list of cheap, explainable heuristics, each counting the
documents it removes. The Gopher rules (Rae et al. 2021) check the word count, the mean word length, the fraction
of words with letters, the presence of common English stop words, and bullet- or ellipsis-heavy pages. The
repetition rules remove documents whose top n-grams or duplicated lines cover too much of the text: spam and
navigation menus repeat themselves. C4's rules keep lines that end in punctuation and drop pages with too few
sentences; FineWeb adds rules for lines that are mostly short or end mid-list.

Each rule returns the *reason* a document was rejected, and the pipeline stops at the first reason: the report
then shows exactly how much each rule removed, with examples, which is how thresholds get tuned.""",
              math=(r"\text{mean word length} = \frac{1}{n}\sum_{i=1}^{n} |w_i| \in [3, 10]",),
              code=("scratchlm.data.quality.gopher_quality", "scratchlm.data.pipeline.document_reason")),
        Topic("Toxicity", """Two complementary filters: a word list (the density of listed words in a document)
for the obvious cases, and a small logistic-regression classifier on hashed word n-grams for the rest. The
classifier is trained on labelled examples and reports precision and recall on held-out data, because a toxicity
filter that removes too much also removes dialects and topics the model should know about.""",
              math=(r"p(\text{toxic} \mid x) = \sigma(w^\top \phi(x) + b)",),
              code=("scratchlm.data.toxicity.WordListScorer",)),
        Topic("MinHash deduplication", """Exact duplicates are found by hashing each normalised document. Near
duplicates (the same article with a different footer) need a similarity: the Jaccard similarity of the sets of
word 5-grams (shingles). Comparing all pairs is quadratic, so we use MinHash: for each of $k$ random hash
functions keep the minimum hash over a document's shingles. Two documents agree on one such minimum with
probability exactly their Jaccard similarity.

Locality-sensitive hashing then splits the $k = b \\cdot r$ minima into $b$ bands of $r$ rows; documents that
agree on a whole band land in the same bucket and become candidate pairs. The S-shaped probability below keeps
pairs above a similarity threshold and drops the rest almost surely. Candidate pairs are joined into clusters
with union-find, and one document per cluster is kept.""",
              math=(r"J(A, B) = \frac{|A \cap B|}{|A \cup B|} = P\left[\min h(A) = \min h(B)\right]",
                    r"P(\text{candidate}) = 1 - \left(1 - J^{r}\right)^{b}"),
              code=("scratchlm.data.minhash.signatures_from_shingles", "scratchlm.data.minhash.band_keys",
                    "scratchlm.data.minhash.candidate_probability", "scratchlm.data.minhash.UnionFind")),
    ),
    commands=(
        "scratchlm data synth --out runs/tw --size 2MB",
        "scratchlm data prepare --input runs/tw/train.txt --text-split paragraph --set quality.min_words=20 "
        "--out runs/clean",
    ),
)

TOKENIZER = Stage(
    "tokenizer", "Tokenizer", "byte-level BPE, vocabulary size",
    """The model reads integers, not text. A tokenizer maps text to a sequence of ids from a fixed vocabulary
and back, losslessly. Its vocabulary size trades sequence length against the size of the embedding table.""",
    (
        Topic("Byte-level BPE", """Byte-pair encoding starts from the 256 possible bytes, so any string — any
language, emoji, binary garbage — can be encoded and nothing is ever unknown. Training counts adjacent pairs of
tokens in the corpus, merges the most frequent pair into a new token, and repeats until the vocabulary is full.
Encoding replays the merges in the order they were learned.

Before counting, text is split into "words" with a regular expression (GPT-2's or GPT-4's pattern): letters,
numbers and punctuation are separated, so merges never glue a word to the space or comma after it. Our trainer
is incremental: it keeps pair counts and an index of which words contain each pair, so each merge touches only
the words it changes instead of recounting the corpus.""",
              math=(r"(a, b)^{*} = \arg\max_{(a, b)} \sum_{w} \text{count}(w) \cdot \text{pairs}_{w}(a, b)",),
              code=("scratchlm.tokenizer.pretokenize.build_pattern", "scratchlm.tokenizer.train.learn_merges",
                    "scratchlm.tokenizer.train.train_bpe")),
        Topic("Vocabulary size", """A larger vocabulary makes each token cover more bytes, so a context window
holds more text and a forward pass costs less per byte. It also adds $V \\cdot d$ parameters to the embedding
(and as many to an untied output head) and leaves rare tokens under-trained. Small models on small corpora want
small vocabularies (a few thousand); GPT-2 used 50,257 and Llama 3 uses 128,256. The figure of merit is bytes
per token on held-out text; the special tokens (`<|endoftext|>`, `<|im_start|>`, ...) take the last ids.""",
              math=(r"\text{bytes per token} = \frac{\text{UTF-8 bytes of the text}}{\text{tokens}}",)),
    ),
    commands=("scratchlm tokenizer train --input runs/clean/clean --vocab-size 2048 --out runs/tok",
              "scratchlm tokenizer stats --tokenizer runs/tok --input runs/tw/val.txt",
              "scratchlm data tokenize --tokenizer runs/tok --input runs/clean/clean --out runs/shards"),
)

MODEL = Stage(
    "model", "Model", "embeddings, RoPE, attention and GQA, SwiGLU, RMSNorm, the block, the output head",
    """The model is a decoder-only transformer: an embedding, a stack of identical blocks, and an output head
that turns the last hidden state at each position into a probability distribution over the next token. The same
code builds GPT-2 (learned positions, LayerNorm, GELU) and Llama (RoPE, RMSNorm, SwiGLU, grouped-query
attention) from a `ModelConfig`.""",
    (
        Topic("Embeddings", """Token $x_t$ selects row $x_t$ of the embedding matrix $E$ of shape $(V, d)$. GPT-2
adds a learned position embedding; Llama adds nothing here and puts position into attention with RoPE instead.
Small models often *tie* the output head to $E$, saving $V \\cdot d$ parameters.""",
              math=(r"h^{(0)}_t = E_{x_t} \in \mathbb{R}^{d}",),
              code=("scratchlm.model.transformer.Transformer.__init__",)),
        Topic("Rotary position embeddings (RoPE)", """RoPE rotates each pair of dimensions of the queries and keys
by an angle proportional to the position, with a different speed per pair. Because a rotation by $m\\theta$ dotted
with a rotation by $n\\theta$ depends only on $(m - n)\\theta$, attention scores depend on relative distance, and
nothing is added to the residual stream. The tables of cos and sin are computed once in float64.""",
              math=(r"\theta_i = \theta_{\text{base}}^{-2i/d_h}, \quad i = 0, \ldots, d_h/2 - 1",
                    r"q'_i = q_i \cos(m\theta_i) - q_{i+d_h/2} \sin(m\theta_i), \quad "
                    r"q'_{i+d_h/2} = q_{i+d_h/2} \cos(m\theta_i) + q_i \sin(m\theta_i)"),
              code=("scratchlm.model.layers.rope_tables", "scratchlm.model.layers.apply_rope")),
        Topic("Attention and grouped-query attention", """Each position forms a query, and attends to the keys of
itself and every earlier position (the causal mask); the weights are a softmax of scaled dot products, and the
output is the weighted sum of values. Several heads do this in parallel on slices of the model width. Grouped-
query attention lets groups of query heads share one key/value head: with $H$ query heads and $H_{kv}$ KV heads
the KV cache shrinks by $H / H_{kv}$ at almost no cost in quality (multi-query attention is $H_{kv} = 1$).""",
              math=(r"\mathrm{Attention}(Q, K, V) = \mathrm{softmax}\left(\frac{QK^\top}{\sqrt{d_h}} + M\right)V",
                    r"M_{ij} = 0 \text{ if } j \le i, \quad -\infty \text{ otherwise}"),
              code=("scratchlm.model.attention.reference_attention", "scratchlm.model.attention.Attention.forward")),
        Topic("SwiGLU feed-forward", """After attention mixes information across positions, the MLP processes each
position on its own. SwiGLU multiplies a SiLU-gated projection by a second linear projection; with three matrices
instead of two, the hidden width is usually about $\\frac{8}{3}d$ to keep the parameter count of a $4d$ GELU MLP.""",
              math=(r"\mathrm{SwiGLU}(x) = W_{\text{down}}\left(\mathrm{SiLU}(W_{\text{gate}}x) \odot W_{\text{up}}x\right),"
                    r"\quad \mathrm{SiLU}(z) = z \, \sigma(z)",),
              code=("scratchlm.model.layers.MLP",)),
        Topic("RMSNorm", """RMSNorm rescales a vector to unit root-mean-square and multiplies by a learned gain; unlike
LayerNorm it does not subtract the mean and has no bias, which is cheaper and works as well. The statistics are
computed in float32 even when the model runs in bfloat16.""",
              math=(r"\mathrm{RMSNorm}(x) = \frac{x}{\sqrt{\frac{1}{d}\sum_{i=1}^{d} x_i^2 + \epsilon}} \odot g",),
              code=("scratchlm.model.layers.RMSNorm",)),
        Topic("The block", """A block is two residual branches, each normalised first (pre-norm): the residual stream
$h$ carries the signal from the embedding to the head unchanged except for what each branch adds. Pre-norm keeps
gradients well scaled in deep stacks, which is why every modern LLM uses it.""",
              math=(r"h \leftarrow h + \mathrm{Attn}(\mathrm{Norm}(h)), \quad h \leftarrow h + \mathrm{MLP}(\mathrm{Norm}(h))",),
              code=("scratchlm.model.transformer.Block", "scratchlm.model.transformer.Transformer.hidden_states")),
        Topic("The output head", """A final norm, then a linear map from width $d$ to the vocabulary gives one logit
per token; the softmax of the logits is the model's distribution over the next token. The parameter count and the
FLOPs per token follow from the shape alone.""",
              math=(r"p(x_{t+1} \mid x_{\le t}) = \mathrm{softmax}(W_{\text{out}} \, \mathrm{Norm}(h^{(L)}_t))",
                    r"N \approx 12 L d^2 + 2Vd"),
              code=("scratchlm.model.transformer.Transformer.logits", "scratchlm.model.transformer.Transformer.forward",
                    "scratchlm.model.accounting.count_params")),
    ),
    commands=("scratchlm plan --preset llama-5m --gpu RTX4090",),
)

PRETRAIN = Stage(
    "pretrain", "Pretraining", "the objective, AdamW, schedules, clipping, mixed precision, checkpointing",
    """Pretraining is next-token prediction on the token shards: maximise the probability the model assigns to
each actual next token. Everything else — optimizer, schedule, clipping, precision — is there to make that
optimisation fast and stable.""",
    (
        Topic("The objective", """The loss is the average cross-entropy (negative log-likelihood) of every next token
in a batch of windows of $T$ tokens. Its exponent is the perplexity; divided by $\\ln 2$ and by the bytes per
token it becomes bits per byte, which compares models with different tokenizers. A batch is drawn at random
offsets from the shard, and gradients of several micro-batches are accumulated to reach the global batch.""",
              math=(r"\mathcal{L}(\theta) = -\frac{1}{BT}\sum_{b=1}^{B}\sum_{t=1}^{T} \log p_\theta(x_{b,t+1} \mid x_{b,\le t})",),
              code=("scratchlm.train.loader.TokenLoader.next_batch", "scratchlm.train.loop.Trainer.accumulate_gradients")),
        Topic("AdamW", """Adam keeps running means of the gradient and of its square and steps by their ratio, so
every parameter gets a step of roughly the learning rate whatever the scale of its gradient. AdamW applies weight
decay directly to the weights instead of through the gradient. Matrices are decayed; biases, norm gains and (by
default) embeddings are not. Typical LLM settings: $\\beta_1 = 0.9$, $\\beta_2 = 0.95$, weight decay 0.1.""",
              math=(r"m_t = \beta_1 m_{t-1} + (1 - \beta_1) g_t, \quad v_t = \beta_2 v_{t-1} + (1 - \beta_2) g_t^2",
                    r"\theta_t = \theta_{t-1} - \eta_t \left(\frac{\hat{m}_t}{\sqrt{\hat{v}_t} + \epsilon} + \lambda \theta_{t-1}\right)"),
              code=("scratchlm.train.optim.param_groups", "scratchlm.train.optim.build_optimizer")),
        Topic("Learning-rate schedules", """The learning rate warms up linearly (large early steps on random weights
diverge), then decays. Cosine decay to 10% of the peak is the classic choice; warmup-stable-decay (WSD) holds the
peak and decays only at the end, so a run can be extended without restarting the schedule.""",
              math=(r"\eta(p) = \eta_{\min} + \frac{1}{2}(\eta_{\max} - \eta_{\min})\left(1 + \cos(\pi p)\right)",),
              code=("scratchlm.train.schedule.lr_multiplier",)),
        Topic("Gradient clipping and mixed precision", """If the global gradient norm exceeds a threshold (1.0), the
whole gradient is scaled down to it: one bad batch cannot throw the weights far. Steps with a non-finite loss are
skipped, and a run that keeps diverging stops with advice.

Mixed precision runs the matrix multiplications in bfloat16 under autocast while the weights and optimizer state
stay in float32: bfloat16 has float32's exponent range, so no loss scaling is needed (float16 needs a gradient
scaler, which this step also handles).""",
              math=(r"g \leftarrow g \cdot \min\left(1, \frac{c}{\lVert g \rVert_2}\right)",),
              code=("scratchlm.train.loop.Trainer.train_step",)),
        Topic("Activation checkpointing", """The backward pass needs the activations of the forward pass; for long
sequences they dominate memory. Checkpointing a block keeps only its input and recomputes its internals during
the backward: about one extra forward (a third more compute) for a large cut in activation memory.""",
              code=("scratchlm.model.transformer.Transformer.set_activation_checkpointing",)),
    ),
    commands=("scratchlm pretrain --config configs/pretrain_tinyworld.toml --set train.max_time=300 --out runs/pretrain",),
)

SCALING = Stage(
    "scaling", "Scaling", "DDP, FSDP, tensor and pipeline parallelism, 6ND, Chinchilla, memory",
    """Before spending money on a run, do the arithmetic: how many FLOPs it needs, how many tokens the model
deserves, and whether weights, gradients, optimizer state and activations fit in each GPU. Then pick how to
split the work across GPUs.""",
    (
        Topic("Compute: 6ND", """Each parameter takes part in one multiply-add (2 FLOPs) per token in the forward
pass and about twice that in the backward, so training costs about $6N$ FLOPs per token, plus an attention term
that grows with the context. Dividing by the hardware's peak FLOP/s times the model FLOPs utilisation (MFU, 30-50%
on good clusters) gives the wall-clock time.""",
              math=(r"C \approx 6ND + 12 L T d_{\text{attn}} D", r"t = \frac{C}{n_{\text{gpu}} \cdot \text{peak} \cdot \text{MFU}}"),
              code=("scratchlm.plan.compute.training_flops_per_token", "scratchlm.train.metrics.mfu")),
        Topic("Chinchilla", """For a fixed compute budget, loss is lowest when parameters and tokens grow together:
Hoffmann et al. (2022) fit a loss $L(N, D)$ and found about 20 training tokens per parameter compute-optimal.
Models meant for cheap inference are deliberately trained far past that point (Llama 3 8B saw 15T tokens).""",
              math=(r"L(N, D) = E + \frac{A}{N^{\alpha}} + \frac{B}{D^{\beta}}", r"D^{*} \approx 20 N, \quad C = 6ND"),
              code=("scratchlm.plan.compute.chinchilla_optimal", "scratchlm.plan.compute.LossFit")),
        Topic("Memory", """With AdamW in mixed precision each parameter costs 16 bytes before any activation: bf16
weights (2) and gradients (2), an fp32 master copy (4) and two fp32 moments (8). Activations scale with micro-
batch, sequence length, width and depth, and checkpointing cuts them. At inference the KV cache grows with the
context: two tensors per layer of $H_{kv} d_h$ values per token.""",
              math=(r"M_{\text{states}} = N (2 + 2 + 4 + 8) \, \text{bytes}",
                    r"M_{\text{KV}} = 2 \cdot L \cdot H_{kv} \cdot d_h \cdot B \cdot T \cdot \text{bytes per value}"),
              code=("scratchlm.plan.memory.model_state_bytes", "scratchlm.plan.memory.kv_cache_bytes")),
        Topic("Data parallelism: DDP and FSDP", """Data parallelism gives every GPU a different slice of the batch.
DDP keeps a full copy of the model on each and all-reduces the gradients after the backward. FSDP (ZeRO-3)
shards weights, gradients and optimizer state across the GPUs, all-gathers each block's weights just before it
runs and reduce-scatters its gradients, so the 16 bytes per parameter are divided by the number of GPUs.""",
              math=(r"M_{\text{FSDP}} \approx \frac{16 N}{n_{\text{shard}}} + M_{\text{act}}",),
              code=("scratchlm.distributed.ddp.apply_ddp", "scratchlm.distributed.fsdp.apply_fsdp")),
        Topic("Tensor and pipeline parallelism", """Tensor parallelism splits each matrix multiplication across
GPUs: attention heads and the MLP's hidden units are divided column-wise into the block and row-wise out of it,
with one all-reduce per branch, so it needs the fast links inside a node. Pipeline parallelism gives each GPU a
contiguous range of layers and streams micro-batches through them; the first and last stages idle while the pipe
fills and drains (the bubble), which more micro-batches shrink.""",
              math=(r"\text{bubble} = \frac{p - 1}{m + p - 1}",),
              code=("scratchlm.distributed.tp.apply_tp", "scratchlm.distributed.pp.split_layers",
                    "scratchlm.distributed.parallelize.parallelize")),
    ),
    commands=("scratchlm plan --params 7e9 --tokens 1e12 --gpu H100 --gpus 8 --fsdp 8 --mfu 0.4",
              "scratchlm plan --run runs/pretrain --gpu A100-80GB --days 2",
              "torchrun --nproc_per_node 4 -m scratchlm pretrain --config configs/pretrain_gpt2_124m.toml "
              "--out runs/gpt2"),
)

POSTTRAIN = Stage(
    "posttrain", "Post-training", "SFT, DPO, RLHF and GRPO, LoRA",
    """A pretrained model continues text; an assistant answers. Post-training teaches the format (supervised
fine-tuning on conversations), then preferences (which of two answers is better), then behaviour that can be
checked by a reward (reinforcement learning).""",
    (
        Topic("Supervised fine-tuning (SFT)", """Conversations are rendered with a chat template (`<|im_start|>user
... <|im_end|>`) and trained with the same next-token loss as pretraining, but only on the assistant's tokens:
a mask zeroes the loss on the prompt, so the model learns to answer, not to imitate users. LoRA can replace full
fine-tuning: each frozen matrix $W$ gets a trainable low-rank update $BA$.""",
              math=(r"\mathcal{L}_{\text{SFT}} = -\frac{\sum_t m_t \log p_\theta(y_t \mid y_{<t})}{\sum_t m_t}",
                    r"W' = W + \frac{\alpha}{r} BA, \quad B \in \mathbb{R}^{d \times r}, A \in \mathbb{R}^{r \times k}"),
              code=("scratchlm.posttrain.tokenize.encode_chat_with_mask", "scratchlm.posttrain.loop.masked_nll",
                    "scratchlm.posttrain.lora.LoRALinear")),
        Topic("Direct preference optimisation (DPO)", """Given a prompt with a chosen answer $y_w$ and a rejected one
$y_l$, DPO raises the policy's log-probability margin between them relative to a frozen reference model (the SFT
model). It is the RLHF objective with a KL penalty solved in closed form, so no reward model and no sampling are
needed. $\\beta$ (0.1) sets how far the policy may move from the reference.""",
              math=(r"\mathcal{L}_{\text{DPO}} = -\log \sigma\left(\beta \log \frac{\pi_\theta(y_w \mid x)}{\pi_{\text{ref}}(y_w \mid x)} "
                    r"- \beta \log \frac{\pi_\theta(y_l \mid x)}{\pi_{\text{ref}}(y_l \mid x)}\right)",),
              code=("scratchlm.posttrain.dpo.sequence_logps", "scratchlm.posttrain.dpo.dpo_loss")),
        Topic("RLHF and GRPO", """Classic RLHF trains a reward model on preference pairs (Bradley-Terry: the chosen
answer should score higher) and then optimises the policy against it with PPO. GRPO (DeepSeekMath) drops PPO's
value network: it samples a group of $G$ answers per prompt, scores them (with a reward model, or a checker such
as "is the final number right?"), and uses each answer's reward relative to its group as the advantage. The
update is PPO's clipped ratio, with a KL penalty towards the reference model.""",
              math=(r"\mathcal{L}_{\text{RM}} = -\log \sigma(r(x, y_w) - r(x, y_l))",
                    r"A_i = \frac{r_i - \mathrm{mean}(r_1, \ldots, r_G)}{\mathrm{std}(r_1, \ldots, r_G)}",
                    r"\mathcal{L}_{\text{GRPO}} = -\frac{1}{|y|}\sum_t \min\left(\rho_t A, \mathrm{clip}(\rho_t, 1 - \epsilon, 1 + \epsilon) A\right) "
                    r"+ \beta \, \mathrm{KL}(\pi_\theta \lVert \pi_{\text{ref}})"),
              code=("scratchlm.posttrain.reward.bradley_terry_loss", "scratchlm.posttrain.grpo.group_advantages",
                    "scratchlm.posttrain.grpo.grpo_loss")),
    ),
    commands=("scratchlm sft --base runs/pretrain --data runs/tw/instructions.jsonl --out runs/sft",
              "scratchlm dpo --base runs/sft --data runs/tw/preferences.jsonl --out runs/dpo",
              "scratchlm rl --base runs/dpo --task tinyworld --out runs/rl"),
)

INFERENCE = Stage(
    "inference", "Inference", "KV cache, sampling, speculative decoding, flash attention",
    """Generation runs the model once per new token. Making it fast is about not recomputing what is known (the
KV cache), not reading memory twice (flash attention), and getting more than one token per forward (speculative
decoding); making it good is about how the next token is drawn (sampling).""",
    (
        Topic("KV cache", """The keys and values of past positions never change, so they are computed once and
stored; each new token then costs a forward over one position that attends to the cache. The prompt is processed
in one pass (prefill), the rest token by token (decode). Decode reads every weight and the whole cache for one
token, so it is limited by memory bandwidth, not FLOPs.""",
              math=(r"K_{1:t} = [K_{1:t-1}; k_t], \quad V_{1:t} = [V_{1:t-1}; v_t]",),
              code=("scratchlm.model.kv_cache.KVCache.update", "scratchlm.inference.engine.Engine.steps")),
        Topic("Sampling", """Greedy decoding takes the most likely token and tends to loop. Sampling divides the
logits by a temperature $\\tau$ (below 1 sharpens, above 1 flattens) and then cuts the tail: top-$k$ keeps the $k$
most likely tokens, top-$p$ (nucleus) the smallest set whose probability reaches $p$, min-$p$ those at least $p$
times as likely as the best.""",
              math=(r"p_i = \frac{\exp(z_i / \tau)}{\sum_j \exp(z_j / \tau)}",),
              code=("scratchlm.inference.sampling.filter_logits", "scratchlm.inference.sampling.sample")),
        Topic("Speculative decoding", """A small draft model proposes $\\gamma$ tokens; the target model scores all of
them in one forward, which costs about as much as one token because decode is memory-bound. Each drafted token
is accepted with probability $\\min(1, p/q)$; at the first rejection a replacement is drawn from the leftover
distribution. The output has exactly the target model's distribution — with greedy decoding, exactly the
target's text — and each round yields between 1 and $\\gamma + 1$ tokens.""",
              math=(r"P(\text{accept } d) = \min\left(1, \frac{p(d)}{q(d)}\right), \quad "
                    r"d' \sim \frac{\max(0, p - q)}{\sum \max(0, p - q)}",),
              code=("scratchlm.inference.speculative.prompt_lookup", "scratchlm.inference.speculative.SpeculativeDecoder.steps")),
        Topic("Flash attention", """Naive attention writes the $T \\times T$ score matrix to memory and reads it
back for the softmax. Flash attention processes keys in tiles that fit in fast on-chip memory and keeps a running
maximum and sum for the softmax (the online softmax), so the scores never leave the chip: the result is exact,
memory is linear in $T$, and it is several times faster. Our attention calls PyTorch's
`scaled_dot_product_attention`, which selects a flash kernel when one is available; the reference path is the
textbook formula and the tests check they agree.""",
              math=(r"m' = \max(m, \max_j s_j), \quad \ell' = e^{m - m'} \ell + \sum_j e^{s_j - m'}",),
              code=("scratchlm.model.attention.reference_attention",)),
    ),
    commands=('scratchlm generate --run runs/pretrain --prompt "Once upon a time" --stats',
              'scratchlm generate --run runs/pretrain --draft runs/draft --temperature 0 --prompt "Lily" --stats',
              "scratchlm chat --run runs/sft"),
)

EVAL = Stage(
    "eval", "Evaluation", "bits per byte, HellaSwag, GSM8K, TinyWorld tasks",
    """Loss on held-out text tells whether the model learned the distribution; benchmarks tell whether it can
do things. Both are needed, and both must be computed the same way every time to compare runs.""",
    (
        Topic("Bits per byte", """Bits per byte is the held-out loss in bits, summed over tokens and divided by the
UTF-8 bytes of the text. Unlike loss per token it does not depend on the tokenizer, so models with different
vocabularies compare fairly. Long texts are scored with overlapping windows so every token has context.""",
              math=(r"\text{bpb} = \frac{-\sum_t \log_2 p(x_t \mid x_{<t})}{\text{bytes}(x)}",),
              code=("scratchlm.eval.bpb_docs.bpb_from_token_losses",)),
        Topic("Multiple choice: HellaSwag", """A multiple-choice item is scored by the log-likelihood the model
assigns to each ending given the context; the prediction is the best-scoring ending. `acc_norm` divides by the
ending's length (in bytes), so longer endings are not penalised for having more tokens.""",
              math=(r"\hat{y} = \arg\max_{k} \frac{1}{|e_k|}\sum_{t \in e_k} \log p(x_t \mid x_{<t})",),
              code=("scratchlm.eval.scoring.score_continuations",)),
        Topic("Generative tasks: GSM8K and TinyWorld", """Generative tasks let the model write an answer and check
it: GSM8K's grade-school maths problems are graded on the final number, TinyWorld's arithmetic, fact and story
questions on the exact answer. The same checkers serve as rewards for GRPO, so evaluation measures exactly what
reinforcement learning optimised.""",
              code=("scratchlm.eval.gsm8k.extract_answer",)),
    ),
    commands=("scratchlm eval --run runs/pretrain --task bpb --data runs/tw/val.txt",
              "scratchlm eval --run runs/sft --task tinyworld --limit 200",
              "scratchlm eval --run runs/sft --report"),
)

STAGES: tuple[Stage, ...] = (DATA, TOKENIZER, MODEL, PRETRAIN, SCALING, POSTTRAIN, INFERENCE, EVAL)
