"""Model registry: MLflow registration, model signing, SLSA provenance, verification."""
