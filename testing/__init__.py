"""Helpers for tests and benchmarks: a tiny random-weight model and a scripted
OpenAI-compatible server. Nothing in the pipeline imports this package."""
