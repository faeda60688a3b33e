#!/usr/libexec/cgp-ipvs-helper/python -s
"""`cgp-ipvs-vip` as installed by the cgp-ipvs-helper RPM (/usr/sbin/cgp-ipvs-vip).

ifup-lo, ifdown-lo and cgp-ipvs-vip.service run it at boot and shutdown to put the VIPs of
/etc/sysconfig/vipaddrs on lo with the helper's own parser. Like IPVSHelper.py it runs from the
RPM's private directory (first on sys.path), so it needs nothing from the OS but a Python >= 3.9
(the newest installed, as for IPVSHelper.py).

CGP_IPVS_HELPER_LIB names another private directory (the tests run an unpacked RPM with it).
"""

import os
import sys

LIB = os.environ.get("CGP_IPVS_HELPER_LIB") or "/usr/lib/cgp-ipvs-helper"

if __name__ == "__main__":
    # The RPM byte-compiles the private directory when it is installed; never write beside it.
    sys.dont_write_bytecode = True
    sys.path.insert(0, LIB)
    from cgp_ipvs_helper.vipctl import main

    sys.exit(main())
