"""The real kernel through netlink: rtnetlink, IPVS generic netlink, tc.

pyroute2's package `__init__` imports every protocol it speaks (its NDB and IPDB databases,
conntrack, wireless, 9P, ...): loaded, it would be most of the helper's memory and a good part of
its start-up, for nothing, since the helper takes only message classes and constants from it. So,
unless pyroute2 is loaded already, its package is registered here without running that
`__init__`; its submodules import as usual.
"""

import importlib.util
import sys

if "pyroute2" not in sys.modules:
    _spec = importlib.util.find_spec("pyroute2")
    if _spec is not None:  # (else the first import of it says what is missing)
        sys.modules["pyroute2"] = importlib.util.module_from_spec(_spec)
