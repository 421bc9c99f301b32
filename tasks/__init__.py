"""Shipyard stages: thin Flyte tasks over plain, Flyte-free stage functions."""
