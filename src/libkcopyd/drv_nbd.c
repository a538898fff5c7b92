/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The NBD driver: exports on other hosts (or other processes) through
 * libnbd's asynchronous API.
 *
 * A device holds one connection to its export, or up to
 * config->connections when the server advertises multi-conn (as nbdcopy
 * -C does); requests go to the connection with the fewest in flight.  The
 * handshake runs at open, on the caller's thread, with a deadline.
 *
 * No thread of its own: a client has one NBD queue (queue_key NULL) that
 * keeps the devices it has requests on; its poll_fds() gives the client's
 * I/O thread every such connection's descriptor with the direction libnbd
 * wants (nbd_aio_get_direction) and the time to the nearest deadline, and
 * poll_done() feeds what poll(2) saw to nbd_aio_notify_read/write.
 * libnbd runs a request's completion callback inside those calls; the
 * callback puts the I/O on its queue's done list and adds to the client's
 * eventfd, and reap() hands it to the engine.  A device used by two
 * clients at once is polled by both I/O threads: one at a time drives a
 * connection (nbd_conn.drive_lock), each completion goes to the queue
 * that sent it, and a thread that changed a shared connection wakes the
 * others (nbd_dev.wakers).
 *
 * Deadlines.  A connection with requests in flight that has had no reply
 * for timeout_ms is shut (shutdown(2) on its socket: libnbd sees the end
 * of the stream, the handle dies and every request on it completes with
 * -ETIMEDOUT); abort() (a job cancelled) gives connections of a device
 * CANCEL_GRACE_MS more to answer, then shuts those that did not, failing
 * their requests with -ECANCELED.  A healthy connection, which answers all
 * the time, is never shut by either.
 *
 * Locks.  nbd_dev.lock guards the connections' counters, the extent cache,
 * the wakers and the error text; a queue's lock guards its done list.
 * Neither is ever held across a libnbd call (a completion callback, run
 * inside one, takes them: the device's, released, then the queue's).
 * nbd_conn.drive_lock is held around nbd_aio_notify_read/write only, and
 * is taken with neither of the others held.
 */
#include "config.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <libnbd.h>
#include <linux/vm_sockets.h>
#include <netdb.h>
#include <poll.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "libkcopyd/internal.h"

/* The NBD default largest payload (the protocol's: servers need not take more). */
#define NBD_DEFAULT_MAX_REQUEST (32u << 20)
/* A block-status request covers up to this much at once; the rest of the job is asked later. */
#define EXTENT_REQUEST_MAX (1ull << 30)
/*
 * Extents learnt are trusted this long: others may write to the export
 * between jobs (the local-file driver asks the kernel every time).  A
 * copy walks forward, so this costs one block-status request a second.
 */
#define EXTENT_CACHE_MS 1000u
/*
 * The longest a device's block-status requests may keep the I/O thread
 * waiting, all told: the engine asks for extents from its I/O thread,
 * which every job of the client shares (in kcopydfs, every user's), so a
 * server answering each request just inside the timeout, with a small
 * extent each time, stopped every other job.  Past this the device's
 * source is read as data (sparse reading lost, the copy the same).
 */
#define EXTENT_WAIT_BUDGET_MS 2000u
/* Extents kept from one block-status reply (merged where alike); more are asked again. */
#define EXTENT_CACHE_ENTRIES 4096u
/* After abort(), how long a connection may still go without answering before it is shut. */
#define CANCEL_GRACE_MS 200u
/* A cancel older than this is over (its job ended); it no longer shortens deadlines. */
#define CANCEL_WINDOW_MS 10000u
/* Queues (clients) whose I/O threads are told when another thread changed a shared connection. */
#define MAX_WAKERS 32u
/* Without room to tell them all, each polls the shared device at least this often. */
#define OVERFLOW_POLL_MS 5
/* A synchronous wait (handshake, extents, flush) looks at its flag at least this often. */
#define SYNC_POLL_SLICE_MS 50
/* The largest PSK file read through tls_psk_fd (gnutls' psktool writes a few dozen bytes a user). */
#define PSK_FILE_MAX (64u << 10)

struct nbd_conn {
	struct nbd_handle *h;	/* set at open, then read-only */
	int fd;			/* its socket, for poll(2) */
	/*
	 * Held around every nbd_aio_notify_read/write (conn_notify()): of the
	 * threads that poll the socket, one at a time looks again whether it
	 * is still readable and tells libnbd.  libnbd must never be told of
	 * data that another thread already took: a read notification in the
	 * middle of sending a request pauses the request and waits for a
	 * reply, which the server cannot send before the rest of the request.
	 */
	pthread_mutex_t drive_lock;
	/* Under nbd_dev.lock. */
	unsigned int in_flight;	/* queue requests sent, not completed */
	uint64_t progress_ns;	/* the last reply, or the first request after being idle */
	int abort_error;	/* why this driver shut it: -ETIMEDOUT, -ECANCELED; 0 */
};

struct nbdrv_extent {
	uint64_t end;		/* bytes: the extent runs from the previous entry's end */
	bool hole;
};

struct nbd_dev {
	struct kcopyd_dev *dev;
	unsigned int nr_conns;
	struct nbd_conn conns[KCOPYD_NBD_MAX_CONNECTIONS];
	unsigned int timeout_ms;
	bool can_flush;
	uint64_t size;		/* bytes, as the server says */
	char *identity;		/* dev->identity_name */

	pthread_mutex_t lock;
	/* Under lock. */
	uint64_t cancel_ns;	/* abort() asked at; 0: no cancel pending */
	/*
	 * The eventfds of the queues with requests on this device.  A
	 * connection's direction (what its socket must be polled for) changes
	 * when any thread calls libnbd on it; an I/O thread asleep in poll(2)
	 * with the old one would not see that the connection now waits to
	 * write.  So a thread that called libnbd on a device polled by others
	 * wakes them (wake_others()) to ask again.  Alone, nobody is woken.
	 */
	int wakers[MAX_WAKERS];
	unsigned int nr_wakers;
	unsigned int wakers_overflow;	/* queues beyond MAX_WAKERS: they poll every OVERFLOW_POLL_MS */
	unsigned int next_conn;
	uint64_t extents_start;	/* the cache covers [extents_start, extents[nr-1].end) ... */
	uint64_t extents_ns;	/* ... learnt then; emptied by every write or zero through this device */
	unsigned int nr_extents;
	struct nbdrv_extent *extents;	/* EXTENT_CACHE_ENTRIES */
	_Atomic uint64_t extent_wait_ns;	/* spent waiting for block status (EXTENT_WAIT_BUDGET_MS) */
	char error[256];	/* the last connection error, for kcopyd_dev_error() */
};

static uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static struct nbd_dev *nbdrv_of(const struct kcopyd_dev *dev)
{
	return dev->priv;
}

__attribute__((format(printf, 2, 3)))
static void set_dev_error(struct nbd_dev *nd, const char *fmt, ...)
{
	va_list ap;

	pthread_mutex_lock(&nd->lock);
	va_start(ap, fmt);
	vsnprintf(nd->error, sizeof(nd->error), fmt, ap);
	va_end(ap);
	pthread_mutex_unlock(&nd->lock);
}

/*
 * Wake the I/O threads of the other queues polling @nd (all, with @self_fd
 * -1: a thread that is no queue's), so that they take the connections'
 * directions afresh: see nbd_dev.wakers.
 */
