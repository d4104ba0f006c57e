"""Model definitions: the Llama family in Flax NNX, configs and presets."""
