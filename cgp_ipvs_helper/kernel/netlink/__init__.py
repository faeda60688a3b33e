"""The real kernel through netlink: rtnetlink, IPVS generic netlink, tc."""
