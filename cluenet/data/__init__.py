"""Dataset loaders and the synthetic ClueWorld generator; every loader yields ``cluenet.schema.Sample``."""
