"""The local engine: an OpenAI-compatible server on transformers, with vLLM's routes and metric
names, for machines where vLLM cannot run and for fast tests. Entry point: `__main__.py`;
routes in app.py, typed requests in protocol.py, work in service.py / generation.py."""
