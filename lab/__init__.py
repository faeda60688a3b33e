"""Real-kernel test bed: a user-mode Linux kernel with IPVS, and a LAN kit to run inside it.

The development and CI machines have no IPVS, so every claim about what the kernel accepts is
tested in Debian's user-mode Linux (``uml``, host side) on a LAN of network namespaces
(``net``, inside the kernel).
"""
