"""The deploy tests' fixtures (tiny models, a real signed registry, no leaked servers) for the
CLI tests that serve on real local engines."""

from tests.deploy.conftest import model_dirs, no_leaked_servers, registry

__all__ = ["model_dirs", "no_leaked_servers", "registry"]
