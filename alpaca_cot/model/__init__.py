"""The model stage: which checkpoint, precision and device (models, gguf, tiny), the tuning wrap around it,
its kernels and memory savers (kernels, offload, sharding), and the adapter folder saved, loaded and merged
(adapters, merge). Imports the data stage at most."""
