"""The deploy stage library: canary controller, analysis, metric sources, backends (local and
Kubernetes), decision record and deployment state. Engines and the router it drives live in
`serving`. The stage function is `deploy.stage.deploy_canary`."""
