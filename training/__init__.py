"""Training recipes and their infrastructure (config, checkpoints, loop, batching).

``cluenet/`` (the library) never imports from here; recipes compose library parts.
"""
