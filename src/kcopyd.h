/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * libkcopyd: a userspace implementation of the Linux device-mapper copy
 * engine (kcopyd).
 *
 * A client owns a budget of 4 KiB I/O buffer pages, an I/O thread and a
 * completion thread.  A job copies a range of 512-byte sectors from one
 * source region to up to KCOPYD_MAX_REGIONS destination regions, or writes
 * zeros to them.  Jobs are split into sub-jobs; each sub-job is read once
 * into one buffer and written to every destination from that buffer.
 *
 * Copies are sparse-aware: ranges the source's extents call holes are not
 * read, and ranges that read as zeros (holes, or data that is all zeros)
 * are written with each destination's zero operation (fallocate,
 * BLKZEROOUT) rather than as data, or skipped with KCOPYD_DEST_ZERO.  Two
 * regular files may be copied by copy_file_range(2) (offload).  What
 * every destination holds afterwards is the source's bytes either way;
 * doc/SPARSE.md says what each choice leaves allocated.
 *
 * Every function that can fail returns 0 on success or a negative errno;
 * errno itself is never used to report anything.  All sector numbers and
 * counts are in 512-byte sectors.
 *
 * Completion routines (kcopyd_notify_fn) run on the client's completion
 * thread, one at a time, never inside the call that submitted the job.  A
 * completion routine may submit new jobs; it must not destroy the client.
 */
#ifndef KCOPYD_H
#define KCOPYD_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define KCOPYD_SECTOR_SHIFT 9
#define KCOPYD_SECTOR_SIZE  (1u << KCOPYD_SECTOR_SHIFT)
#define KCOPYD_PAGE_SIZE    4096u

/* Flags for kcopyd_copy(), kcopyd_zero() and kcopyd_submit(). */
#define KCOPYD_IGNORE_ERROR (1u << 0)	/* go on after errors; failed reads are written as zeros */
#define KCOPYD_WRITE_SEQ    (1u << 1)	/* issue writes to each destination in ascending sector order */
#define KCOPYD_DEST_ZERO    (1u << 2)	/* every destination reads as zeros already: zero ranges are skipped */
#define KCOPYD_ALLOCATED    (1u << 3)	/* leave every destination range allocated: zeros as zero writes that keep it */
#define KCOPYD_NO_OFFLOAD   (1u << 4)	/* never copy_file_range(2): read and write through the buffers */
#define KCOPYD_VERIFY       (1u << 5)	/* read every destination back after the copy and compare (copies only) */
#define KCOPYD_MAX_REGIONS  32		/* one write_err bit per destination */

/* The engine's defaults (struct kcopyd_config, 0 fields); why: doc/DESIGN.md. */
#define KCOPYD_DEFAULT_SUBJOB_SECTORS 2048u	/* 1 MiB, the kernel's largest sub-job */
#define KCOPYD_DEFAULT_DEPTH          8u	/* sub-jobs in flight per job, as the kernel's SPLIT_COUNT */
#define KCOPYD_DEFAULT_SPARSE_SECTORS 128u	/* 64 KiB: the grain of zero detection */

struct kcopyd_client;	/* opaque */
struct kcopyd_dev;	/* opaque: an open block device or regular file */
struct kcopyd_job;	/* opaque: a job handle from kcopyd_submit() */

/* ---------------------------------------------------------------------
 * Devices
 * --------------------------------------------------------------------- */

/*
 * kcopyd_dev_open() - open a block device or regular file for copying.
 * @path:   the file to open.
 * @flags:  O_RDONLY or O_RDWR (other bits are refused with -EINVAL).
 * @result: receives the new device on success.
 *
 * The device is opened with O_DIRECT when its filesystem supports it, and
 * buffered otherwise.  Its size is read once, at open: a block device's
 * size, or a regular file's size rounded down to whole sectors.  So is
 * the storage under a block device, for the overlap check (a partition's
 * disk, a loop device's backing file: see kcopyd_regions_overlap()).
 *
 * Return: 0 on success; -EINVAL for bad flags or a path that is neither a
 * block device nor a regular file; -ENOMEM; or the -errno of open(2),
 * fstat(2) or the device size ioctls.
 */
int kcopyd_dev_open(const char *path, int flags, struct kcopyd_dev **result);

/*
 * kcopyd_dev_from_fd() - wrap an already open file descriptor.
 * @fd:     an open block device or regular file; the engine takes ownership
 *          of it, also on failure (it is closed then).
 * @result: receives the new device on success.
 *
 * O_DIRECT is switched on with fcntl(F_SETFL) when the file allows it.
 * Size and storage are learnt as by kcopyd_dev_open().
 *
 * Return: 0 on success; -EBADF for a bad descriptor; -EINVAL for a file
 * that is neither a block device nor a regular file; -ENOMEM; or the -errno
 * of fstat(2), fcntl(2) or the device size ioctls.
 */
int kcopyd_dev_from_fd(int fd, struct kcopyd_dev **result);

/*
 * Regions on other hosts: NBD exports through libnbd.
 *
 * kcopyd_dev_open() takes an NBD URI wherever it takes a path: a name that
 * kcopyd_is_nbd_uri() accepts is opened with kcopyd_dev_open_nbd(@uri,
 * @flags, NULL, @result).  The URI forms are libnbd's (nbd_connect_uri(3)):
 * nbd://HOST[:PORT]/[EXPORT], nbd+unix:///[EXPORT]?socket=PATH,
 * nbd+vsock://CID[:PORT]/[EXPORT], and nbds://, nbds+unix://, nbds+vsock://
 * for TLS, with the query parameters libnbd knows (tls-psk-file,
 * tls-certificates, tls-verify-peer, tls-username, socket).
 */

