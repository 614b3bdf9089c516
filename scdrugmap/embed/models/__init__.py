"""Foundation models: one self-contained file per model (tokenizer, network, loader, pooling)."""