static void wake_others(struct nbd_dev *nd, int self_fd)
{
	unsigned int index;
	uint64_t one = 1;

	/*
	 * Written under the lock: a queue leaves the list (active_put()) before
	 * its client closes the eventfd, so an eventfd written here is still
	 * open, never a number reused for another file.  An eventfd write does
	 * not block (only a counter near 2^64 would).
	 */
	pthread_mutex_lock(&nd->lock);
	for (index = 0; index < nd->nr_wakers; index++)
		if (nd->wakers[index] != self_fd)
			(void)!write(nd->wakers[index], &one, sizeof(one));
	pthread_mutex_unlock(&nd->lock);
}

/* libnbd's last error text on this thread, on one line. */
/*
 * libnbd's last error, as one line: it quotes what it was given (an export
 * name decoded from %0A) and may pass on what a server said, and a why or
 * kcopyd_dev_error() is one line that a service shows to others.  Control
 * characters are '?'.  Valid until the next call in this thread.
 */
static const char *libnbd_error(void)
{
	static __thread char line[512];
	const char *text = nbd_get_error();
	char *c;

	if (!text || !*text)
		return "unknown libnbd error";
	snprintf(line, sizeof(line), "%s", text);
	for (c = line; *c; c++)
		if ((unsigned char)*c < 0x20 || *c == 0x7f)
			*c = '?';
	return line;
}

static bool conn_alive(const struct nbd_conn *c)
{
	return c->h && !nbd_aio_is_dead(c->h) && !nbd_aio_is_closed(c->h);
}

/*
 * Shut @c because the server did not answer: the socket is shut both ways,
 * so that libnbd reads the end of the stream and kills the handle, which
 * completes every request still on it (with @error, see conn_error()).
 */
static void conn_kill(struct nbd_dev *nd, struct nbd_conn *c, int error)
{
	unsigned int tries;

	pthread_mutex_lock(&nd->lock);
	if (!c->abort_error)
		c->abort_error = error;
	pthread_mutex_unlock(&nd->lock);
	shutdown(c->fd, SHUT_RDWR);
	/* The socket now reads its end at once: libnbd sees it and the handle dies. */
	pthread_mutex_lock(&c->drive_lock);
	for (tries = 0; tries < 16 && conn_alive(c); tries++)
		if (nbd_aio_notify_read(c->h) < 0)
			break;
	pthread_mutex_unlock(&c->drive_lock);
}

/* -errno for a request that failed with libnbd's @err on @c. */
static int conn_error(struct nbd_dev *nd, struct nbd_conn *c, int err)
{
	int abort_error;

	pthread_mutex_lock(&nd->lock);
	abort_error = c->abort_error;
	pthread_mutex_unlock(&nd->lock);
	if (abort_error)
		return abort_error;
	return err > 0 ? -err : -EIO;
}

/*
 * Feed what poll(2) saw on @c to libnbd, under the connection's
 * drive_lock: readable is looked at again (another thread polling the
 * same socket may have taken the data since), and a write notification
 * is given only while libnbd wants to write.  A failure of the connection
 * is kept as the device's error.
 */
static void conn_notify(struct nbd_dev *nd, struct nbd_conn *c, short revents)
{
	struct pollfd now = { .fd = c->fd, .events = POLLIN };
	int r = 0;

	pthread_mutex_lock(&c->drive_lock);
	if ((revents & (POLLIN | POLLHUP | POLLERR)) && poll(&now, 1, 0) > 0)
		r = nbd_aio_notify_read(c->h);
	if (r == 0 && (revents & POLLOUT) && (nbd_aio_get_direction(c->h) & LIBNBD_AIO_DIRECTION_WRITE))
		r = nbd_aio_notify_write(c->h);
	pthread_mutex_unlock(&c->drive_lock);
	if (r < 0 && !conn_alive(c))
		set_dev_error(nd, "%s", libnbd_error());
}

static short conn_events(const struct nbd_conn *c)
{
	unsigned int dir = nbd_aio_get_direction(c->h);
	short events = 0;

	if (dir & LIBNBD_AIO_DIRECTION_READ)
		events |= POLLIN;
	if (dir & LIBNBD_AIO_DIRECTION_WRITE)
		events |= POLLOUT;
	return events;
}

/* Milliseconds from @now to @deadline, at least 0, rounded up. */
static int ms_until(uint64_t now, uint64_t deadline)
{
	uint64_t ms = deadline > now ? (deadline - now + 999999) / 1000000 : 0;

	return ms > INT32_MAX ? INT32_MAX : (int)ms;
}

/* Whether a cancel of @nd is pending at @now (under nd->lock). */
static bool cancel_pending(const struct nbd_dev *nd, uint64_t now)
{
	return nd->cancel_ns && now < nd->cancel_ns + CANCEL_WINDOW_MS * 1000000ull;
}

/* A synchronous command: its completion flag and result. */
struct sync_cmd {
	struct nbd_dev *nd;
	struct nbd_conn *conn;
	_Atomic int done;
	int error;		/* -errno, set before done */
	uint64_t offset;	/* block status: the range asked */
	_Atomic int refs;	/* a heap one (sync_put()): its waiter's and libnbd's */
};

/* libnbd's free of a heap sync_cmd, or its waiter's: the last one frees it. */
static void sync_put(void *user_data)
{
	struct sync_cmd *sc = user_data;

	if (atomic_fetch_sub_explicit(&sc->refs, 1, memory_order_acq_rel) == 1)
		free(sc);
}

static int sync_complete(void *user_data, int *error)
{
	struct sync_cmd *sc = user_data;

	sc->error = *error ? conn_error(sc->nd, sc->conn, *error) : 0;
	atomic_store_explicit(&sc->done, 1, memory_order_release);
	return 1;
}

/*
 * Drive @c until @sc completed, or for the device's timeout: then the
 * connection is shut and the command fails with -ETIMEDOUT.  Other
 * requests' replies on @c are handled on the way.  Another thread may be
 * driving @c too, so the flag is looked at every SYNC_POLL_SLICE_MS.
 * Return: the command's 0 or -errno.
 */
static int sync_wait_until(struct nbd_dev *nd, struct nbd_conn *c, struct sync_cmd *sc, uint64_t give_up)
{
	uint64_t start = now_ns(), deadline = start + (uint64_t)nd->timeout_ms * 1000000u;

	while (!atomic_load_explicit(&sc->done, memory_order_acquire)) {
		struct pollfd pfd = { .fd = c->fd };
		uint64_t now = now_ns(), cancel_deadline = UINT64_MAX;
		int slice;

		if (!conn_alive(c))
			break;	/* dead: libnbd completed every command on it */
		if (now >= give_up) {
			/* Left in flight (a heap @sc): its reply is handled by whoever drives @c. */
			wake_others(nd, -1);
			return -ETIMEDOUT;
		}
		if (deadline > give_up)
			deadline = give_up + 1;	/* the give-up comes first */
		pthread_mutex_lock(&nd->lock);
		if (cancel_pending(nd, now))
			cancel_deadline = (nd->cancel_ns > start ? nd->cancel_ns : start) + CANCEL_GRACE_MS * 1000000ull;
		pthread_mutex_unlock(&nd->lock);
		if (now >= cancel_deadline) {
			/* A cancel (from another thread: this one may be the I/O thread) ends the wait. */
			set_dev_error(nd, "cancelled while waiting for the server");
			conn_kill(nd, c, -ECANCELED);
			continue;
		}
		if (now >= deadline) {
			set_dev_error(nd, "the server did not answer in %u ms", nd->timeout_ms);
			conn_kill(nd, c, -ETIMEDOUT);
			continue;
		}
		slice = ms_until(now, deadline < cancel_deadline ? deadline : cancel_deadline);
		if (give_up != UINT64_MAX && ms_until(now, give_up) < slice)
			slice = ms_until(now, give_up);
		if (slice > SYNC_POLL_SLICE_MS)
			slice = SYNC_POLL_SLICE_MS;
		pfd.events = conn_events(c);
		if (poll(&pfd, 1, slice) > 0)
			conn_notify(nd, c, pfd.revents);
	}
	/* What this thread did to the connection, the I/O threads polling it must see. */
	wake_others(nd, -1);
	if (!atomic_load_explicit(&sc->done, memory_order_acquire))
		return conn_error(nd, c, ENOTCONN);
	return sc->error;
}

