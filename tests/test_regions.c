/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The helper of kcopydfs that opens and connects as a job's owner
 * (src/kcopydfs/regions.c, kfs_run_requests()), without a mount.
 */
#include "config.h"

#include <arpa/inet.h>
#include <criterion/criterion.h>
#include <netinet/in.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "kcopydfs/regions.h"

TestSuite(regions, .timeout = 30);

/* A listening TCP socket on 127.0.0.1 (port in *@port), or a closed port (@listening false). */
static int tcp_port(bool listening, struct sockaddr_in *addr)
{
	socklen_t len = sizeof(*addr);
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

	cr_assert(fd >= 0);
	*addr = (struct sockaddr_in){ .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	cr_assert_eq(bind(fd, (struct sockaddr *)addr, sizeof(*addr)), 0);
	cr_assert_eq(getsockname(fd, (struct sockaddr *)addr, &len), 0);
	if (listening) {
		cr_assert_eq(listen(fd, 4), 0);
		return fd;
	}
	close(fd);	/* the port is free again: a connect to it is refused */
	return -1;
}

/*
 * A host name that resolves to several addresses (an IPv6 one first, the
 * server on IPv4 only) is connected as libnbd connects it: each address
 * in turn.  The first refused must not fail the region.
 */
Test(regions, tcp_connect_tries_every_address)
{
	struct kfs_owner owner = { .uid = 65534, .gid = 65534, .view = { .daemon = true } };
	struct kfs_request request = { .kind = KFS_REQ_CONNECT_INET };
	struct sockaddr_in refused, listening;
	struct kfs_opener *opener;
	char why[256] = "";
	int listen_fd, fd = -1, r;

	cr_assert_eq(kfs_opener_create(&opener), 0);
	tcp_port(false, &refused);
	listen_fd = tcp_port(true, &listening);
	memcpy(&request.addrs[0], &refused, sizeof(refused));
	request.addr_lens[0] = sizeof(refused);
	memcpy(&request.addrs[1], &listening, sizeof(listening));
	request.addr_lens[1] = sizeof(listening);
	request.nr_addrs = 2;
	r = kfs_run_requests(opener, &owner, -1, -1, 1, &request, &fd, why, sizeof(why));
	cr_assert_eq(r, 0, "kfs_run_requests: %d (%s)", r, why);
	cr_assert(fd >= 0, "the second address was not tried: %s", strerror(-fd));
	close(fd);

	/* Only the refused one: its error. */
	request.nr_addrs = 1;
	r = kfs_run_requests(opener, &owner, -1, -1, 1, &request, &fd, why, sizeof(why));
	cr_assert_eq(r, 0, "kfs_run_requests: %d (%s)", r, why);
	cr_assert_eq(fd, -ECONNREFUSED, "%d", fd);
	close(listen_fd);
	kfs_opener_destroy(opener);
}