/* Connections to one export when its server advertises multi-conn (as nbdcopy's default). */
#define KCOPYD_NBD_DEFAULT_CONNECTIONS 4u
/* How long a connection, or any request on it, may wait for the server (ms) before it is given up. */
#define KCOPYD_NBD_DEFAULT_TIMEOUT_MS  30000u
#define KCOPYD_NBD_MAX_CONNECTIONS     16u

/*
 * kcopyd_is_nbd_uri() - 1 if @name starts with a scheme kcopyd_dev_open()
 * opens as an NBD URI (nbd:, nbds:, nbd+unix:, nbds+unix:, nbd+vsock:,
 * nbds+vsock:, case-insensitive), else 0.  A local file whose name starts
 * like that is written ./nbd:... .
 */
int kcopyd_is_nbd_uri(const char *name);

/* The parts of an NBD URI, as kcopyd_nbd_uri_parse() splits it. */
enum kcopyd_nbd_transport {
	KCOPYD_NBD_TCP,
	KCOPYD_NBD_UNIX,
	KCOPYD_NBD_VSOCK,
};

struct kcopyd_nbd_uri {
	enum kcopyd_nbd_transport transport;
	int tls;			/* 1 for the nbds schemes: TLS is required */
	char *host;			/* TCP: the host (IPv6 without brackets); vsock: the CID; else NULL */
	char *port;			/* TCP, vsock: the port as written, or NULL for the default */
	char *export_name;		/* decoded; "" for the default export */
	char *socket_path;		/* unix: the socket= parameter, decoded */
	char *tls_psk_file;		/* the tls-psk-file= parameter, or NULL */
	char *tls_certificates;		/* the tls-certificates= parameter, or NULL */
	char *tls_username;		/* the tls-username= parameter, or NULL */
	int tls_verify_peer;		/* the tls-verify-peer= parameter: 1, 0, or -1 when not given */
};

/*
 * kcopyd_nbd_uri_parse() - split an NBD URI into its parts without
 * connecting, for a service that must connect or open files on a caller's
 * behalf (kcopydfs opens the socket and the key files as the writer).
 * @uri:    the URI.
 * @result: filled on success; release with kcopyd_nbd_uri_free().
 * @why:    a one-line reason on failure (may be NULL when @why_len is 0).
 *
 * Return: 0; -EINVAL for text that is not an NBD URI libnbd would take
 * (unknown scheme, a unix URI without socket=, a host in a unix URI, an
 * unknown query parameter, a TLS parameter on a scheme without TLS);
 * -ENOMEM.
 */
int kcopyd_nbd_uri_parse(const char *uri, struct kcopyd_nbd_uri *result, char *why, size_t why_len);
void kcopyd_nbd_uri_free(struct kcopyd_nbd_uri *uri);

struct kcopyd_nbd_config {
	/* Connections when the server advertises multi-conn; 0: KCOPYD_NBD_DEFAULT_CONNECTIONS. 1 without it. */
	unsigned int connections;
	/* Give up a connection, or a request not answered, after this long (ms); 0: KCOPYD_NBD_DEFAULT_TIMEOUT_MS. */
	unsigned int timeout_ms;
	/*
	 * Sockets already connected to the server (by a service, as its caller
	 * could), used in place of connecting to the URI's host or socket:
	 * the NBD handshake (export name, TLS from the URI) runs on them.
	 * The device takes them all over, also on failure; one is used, and
	 * more (up to @connections) if the server advertises multi-conn.
	 * NULL, 0: libnbd connects as the URI says.
	 */
	const int *socket_fds;
	unsigned int num_socket_fds;
	/*
	 * Open descriptors of the URI's tls-psk-file and of its
	 * tls-certificates directory, read through in their place (the
	 * device takes them over, also on failure); -1: the file is opened
	 * by name, by this process.
	 */
	int tls_psk_fd;
	int tls_certificates_fd;
	/*
	 * With @socket_fds: how to get the further connections that multi-conn
	 * allows (the server says so only in the first handshake, so a
	 * service need not connect them, and wake a server that serves one
	 * client at a time, in vain).  Called once the first connection is up,
	 * for connection @index (1, 2, ...) of @wanted, past those given in
	 * @socket_fds; returns a connected socket (taken over) or -errno (the
	 * device then goes on with the connections it has).  NULL: only the
	 * given sockets are used.
	 */
	int (*connect)(void *opaque, unsigned int index, unsigned int wanted);
	void *connect_opaque;
};