static int sync_wait(struct nbd_dev *nd, struct nbd_conn *c, struct sync_cmd *sc)
{
	return sync_wait_until(nd, c, sc, UINT64_MAX);
}

/* The first connection still alive, or NULL. */
static struct nbd_conn *first_alive(struct nbd_dev *nd)
{
	unsigned int index;

	for (index = 0; index < nd->nr_conns; index++)
		if (conn_alive(&nd->conns[index]))
			return &nd->conns[index];
	return NULL;
}

/* -errno for a device none of whose connections is alive. */
static int dead_error(struct nbd_dev *nd)
{
	unsigned int index;
	int error = -ENOTCONN;

	pthread_mutex_lock(&nd->lock);
	for (index = 0; index < nd->nr_conns; index++)
		if (nd->conns[index].abort_error)
			error = nd->conns[index].abort_error;
	pthread_mutex_unlock(&nd->lock);
	return error;
}

/* ------------------------------------------------------------------ */
/* Extents: base:allocation, asked for a large range and cached        */
/* ------------------------------------------------------------------ */

static int extent_reply(void *user_data, const char *metacontext, uint64_t offset, uint32_t *entries,
			size_t nr_entries, int *error)
{
	struct sync_cmd *sc = user_data;
	struct nbd_dev *nd = sc->nd;
	uint64_t end = offset;
	size_t index;

	if (strcmp(metacontext, LIBNBD_CONTEXT_BASE_ALLOCATION) != 0 || *error)
		return 0;
	pthread_mutex_lock(&nd->lock);
	nd->extents_start = offset;
	nd->extents_ns = now_ns();
	nd->nr_extents = 0;
	for (index = 0; index + 1 < nr_entries; index += 2) {
		/* STATE_ZERO: reads as zeros, whether allocated (HOLE) or not. */
		bool hole = entries[index + 1] & LIBNBD_STATE_ZERO;

		if (entries[index] == 0)
			break;
		end += entries[index];
		if (nd->nr_extents > 0 && nd->extents[nd->nr_extents - 1].hole == hole) {
			nd->extents[nd->nr_extents - 1].end = end;
			continue;
		}
		if (nd->nr_extents == EXTENT_CACHE_ENTRIES)
			break;	/* the rest is asked again when reached */
		nd->extents[nd->nr_extents++] = (struct nbdrv_extent){ .end = end, .hole = hole };
	}
	pthread_mutex_unlock(&nd->lock);
	return 0;
}

/* The cached extent at @offset.  Under nd->lock.  Return: true if the cache covers it. */
static bool extent_cached(struct nbd_dev *nd, uint64_t offset, uint64_t length, uint64_t *extent_length, bool *hole)
{
	unsigned int low = 0, high = nd->nr_extents;

	if (nd->nr_extents == 0 || offset < nd->extents_start || offset >= nd->extents[nd->nr_extents - 1].end)
		return false;
	if (now_ns() - nd->extents_ns > EXTENT_CACHE_MS * 1000000ull) {
		nd->nr_extents = 0;
		return false;
	}
	while (low < high) {	/* the first entry ending after @offset */
		unsigned int mid = (low + high) / 2;

		if (nd->extents[mid].end <= offset)
			low = mid + 1;
		else
			high = mid;
	}
	*hole = nd->extents[low].hole;
	*extent_length = nd->extents[low].end - offset < length ? nd->extents[low].end - offset : length;
	return true;
}

static int nbdrv_extent(void *queue, struct kcopyd_dev *dev, uint64_t offset, uint64_t length,
		      uint64_t *extent_length, bool *hole)
{
	struct nbd_dev *nd = nbdrv_of(dev);
	uint64_t count = length, spent, start;
	struct sync_cmd *sc;
	struct nbd_conn *c;
	int64_t cookie;
	int r;

	(void)queue;
	pthread_mutex_lock(&nd->lock);
	r = extent_cached(nd, offset, length, extent_length, hole);
	pthread_mutex_unlock(&nd->lock);
	if (r)
		return 0;
	if (offset >= nd->size)
		return -ERANGE;
	if (count > EXTENT_REQUEST_MAX)
		count = EXTENT_REQUEST_MAX;
	if (count > nd->size - offset)
		count = nd->size - offset;
	spent = atomic_load_explicit(&nd->extent_wait_ns, memory_order_relaxed);
	if (spent >= EXTENT_WAIT_BUDGET_MS * 1000000ull)
		return -ETIMEDOUT;	/* read as data from here on */
	c = first_alive(nd);
	if (!c)
		return dead_error(nd);
	sc = calloc(1, sizeof(*sc));
	if (!sc)
		return -ENOMEM;
	*sc = (struct sync_cmd){ .nd = nd, .conn = c, .offset = offset, .refs = 2 };
	cookie = nbd_aio_block_status(c->h, count, offset,
				      (nbd_extent_callback){ .callback = extent_reply, .user_data = sc },
				      (nbd_completion_callback){ .callback = sync_complete, .user_data = sc,
								 .free = sync_put }, 0);
	if (cookie < 0) {
		/* libnbd frees the callbacks of a command it did not take: libnbd's reference is gone. */
		r = nbd_get_errno();
		set_dev_error(nd, "block status: %s", libnbd_error());
		sync_put(sc);
		return r > 0 ? -r : -EIO;
	}
	start = now_ns();
	r = sync_wait_until(nd, c, sc, start + EXTENT_WAIT_BUDGET_MS * 1000000ull - spent);
	atomic_fetch_add_explicit(&nd->extent_wait_ns, now_ns() - start, memory_order_relaxed);
	sync_put(sc);
	if (r < 0)
		return r;
	pthread_mutex_lock(&nd->lock);
	r = extent_cached(nd, offset, length, extent_length, hole);
	pthread_mutex_unlock(&nd->lock);
	/* A reply that does not start where asked, or is empty, is not one we can use. */
	return r ? 0 : -EIO;
}

/* ------------------------------------------------------------------ */
/* Flush                                                               */
/* ------------------------------------------------------------------ */

/*
 * NBD_CMD_FLUSH on one connection: every write completed before it, on
 * any connection, is then durable (multi-conn's promise, which is why a
 * server advertises it).  A server that cannot flush has nothing to flush.
 */
static int nbdrv_flush(struct kcopyd_dev *dev)
{
	struct nbd_dev *nd = nbdrv_of(dev);
	struct sync_cmd sc = { .nd = nd };
	struct nbd_conn *c;
	int64_t cookie;
	int r;

	if (!dev->writable || !nd->can_flush)
		return 0;
	c = first_alive(nd);
	if (!c)
		return dead_error(nd);
	sc.conn = c;
	cookie = nbd_aio_flush(c->h, (nbd_completion_callback){ .callback = sync_complete, .user_data = &sc }, 0);
	if (cookie < 0) {
		r = nbd_get_errno();
		set_dev_error(nd, "flush: %s", libnbd_error());
		return r > 0 ? -r : -EIO;
	}
	r = sync_wait(nd, c, &sc);
	if (r < 0 && !nd->error[0])
		set_dev_error(nd, "flush: %s", strerror(-r));
	return r;
}

