"""Evaluation: the standard measurements of a run, computed the standard way, and its report card.

    bpb.py          bits per byte / perplexity of a text (sliding window)
    bpb_docs.py     bits per byte over separate documents, and from per-token losses
    scoring.py      log-likelihood of continuations (multiple choice, lm-evaluation-harness)
    hellaswag.py    HellaSwag acc / acc_norm
    gsm8k.py        GSM8K exact match (few-shot or chat), answer extraction
    tinyworld.py    TinyWorld's arithmetic / fact / story questions, graded like the RL reward
    harness.py      an lm-evaluation-harness model class over our models
    results.py      RUN/eval/<task>.json and the results table
    report.py       RUN/report.md, the report card
"""
