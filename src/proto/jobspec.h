/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The text protocol's grammar (src/proto/, doc/DESIGN.md): regions, the
 * numbers in them and job descriptions, the one grammar that kcopy's
 * arguments, kcopy --via's descriptions and a kcopydfs ctl file all use.
 * A job description is the one-line text written to a job's ctl file,
 * parsed into a struct jobspec and rendered back in canonical form.  Pure
 * functions: no I/O, no FUSE, no engine; tested on their own.
 *
 *   copy from=REGION to=REGION [to=REGION ...] [flags=FLAG[,FLAG...]] [hash=ALG[,ALG...]] [rate=BYTES]
 *   zero to=REGION [to=REGION ...] [flags=FLAG[,FLAG...]]
 *   FLAG := ignore_error | write_seq | dest_zero | allocated | no_offload | verify
 *   ALG := md5 | sha1 | sha256 | sha512 | blake2b512 | xxh128 (kcopyd_hash_parse())
 *   REGION := (PATH | URI)[:SECTOR[+COUNT]]
 *
 * SECTOR and COUNT are 512-byte sectors, or bytes with a unit: B, K, M, G,
 * T or KiB, MiB, GiB, TiB (powers of 1024, letters in either case; bytes
 * must make whole sectors); KB, MB, GB and TB are refused, being 1000-based
 * to many tools.  A URI is text kcopyd_is_nbd_uri() accepts (nbd://,
 * nbds://, nbd+unix://, ...): its suffix is split off only at a colon
 * after the authority, so nbd://host:10809 is a port and sector 0,
 * nbd://host/disk:8 is sector 8 of export "disk".  A REGION without :SECTOR starts at sector 0; from= without a
 * COUNT runs to the end of the source, to= without one takes the source's
 * (has_count is false in both).  Tokens are separated by spaces or tabs.
 * A path with blanks is written in double quotes, which enclose the path
 * only, with \" and \\ as the escapes inside: to="/mnt/my disk.img":8+16.
 * A path cannot hold control characters other than tab (tab only inside
 * quotes).  Bytes outside ASCII are taken as they are.
 *
 * The flags are the job flags of kcopyd.h by name: ignore_error
 * (KCOPYD_IGNORE_ERROR), write_seq (KCOPYD_WRITE_SEQ), dest_zero
 * (KCOPYD_DEST_ZERO: the destinations read as zeros already, zero ranges
 * are skipped), allocated (KCOPYD_ALLOCATED: zero ranges are written with
 * zero writes that keep them allocated; wins over dest_zero) and
 * no_offload (KCOPYD_NO_OFFLOAD: no copy_file_range).  A name may repeat;
 * any combination is taken, as the engine takes it.  They mean the same
 * for a zero job, where allocated zeroes without punching holes,
 * dest_zero leaves the destinations as they are and no_offload changes
 * nothing.  verify (KCOPYD_VERIFY: read every destination back after the
 * copy and compare) is for a copy only, as hash= is: a zero job with
 * either is refused, since it reads nothing to hash or to compare with.
 *
 * hash= names the digests of the source to take while copying, rendered
 * by kcopyd_hash_name() in bit order (hash=b2,sha256 is hash=sha256,
 * blake2b512).  rate= is the job's limit in bytes read per second
 * (jobspec_parse_rate()), rendered as a plain number of bytes.
 *
 * See kcopydfs(5) for the whole grammar.
 */
#ifndef KCOPYD_PROTO_JOBSPEC_H
#define KCOPYD_PROTO_JOBSPEC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "kcopyd.h"

/*
 * The names of flags=, for messages, in the order they are rendered:
 * KCOPYD_IGNORE_ERROR, KCOPYD_WRITE_SEQ, KCOPYD_DEST_ZERO, KCOPYD_ALLOCATED,
 * KCOPYD_NO_OFFLOAD.
 */
#define JOBSPEC_FLAG_NAMES "ignore_error, write_seq, dest_zero, allocated, no_offload, verify"
/* Every bit a parsed description's flags may hold. */
#define JOBSPEC_FLAGS \
	(KCOPYD_IGNORE_ERROR | KCOPYD_WRITE_SEQ | KCOPYD_DEST_ZERO | KCOPYD_ALLOCATED | KCOPYD_NO_OFFLOAD | \
	 KCOPYD_VERIFY)
/* The names hash= takes, for messages (kcopyd_hash_parse() takes a few more spellings). */
#define JOBSPEC_HASH_NAMES "md5, sha1, sha256, sha512, blake2b512, xxh128"

#define JOBSPEC_MAX_LINE 4096		/* bytes, without the trailing newline */
/*
 * The longest canonical description of a line of JOBSPEC_MAX_LINE bytes,
 * with its newline and a NUL: quoting at most doubles the paths (a bare
 * backslash is written \\ in quotes), and each of the 33 regions gains
 * at most two quotes and ":SECTOR+COUNT" (44 bytes).  Flags are rendered
 * once each, never longer than they were written.  hash= and rate= may
 * render longer than written (b2 is blake2b512, 1T is 1099511627776): at
 * most " hash=" and the six names (46 bytes) and " rate=" and 20 digits.
 */
#define JOBSPEC_MAX_CANONICAL (2 * JOBSPEC_MAX_LINE + (KCOPYD_MAX_REGIONS + 1) * 64 + 64 + 128)
/*
 * The longest line jobspec_parse() takes, without its newline: a line over
 * JOBSPEC_MAX_LINE bytes is taken only when it is a canonical description
 * (what jobspec_render() makes, as ctl reads back), so that whatever the
 * daemon renders parses again.  With a newline and a NUL it fits in
 * JOBSPEC_MAX_CANONICAL bytes.
 */
#define JOBSPEC_MAX_CANONICAL_LINE (JOBSPEC_MAX_CANONICAL - 2)

enum jobspec_op {
	JOBSPEC_COPY,
	JOBSPEC_ZERO,
};

struct jobspec_region {
	char *path;		/* malloc'd: an absolute path (relative too from a command-line word), or a URI */
	bool is_uri;		/* @path is an NBD URI (kcopyd_is_nbd_uri()), taken as it is */
	uint64_t sector;	/* 0 when not given */
	uint64_t count;		/* valid when has_count */
	bool has_count;
};

struct jobspec {
	enum jobspec_op op;
	struct jobspec_region from;	/* copy only */
	unsigned int num_dests;
	struct jobspec_region dests[KCOPYD_MAX_REGIONS];
	unsigned int flags;		/* of JOBSPEC_FLAGS */
	unsigned int hashes;		/* KCOPYD_HASH_* bits of hash= (copy only); 0: none */
	uint64_t rate;			/* rate=, bytes per second (at least KCOPYD_MIN_RATE); 0: none given */
};

/*
 * jobspec_parse() - parse one job description.
 * @text, @len: the bytes written (not NUL-terminated; one trailing "\n" is allowed).
 * @spec:       filled on success; release with jobspec_free().
 * @why:        a one-line reason on failure.
 * @why_len:    size of @why; @why may be NULL when @why_len is 0.
 *
 * The line may hold no control character other than tab and the one
 * trailing newline (an embedded NUL or a second line is refused).  The
 * reason is one line naming the offending token, e.g.
 * 'to="rel/path": relative path'; input quoted into it is cut to 40 bytes
 * with non-printable bytes shown as \xNN.  It is NUL-terminated even when
 * cut short by @why_len.
 *
 * A line may be at most JOBSPEC_MAX_LINE bytes (without the newline); a
 * longer one, up to JOBSPEC_MAX_CANONICAL_LINE, only if it is exactly the
 * canonical form of what it describes (jobspec_render() of it, with every
 * region's count given, as the daemon renders a started job), so that
 * every description the daemon renders, with every count filled in, parses
 * back to itself (a count has at most 20 digits, and a description of
 * JOBSPEC_MAX_LINE bytes renders to less than JOBSPEC_MAX_CANONICAL).
 *
 * Return: 0; -E2BIG for a line over JOBSPEC_MAX_LINE bytes that is not a
 * canonical description, or over JOBSPEC_MAX_CANONICAL_LINE; -ERANGE when a
 * number does not fit in 64 bits or SECTOR+COUNT passes 2^64 sectors;
 * -ENOMEM; -EINVAL for anything else that is not a valid description (the
 * reason says what), an unknown hash name, hash=, flags=verify or rate=
 * on a zero job, or a rate jobspec_parse_rate() refuses.  On failure @spec
 * holds nothing to free.
 */
int jobspec_parse(const char *text, size_t len, struct jobspec *spec, char *why, size_t why_len);

/* jobspec_free() - free what jobspec_parse() allocated; the struct may be reused. */
void jobspec_free(struct jobspec *spec);

/*
 * jobspec_render() - the canonical description of @spec: every region spelled
 * out as PATH:SECTOR+COUNT (counts must all be set), paths quoted when
 * they need it (and a URI without a path, nbd://host:10809, so that the
 * port's colon is not read as the suffix's), flags by name, then hash=
 * (kcopyd_hash_name() of each bit, in bit order) and rate= (bytes) when
 * set, one line ending in "\n".  A region without
 * has_count is written without +COUNT; flags= is left out when there are
 * none; flag bits without a name are not written.  Because :SECTOR is
 * always written, a colon in a path needs no quotes; a path is quoted when
 * it holds blanks, quotes, backslashes or bytes outside printable ASCII.
 * What jobspec_parse() made, rendered and parsed again, is the same spec.
 * Return: the length written (without the NUL), or -ENOSPC if @len is too
 * small (then @buf holds an empty string if @len > 0).
 */
int jobspec_render(const struct jobspec *spec, char *buf, size_t len);

/*
 * jobspec_render_region() - @region as REGION text, PATH:SECTOR[+COUNT],
 * that parses back to it: quoted as jobspec_render() quotes it, or with
 * JOBSPEC_REGION_WORD as a command-line word (kcopy's resume command)
 * needs it, only for a leading quote or a URI without a path (the shell's
 * own quoting is the caller's).
 * Return: the length written (without the NUL), or -ENOSPC if @len is too small.
 */
int jobspec_render_region(const struct jobspec_region *region, unsigned int flags, char *buf, size_t len);

/*
 * jobspec_parse_number() - SECTOR or COUNT: decimal 512-byte sectors, or
 * bytes with a B, K, M, G or T suffix, or KiB, MiB, GiB or TiB (powers of
 * 1024, either case) that must be a multiple of 512 (only B can fail that:
 * 1K is two sectors).  KB, MB, GB and TB are refused (1000-based to
 * many tools, so ambiguous).  Nothing else is allowed: no sign, no blanks,
 * no other suffix; 4K is 8 sectors, 1m and 1MiB are 2048, 4096B is 8.
 * Return: 0 and *@sectors; -EINVAL if it is not such a number; -ERANGE on overflow.
 */
int jobspec_parse_number(const char *text, size_t len, uint64_t *sectors);

/*
 * jobspec_parse_rate() - a rate limit, RATE of rate=, kcopy --rate and
 * kcopydfs --rate: bytes per second, a plain number of bytes or one with a
 * B, K, M, G or T suffix, or KiB, MiB, GiB or TiB (powers of 1024, either
 * case), as the region numbers take them; KB, MB, GB and TB are refused
 * (1000-based to many tools).  At least KCOPYD_MIN_RATE (4K): a lower
 * rate, 0 included, is refused, since one 4 KiB block would wait more
 * than a second (no limit is written by leaving the limit out).
 * @why:     a one-line reason on failure, naming the text (cut to 40 bytes).
 * Return: 0 and *@bytes; -EINVAL for text that is not such a number, a
 * 1000-based unit, or a rate below 4K; -ERANGE when it passes 2^64 bytes.
 */
int jobspec_parse_rate(const char *text, size_t len, uint64_t *bytes, char *why, size_t why_len);

/* The longest scheme with its "://" kcopyd_is_nbd_uri() knows ("nbds+vsock://"), and some room. */
#define JOBSPEC_URI_SCHEME_MAX 32

/*
 * jobspec_is_uri() - @text[0, @len) starts as kcopyd_is_nbd_uri() says an
 * NBD URI does (a scheme nbd, nbds, nbd+unix, nbds+unix, nbd+vsock or
 * nbds+vsock, in any case, then "://").
 */
bool jobspec_is_uri(const char *text, size_t len);

/* A region given as one command-line word (kcopy), not as a token of a description line. */
#define JOBSPEC_REGION_WORD	(1u << 0)

/*
 * jobspec_parse_region_flags() - jobspec_parse_region() with @flags:
 * JOBSPEC_REGION_WORD for a command-line argument, which the shell split
 * already: a relative path is taken (kcopy makes it absolute for --via),
 * and an unquoted path may hold blanks, quotes after its first byte and
 * control characters.  Everything else is the same grammar.
 */
int jobspec_parse_region_flags(const char *text, size_t len, unsigned int flags, struct jobspec_region *region,
			       char *why, size_t why_len);

/*
 * jobspec_parse_region() - split REGION into path, sector and count.  The
 * suffix is split off at the last ':' only when what follows is
 * SECTOR[+COUNT]; otherwise the whole text is the path.  A path may be
 * written in double quotes (with \" and \\ inside), followed by the suffix.
 * So /dev/disk/by-path/pci-0000:00:1f.2-ata-1 is a path, and so is
 * /dev/x:abc; but a name that itself ends in :NUMBER (a SCSI by-path name
 * ending in -scsi-0:0:0:0) needs its sector written out (...:0:0:0:0:0) or
 * its path quoted.
 *
 * A URI (see jobspec_is_uri(); quoted or not) sets is_uri and is taken as
 * it is, without the absolute-path rule; its suffix is split off only at
 * a colon after the authority (after the first '/' that follows "://"):
 * nbd://host:10809 is the port, sector 0; nbd://host:10809/:8 is export ""
 * at sector 8; nbd://[::1]:10809/disk:8 is export "disk" at sector 8;
 * nbd://host/a:b is export "a:b"; nbd://host/vm:1 is sector 1 of "vm",
 * whose export "vm:1" is written nbd://host/vm%3A1 or nbd://host/vm:1:0.
 * A local file whose name starts like a URI is written with its absolute
 * path (or ./nbd:... on kcopy's command line).
 *
 * The reason starts with the region in double quotes.
 * Return: 0; -EINVAL with a reason (relative path, empty path, bad number,
 * unterminated quote); -ERANGE when a number or SECTOR+COUNT passes
 * 2^64; -ENOMEM.  On failure @region holds nothing to free.
 */
int jobspec_parse_region(const char *text, size_t len, struct jobspec_region *region, char *why,
			 size_t why_len);

#endif /* KCOPYD_PROTO_JOBSPEC_H */
