"""TinyWorld: the built-in synthetic corpus (children's stories, facts, sums) and its post-training data.

    from scratchlm.data.tinyworld import iter_documents, synthesize, check_answer
    for text in iter_documents("train", seed=0, max_docs=3): print(text)
    synthesize("runs/tinyworld", "20MB", seed=0)      # train.txt, val.txt, *.jsonl, manifest.json

Modules: lexicon (the fixed world), templates (the sentence template language), plots (story parts),
stories (casting and telling a story), facts, arithmetic, heldout (which combinations only val sees),
tasks (instructions, preferences, verifiable tasks, check_answer), tool_chats (conversations that call the
calculator), edits (requests whose reply repeats the input: copy or rename, for prompt lookup), corpus
(documents and files).
Pure Python: no torch.
"""

from scratchlm.data.tinyworld.corpus import VERSION, iter_documents, iter_records, parse_size, synthesize
from scratchlm.data.tinyworld.tasks import (check_answer, distinct_tasks, iter_instructions, iter_preferences,
                                            iter_tasks)

__all__ = ["VERSION", "iter_documents", "iter_records", "parse_size", "synthesize", "check_answer",
           "distinct_tasks", "iter_instructions", "iter_preferences", "iter_tasks"]
