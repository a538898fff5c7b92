/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * A job's run: its regions opened as its owner (regions.c does the
 * opening), checked to be storage and not on the mount, destination block
 * devices claimed (shared among our jobs, under svc->claims_lock), counts
 * settled and the description made canonical; NBD regions connected (as
 * their owner, from the writer's network) and opened through libkcopyd;
 * and freed when the job ends.  Nothing here takes svc->lock: a run being prepared is no other
 * thread's yet.  The rules are on struct kfs_service (service-internal.h).
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "kcopydfs/service-internal.h"

/*
 * A destination block device held with O_EXCL, so that nobody mounts it
 * or claims it while we write to it, and so that one already mounted is
 * refused.  Our own jobs share the claim: several jobs may write to
 * different parts of one device at once, as with the kernel's kcopyd.
 */
struct claim {
	dev_t rdev;
	int fd;
	unsigned int refs;
	struct claim *next;
};

/* Take a claim on the block device open as @fd (the caller may open it); shared among our jobs. */
static int claim_get(struct kfs_service *svc, dev_t rdev, int fd)
{
	char proc_path[64];
	struct claim *claim;
	int r = 0;

	pthread_mutex_lock(&svc->claims_lock);
	for (claim = svc->claims; claim && claim->rdev != rdev; claim = claim->next)
		;
	if (claim) {
		claim->refs++;
		goto out;
	}
	claim = calloc(1, sizeof(*claim));
	if (!claim) {
		r = -ENOMEM;
		goto out;
	}
	/* Reopen what the writer opened, so the claim needs no second permission check. */
	snprintf(proc_path, sizeof(proc_path), "/proc/self/fd/%d", fd);
	claim->fd = open(proc_path, O_RDONLY | O_EXCL | O_CLOEXEC | O_NONBLOCK);
	if (claim->fd < 0) {
		r = -errno;
		free(claim);
		goto out;
	}
	claim->rdev = rdev;
	claim->refs = 1;
	claim->next = svc->claims;
	svc->claims = claim;
out:
	pthread_mutex_unlock(&svc->claims_lock);
	return r;
}

static void claim_put(struct kfs_service *svc, dev_t rdev)
{
	struct claim **link, *claim;

	pthread_mutex_lock(&svc->claims_lock);
	for (link = &svc->claims; (claim = *link) && claim->rdev != rdev; link = &claim->next)
		;
	if (claim && --claim->refs == 0) {
		*link = claim->next;
		close(claim->fd);
		free(claim);
	}
	pthread_mutex_unlock(&svc->claims_lock);
}

/* A run for a description of @num_dests destinations, every slot empty.  NULL without memory. */
struct kfs_run *run_alloc(struct kfs_service *svc, struct kfs_job *job, unsigned int num_dests)
{
	unsigned int region_count = num_dests + 1;
	struct kfs_run *run;

	run = calloc(1, sizeof(*run) + region_count * (sizeof(*run->devs) + sizeof(*run->paths)) +
				num_dests * sizeof(*run->claimed));
	if (!run)
		return NULL;
	run->svc = svc;
	run->job = job;
	run->region_count = region_count;
	pthread_mutex_init(&run->sync_lock, NULL);
	run->devs = (struct kcopyd_dev **)(run + 1);
	run->paths = (char **)(run->devs + region_count);
	run->claimed = (dev_t *)(run->paths + region_count);
	return run;
}

/* Close what @run opened, drop its claims and free it.  Takes claims_lock; never under svc->lock. */
void run_free(struct kfs_run *run)
{
	unsigned int index;

	if (!run)
		return;
	kcopyd_job_release(run->handle);
	for (index = 0; index < run->region_count; index++) {
		kcopyd_dev_close(run->devs[index]);
		free(run->paths[index]);
	}
	for (index = 0; index < run->claimed_count; index++)
		claim_put(run->svc, run->claimed[index]);
	pthread_mutex_destroy(&run->sync_lock);
	free(run);
}

static bool path_on_mount(const struct kfs_service *svc, const char *path)
{
	size_t len;

	if (!svc->mountpoint)
		return false;
	len = strlen(svc->mountpoint);
	while (len > 1 && svc->mountpoint[len - 1] == '/')
		len--;
	return strncmp(path, svc->mountpoint, len) == 0 && (path[len] == '/' || path[len] == '\0');
}

static bool run_holds_claim(const struct kfs_run *run, dev_t rdev)
{
	unsigned int index;

	for (index = 0; index < run->claimed_count; index++)
		if (run->claimed[index] == rdev)
			return true;
	return false;
}

/*
 * Make a device of what kfs_open_as() gave (@fd, or -errno), as the daemon
 * itself: check what it is (a block device, or a regular file that is
 * storage, not a file of /proc or /sys), and claim a destination block
 * device (so a mounted one is refused with EBUSY).  On failure @fd is
 * closed and @why says which region and what.
 */
static int settle_region(struct kfs_service *svc, struct kfs_run *run, const char *key, const char *path,
			 bool writable, int fd, struct kcopyd_dev **dev, char *why, size_t why_len)
{
	struct stat st;
	int r;

	if (fd == -EDEADLK) {
		set_text(why, why_len, "%s=%s: is on the kcopydfs mount itself", key, path);
		return fd;
	}
	if (fd == -KFS_EFUSE) {
		set_text(why, why_len, "%s=%s: is on a FUSE filesystem: a process serves it and could hold the "
			 "daemon's threads, so only root's jobs may use one", key, path);
		return -EPERM;
	}
	if (fd < 0) {
		set_text(why, why_len, "%s=%s: %s", key, path, strerror(-fd));
		return fd;
	}
	if (fstat(fd, &st) < 0 || fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK) < 0) {
		r = -errno;
		close(fd);
		set_text(why, why_len, "%s=%s: %s", key, path, strerror(-r));
		return r;
	}
	if (st.st_dev == svc->mount_dev && svc->mountpoint) {
		close(fd);
		set_text(why, why_len, "%s=%s: is on the kcopydfs mount itself", key, path);
		return -EDEADLK;
	}
	if (!S_ISREG(st.st_mode) && !S_ISBLK(st.st_mode)) {
		close(fd);
		set_text(why, why_len, "%s=%s: neither a block device nor a regular file", key, path);
		return -EINVAL;
	}
	if (S_ISREG(st.st_mode) && (r = kfs_region_is_storage(fd)) <= 0) {
		close(fd);
		if (r == 0)
			r = -EINVAL;
		set_text(why, why_len, "%s=%s: %s", key, path,
			 r == -EINVAL ? "is on a pseudo filesystem (proc, sysfs, ...), not storage" : strerror(-r));
		return r;
	}
	if (writable && S_ISBLK(st.st_mode) && !run_holds_claim(run, st.st_rdev)) {
		r = claim_get(svc, st.st_rdev, fd);
		if (r < 0) {
			close(fd);
			set_text(why, why_len, "%s=%s: %s%s", key, path, strerror(-r),
				 r == -EBUSY ? " (mounted, or held exclusively)" : "");
			return r;
		}
		run->claimed[run->claimed_count++] = st.st_rdev;
	}
	r = kcopyd_dev_from_fd(fd, dev);
	if (r < 0)
		set_text(why, why_len, "%s=%s: %s", key, path, strerror(-r));
	return r;
}