/* ------------------------------------------------------------------ */
/* The queue                                                           */
/* ------------------------------------------------------------------ */

struct nbd_queue;

/* One request in flight through a queue. */
struct nbd_cmd {
	struct kcopyd_io *io;
	struct nbd_queue *q;
	struct nbd_dev *nd;
	struct nbd_conn *conn;
};

/* A device the queue has requests on, and how many. */
struct nbd_active {
	struct nbd_dev *nd;
	unsigned int count;
};

/* A polled connection: where poll_fds() put it, for poll_done(). */
struct nbd_polled {
	struct nbd_dev *nd;
	struct nbd_conn *conn;
};

/*
 * A client's NBD queue.  cmds, free_cmds, active and polled are the I/O
 * thread's (submit, reap, poll_fds, poll_done); done and done_count are
 * under lock, since completion callbacks may run on another client's I/O
 * thread that drives a shared device, or on a thread in nbdrv_flush().
 */
struct nbd_queue {
	int notify_fd;
	unsigned int depth;
	struct nbd_cmd *cmds;		/* depth */
	struct nbd_cmd **free_cmds;	/* a stack */
	unsigned int nr_free;
	struct nbd_active *active;	/* depth: at most one device per request */
	unsigned int nr_active;
	struct nbd_polled *polled;	/* what the last poll_fds() gave, in order */
	unsigned int nr_polled, polled_size;

	pthread_mutex_t lock;
	struct nbd_cmd **done;		/* depth */
	unsigned int done_count;
};

static int nbdrv_queue_create(struct kcopyd_queue_setup *setup, void **queue)
{
	unsigned int depth = setup->depth;
	struct nbd_queue *q;
	unsigned int index;

	q = calloc(1, sizeof(*q));
	if (!q)
		return -ENOMEM;
	q->notify_fd = setup->notify_fd;
	q->depth = depth;
	q->polled_size = depth * KCOPYD_NBD_MAX_CONNECTIONS;
	q->cmds = calloc(depth, sizeof(*q->cmds));
	q->free_cmds = calloc(depth, sizeof(*q->free_cmds));
	q->active = calloc(depth, sizeof(*q->active));
	q->polled = calloc(q->polled_size, sizeof(*q->polled));
	q->done = calloc(depth, sizeof(*q->done));
	if (!q->cmds || !q->free_cmds || !q->active || !q->polled || !q->done) {
		free(q->cmds);
		free(q->free_cmds);
		free(q->active);
		free(q->polled);
		free(q->done);
		free(q);
		return -ENOMEM;
	}
	for (index = 0; index < depth; index++)
		q->free_cmds[q->nr_free++] = &q->cmds[index];
	pthread_mutex_init(&q->lock, NULL);
	*queue = q;
	return 0;
}

static void nbdrv_queue_destroy(void *queue)
{
	struct nbd_queue *q = queue;

	pthread_mutex_destroy(&q->lock);
	free(q->cmds);
	free(q->free_cmds);
	free(q->active);
	free(q->polled);
	free(q->done);
	free(q);
}

/* @cmd completed (its io->result set): hand it to reap() and wake the I/O thread. */
static void queue_done_push(struct nbd_cmd *cmd)
{
	struct nbd_queue *q = cmd->q;
	uint64_t one = 1;

	pthread_mutex_lock(&q->lock);
	q->done[q->done_count++] = cmd;
	pthread_mutex_unlock(&q->lock);
	/* Can only fail if the counter would overflow: then it is set anyway. */
	(void)!write(q->notify_fd, &one, sizeof(one));
}

static int io_complete(void *user_data, int *error)
{
	struct nbd_cmd *cmd = user_data;
	struct nbd_dev *nd = cmd->nd;
	struct nbd_conn *c = cmd->conn;
	struct kcopyd_io *io = cmd->io;
	int abort_error;
	unsigned int index;
	bool idle = true;

	pthread_mutex_lock(&nd->lock);
	c->in_flight--;
	c->progress_ns = now_ns();
	abort_error = c->abort_error;
	for (index = 0; index < nd->nr_conns; index++)
		if (nd->conns[index].in_flight)
			idle = false;
	if (idle)
		nd->cancel_ns = 0;	/* nothing left for a cancel to end */
	if (*error == ENOTCONN && !abort_error && !nd->error[0])
		snprintf(nd->error, sizeof(nd->error), "the connection to the server was lost");
	else if (*error && !abort_error && *error != ENOTCONN)
		snprintf(nd->error, sizeof(nd->error), "the server failed a %s of %zu bytes at byte %" PRIu64 ": %s",
			 io->op == KCOPYD_IO_READ ? "read" : io->op == KCOPYD_IO_WRITE ? "write" : "zero",
			 io->length, io->offset, strerror(*error));
	pthread_mutex_unlock(&nd->lock);
	if (!*error)
		io->result = (long)io->length;
	else if (abort_error)
		io->result = abort_error;
	else
		io->result = -*error;
	if (io->op == KCOPYD_IO_ZERO && (*error == EOPNOTSUPP || *error == EINVAL) && !abort_error) {
		/* The server would not zero after all: the engine writes zeros from now on. */
		dev_drop_caps(io->dev, KCOPYD_CAP_ZERO_UNMAP | KCOPYD_CAP_ZERO_ALLOC);
		io->result = -EOPNOTSUPP;
	}
	queue_done_push(cmd);
	return 1;
}

static void active_get(struct nbd_queue *q, struct nbd_dev *nd)
{
	unsigned int index;

	for (index = 0; index < q->nr_active; index++)
		if (q->active[index].nd == nd) {
			q->active[index].count++;
			return;
		}
	q->active[q->nr_active++] = (struct nbd_active){ .nd = nd, .count = 1 };
	pthread_mutex_lock(&nd->lock);
	if (nd->nr_wakers < MAX_WAKERS)
		nd->wakers[nd->nr_wakers++] = q->notify_fd;
	else
		nd->wakers_overflow++;
	pthread_mutex_unlock(&nd->lock);
}

static void wakers_remove(struct nbd_dev *nd, int fd)
{
	unsigned int index;

	pthread_mutex_lock(&nd->lock);
	for (index = 0; index < nd->nr_wakers; index++)
		if (nd->wakers[index] == fd)
			break;
	if (index < nd->nr_wakers)
		nd->wakers[index] = nd->wakers[--nd->nr_wakers];
	else
		nd->wakers_overflow--;
	pthread_mutex_unlock(&nd->lock);
}

static void active_put(struct nbd_queue *q, struct nbd_dev *nd)
{
	unsigned int index;

	for (index = 0; index < q->nr_active; index++)
		if (q->active[index].nd == nd) {
			if (--q->active[index].count == 0) {
				q->active[index] = q->active[--q->nr_active];
				wakers_remove(nd, q->notify_fd);
			}
			return;
		}
}

/* The live connection of @nd with the fewest requests in flight, or NULL. */
static struct nbd_conn *pick_conn(struct nbd_dev *nd)
{
	struct nbd_conn *best = NULL;
	unsigned int index, start;

