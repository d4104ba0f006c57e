"""Generation: jitted prefill/decode with a KV cache, sampling, streaming."""
