"""Data: from raw text to clean, deduplicated, tokenized shards (and the TinyWorld synthetic corpus).

Modules (one concept each, imported explicitly; this file imports nothing so `import scratchlm.data.x` stays cheap):
  sources     read text files, JSON/JSONL, Parquet, .gz/.zst, Hugging Face datasets, as a stream of documents
  normalize   Unicode NFC, control characters, whitespace, invalid UTF-8
  quality     Gopher quality/repetition, C4, FineWeb and token-to-word-ratio filters
  toxicity    word-list density and a hashed n-gram logistic-regression classifier
  dedup       exact dedup and MinHash LSH near-dedup (signatures, buckets, union-find clusters)
  executors   run a stage over shards with a local process pool or Ray
  pipeline    the whole chain and its report
  shards      token shards: the format pretraining reads (train.bin / val.bin + manifest.json)
"""