/*
 * kcopyd_dev_open_nbd() - open an NBD export for copying.
 * @uri:         an NBD URI (see above).
 * @flags:       O_RDONLY or O_RDWR.
 * @config:      options, or NULL for the defaults (no pre-connected
 *               sockets, no key descriptors).
 * @config_size: sizeof(*@config) as the caller was built (fields past it are 0).
 * @result:      receives the new device.
 * @why:         a one-line reason on failure, libnbd's where it said one
 *               (may be NULL when @why_len is 0).
 *
 * Connects, negotiates base:allocation (extents), reads the export's size,
 * block-size constraints and flags (read-only, flush, zeroes, multi-conn).
 * Completions are driven by the client's I/O thread.
 *
 * Return: 0; -EINVAL for a URI that is not one (see kcopyd_nbd_uri_parse());
 * -EROFS for O_RDWR on a read-only export; -ECONNREFUSED, -EHOSTUNREACH,
 * -ENOENT (no such host, socket or export), -EACCES (TLS refused: key
 * wrong or not given), -ETIMEDOUT; -EPERM (with @socket_fds, TLS without
 * tls_psk_fd, which would be X.509 with this process's own certificates
 * from libnbd's default directory; or a key file
 * named in the URI rather than passed as tls_psk_fd: a service must not
 * open it as itself); -EOPNOTSUPP (tls_certificates_fd, which cannot be
 * made safe: libnbd looks names up inside the directory); -EBADF
 * (tls_psk_fd open without read access, e.g. O_PATH); -ENOMEM; another
 * -errno of the connection.
 */
int kcopyd_dev_open_nbd(const char *uri, int flags, const struct kcopyd_nbd_config *config,
			size_t config_size, struct kcopyd_dev **result, char *why, size_t why_len);

/*
 * kcopyd_dev_error() - the last connection error of @dev, as one line
 * (libnbd's nbd_get_error() text for an NBD device), or NULL.  Valid
 * until the device is closed.
 */
const char *kcopyd_dev_error(const struct kcopyd_dev *dev);

/*
 * kcopyd_dev_close() - close a device and free it.  NULL is a no-op.
 * No job that uses @dev may still be outstanding.
 */
void kcopyd_dev_close(struct kcopyd_dev *dev);

/* kcopyd_dev_sectors() - the size of @dev in 512-byte sectors. */
uint64_t kcopyd_dev_sectors(const struct kcopyd_dev *dev);

/*
 * kcopyd_dev_block_size() - the alignment, in bytes, that regions on @dev
 * must keep: the logical block size of a block device (BLKSSZGET), the
 * direct I/O offset alignment of a file (statx STATX_DIOALIGN), or 512 for
 * a file opened without O_DIRECT.
 */
unsigned int kcopyd_dev_block_size(const struct kcopyd_dev *dev);

/* kcopyd_dev_is_direct() - 1 if @dev does O_DIRECT I/O, 0 if buffered. */
int kcopyd_dev_is_direct(const struct kcopyd_dev *dev);

/*
 * kcopyd_dev_sync() - make what was written to @dev durable: fdatasync(2),
 * which for a block device also flushes its volatile write cache.  May be
 * called while jobs write to @dev (it covers the writes completed before
 * the call).
 * Return: 0 on success; the -errno of fdatasync(2) (-EIO: an earlier
 * write-back failed).
 */
int kcopyd_dev_sync(struct kcopyd_dev *dev);

/* ---------------------------------------------------------------------
 * The kernel-compatible API
 * --------------------------------------------------------------------- */

struct io_region {
	struct kcopyd_dev *bdev;
	uint64_t sector;	/* first sector, 512-byte units */
	uint64_t count;		/* length in 512-byte sectors */
};

/*
 * The completion routine of a job.
 * @read_err:  1 if any read of the source failed, else 0.
 * @write_err: bit i set if any write to dests[i] failed.
 * @context:   the pointer given at submission.
 */
typedef void (*kcopyd_notify_fn)(int read_err, unsigned int write_err, void *context);

/*
 * kcopyd_client_create() - create a client with the default sub-job size
 * (1 MiB) and depth (8 sub-jobs in flight per job).
 * @num_pages: the budget of 4 KiB pages for I/O buffers; a hard cap.  A
 *             budget below one sub-job makes sub-jobs smaller.
 * @result:    receives the client.
 *
 * Starts the client's I/O thread and completion thread.
 *
 * The I/O engine is the default one (see enum kcopyd_io_engine): the
 * environment's KCOPYD_IO_ENGINE, else io_uring where it works, else libaio.
 *
 * Return: 0 on success; -EINVAL if @num_pages is 0 or KCOPYD_IO_ENGINE
 * names no engine; -ENOMEM; the -errno of eventfd(2) or pthread_create(3);
 * or, with io_uring asked for by name, the -errno that refused its ring
 * (as kcopyd_io_engine_probe()).  (The libaio context of io_setup(2) is
 * made by a job's first read or write, which fails with its -errno,
 * -EAGAIN past the system's aio-max-nr, if it cannot be.)
 */
int kcopyd_client_create(unsigned int num_pages, struct kcopyd_client **result);

/*
 * kcopyd_copy() - copy @from to every region of @dests, asynchronously.
 * @kc:        the client.
 * @from:      the source region.
 * @num_dests: 1 to KCOPYD_MAX_REGIONS.
 * @dests:     the destination regions; each count must equal @from->count.
 * @flags:     KCOPYD_IGNORE_ERROR, KCOPYD_WRITE_SEQ.
 * @fn:        called once when the job has finished (may be NULL).
 * @context:   passed to @fn.
 *
 * Does not block on I/O and may be called from many threads at once, and
 * from a completion routine.  @from and @dests are copied; the devices they
 * name must stay open until @fn has been called.  A count of 0 completes at
 * once (on the completion thread) with no error.
 *
 * Return: 0 if the job was queued (@fn will be called exactly once); a
 * negative errno from kcopyd_validate() if the regions were refused
 * (@fn is not called); -EINVAL if @kc or @from is NULL; -ENOMEM.
 */
int kcopyd_copy(struct kcopyd_client *kc, struct io_region *from,
		unsigned int num_dests, struct io_region *dests,
		unsigned int flags, kcopyd_notify_fn fn, void *context);

