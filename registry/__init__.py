"""Model registry: MLflow registration, model signing, SLSA provenance, verification.

Entry points (imported from their modules, so `import common.digests` stays light):
  registry.stage.register_model    the register stage, Flyte-free
  registry.verify.verify_model     the one verification of a registered model
  registry.cli.main                `shipyard verify models:/NAME@ALIAS`
"""