	pthread_mutex_lock(&nd->lock);
	start = nd->next_conn++;
	for (index = 0; index < nd->nr_conns; index++) {
		struct nbd_conn *c = &nd->conns[(start + index) % nd->nr_conns];

		if (c->abort_error || (best && best->in_flight <= c->in_flight))
			continue;
		best = c;
	}
	if (best && best->in_flight++ == 0)
		best->progress_ns = now_ns();
	pthread_mutex_unlock(&nd->lock);
	if (best && !conn_alive(best)) {
		/* Dead without our doing (the server went away): try another. */
		pthread_mutex_lock(&nd->lock);
		best->in_flight--;
		if (!best->abort_error)
			best->abort_error = -ENOTCONN;
		pthread_mutex_unlock(&nd->lock);
		return pick_conn(nd);
	}
	return best;
}

/* Start @io on @nd through @cmd.  Return: 0, or -errno if it could not be sent (not taken by libnbd). */
static int cmd_start(struct nbd_cmd *cmd)
{
	struct kcopyd_io *io = cmd->io;
	struct nbd_dev *nd = cmd->nd;
	nbd_completion_callback done = { .callback = io_complete, .user_data = cmd };
	struct nbd_conn *c;
	int64_t cookie;
	int err;

	if (io->op == KCOPYD_IO_COPY)
		return -EOPNOTSUPP;	/* no offload between exports: the engine never asks */
	c = pick_conn(nd);
	if (!c) {
		err = dead_error(nd);
		/* The server closed it: keep libnbd's words if there were any. */
		return err == -ENOTCONN ? -ECONNRESET : err;
	}
	cmd->conn = c;
	if (io->op != KCOPYD_IO_READ) {
		/* What this device told of its holes is no longer true. */
		pthread_mutex_lock(&nd->lock);
		nd->nr_extents = 0;
		pthread_mutex_unlock(&nd->lock);
	}
	switch (io->op) {
	case KCOPYD_IO_READ:
		cookie = nbd_aio_pread(c->h, io->buf, io->length, io->offset, done, 0);
		break;
	case KCOPYD_IO_WRITE:
		cookie = nbd_aio_pwrite(c->h, io->buf, io->length, io->offset, done, 0);
		break;
	default:	/* KCOPYD_IO_ZERO: NO_HOLE keeps the range allocated */
		cookie = nbd_aio_zero(c->h, io->length, io->offset, done,
				      (io->zero_flags & KCOPYD_ZERO_ALLOCATE) ? LIBNBD_CMD_FLAG_NO_HOLE : 0);
		break;
	}
	if (cookie >= 0)
		return 0;
	/* Not queued: libnbd will not call back. */
	err = nbd_get_errno();
	set_dev_error(nd, "%s", libnbd_error());
	pthread_mutex_lock(&nd->lock);
	c->in_flight--;
	pthread_mutex_unlock(&nd->lock);
	return err > 0 ? -err : -EIO;
}

static int nbdrv_submit(void *queue, struct kcopyd_io **ios, unsigned int count)
{
	struct nbd_queue *q = queue;
	unsigned int taken;

	for (taken = 0; taken < count && q->nr_free > 0; taken++) {
		struct nbd_cmd *cmd = q->free_cmds[--q->nr_free];
		struct kcopyd_io *io = ios[taken];
		int r;

		*cmd = (struct nbd_cmd){ .io = io, .q = q, .nd = nbdrv_of(io->dev) };
		active_get(q, cmd->nd);
		r = cmd_start(cmd);
		if (r < 0) {
			io->result = r;
			queue_done_push(cmd);
		}
		wake_others(cmd->nd, q->notify_fd);
	}
	return (int)taken;
}

static int nbdrv_reap(void *queue, struct kcopyd_io **done, unsigned int max)
{
	struct nbd_queue *q = queue;
	struct nbd_cmd *cmds[64];
	unsigned int count = 0, index;

	if (max > 64)
		max = 64;
	pthread_mutex_lock(&q->lock);
	while (q->done_count > 0 && count < max)
		cmds[count++] = q->done[--q->done_count];
	pthread_mutex_unlock(&q->lock);
	for (index = 0; index < count; index++) {
		done[index] = cmds[index]->io;
		active_put(q, cmds[index]->nd);
		q->free_cmds[q->nr_free++] = cmds[index];
	}
	return (int)count;
}

/*
 * The deadline of @c: with requests in flight, timeout_ms after its last
 * reply, or CANCEL_GRACE_MS after a cancel if that is sooner.  Under
 * nd->lock.  Return: true and *@deadline, or false if it has none.
 */
static bool conn_deadline(const struct nbd_dev *nd, const struct nbd_conn *c, uint64_t *deadline, int *error)
{
	if (!c->in_flight || c->abort_error)
		return false;
	*deadline = c->progress_ns + (uint64_t)nd->timeout_ms * 1000000u;
	*error = -ETIMEDOUT;
	if (cancel_pending(nd, c->progress_ns > nd->cancel_ns ? c->progress_ns : nd->cancel_ns)) {
		uint64_t from = nd->cancel_ns > c->progress_ns ? nd->cancel_ns : c->progress_ns;

		if (from + CANCEL_GRACE_MS * 1000000ull < *deadline) {
			*deadline = from + CANCEL_GRACE_MS * 1000000ull;
			*error = -ECANCELED;
		}
	}
	return true;
}

static int nbdrv_poll_fds(void *queue, struct pollfd *fds, unsigned int max, int *timeout_ms)
{
	struct nbd_queue *q = queue;
	uint64_t now = now_ns(), nearest = UINT64_MAX;
	unsigned int index, conn_index, nfds = 0;

	for (index = 0; index < q->nr_active; index++) {
		struct nbd_dev *nd = q->active[index].nd;

		for (conn_index = 0; conn_index < nd->nr_conns; conn_index++) {
			struct nbd_conn *c = &nd->conns[conn_index];
			uint64_t deadline;
			int error;
			short events;

			pthread_mutex_lock(&nd->lock);
			if (conn_deadline(nd, c, &deadline, &error) && deadline < nearest)
				nearest = deadline;
			if (nd->wakers_overflow && now + OVERFLOW_POLL_MS * 1000000ull < nearest)
				nearest = now + OVERFLOW_POLL_MS * 1000000ull;
			pthread_mutex_unlock(&nd->lock);
			if (!conn_alive(c) || nfds == max || nfds == q->polled_size)
				continue;
			events = conn_events(c);
			if (!events)
				continue;
			fds[nfds] = (struct pollfd){ .fd = c->fd, .events = events };
			q->polled[nfds++] = (struct nbd_polled){ .nd = nd, .conn = c };
		}
	}
	q->nr_polled = nfds;
	*timeout_ms = nearest == UINT64_MAX ? -1 : ms_until(now, nearest);
	return (int)nfds;
}

