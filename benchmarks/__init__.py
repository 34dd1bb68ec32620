"""Speed and scale benchmarks; run them all with ``python -m benchmarks`` (see __main__.py)."""
