"""The `shipyard` console script (operator commands over the stage libraries)."""
