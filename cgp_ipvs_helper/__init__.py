"""cgp-ipvs-helper: CommuniGate Pro's load-balancer helper for Linux IPVS (direct routing)."""

__version__ = "0.1.0"  # the one place: pyproject.toml, the RPM and --version read it
