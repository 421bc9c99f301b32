"""Shared helpers every layer may import: error type, settings, digests, the preset loader
and the prompt template. Imports nothing of Shipyard's (enforced by import-linter)."""