/* The count of a region written without one. */
static uint64_t rest_of_device(const struct kcopyd_dev *dev, uint64_t sector)
{
	uint64_t sectors = kcopyd_dev_sectors(dev);

	return sector < sectors ? sectors - sector : 0;
}

/*
 * What one region asks of the helper: an open (a file or device), or for
 * an NBD region its connections and its key files.  The requests of a
 * region are contiguous, from @first.
 */
struct region_plan {
	bool nbd;
	bool skip;			/* on the mount itself (a file), or no source (zero): nothing asked */
	unsigned int first;		/* its first request (an NBD region's: its connection) */
	int psk_request;		/* NBD: the tls-psk-file open, or -1 */
	struct kcopyd_nbd_uri uri;	/* NBD: the URI's parts (freed with the plan) */
};

static const char *const transport_names[] = {
	[KCOPYD_NBD_TCP] = "TCP",
	[KCOPYD_NBD_UNIX] = "a Unix socket",
	[KCOPYD_NBD_VSOCK] = "vsock",
};

/*
 * Plan the requests of NBD region @uri (its @key for messages), appending
 * to @requests from *@count: the daemon's rule for NBD (--nbd), then one
 * connection (a Unix socket's path, or the TCP addresses resolved here,
 * connected from the writer's network namespace, learnt into *@net_fd the
 * first time), then the key file.  Paths in the URI must be absolute.
 * Further connections come later, only if the server advertises
 * multi-conn (more_connections()), so that a server serving one client at
 * a time, or forking a script per connection, is not woken in vain.
 */
