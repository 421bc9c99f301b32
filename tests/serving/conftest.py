"""Fixtures for the serving tests: the deploy tests' tiny models, shared vLLM CPU venv and the
rule that no server outlives its test (one definition, in tests/deploy/conftest.py)."""

from tests.deploy.conftest import model_dirs, no_leaked_servers, vllm_python

__all__ = ["model_dirs", "no_leaked_servers", "vllm_python"]
