"""Weight formats: Hugging Face safetensors directories and GGUF."""
