"""Benchmarks of cgp-ipvs-helper: `python -m bench` (or `make bench`).

Not tests: they measure, compare each figure with a baseline measured in the same run, and
report whether the targets of issue 5 are met. Kernel benchmarks run inside one user-mode Linux
boot (the host kernel has no IPVS; see tests/lab/uml.py); the footprint runs on the host with
pipes only. Results go to bench/results/latest.json and latest.md.

Modules: `__main__` (host: orchestration, tables, summary), `kernel` (inside UML: runs the
kernel benchmarks), `activation`, `aliases`, `failover`, `hotspots` (inside UML, plus its host
half), `probe` (the helper's own parts with a timing Kernel, for `hotspots`), `footprint` (host),
`calibrate` (what a system call, page fault and fork cost here), `lab` (in-UML measuring tools)
and `report` (tables, targets, statistics).
"""
