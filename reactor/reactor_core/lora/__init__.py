"""LoRA and QLoRA: adapter tree surgery, NF4/int8 frozen bases, PEFT adapter files."""