static int plan_nbd_region(struct kfs_service *svc, const struct kfs_cred *cred, const char *key, const char *uri,
			   struct region_plan *plan, struct kfs_request *requests, unsigned int *count,
			   int *net_fd, bool *net_known, char *why, size_t why_len)
{
	struct kfs_request *request;
	char reason[256];
	int r;

	plan->psk_request = -1;
	if (svc->nbd_policy == KFS_NBD_NONE) {
		set_text(why, why_len, "%s=%s: NBD regions are not allowed by this kcopydfs (--nbd=none)", key, uri);
		return -EPERM;
	}
	r = kcopyd_nbd_uri_parse(uri, &plan->uri, reason, sizeof(reason));
	if (r < 0) {
		set_text(why, why_len, "%s=%s: %s", key, uri, r == -ENOMEM ? "out of memory" : reason);
		return r;
	}
	plan->nbd = true;
	if (svc->nbd_policy == KFS_NBD_UNIX && plan->uri.transport != KCOPYD_NBD_UNIX) {
		set_text(why, why_len, "%s=%s: NBD over %s is not allowed by this kcopydfs (--nbd=unix): use "
			 "nbd+unix:// or nbds+unix://", key, uri, transport_names[plan->uri.transport]);
		return -EPERM;
	}
	if (plan->uri.transport == KCOPYD_NBD_VSOCK) {
		set_text(why, why_len, "%s=%s: NBD over vsock is not supported by kcopydfs", key, uri);
		return -EPROTONOSUPPORT;
	}
	if ((plan->uri.socket_path && plan->uri.socket_path[0] != '/') ||
	    (plan->uri.tls_psk_file && plan->uri.tls_psk_file[0] != '/')) {
		set_text(why, why_len, "%s=%s: a path in the URI is relative (socket= and tls-psk-file= must be "
			 "absolute)", key, uri);
		return -EINVAL;
	}
	if (plan->uri.tls && !plan->uri.tls_psk_file) {
		/* X.509: libnbd would read the daemon's own certificates (/etc/pki/libnbd), and present root's. */
		set_text(why, why_len, "%s=%s: TLS through kcopydfs needs tls-psk-file (X.509 would authenticate with "
			 "the daemon's own certificates)", key, uri);
		return -EPERM;
	}
	if (plan->uri.tls_certificates) {
		/* libnbd reads them by name in a directory: lookups the daemon would make as itself. */
		set_text(why, why_len, "%s=%s: tls-certificates is not taken through kcopydfs (the daemon would "
			 "read the directory as itself): use tls-psk-file", key, uri);
		return -EOPNOTSUPP;
	}
	plan->first = *count;
	request = &requests[(*count)++];
	memset(request, 0, sizeof(*request));
	request->kind = plan->uri.transport == KCOPYD_NBD_UNIX ? KFS_REQ_CONNECT_UNIX : KFS_REQ_CONNECT_INET;
	request->path = plan->uri.socket_path;
	if (plan->uri.transport == KCOPYD_NBD_TCP) {
		struct addrinfo hints = { .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM }, *found;
		const struct addrinfo *each;
		int gai;

		if (!*net_known) {
			r = kfs_writer_netns(svc->opener, cred, net_fd, reason, sizeof(reason));
			if (r < 0) {
				set_text(why, why_len, "%s=%s: %s", key, uri, reason);
				return r;
			}
			*net_known = true;
		}
		/* Names are resolved as the daemon resolves them; the connection is made from the writer's network. */
		gai = getaddrinfo(plan->uri.host, plan->uri.port ? plan->uri.port : "10809", &hints, &found);
		if (gai != 0) {
			set_text(why, why_len, "%s=%s: no such host %s: %s", key, uri, plan->uri.host,
				 gai == EAI_SYSTEM ? strerror(errno) : gai_strerror(gai));
			return gai == EAI_MEMORY ? -ENOMEM : gai == EAI_AGAIN ? -EAGAIN : -ENOENT;
		}
		/* Every address, tried in order by the helper (libnbd's connect tries them all too). */
		for (each = found; each && request->nr_addrs < KFS_MAX_ADDRS; each = each->ai_next) {
			if (each->ai_addrlen > sizeof(request->addrs[0]))
				continue;
			memcpy(&request->addrs[request->nr_addrs], each->ai_addr, each->ai_addrlen);
			request->addr_lens[request->nr_addrs++] = each->ai_addrlen;
		}
		freeaddrinfo(found);
	}
	if (plan->uri.tls_psk_file) {
		plan->psk_request = (int)*count;
		requests[(*count)++] = (struct kfs_request){ .kind = KFS_REQ_KEY, .path = plan->uri.tls_psk_file };
	}
	return 0;
}

