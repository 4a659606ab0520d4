"""The virtual-time actor runtime: loop, mailboxes and the simulated network."""
