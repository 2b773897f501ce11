"""The bottom layer: distributed helpers, padding, hardware and dtype, LoRA settings, the accelerate
backends, and sampling from a causal LM. Nothing here imports another layer of gan_rl."""