/* Where the further connections of an NBD region come from (more_connections()). */
struct more_sockets {
	struct kfs_service *svc;
	const struct kfs_owner *owner;
	int root_fd, net_fd;
	const struct kfs_request *request;	/* the region's first connect, made again */
	bool asked;
	int error;			/* why none could be had */
	unsigned int count;
	int fds[KCOPYD_NBD_MAX_CONNECTIONS];	/* [i]: connection i + 1, or -errno; -EBADF once taken */
};

/*
 * kcopyd_nbd_config's connect: the server advertised multi-conn, so the
 * helper connects the other @wanted - 1 sockets at once, as the owner
 * again, the first time one is asked for.
 */
static int more_connections(void *opaque, unsigned int index, unsigned int wanted)
{
	struct more_sockets *more = opaque;
	struct kfs_request requests[KCOPYD_NBD_MAX_CONNECTIONS];
	char why[256];
	unsigned int slot;
	int fd;

	if (!more->asked) {
		more->asked = true;
		more->count = wanted > 1 ? wanted - 1 : 0;
		if (more->count > KCOPYD_NBD_MAX_CONNECTIONS - 1)
			more->count = KCOPYD_NBD_MAX_CONNECTIONS - 1;
		for (slot = 0; slot < more->count; slot++)
			requests[slot] = *more->request;
		more->error = more->count ? kfs_run_requests(more->svc->opener, more->owner, more->root_fd,
							     more->net_fd, more->count, requests, more->fds, why,
							     sizeof(why))
					  : -ENOENT;
		if (more->error < 0)
			more->count = 0;
	}
	if (index == 0 || index > more->count)
		return more->error < 0 ? more->error : -ENOENT;
	fd = more->fds[index - 1];
	more->fds[index - 1] = -EBADF;
	return fd;
}

/*
 * Make a device of an NBD region from what the helper gave: the socket
 * must have connected (its error is the region's); a key file must have
 * opened and be a regular file, not on a pseudo filesystem.  Every
 * descriptor of the plan is taken (the device's, or closed).  Further connections for multi-conn are made
 * during the open, as @owner (from @root_fd and @net_fd) again.
 */