static void nbdrv_poll_done(void *queue, const struct pollfd *fds, unsigned int count)
{
	struct nbd_queue *q = queue;
	unsigned int index, conn_index;
	uint64_t now;

	for (index = 0; index < count && index < q->nr_polled; index++)
		if (fds[index].revents) {
			conn_notify(q->polled[index].nd, q->polled[index].conn, fds[index].revents);
			wake_others(q->polled[index].nd, q->notify_fd);
		}
	/* Deadlines: shut what did not answer in time (its requests complete now, with the error). */
	now = now_ns();
	for (index = 0; index < q->nr_active; index++) {
		struct nbd_dev *nd = q->active[index].nd;

		for (conn_index = 0; conn_index < nd->nr_conns; conn_index++) {
			struct nbd_conn *c = &nd->conns[conn_index];
			uint64_t deadline;
			int error;
			bool expired;

			pthread_mutex_lock(&nd->lock);
			expired = conn_deadline(nd, c, &deadline, &error) && deadline <= now;
			if (expired && error == -ETIMEDOUT)
				snprintf(nd->error, sizeof(nd->error), "the server did not answer in %u ms",
					 nd->timeout_ms);
			else if (expired)
				snprintf(nd->error, sizeof(nd->error), "cancelled while waiting for the server");
			pthread_mutex_unlock(&nd->lock);
			if (expired)
				conn_kill(nd, c, error);
		}
	}
}

static void nbdrv_abort(void *queue, struct kcopyd_dev *dev)
{
	struct nbd_dev *nd = nbdrv_of(dev);

	(void)queue;
	pthread_mutex_lock(&nd->lock);
	if (!nd->cancel_ns)
		nd->cancel_ns = now_ns();
	pthread_mutex_unlock(&nd->lock);
}

static const char *nbdrv_error_text(const struct kcopyd_dev *dev)
{
	const struct nbd_dev *nd = nbdrv_of(dev);

	return nd->error[0] ? nd->error : NULL;
}

/* ------------------------------------------------------------------ */
/* Opening                                                             */
/* ------------------------------------------------------------------ */

static void nbdrv_close_dev(struct kcopyd_dev *dev)
{
	struct nbd_dev *nd = nbdrv_of(dev);
	unsigned int index;

	for (index = 0; index < nd->nr_conns; index++) {
		struct nbd_conn *c = &nd->conns[index];

		/* A polite NBD_CMD_DISC if it is up; nbd_close() never waits for the server. */
		if (c->h && nbd_aio_is_ready(c->h))
			nbd_aio_disconnect(c->h, 0);
		nbd_close(c->h);
		pthread_mutex_destroy(&c->drive_lock);
	}
	pthread_mutex_destroy(&nd->lock);
	free(nd->extents);
	free(nd->identity);
	free(nd);
}

/* What a connection is told before it connects. */
struct conn_setup {
	const char *uri;		/* the URI, scheme in lower case, for nbd_aio_connect_uri() */
	const struct kcopyd_nbd_uri *parts;
	int socket_fd;			/* pre-connected, or -1 */
	const char *psk_path;		/* the key through a descriptor, or NULL */
	unsigned int timeout_ms;
};

/* Map a handshake's libnbd errno (and text) to what kcopyd_dev_open_nbd() promises. */
static int open_error(int err, const char *text)
{
	if (strstr(text, "getaddrinfo"))
		return -ENOENT;	/* no such host */
	if (strstr(text, "requires TLS") || strstr(text, "TLS") || strstr(text, "gnutls") ||
	    strstr(text, "PSK") || strstr(text, "psk"))
		return err == ENOMEM ? -ENOMEM : err == ENOENT && strstr(text, "psk") ? -ENOENT : -EACCES;
	if (err == ENOTSUP || err == EOPNOTSUPP)
		return -EACCES;
	return err > 0 ? -err : -EIO;
}

/*
 * Connect @c as @setup says and run the handshake, within the timeout.
 * A pre-connected setup->socket_fd is taken over, also on failure.
 * Return: 0, or -errno with @why set to libnbd's message.
 */
static int conn_open(struct nbd_conn *c, const struct conn_setup *setup, char *why, size_t why_len)
{
	const struct kcopyd_nbd_uri *parts = setup->parts;
	uint64_t deadline = now_ns() + (uint64_t)setup->timeout_ms * 1000000u;
	bool socket_taken = false;	/* by libnbd: nbd_close() closes it */
	int r = 0;

	c->fd = -1;
	pthread_mutex_init(&c->drive_lock, NULL);
	c->h = nbd_create();
	if (!c->h) {
		snprintf(why, why_len, "%s", libnbd_error());
		if (setup->socket_fd >= 0)
			close(setup->socket_fd);
		return -ENOMEM;
	}
	if (nbd_add_meta_context(c->h, LIBNBD_CONTEXT_BASE_ALLOCATION) < 0)
		goto err;
	if (!setup->psk_path && setup->socket_fd < 0) {
		/* libnbd parses and connects; the caller is the user, so its files are the user's. */
		if (nbd_set_uri_allow_local_file(c->h, true) < 0 ||
		    (parts->tls_verify_peer >= 0 && nbd_set_tls_verify_peer(c->h, parts->tls_verify_peer) < 0) ||
		    (parts->tls_username && nbd_set_tls_username(c->h, parts->tls_username) < 0) ||
		    nbd_aio_connect_uri(c->h, setup->uri) < 0)
			goto err;
	} else {
		/* As libnbd 1.14's nbd_aio_connect_uri() does, from the parts. */
		if (nbd_set_export_name(c->h, parts->export_name) < 0 ||
		    nbd_set_tls(c->h, parts->tls ? LIBNBD_TLS_REQUIRE : LIBNBD_TLS_DISABLE) < 0)
			goto err;
		if (parts->tls &&
		    (((setup->psk_path || parts->tls_psk_file) &&
		      nbd_set_tls_psk_file(c->h, setup->psk_path ? setup->psk_path : parts->tls_psk_file) < 0) ||
		     (parts->tls_certificates && nbd_set_tls_certificates(c->h, parts->tls_certificates) < 0) ||
		     (parts->tls_username && nbd_set_tls_username(c->h, parts->tls_username) < 0) ||
		     (parts->tls_verify_peer >= 0 && nbd_set_tls_verify_peer(c->h, parts->tls_verify_peer) < 0)))
			goto err;
		if (setup->socket_fd >= 0) {
			r = nbd_aio_connect_socket(c->h, setup->socket_fd);
			socket_taken = r == 0;
		} else if (parts->transport == KCOPYD_NBD_UNIX) {
			r = nbd_aio_connect_unix(c->h, parts->socket_path);
		} else if (parts->transport == KCOPYD_NBD_TCP) {
			r = nbd_aio_connect_tcp(c->h, parts->host, parts->port ? parts->port : "10809");
		} else {
			uint32_t cid = parts->host && parts->host[0] ? (uint32_t)strtoul(parts->host, NULL, 10) : 2;

			r = nbd_aio_connect_vsock(c->h, cid, parts->port ? (uint32_t)strtoul(parts->port, NULL, 10)
									  : 10809);
		}
		if (r < 0)
			goto err;
	}
	while (!nbd_aio_is_ready(c->h)) {
		struct pollfd pfd;
		uint64_t now = now_ns();

		if (nbd_aio_is_dead(c->h) || nbd_aio_is_closed(c->h)) {
			if (!nbd_get_error() || !*nbd_get_error())
				snprintf(why, why_len, "the server closed the connection during the handshake");
			goto err;
		}
		if (now >= deadline) {
			snprintf(why, why_len, "no answer from the server in %u ms", setup->timeout_ms);
			nbd_close(c->h);
			c->h = NULL;
			return -ETIMEDOUT;
		}
		pfd = (struct pollfd){ .fd = nbd_aio_get_fd(c->h), .events = 0 };
		if (pfd.fd < 0)
			goto err;
		pfd.events = conn_events(c);
		if (poll(&pfd, 1, ms_until(now, deadline)) > 0) {
			if ((pfd.revents & (POLLIN | POLLHUP | POLLERR)) && nbd_aio_notify_read(c->h) < 0)
				goto err;
			if ((pfd.revents & POLLOUT) && nbd_aio_notify_write(c->h) < 0)
				goto err;
		}
	}
	c->fd = nbd_aio_get_fd(c->h);
	return 0;

err:
	r = nbd_get_errno();
	if (why_len && (!why[0]))
		snprintf(why, why_len, "%s", libnbd_error());
	r = open_error(r, why_len ? why : libnbd_error());
	nbd_close(c->h);
	c->h = NULL;
	/* Refused before libnbd had it (an export name too long, say): not left open. */
	if (setup->socket_fd >= 0 && !socket_taken)
		close(setup->socket_fd);
	return r;
}

