"""Benchmarks of migval against hand-written floors (``make bench``); they print
figures and are never timed assertions. See bench/README.md."""
