#!/usr/libexec/cgp-ipvs-helper/python -s
"""The cgp-ipvs-helper RPM's launcher, installed under three names; the name run chooses the tool.

- /opt/CommuniGate/Services/IPVSHelper.py: CommuniGate Pro's "External Load Balancer" helper.
  CGP starts `$Services/IPVSHelper.py` and talks to it over stdin/stdout; `IPVSHelper.py check
  OPTIONS` is the preflight check of a frontend.
- /usr/sbin/cgp-ipvs-helper: the same helper and check.
- /usr/sbin/cgp-ipvs-vip: ifup-lo, ifdown-lo and cgp-ipvs-vip.service run it at boot and shutdown
  to put the VIPs of /etc/sysconfig/vipaddrs on lo with the helper's own parser.

The helper and its own copies of pyroute2, netaddr and attrs live in a private directory, put
first on sys.path here, so the only thing taken from the OS is a Python >= 3.9 (the newest
installed, chosen by the "#!" line's /usr/libexec/cgp-ipvs-helper/python) and no system-wide
Python package can shadow or break them.

CGP_IPVS_HELPER_LIB names another private directory (the tests run an unpacked RPM with it).
"""

import os
import sys

LIB = os.environ.get("CGP_IPVS_HELPER_LIB") or "/usr/lib/cgp-ipvs-helper"

if __name__ == "__main__":
    # The RPM byte-compiles the private directory when it is installed; never write beside it.
    sys.dont_write_bytecode = True
    sys.path.insert(0, LIB)
    if os.path.basename(sys.argv[0]).startswith("cgp-ipvs-vip"):
        from cgp_ipvs_helper.vipctl import main
    else:
        from cgp_ipvs_helper.cli import main

    sys.exit(main())