/*
 * kcopyd_zero() - write zeros to every region of @dests, asynchronously.
 * Like kcopyd_copy() without a source; every destination count must be
 * equal.  read_err is always 0.  A block device is zeroed as blkdiscard -z
 * zeroes it (BLKZEROOUT, which keeps its blocks: a write-zeroes where the
 * device has one), a punch only where that is refused; a file is punched
 * (it stays sparse) unless KCOPYD_ALLOCATED.  See doc/SPARSE.md.
 *
 * Return: as kcopyd_copy().
 */
int kcopyd_zero(struct kcopyd_client *kc, unsigned int num_dests, struct io_region *dests,
		unsigned int flags, kcopyd_notify_fn fn, void *context);

/*
 * kcopyd_client_destroy() - wait for every outstanding job to finish and
 * its completion routine to return, stop the threads, free the client.
 * A paused job (kcopyd_job_pause()) would never finish: it is cancelled.
 * A rate-limited one runs to its end at its rate (cancel it to stop sooner).
 * Must not be called from a completion routine.  NULL is a no-op.
 */
void kcopyd_client_destroy(struct kcopyd_client *kc);

/* ---------------------------------------------------------------------
 * The extended API: options, job handles, progress, cancel, results
 * --------------------------------------------------------------------- */

/*
 * Called on the completion thread when a job's first sub-job starts (the
 * job leaves the queue), with the job's context, always before the job's
 * kcopyd_notify_fn.  Not called for a job that never starts (a count of 0,
 * or cancelled while queued).
 */
typedef void (*kcopyd_start_fn)(void *context);

/*
 * Options of a client.  The struct grows at its end, as Linux's
 * extensible structs (clone3, openat2) and libfuse's operations do: the
 * library is told the size the caller was built with
 * (kcopyd_client_create_sized(), which kcopyd_client_create_config()
 * calls with sizeof(*config)) and takes the fields past it as 0.  A
 * program built against an older header keeps working with a newer
 * library; one built against a newer header gets -E2BIG from an older
 * library only if it set a field that library does not know.
 */
struct kcopyd_config {
	unsigned int num_pages;		/* I/O buffer budget in 4 KiB pages (required) */
	unsigned int subjob_sectors;	/* sub-job size; 0: 2048 (1 MiB); rounded down to whole pages */
	unsigned int depth;		/* sub-jobs in flight per job; 0: 8 */
	kcopyd_start_fn start_fn;	/* optional: told when each job starts */
	/* Added with kcopyd_client_create_sized(). */
	unsigned int sparse_sectors;	/* grain of zero detection; 0: 128 (64 KiB); rounded up to whole blocks */
	/* Added with the I/O engines (kcopyd_client_io_engine()). */
	unsigned int io_engine;		/* KCOPYD_IO_ENGINE_*: how local files and devices are read and written */
	/* Added with rate limits (kcopyd_client_set_rate()). */
	uint64_t rate;			/* bytes read per second by all the client's jobs together; 0: no limit */
};

/*
 * The I/O engines of local files and block devices (struct kcopyd_config's
 * io_engine).  NBD exports go through libnbd whatever the choice.
 *  DEFAULT   0: the environment variable KCOPYD_IO_ENGINE (auto, io_uring or
 *               libaio) if it is set, else AUTO.
 *  AUTO:        io_uring where the kernel offers it and it works (a ring is
 *               made and its opcodes probed when the client is created),
 *               else libaio; kcopyd_client_io_engine() says which and why.
 *  LIBAIO:      libaio with O_DIRECT, and worker threads for fallocate,
 *               BLKZEROOUT and copy_file_range.
 *  IO_URING:    io_uring, its buffers registered with the kernel where the
 *               memory lock limit allows; the client is not made when the
 *               kernel refuses a ring (kcopyd_io_engine_probe() says why).
 */
enum kcopyd_io_engine {
	KCOPYD_IO_ENGINE_DEFAULT = 0,
	KCOPYD_IO_ENGINE_AUTO,
	KCOPYD_IO_ENGINE_LIBAIO,
	KCOPYD_IO_ENGINE_IO_URING,
};

/*
 * kcopyd_io_engine_parse() - "auto", "io_uring" or "libaio" into *@engine.
 * Return: 0, or -EINVAL for anything else (NULL included).
 */
int kcopyd_io_engine_parse(const char *name, unsigned int *engine);

/* kcopyd_io_engine_name() - "auto", "io_uring", "libaio", "default", or "unknown". */
const char *kcopyd_io_engine_name(unsigned int engine);

/*
 * kcopyd_io_engine_probe() - whether a client could run with @engine now:
 * for io_uring, make a ring and probe the opcodes the engine uses, as
 * client creation does; DEFAULT is first resolved as client creation
 * resolves it (KCOPYD_IO_ENGINE); libaio and auto always can (libaio's
 * context is made by the first read or write).  @why receives a one-line
 * reason when it could not (may be NULL).  Return: 0; -EPERM
 * (io_uring_disabled, a seccomp filter), -ENOSYS (a kernel without
 * io_uring), -EOPNOTSUPP (opcodes missing), -ENOMEM (RLIMIT_MEMLOCK), or
 * -EINVAL for an engine that is not one of the enum or a variable that
 * names none.
 */
int kcopyd_io_engine_probe(unsigned int engine, char *why, size_t why_len);

