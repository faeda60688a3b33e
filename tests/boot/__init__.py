"""The boot test: the RPM installed by rpm into a Debian root, booted with systemd as PID 1 in
user-mode Linux (`make boot-test`)."""
