"""Benchmarks against peers on the same micro-batches, each system in its own process (peers)."""