/*
 * kcopyd_client_io_engine() - the engine @kc reads and writes local files
 * with: KCOPYD_IO_ENGINE_LIBAIO or KCOPYD_IO_ENGINE_IO_URING (0 for a
 * client of the tests' fake driver).  @why (may be NULL) receives why it
 * is that one or what limits it (io_uring refused, so libaio; buffers not
 * registered under RLIMIT_MEMLOCK), or "" when there is nothing to say.
 */
unsigned int kcopyd_client_io_engine(struct kcopyd_client *kc, char *why, size_t why_len);

/* The size of struct kcopyd_config before sparse_sectors, the smallest the library takes. */
#define KCOPYD_CONFIG_SIZE_V1 offsetof(struct kcopyd_config, sparse_sectors)

/*
 * kcopyd_client_create_sized() - kcopyd_client_create() with options.
 * @config:      the options.
 * @config_size: sizeof(*@config) as the caller was built: fields past it
 *               are taken as 0.
 * @result:      receives the client.
 * Return: as kcopyd_client_create(); -EINVAL for a zero budget, a sub-job
 * size below one page, an io_engine not of the enum, a rate below
 * KCOPYD_MIN_RATE, or a @config_size below KCOPYD_CONFIG_SIZE_V1;
 * -E2BIG for a @config_size past what this library knows whose extra
 * bytes are not all zero.
 */
int kcopyd_client_create_sized(const struct kcopyd_config *config, size_t config_size,
			       struct kcopyd_client **result);

/*
 * kcopyd_client_create_config() - kcopyd_client_create_sized() with
 * sizeof(*@config).  (A macro; the function of that name remains for
 * programs built against a header without kcopyd_client_create_sized(),
 * and takes KCOPYD_CONFIG_SIZE_V1.)
 */
int kcopyd_client_create_config(const struct kcopyd_config *config, struct kcopyd_client **result);
#define kcopyd_client_create_config(config, result) \
	kcopyd_client_create_sized((config), sizeof(*(config)), (result))

/*
 * kcopyd_validate() - check regions as kcopyd_copy() does, and say why.
 * @from:      the source region, or NULL for a zero job.
 * @num_dests, @dests, @flags: as for kcopyd_copy().
 * @why:       receives a one-line reason on failure (may be NULL).
 * @why_len:   the size of @why in bytes.
 *
 * Overlap is judged on the storage underneath, as kcopyd_regions_overlap()
 * does: a loop device and its backing file, two loop devices over one
 * file, a partition and its disk are the same storage.  Regions of one
 * storage that do not overlap are accepted.
 *
 * Return: 0 if the job would be accepted; -EINVAL for a NULL region or
 * device, num_dests 0 or above KCOPYD_MAX_REGIONS, unknown flags, a
 * destination count that differs from the source's, a region not aligned
 * to its device's block size, a destination that overlaps the source or
 * another destination on the same storage; -ERANGE for a region that runs
 * past the end of its device; -EBADF for a read-only destination.
 */
int kcopyd_validate(const struct io_region *from, unsigned int num_dests,
		    const struct io_region *dests, unsigned int flags,
		    char *why, unsigned int why_len);

/*
 * kcopyd_regions_overlap() - whether two regions share a byte of storage.
 * @a, @b: regions on open devices (their sizes are not checked).
 *
 * The storage under a device is learnt once, when it is opened: a regular
 * file is itself; a partition is its disk from the partition's start; a
 * loop device is its backing file (or block device, resolved in turn)
 * from its offset.  So /dev/loop0 over disk.img at offset 1 MiB, sector 0,
 * is disk.img's sector 2048.  Devices the kernel does not describe
 * (device-mapper, md, a file a FUSE filesystem maps elsewhere) are only
 * themselves.
 *
 * Return: 1 if @a and @b overlap, 0 if not (also for a NULL region or
 * device, or a count of 0).
 */
int kcopyd_regions_overlap(const struct io_region *a, const struct io_region *b);

/*
 * kcopyd_submit() - queue a copy (@from non-NULL) or zero (@from NULL) job
 * and return a handle to it.  Like kcopyd_copy() otherwise; @fn may be NULL.
 * The handle stays valid until kcopyd_job_release(), also after the job
 * finished; the client must not be destroyed before every handle is
 * released.
 *
 * Return: 0 and *@result set; or as kcopyd_copy().
 */
int kcopyd_submit(struct kcopyd_client *kc, const struct io_region *from,
		  unsigned int num_dests, const struct io_region *dests,
		  unsigned int flags, kcopyd_notify_fn fn, void *context,
		  struct kcopyd_job **result);

/*
 * Options of a job beyond its flags.  Grows at its end as struct
 * kcopyd_config does: kcopyd_submit_options() is told the size the caller
 * was built with.
 */
struct kcopyd_job_options {
	unsigned int flags;		/* as kcopyd_submit()'s, KCOPYD_VERIFY included */
	unsigned int hashes;		/* KCOPYD_HASH_* bits: digests of the source (copies only) */
	uint64_t rate;			/* bytes read per second (the source's, a verify's read-backs); 0: no limit */
	unsigned int paused;		/* 1: the job is queued paused (kcopyd_job_resume() starts it);
					 * needs a handle (@result), or nothing could resume it */
	unsigned int reserved;		/* must be 0 (so that a field added here is not ignored) */
};

/* The lowest rate limit, bytes per second: below it one 4 KiB block waits over a second. */
#define KCOPYD_MIN_RATE 4096u

