"""Fault tests share the deploy tests' real registry and tiny models."""

from tests.deploy.conftest import model_dirs, no_leaked_servers, registry

__all__ = ["model_dirs", "no_leaked_servers", "registry"]
