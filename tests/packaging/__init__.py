"""The RPM `make rpm` builds, with Debian's rpm, rpmbuild and rpmlint (`make packaging-test`)."""
