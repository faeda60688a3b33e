"""The -m dry run's kernel: an in-memory copy of what the real kernel holds now.

The helper plans from that copy exactly as real mode would plan from the kernel, and logs each
operation as its shell command; nothing reaches the kernel. Reading needs no privilege: what
cannot be read is planned from empty, and said once in the start-up notes.
"""

from __future__ import annotations

from cgp_ipvs_helper.kernel.memory import MemoryKernel
from cgp_ipvs_helper.plan.model import KernelState
from cgp_ipvs_helper.plan.outgoing import PORT_RANGE
from cgp_ipvs_helper.plan.planner import sysctl_paths

NOTE = "-m: dry run, nothing is changed; each command below is what real mode would run"
# The sysctls the ip_vs module brings: missing while it is not loaded, there once real mode
# loads it; planned as present with an unknown value, so -m shows them being set.
IPVS_SYSCTLS = "/vs/"


def dry_run_kernel(iface: str) -> tuple[MemoryKernel, list[str]]:
    """The in-memory kernel for -m on `iface`, and the notes to log at start-up."""
    from cgp_ipvs_helper.kernel.netlink.kernel import NetlinkKernel

    notes = [NOTE]
    paths = sysctl_paths(iface) | {PORT_RANGE}  # what a member map may set
    try:
        real = NetlinkKernel()
        try:
            state = real.observe(paths, tc_dev=iface, guard_dev=iface)
        finally:
            real.close()
    except Exception as exc:  # any failure to read means "plan from empty"
        notes.append(f"cannot read the kernel state ({exc}): planning from an empty state")
        return MemoryKernel(KernelState(sysctls={p: "" for p in paths})), notes
    if not state.ipvs:
        notes.append(f"{real.ipvs_problem}; planning IPVS from an empty state")
        unknown = {p: "" for p, v in state.sysctls.items() if v is None and IPVS_SYSCTLS in p}
        state = KernelState(
            addresses=state.addresses,
            sysctls={**state.sysctls, **unknown},
            tc=state.tc,
            guard=state.guard,
        )
    return MemoryKernel(state), notes
