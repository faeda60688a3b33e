"""Benchmarks of cgp-ipvs-helper: `python -m bench` (or `make bench`).

Not tests: they measure, compare each figure with a baseline measured in the same run, and say
whether the targets are met. The kernel benchmarks run inside one user-mode Linux boot
(lab/uml.py), each from the helper's standby in fresh namespaces (`lab.standby`), driving
the helper through its pipes (lab/driver.py) and timing its parts only through public seams
(lab/probe.py: a timing Kernel); the footprint runs on the host. Results go to
bench/results/latest.json and, from a run of every benchmark, docs/benchmarks.md.
"""