/*
 * kcopyd_submit_options() - kcopyd_submit() with options.
 * @options:      the flags, hashes, rate and whether to start paused.
 * @options_size: sizeof(*@options) as the caller was built.
 *
 * KCOPYD_VERIFY: once every chunk is written, every destination is
 * flushed (kcopyd_dev_sync()), then read back, bypassing the page cache
 * (O_DIRECT; a device that cannot do direct I/O, such as a tmpfs file, is
 * dropped from the cache first with POSIX_FADV_DONTNEED), and each chunk's
 * XXH3-64 compared with the one taken of the source as it was read (the
 * source is not read twice).  A chunk that differs fails the job with
 * -EBADMSG (as ext4 and XFS report a bad checksum), sets the destination's
 * bit in write_err and verify_err and is reported in result.verify[i];
 * that destination is read back no further (the first bad chunk is what
 * is reported; sectors_verified then stays below sectors_verify_total),
 * the others to their end.
 * Verification keeps 8 bytes per chunk (per MiB by default) for the job's
 * life.  Hashing or verifying implies KCOPYD_NO_OFFLOAD (the bytes must
 * pass through the buffers).
 *
 * Rate limits count bytes read: from the source, and by a verify from
 * the destinations (holes that are not read and zero jobs cost nothing),
 * per job and per client (struct
 * kcopyd_config's rate, kcopyd_client_set_rate()): a sub-job starts only
 * while both have credit, so a limited job holds as few buffers as its
 * rate needs and never keeps them from other jobs.
 *
 * Return: as kcopyd_submit(); -EINVAL also for hashes or verify on a zero
 * job, an unknown hash bit, a rate below KCOPYD_MIN_RATE, or an
 * @options_size below the first two fields, a non-zero reserved field, or
 * paused without @result (nothing could resume it); -EBADF for KCOPYD_VERIFY with
 * a destination that was not opened for reading; -E2BIG for a larger
 * @options_size whose extra bytes are not all zero; -EOPNOTSUPP for an
 * algorithm libcrypto refuses (MD5 under a FIPS-only libcrypto); the
 * -errno of pthread_create(3) when the digest thread cannot be started.
 */
int kcopyd_submit_options(struct kcopyd_client *kc, const struct io_region *from, unsigned int num_dests,
			  const struct io_region *dests, const struct kcopyd_job_options *options,
			  size_t options_size, kcopyd_notify_fn fn, void *context, struct kcopyd_job **result);

/*
 * kcopyd_job_pause() - stop starting sub-jobs of @job (those in flight
 * finish); progress stays where it is; a paused job may be cancelled.
 * kcopyd_job_wait() goes on waiting.  Return: 0; -EALREADY if it is
 * paused already; -EINVAL if its I/O is over (it finished).
 */
int kcopyd_job_pause(struct kcopyd_job *job);

/* kcopyd_job_resume() - undo kcopyd_job_pause().  Return: 0; -EALREADY if not paused; -EINVAL if finished. */
int kcopyd_job_resume(struct kcopyd_job *job);

/*
 * kcopyd_job_set_rate() - change @job's rate limit (bytes per second, 0:
 * none), from its next sub-job on.  Return: 0; -EINVAL for a rate below
 * KCOPYD_MIN_RATE or a finished job.
 */
int kcopyd_job_set_rate(struct kcopyd_job *job, uint64_t rate);

/* kcopyd_client_set_rate() - change the client's total rate limit (as struct kcopyd_config's rate). */
int kcopyd_client_set_rate(struct kcopyd_client *kc, uint64_t rate);

/*
 * kcopyd_job_progress() - sectors finished and in all, per destination.
 * A sub-job counts once every destination write of it completed (or, with
 * KCOPYD_IGNORE_ERROR, failed); zero ranges count as done like data,
 * skipped or not.  Safe to call at any time from any thread.
 */
void kcopyd_job_progress(const struct kcopyd_job *job, uint64_t *sectors_done,
			 uint64_t *sectors_total);

/*
 * How a job's finished sectors were written, counted per job (not per
 * destination), as kcopyd_job_progress() counts.  sectors_done ==
 * sectors_data + sectors_zero.  The struct may grow at its end: callers
 * pass sizeof.
 */
struct kcopyd_counts {
	uint64_t sectors_done;		/* as kcopyd_job_progress() */
	uint64_t sectors_total;
	uint64_t sectors_data;		/* of sectors_done: written as data (from the buffers or offloaded) */
	uint64_t sectors_zero;		/* of sectors_done: zero ranges (source holes, chunks read as zeros,
					 * every sector of a zero job): zeroed, written from the zero page,
					 * or skipped on a KCOPYD_DEST_ZERO destination */
	uint64_t sectors_offloaded;	/* of sectors_data: copied by copy_file_range(2) to at least one destination */
	/* Added with verification, pause and rate limits. */
	unsigned int phase;		/* KCOPYD_PHASE_*: where the job is */
	unsigned int paused;		/* 1 while kcopyd_job_pause() holds it */
	uint64_t sectors_verified;	/* destination sectors read back and matched, summed over destinations */
	uint64_t sectors_verify_total;	/* sectors_total times the destinations with KCOPYD_VERIFY, else 0 */
	uint64_t rate;			/* the job's rate limit in bytes per second, 0: none */
};

