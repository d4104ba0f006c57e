"""Training data: JSONL reading and validation, chat templating, packing, batch iterators."""
