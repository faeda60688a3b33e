"""The pure plan: values for the kernel state, the operations, and the planner that diffs them."""
