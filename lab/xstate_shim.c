/*
 * LD_PRELOAD shim for Debian's linux.uml 6.1 on hosts whose CPU has AMX (or any XSAVE state
 * larger than 4 KiB).
 *
 * UML saves and restores its processes' FPU state with ptrace(PTRACE_SETREGSET, NT_X86_XSTATE)
 * using a 4096-byte buffer. Since Linux 5.16 the host refuses a SETREGSET whose buffer is not
 * exactly the whole user XSAVE size (xstateregs_set: "count != fpu_user_cfg.max_size" ->
 * EFAULT); with AMX that size is 11008 bytes, so init dies at its first context switch
 * ("userspace - ptrace set fp regs failed, errno = 14"). Built and preloaded by lab/uml.py.
 *
 * What it does: for a too-short SETREGSET of NT_X86_XSTATE, read the tracee's whole state, lay
 * UML's bytes over the start of it and set the whole buffer. UML never enables AMX in its
 * processes, so the components past UML's buffer are in their initial state anyway. Every
 * other call goes straight to libc.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdarg.h>
#include <string.h>
#include <sys/ptrace.h>
#include <sys/types.h>
#include <sys/uio.h>

#define NT_X86_XSTATE 0x202

typedef long (*ptrace_fn)(int, pid_t, void *, void *);

long ptrace(enum __ptrace_request req, ...)
{
	static ptrace_fn real;
	static unsigned char whole[64 * 1024] __attribute__((aligned(64)));
	va_list ap;

	va_start(ap, req);
	pid_t pid = va_arg(ap, pid_t);
	void *addr = va_arg(ap, void *);
	void *data = va_arg(ap, void *);
	va_end(ap);
	if (!real)
		real = (ptrace_fn)dlsym(RTLD_NEXT, "ptrace");
	if (req == PTRACE_SETREGSET && (long)addr == NT_X86_XSTATE) {
		struct iovec *iov = data;
		struct iovec all = {whole, sizeof(whole)};

		if (real(PTRACE_GETREGSET, pid, addr, &all) == 0 && all.iov_len > iov->iov_len) {
			memcpy(whole, iov->iov_base, iov->iov_len);
			return real(PTRACE_SETREGSET, pid, addr, &all);
		}
	}
	return real(req, pid, addr, data);
}
