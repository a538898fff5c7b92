/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * deny_syscall: run a command under a seccomp filter that fails the
 * io_uring system calls named with an errno, as a container runtime's
 * profile does (Docker's default refuses io_uring_setup with EPERM,
 * crun's and podman's with ENOSYS), or as a profile that allows the ring
 * to be made and refuses io_uring_enter would.  For
 * tests/test-adversary-uring.sh.
 *
 * Build: part of the tree (`make` builds tests/deny-syscall).
 * Run:   deny-syscall ERRNO setup|enter|register[,...] COMMAND [ARGS...]
 *        (ERRNO a number: 1 is EPERM, 38 ENOSYS)
 */
#include "config.h"

#include <errno.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <unistd.h>

/* The most system calls one filter refuses. */
#define MAX_DENIED 3

/* The number of the io_uring call @name, or -1. */
static int syscall_number(const char *name)
{
	if (strcmp(name, "setup") == 0)
		return __NR_io_uring_setup;
	if (strcmp(name, "enter") == 0)
		return __NR_io_uring_enter;
	if (strcmp(name, "register") == 0)
		return __NR_io_uring_register;
	return -1;
}

int main(int argc, char **argv)
{
	struct sock_filter filter[2 + MAX_DENIED + 2];
	struct sock_fprog program = { .filter = filter };
	unsigned int denied = 0, index, length = 0;
	int numbers[MAX_DENIED], err;
	char *names, *name, *save;

	if (argc < 4) {
		fprintf(stderr, "usage: deny-syscall ERRNO setup|enter|register[,...] COMMAND [ARGS...]\n");
		return 2;
	}
	err = atoi(argv[1]);
	names = argv[2];
	for (name = strtok_r(names, ",", &save); name; name = strtok_r(NULL, ",", &save)) {
		if (denied == MAX_DENIED || (numbers[denied] = syscall_number(name)) < 0) {
			fprintf(stderr, "deny-syscall: '%s' is not setup, enter or register\n", name);
			return 2;
		}
		denied++;
	}
	/* Load the number; each denied one jumps to the last instruction (the errno). */
	filter[length++] = (struct sock_filter)BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr));
	for (index = 0; index < denied; index++)
		filter[length++] = (struct sock_filter)BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, (unsigned int)numbers[index],
								(unsigned char)(denied - index), 0);
	filter[length++] = (struct sock_filter)BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW);
	filter[length++] = (struct sock_filter)BPF_STMT(BPF_RET | BPF_K,
							SECCOMP_RET_ERRNO | ((unsigned int)err & SECCOMP_RET_DATA));
	program.len = (unsigned short)length;
	if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0 || prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &program) < 0) {
		perror("deny-syscall: seccomp");
		return 1;
	}
	execvp(argv[3], argv + 3);
	perror("deny-syscall: exec");
	return 127;
}
