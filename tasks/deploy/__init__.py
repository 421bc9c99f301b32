"""Serving and canary deployment: engines (vLLM, local), the weighted router, metrics sources,
canary analysis and controller, local and Kubernetes backends. The stage function is
`tasks.deploy.stage.deploy_canary`; see the README, "Stage: deploy_canary"."""