static int settle_nbd_region(struct kfs_service *svc, const struct kfs_owner *owner, int root_fd, int net_fd,
			     const struct kfs_request *requests, const char *key, const char *uri, bool writable,
			     const struct region_plan *plan, int *fds, struct kcopyd_dev **dev, char *why,
			     size_t why_len)
{
	struct more_sockets more = {
		.svc = svc,
		.owner = owner,
		.root_fd = root_fd,
		.net_fd = net_fd,
		.request = &requests[plan->first],
	};
	struct kcopyd_nbd_config config = {
		.connections = svc->nbd_connections,
		.timeout_ms = svc->nbd_timeout_ms,
		.tls_psk_fd = -1,
		.tls_certificates_fd = -1,
		.connect = more_connections,
		.connect_opaque = &more,
	};
	int socket_fd = fds[plan->first];
	unsigned int index;
	char reason[512];
	struct stat st;
	int r = socket_fd < 0 ? socket_fd : 0;

	fds[plan->first] = -EBADF;
	if (r < 0) {
		set_text(why, why_len, "%s=%s: cannot connect to %s%s: %s", key, uri,
			 plan->uri.transport == KCOPYD_NBD_UNIX ? plan->uri.socket_path : plan->uri.host,
			 plan->uri.transport == KCOPYD_NBD_UNIX ? "" : " (from the writer's network)",
			 r == -ENOTSOCK ? "not a socket" : strerror(-r));
	}
	if (plan->psk_request >= 0) {
		config.tls_psk_fd = fds[plan->psk_request];
		fds[plan->psk_request] = -EBADF;
		if (r == 0 && config.tls_psk_fd < 0) {
			r = config.tls_psk_fd;
			set_text(why, why_len, "%s=%s: tls-psk-file %s: %s", key, uri, plan->uri.tls_psk_file, strerror(-r));
		} else if (r == 0 && (fstat(config.tls_psk_fd, &st) < 0 || !S_ISREG(st.st_mode))) {
			r = -EINVAL;
			set_text(why, why_len, "%s=%s: tls-psk-file %s: not a regular file", key, uri,
				 plan->uri.tls_psk_file);
		} else if (r == 0 && kfs_region_is_storage(config.tls_psk_fd) != 1) {
			/* As for regions: what /proc or /sys shows depends on who reads it, and the daemon reads it. */
			r = -EINVAL;
			set_text(why, why_len, "%s=%s: tls-psk-file %s: on a pseudo filesystem (proc, sysfs ...)", key,
				 uri, plan->uri.tls_psk_file);
		}
	}
	if (r < 0) {
		if (socket_fd >= 0)
			close(socket_fd);
		if (config.tls_psk_fd >= 0)
			close(config.tls_psk_fd);
		return r;
	}
	config.socket_fds = &socket_fd;
	config.num_socket_fds = 1;
	reason[0] = '\0';
	r = kcopyd_dev_open_nbd(uri, writable ? O_RDWR : O_RDONLY, &config, sizeof(config), dev, reason,
				sizeof(reason));
	for (index = 0; index < more.count; index++)
		if (more.fds[index] >= 0)
			close(more.fds[index]);
	if (r < 0)
		set_text(why, why_len, "%s=%s: %s", key, uri,
			 reason[0] ? reason : r == -EROFS ? "the export is read-only" : strerror(-r));
	return r;
}

/*
 * Open every region of @spec as @owner (from @root_fd, -1 for the daemon's
 * view; NBD connections from the network of @cred's writer) into @run,
 * settle the counts, check the job as the engine will, and render its
 * canonical description into *@canonical (malloc'd).  Runs without
 * svc->lock: the run is not yet the job's, so no other thread sees it.
 * The paths move from @spec to @run.
 */
int prepare_job(struct kfs_service *svc, struct kfs_run *run, struct jobspec *spec,
		const struct kfs_owner *owner, const struct kfs_cred *cred, int root_fd, struct io_region *from,
		struct io_region *dests, char **canonical, char *why, size_t why_len)
{
	char description[JOBSPEC_MAX_CANONICAL];
	struct region_plan plans[KCOPYD_MAX_REGIONS + 1];	/* [0]: source, [1 + i]: dests */
	struct kfs_request *requests;
	int *fds;			/* what kfs_run_requests() gave, in the order of requests[] */
	unsigned int index, count = 0;
	bool net_known = false, has_nbd = false, entered = false;
	int net_fd = -1, r = 0;