/*
 * Read the PSK file through @fd (the caller opened it, with its rights)
 * into a memfd, whose /proc/self/fd path libnbd then opens: the key is
 * never opened by name as this process, and a descriptor opened O_PATH
 * (no right to read) gives nothing.
 * Return: the memfd, or -errno.
 */
static int psk_copy(int fd)
{
	char *buf;
	ssize_t n;
	size_t len = 0;
	int memfd, fl = fcntl(fd, F_GETFL);

	if (fl < 0)
		return -errno;
	if ((fl & O_PATH) || (fl & O_ACCMODE) == O_WRONLY)
		return -EBADF;
	buf = malloc(PSK_FILE_MAX);
	if (!buf)
		return -ENOMEM;
	while (len < PSK_FILE_MAX && (n = pread(fd, buf + len, PSK_FILE_MAX - len, (off_t)len)) != 0) {
		if (n < 0) {
			if (errno == EINTR)
				continue;
			n = -errno;
			free(buf);
			return (int)n;
		}
		len += (size_t)n;
	}
	memfd = memfd_create("kcopyd-tls-psk", MFD_CLOEXEC);
	if (memfd < 0 || write(memfd, buf, len) != (ssize_t)len) {
		int r = -errno;

		if (memfd >= 0)
			close(memfd);
		explicit_bzero(buf, PSK_FILE_MAX);
		free(buf);
		return r;
	}
	explicit_bzero(buf, PSK_FILE_MAX);
	free(buf);
	return memfd;
}

/*
 * The identity of the export for the overlap check: the transport and
 * address and the export name.  A Unix socket is the name the server bound
 * (getpeername()), however the path the URI gives reached it (a symbolic
 * link, another mount namespace, a socket a service passed pre-connected).
 * The path is never looked up again here: for a service (root, for
 * kcopydfs) a stat() of a path its caller chose, swapped for a symbolic
 * link once connected, would tell the caller whether a file it may not see
 * exists (the overlap refusal says so), and could hang on a filesystem that
 * does not answer.  TCP and vsock are the peer's numeric address and port.
 */
static char *export_identity(const struct kcopyd_nbd_uri *parts, int fd)
{
	struct sockaddr_storage peer;
	socklen_t peer_len = sizeof(peer);
	char addr[INET6_ADDRSTRLEN + 64], port[16];
	char *identity = NULL;

	if (getpeername(fd, (struct sockaddr *)&peer, &peer_len) < 0) {
		snprintf(addr, sizeof(addr), "fd:%d", fd);	/* unknowable: unique enough */
	} else if (peer.ss_family == AF_UNIX) {
		const struct sockaddr_un *un = (const struct sockaddr_un *)&peer;
		int name_len = (int)(peer_len - offsetof(struct sockaddr_un, sun_path));

		if (name_len <= 0 || (name_len == 1 && !un->sun_path[0]))
			snprintf(addr, sizeof(addr), "fd:%d", fd);	/* an unnamed peer (socketpair): its own */
		else if (!un->sun_path[0])	/* abstract: '@' and the name after the NUL */
			snprintf(addr, sizeof(addr), "unix-name:@%.*s", name_len - 1, un->sun_path + 1);
		else
			snprintf(addr, sizeof(addr), "unix-name:%.*s", name_len, un->sun_path);
	} else if (peer.ss_family == AF_VSOCK) {
		const struct sockaddr_vm *vm = (const struct sockaddr_vm *)&peer;

		snprintf(addr, sizeof(addr), "vsock:%u:%u", vm->svm_cid, vm->svm_port);
	} else {
		char host[INET6_ADDRSTRLEN + 8];

		if (getnameinfo((struct sockaddr *)&peer, peer_len, host, sizeof(host), port, sizeof(port),
				NI_NUMERICHOST | NI_NUMERICSERV) != 0)
			snprintf(host, sizeof(host), "?%d", fd);
		snprintf(addr, sizeof(addr), "tcp:[%s]:%s", host, port);
	}
	if (asprintf(&identity, "%s/%s", addr, parts->export_name) < 0)
		return NULL;
	return identity;
}

/* Learn the export's size, limits and flags from its first connection. */
static int export_setup(struct kcopyd_dev *dev, struct nbd_dev *nd, int flags, char *why, size_t why_len)
{
	struct nbd_handle *h = nd->conns[0].h;
	int64_t size = nbd_get_size(h), min_block = nbd_get_block_size(h, LIBNBD_SIZE_MINIMUM),
		max_block = nbd_get_block_size(h, LIBNBD_SIZE_MAXIMUM);
	unsigned int block = KCOPYD_SECTOR_SIZE;

	if (size < 0) {
		snprintf(why, why_len, "%s", libnbd_error());
		return -EIO;
	}
	if (flags == O_RDWR && nbd_is_read_only(h) == 1) {
		snprintf(why, why_len, "the export is read-only");
		return -EROFS;
	}
	if (min_block > (int64_t)block) {
		if (min_block & (min_block - 1) || min_block > (64 << 10)) {
			snprintf(why, why_len, "the server's minimum block size %" PRId64 " is not one kcopyd can use",
				 min_block);
			return -EINVAL;
		}
		block = (unsigned int)min_block;
	}
	nd->size = (uint64_t)size;
	dev->block_size = block;
	/* Whole blocks only: a tail shorter than a block is not copied, as a file's partial sector. */
	dev->sectors = ((uint64_t)size / block * block) >> KCOPYD_SECTOR_SHIFT;
	dev->max_request = max_block > 0 && max_block < NBD_DEFAULT_MAX_REQUEST ? (uint64_t)max_block
										: NBD_DEFAULT_MAX_REQUEST;
	dev->max_request = dev->max_request / block * block;
	if (dev->max_request == 0)
		dev->max_request = block;
	dev->readable = true;
	dev->writable = flags == O_RDWR;
	nd->can_flush = nbd_can_flush(h) == 1;
	if (dev->writable && nbd_can_zero(h) == 1)
		dev->caps |= KCOPYD_CAP_ZERO_UNMAP | KCOPYD_CAP_ZERO_ALLOC;
	if (nbd_can_meta_context(h, LIBNBD_CONTEXT_BASE_ALLOCATION) == 1)
		dev->caps |= KCOPYD_CAP_EXTENTS;
	return 0;
}

