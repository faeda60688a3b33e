"""All privileged work behind one `Kernel` interface: netlink (real), memory (-m, tests)."""