/* Where a job is (struct kcopyd_counts's phase). */
enum kcopyd_phase {
	KCOPYD_PHASE_COPY = 0,		/* reading, writing (or queued) */
	KCOPYD_PHASE_FLUSH,		/* KCOPYD_VERIFY: every write is done, the destinations are flushed */
	KCOPYD_PHASE_VERIFY,		/* KCOPYD_VERIFY: the destinations are read back */
	KCOPYD_PHASE_DONE,		/* the job's I/O is over */
};

/*
 * kcopyd_job_counts() - kcopyd_job_progress() with the data and zero
 * sectors told apart.
 * @job:    the job.
 * @counts: receives the counts.
 * @size:   sizeof(*@counts) as the caller was built (fields past it are
 *          not written).
 * Safe to call at any time from any thread.
 * Return: 0; -EINVAL for a @size below the first two fields.
 */
int kcopyd_job_counts(const struct kcopyd_job *job, struct kcopyd_counts *counts, size_t size);

/*
 * kcopyd_job_checkpoint() - how far the job is done without a gap: every
 * sector of the job below *@sectors, counted from the start of its regions,
 * has been written to every destination, successfully.  Writes complete
 * out of order, so it may lag kcopyd_job_progress()'s count, and it stops
 * for good below a sub-job that failed anywhere (also with
 * KCOPYD_IGNORE_ERROR).  The data is written, not flushed: read the
 * checkpoint, then kcopyd_dev_sync() every destination, and the sectors
 * below it survive a crash.  A job that is resumed from a checkpoint C is
 * the same regions moved on by C sectors.  Safe at any time from any thread.
 */
void kcopyd_job_checkpoint(const struct kcopyd_job *job, uint64_t *sectors);

/*
 * kcopyd_job_cancel() - stop a job: no new sub-job starts, those in flight
 * finish, then the job completes with result.cancelled set and its
 * completion routine is called as usual (with the errors seen so far).
 * Return: 0 if the cancel was taken; -EALREADY if the job had already
 * finished (or was already cancelled).
 */
int kcopyd_job_cancel(struct kcopyd_job *job);

/* The lowest failing sub-job of one side of a job (source or one destination). */
struct kcopyd_failure {
	int error;		/* the negative errno, 0 if none failed */
	uint64_t sector;	/* the failing sub-job: device sector ... */
	uint64_t count;		/* ... and length in sectors */
};

/*
 * Digests of the source as it is read (struct kcopyd_job_options's
 * hashes: one bit per algorithm).  MD5, SHA-1, SHA-256, SHA-512 and
 * BLAKE2b-512 are OpenSSL's libcrypto's, XXH3-128 is libxxhash's; each
 * digest equals what md5sum, sha1sum, sha256sum, sha512sum, b2sum and
 * xxhsum -H2 print for the same bytes: holes and zero ranges are hashed as
 * the zeros they read as; with KCOPYD_IGNORE_ERROR a chunk that could not
 * be read is hashed as the zeros written for it.  Hashing runs on the
 * client's digest thread, in the source's order, beside the writes.
 */
enum kcopyd_hash {
	KCOPYD_HASH_MD5 = 1u << 0,
	KCOPYD_HASH_SHA1 = 1u << 1,
	KCOPYD_HASH_SHA256 = 1u << 2,
	KCOPYD_HASH_SHA512 = 1u << 3,
	KCOPYD_HASH_BLAKE2B512 = 1u << 4,
	KCOPYD_HASH_XXH128 = 1u << 5,
};
#define KCOPYD_HASH_COUNT 6		/* bits of enum kcopyd_hash; digests[i] of a result is bit i's */
#define KCOPYD_HASH_ALL ((1u << KCOPYD_HASH_COUNT) - 1)
#define KCOPYD_HASH_MAX_SIZE 64		/* bytes of the longest digest (SHA-512, BLAKE2b-512) */
#define KCOPYD_HASH_SLOTS 16		/* room for digests in a result: algorithms may be added up to it */

/*
 * kcopyd_hash_parse() - one algorithm by name: "md5", "sha1", "sha256",
 * "sha512", "blake2b512" (also "blake2b" and "b2", as b2sum calls it),
 * "xxh128" (also "xxh3-128"); case is ignored.
 * Return: 0 and its bit in *@hash; -EINVAL for any other name.
 */
int kcopyd_hash_parse(const char *name, unsigned int *hash);

/* kcopyd_hash_name() - the name of one bit ("sha256"), or NULL for anything else. */
const char *kcopyd_hash_name(unsigned int hash);

/* kcopyd_hash_size() - the digest size in bytes of one bit (32 for sha256), 0 for anything else. */
unsigned int kcopyd_hash_size(unsigned int hash);

/* One digest of a result: @size bytes of @bytes, in the byte order the *sum tools print. */
struct kcopyd_digest {
	unsigned int size;
	unsigned char bytes[KCOPYD_HASH_MAX_SIZE];
};

