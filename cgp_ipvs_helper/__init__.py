"""cgp-ipvs-helper: CommuniGate Pro's load-balancer helper for Linux IPVS (direct routing)."""

from cgp_ipvs_helper.core.engine import VERSION as __version__

__all__ = ["__version__"]
