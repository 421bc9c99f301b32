"""Training stage: Llama-architecture model, data packing, DDP/FSDP loop, checkpoints."""