int kcopyd_dev_open_nbd(const char *uri, int flags, const struct kcopyd_nbd_config *config,
			size_t config_size, struct kcopyd_dev **result, char *why, size_t why_len)
{
	struct kcopyd_nbd_config cfg = { .tls_psk_fd = -1, .tls_certificates_fd = -1 };
	struct kcopyd_nbd_uri parts;
	struct conn_setup setup;
	char psk_path[64], local_why[256];
	struct kcopyd_dev *dev;
	struct nbd_dev *nd;
	unsigned int wanted, index, next_fd = 0;
	int r, psk_memfd = -1;
	char *lowered = NULL;

	if (!why || !why_len) {
		why = local_why;
		why_len = sizeof(local_why);
	}
	why[0] = '\0';
	if (config)
		memcpy(&cfg, config, config_size < sizeof(cfg) ? config_size : sizeof(cfg));
	if (!cfg.socket_fds)
		cfg.num_socket_fds = 0;
	if (!uri || !result || (flags != O_RDONLY && flags != O_RDWR)) {
		r = -EINVAL;
		snprintf(why, why_len, "bad arguments");
		goto err_close_fds;
	}
	if (cfg.tls_certificates_fd >= 0) {
		/*
		 * libnbd reads certificates by name under a directory; through
		 * a descriptor that would be lookups (and symlinks) as this
		 * process in a directory the caller merely opened.
		 */
		r = -EOPNOTSUPP;
		snprintf(why, why_len, "tls-certificates through a descriptor is not supported");
		goto err_close_fds;
	}
	r = kcopyd_nbd_uri_parse(uri, &parts, why, why_len);
	if (r < 0)
		goto err_close_fds;
	if (cfg.num_socket_fds && ((parts.tls_psk_file && cfg.tls_psk_fd < 0) || parts.tls_certificates)) {
		/*
		 * Pre-connected sockets: a service acting for a caller.  A key
		 * file named in the URI would be opened here, as the service;
		 * it must come as a descriptor the caller opened.
		 */
		r = -EPERM;
		snprintf(why, why_len, "with pre-connected sockets, %s must be passed as a descriptor, not by name",
			 parts.tls_certificates ? "tls-certificates" : "tls-psk-file");
		goto err_free_parts;
	}
	if (cfg.num_socket_fds && parts.tls && cfg.tls_psk_fd < 0) {
		/*
		 * TLS without a key is X.509, and libnbd then reads its default
		 * certificates directory (/etc/pki/libnbd for root): the
		 * service would authenticate with its own client certificate
		 * for a caller who has none.
		 */
		r = -EPERM;
		snprintf(why, why_len, "with pre-connected sockets, TLS needs a pre-shared key (tls-psk-file, passed as "
			 "a descriptor): X.509 would present this process's own certificates");
		goto err_free_parts;
	}
	lowered = strdup(uri);
	if (!lowered) {
		r = -ENOMEM;
		goto err_free_parts;
	}
	for (index = 0; lowered[index] != ':'; index++)
		lowered[index] = (char)(lowered[index] >= 'A' && lowered[index] <= 'Z' ? lowered[index] + 32
										   : lowered[index]);
	if (cfg.tls_psk_fd >= 0) {
		psk_memfd = psk_copy(cfg.tls_psk_fd);
		close(cfg.tls_psk_fd);
		cfg.tls_psk_fd = -1;
		if (psk_memfd < 0) {
			r = psk_memfd;
			snprintf(why, why_len, "cannot read the TLS PSK file through its descriptor: %s", strerror(-r));
			goto err_free_lowered;
		}
		snprintf(psk_path, sizeof(psk_path), "/proc/self/fd/%d", psk_memfd);
	}
	dev = calloc(1, sizeof(*dev));
	nd = calloc(1, sizeof(*nd));
	if (nd)
		nd->extents = calloc(EXTENT_CACHE_ENTRIES, sizeof(*nd->extents));
	if (!dev || !nd || !nd->extents) {
		r = -ENOMEM;
		if (nd)
			free(nd->extents);
		free(nd);
		free(dev);
		goto err_close_psk;
	}
	pthread_mutex_init(&nd->lock, NULL);
	nd->dev = dev;
	nd->timeout_ms = cfg.timeout_ms ? cfg.timeout_ms : KCOPYD_NBD_DEFAULT_TIMEOUT_MS;
	dev->driver = &kcopyd_nbd_driver;
	dev->priv = nd;
	dev->queue_key = NULL;	/* one NBD queue per client, for all its exports */
	setup = (struct conn_setup){
		.uri = lowered,
		.parts = &parts,
		.socket_fd = cfg.num_socket_fds ? cfg.socket_fds[next_fd++] : -1,
		.psk_path = psk_memfd >= 0 ? psk_path : NULL,
		.timeout_ms = nd->timeout_ms,
	};
	r = conn_open(&nd->conns[0], &setup, why, why_len);
	if (r < 0)
		goto err_free_dev;
	nd->nr_conns = 1;
	r = export_setup(dev, nd, flags, why, why_len);
	if (r < 0)
		goto err_free_dev;
	nd->identity = export_identity(&parts, nd->conns[0].fd);
	if (!nd->identity) {
		r = -ENOMEM;
		goto err_free_dev;
	}
	dev->identity_name = nd->identity;
	dev->storage_offset = 0;
	wanted = cfg.connections ? cfg.connections : KCOPYD_NBD_DEFAULT_CONNECTIONS;
	if (wanted > KCOPYD_NBD_MAX_CONNECTIONS)
		wanted = KCOPYD_NBD_MAX_CONNECTIONS;
	if (cfg.num_socket_fds && !cfg.connect && wanted > cfg.num_socket_fds)
		wanted = cfg.num_socket_fds;
	if (nbd_can_multi_conn(nd->conns[0].h) != 1)
		wanted = 1;
	/* More connections are a speed-up: one that fails leaves the device with those it has. */
	while (nd->nr_conns < wanted) {
		char extra_why[256] = "";

		if (!cfg.num_socket_fds)
			setup.socket_fd = -1;
		else if (next_fd < cfg.num_socket_fds)
			setup.socket_fd = cfg.socket_fds[next_fd++];
		else if ((setup.socket_fd = cfg.connect(cfg.connect_opaque, nd->nr_conns, wanted)) < 0)
			break;
		if (conn_open(&nd->conns[nd->nr_conns], &setup, extra_why, sizeof(extra_why)) < 0)
			break;
		nd->nr_conns++;
	}
	while (next_fd < cfg.num_socket_fds)
		close(cfg.socket_fds[next_fd++]);
	if (psk_memfd >= 0)
		close(psk_memfd);
	free(lowered);
	kcopyd_nbd_uri_free(&parts);
	*result = dev;
	return 0;

err_free_dev:
	nbdrv_close_dev(dev);
	free(dev);
err_close_psk:
	if (psk_memfd >= 0)
		close(psk_memfd);
err_free_lowered:
	free(lowered);
err_free_parts:
	kcopyd_nbd_uri_free(&parts);
err_close_fds:
	/* Taken over, also on failure: those not handed to libnbd are closed here. */
	for (; next_fd < cfg.num_socket_fds; next_fd++)
		close(cfg.socket_fds[next_fd]);
	if (cfg.tls_psk_fd >= 0)
		close(cfg.tls_psk_fd);
	if (cfg.tls_certificates_fd >= 0)
		close(cfg.tls_certificates_fd);
	return r;
}

const struct kcopyd_driver kcopyd_nbd_driver = {
	.name = "nbd",
	.queue_create = nbdrv_queue_create,
	.queue_destroy = nbdrv_queue_destroy,
	.poll_fds = nbdrv_poll_fds,
	.poll_done = nbdrv_poll_done,
	.submit = nbdrv_submit,
	.reap = nbdrv_reap,
	.extent = nbdrv_extent,
	.flush = nbdrv_flush,
	.abort = nbdrv_abort,
	.error = nbdrv_error_text,
	.close = nbdrv_close_dev,
};
