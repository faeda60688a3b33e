"""cgp-ipvs-helper: CommuniGate Pro's load-balancer helper for Linux IPVS (direct routing)."""

from .helper import VERSION as __version__

__all__ = ["__version__"]