struct kcopyd_result {
	int read_err;				/* as given to kcopyd_notify_fn */
	unsigned int write_err;			/* as given to kcopyd_notify_fn */
	int error;				/* the negative errno of the first failure in time, 0 if none */
	int cancelled;				/* 1 if kcopyd_job_cancel() stopped it (error stays 0 unless I/O failed) */
	uint64_t sectors_done;			/* as kcopyd_job_progress() */
	uint64_t sectors_total;
	struct kcopyd_failure read;		/* the lowest failing source range */
	struct kcopyd_failure write[KCOPYD_MAX_REGIONS];	/* the lowest failing range of dests[i] */
	/* Added with kcopyd_job_result_sized(). */
	struct kcopyd_counts counts;		/* the final kcopyd_job_counts(); fields added to struct
						 * kcopyd_counts after its phase .. rate are not in it (its
						 * size here is fixed now: they go at this struct's end) */
	/* Added with hashes and verification (kcopyd_submit_options()). */
	unsigned int hashes;			/* the algorithms of digests[]: the job's, once every chunk was
						 * hashed; 0 for a job that stopped before (failed, cancelled) */
	struct kcopyd_digest digests[KCOPYD_HASH_SLOTS];	/* digests[i]: of bit i of hashes */
	int verified;				/* KCOPYD_VERIFY: 1 every destination read back as the source,
						 * -1 some did not (verify_err), 0 not verified (no flag, or the
						 * copy failed or was cancelled before the verify ended) */
	unsigned int verify_err;		/* bit i: dests[i] did not read back as the source */
	struct kcopyd_failure verify[KCOPYD_MAX_REGIONS];	/* the lowest such range of dests[i] (its
						 * chunk): -EBADMSG for bytes that differ, or the read's errno */
};

/*
 * kcopyd_job_result_sized() - the outcome of a finished job.
 * @size: sizeof(*@result) as the caller was built: fields past it are not
 *        written (a program built before the counts has none).
 * Return: 0 and *@result filled once the job's I/O is over (from its
 * completion routine on, so the routine itself may call it); -EINPROGRESS
 * before that (*@result untouched); -EINVAL for a @size below the result
 * without counts.
 */
int kcopyd_job_result_sized(const struct kcopyd_job *job, struct kcopyd_result *result, size_t size);

/*
 * kcopyd_job_result() - kcopyd_job_result_sized() with sizeof(*@result).
 * (A macro; the function remains for programs built before it was one.)
 */
int kcopyd_job_result(const struct kcopyd_job *job, struct kcopyd_result *result);
#define kcopyd_job_result(job, result) kcopyd_job_result_sized((job), (result), sizeof(*(result)))

/*
 * kcopyd_job_wait() - block until the job's completion routine returned.
 * Must not be called from a completion routine for a job of the same
 * client (the routine would wait for itself).
 * Return: 0.
 */
int kcopyd_job_wait(struct kcopyd_job *job);

/*
 * kcopyd_job_release() - drop the handle.  The job itself runs on if it
 * has not finished.  NULL is a no-op.
 */
void kcopyd_job_release(struct kcopyd_job *job);

struct kcopyd_stats {
	uint64_t jobs_active;		/* submitted, completion routine not yet returned */
	uint64_t jobs_total;		/* ever submitted */
	uint64_t sectors_read;		/* read successfully from sources */
	uint64_t sectors_written;	/* written successfully to destinations (each counted), as data,
					 * as zeros, offloaded, or skipped on a zero destination */
	uint64_t read_errors;		/* failed read sub-jobs */
	uint64_t write_errors;		/* failed destination writes */
	unsigned int pages_total;	/* the budget */
	unsigned int pages_in_use;	/* held by sub-jobs in flight now */
	unsigned int pages_peak;	/* the most ever held at once */
	unsigned int subjob_sectors;	/* the sub-job size in use */
	unsigned int depth;		/* sub-jobs in flight per job */
	/* Added with kcopyd_client_stats_sized(). */
	uint64_t sectors_zero;		/* of sectors_written: zero ranges (zeroed, zero page, skipped) */
	uint64_t sectors_offloaded;	/* of sectors_written: copied by copy_file_range(2) */
	uint64_t zero_fallbacks;	/* zero ranges written from the zero page: the device could not zero */
	uint64_t offload_fallbacks;	/* destination ranges copied through the buffers: copy_file_range refused */
	/* Added with the I/O engines (kcopyd_client_io_engine()). */
	unsigned int io_engine;		/* KCOPYD_IO_ENGINE_LIBAIO or _IO_URING: as kcopyd_client_io_engine() */
	/* Added with hashes, verification, pause and rate limits. */
	uint64_t sectors_hashed;	/* source sectors digested by jobs with hashes (each once, whatever its algorithms) */
	uint64_t sectors_verified;	/* destination sectors read back and compared */
	uint64_t verify_errors;		/* destinations of jobs that did not read back as the source (one
					 * per destination and job, whatever the number of bad chunks) */
	uint64_t jobs_paused;		/* paused now */
	uint64_t rate;			/* the client's rate limit, bytes per second, 0: none */
	uint64_t throttled_ns;		/* time jobs ready to start a sub-job waited for rate credit, summed
					 * (waits still going on included, up to now) */
};

/*
 * kcopyd_client_stats_sized() - a snapshot of the client's counters.
 * @size: sizeof(*@stats) as the caller was built (fields past it are not
 *        written).
 */
void kcopyd_client_stats_sized(struct kcopyd_client *kc, struct kcopyd_stats *stats, size_t size);

/* kcopyd_client_stats() - kcopyd_client_stats_sized() with sizeof(*@stats) (a macro, as above). */
void kcopyd_client_stats(struct kcopyd_client *kc, struct kcopyd_stats *stats);
#define kcopyd_client_stats(kc, stats) kcopyd_client_stats_sized((kc), (stats), sizeof(*(stats)))

/* kcopyd_version() - the library version, "MAJOR.MINOR.PATCH". */
const char *kcopyd_version(void);

#ifdef __cplusplus
}
#endif

#endif /* KCOPYD_H */