	/*
	 * At most two requests a region (an open; or a connect and a key
	 * file), sized to the job: a request is 560 bytes with its addresses,
	 * and this is every job start's path.
	 */
	_Static_assert(2 * (KCOPYD_MAX_REGIONS + 1) <= KFS_MAX_REQUESTS, "a job's requests fit one helper");
	requests = calloc(2 * (spec->num_dests + 1), sizeof(*requests));
	fds = calloc(2 * (spec->num_dests + 1), sizeof(*fds));
	if (!requests || !fds) {
		free(requests);
		free(fds);
		return -ENOMEM;
	}
	memset(plans, 0, sizeof(plans));
	/*
	 * A job with NBD regions takes one of its owner's places for jobs
	 * connecting before anything of it is done: the planning resolves
	 * host names, and a name whose servers never answer holds this thread
	 * as long as a server that never answers the handshake does.
	 */
	for (index = 0; index <= spec->num_dests; index++) {
		const struct jobspec_region *region = index == 0 ? &spec->from : &spec->dests[index - 1];

		has_nbd |= region->is_uri && (index > 0 || spec->op == JOBSPEC_COPY);
	}
	if (has_nbd) {
		r = kfs_opener_enter(svc->opener, owner->uid);
		if (r < 0)
			set_text(why, why_len, "uid %u already has 4 jobs connecting to NBD servers (that do not "
				 "answer?): try again later", (unsigned int)owner->uid);
		entered = r == 0;
	}
	/*
	 * Every region is opened, and every NBD socket connected, as the owner
	 * at once (one helper process for the job); what follows works on the
	 * descriptors (a claim is taken as the daemon).  A path on the mount
	 * itself is not opened at all.  Failures are reported in the order of
	 * the regions.
	 */
	for (index = 0; r == 0 && index <= spec->num_dests; index++) {
		const struct jobspec_region *region = index == 0 ? &spec->from : &spec->dests[index - 1];
		const char *path = region->path;
		struct region_plan *plan = &plans[index];

		plan->psk_request = -1;
		if (index == 0 && spec->op != JOBSPEC_COPY) {
			plan->skip = true;
		} else if (region->is_uri) {
			r = plan_nbd_region(svc, cred, index ? "to" : "from", path, plan, requests, &count, &net_fd,
					    &net_known, why, why_len);
		} else if (path_on_mount(svc, path)) {
			plan->skip = true;
		} else {
			plan->first = count;
			requests[count++] = (struct kfs_request){ .kind = KFS_REQ_OPEN, .path = path,
								  .writable = index > 0 };
		}
	}
	if (r == 0)
		r = kfs_run_requests(svc->opener, owner, root_fd, net_fd, count, requests, fds, why, why_len);
	if (r < 0) {
		count = 0;	/* nothing was opened */
		goto out;
	}

	for (index = 0; r == 0 && index <= spec->num_dests; index++) {
		struct jobspec_region *region = index == 0 ? &spec->from : &spec->dests[index - 1];
		const struct region_plan *plan = &plans[index];
		const char *key = index == 0 ? "from" : "to";

		if (index == 0 && spec->op != JOBSPEC_COPY)
			continue;
		if (plan->nbd) {
			r = settle_nbd_region(svc, owner, root_fd, net_fd, requests, key, region->path, index > 0, plan,
					      fds, &run->devs[index], why, why_len);
		} else {
			int fd = plan->skip ? -EDEADLK : fds[plan->first];

			if (!plan->skip)
				fds[plan->first] = -EBADF;	/* settled: closed, or the device's */
			r = settle_region(svc, run, key, region->path, index > 0, fd, &run->devs[index], why, why_len);
		}
		if (r < 0)
			break;
		if (!region->has_count) {
			region->count = index > 0 && spec->op == JOBSPEC_COPY ? spec->from.count
									   : rest_of_device(run->devs[index], region->sector);
			region->has_count = true;
		}
		if (index == 0)
			*from = (struct io_region){ run->devs[0], region->sector, region->count };
		else
			dests[index - 1] = (struct io_region){ run->devs[index], region->sector, region->count };
	}

out:
	if (net_fd >= 0)
		close(net_fd);
	if (entered)
		kfs_opener_leave(svc->opener, owner->uid);
	/* The regions after the one that failed were opened but not settled. */
	for (index = 0; index < count; index++)
		if (fds[index] >= 0)
			close(fds[index]);
	for (index = 0; index <= spec->num_dests; index++)
		if (plans[index].nbd)
			kcopyd_nbd_uri_free(&plans[index].uri);
	free(requests);
	free(fds);
	if (r < 0)
		return r;
	r = kcopyd_validate(spec->op == JOBSPEC_COPY ? from : NULL, spec->num_dests, dests, spec->flags, why,
			    (unsigned int)why_len);
	if (r < 0)
		return r;
	r = jobspec_render(spec, description, sizeof(description));
	if (r < 0) {
		set_text(why, why_len, "description too long to render");
		return r;
	}
	*canonical = strdup(description);
	if (!*canonical)
		return -ENOMEM;
	/* Kept for the error line at the end; jobspec_free() leaves what is taken. */
	if (spec->op == JOBSPEC_COPY) {
		run->paths[0] = spec->from.path;
		spec->from.path = NULL;
	}
	for (index = 0; index < spec->num_dests; index++) {
		run->paths[1 + index] = spec->dests[index].path;
		spec->dests[index].path = NULL;
	}
	return 0;
}
