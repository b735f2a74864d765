"""Benchmarks: scripts that print measured figures (bench/RESULTS.md keeps them); never timed tests."""
