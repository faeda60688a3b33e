"""The engine: CGP's protocol, the session's states, members, and the standby's plan."""
