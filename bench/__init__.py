"""Benchmarks of cgp-ipvs-helper (`python -m bench`): not tests; they measure, compare each figure
with a baseline of the same run, and check the targets."""
