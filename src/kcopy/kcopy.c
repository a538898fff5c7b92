/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * kcopy: copy a range of a block device or file to one or many
 * destinations, or zero ranges, with the libkcopyd engine directly (no
 * daemon), or with --via MOUNT through a kcopydfs mount (via.c).  Think of
 * dd(1) with up to KCOPYD_MAX_REGIONS outputs.
 *
 *   kcopy [OPTIONS] SRC[:SECTOR[+COUNT]] DST[:SECTOR] [DST[:SECTOR]...]
 *   kcopy [OPTIONS] --zero DST[:SECTOR[+COUNT]]...
 *
 * Build: part of the tree (`autoreconf -fi && ./configure && make`).
 * Run:   ./kcopy --progress /dev/loop0 /dev/loop1 copy.img
 *
 * The flow of main() is a straight line of stages, each of which reports
 * its own errors on stderr and returns 0 or -errno:
 *
 *   parse the command line -> open the source -> settle the count ->
 *   claim/open/check the destinations as they will be -> create/extend
 *   them -> validate -> run the job (progress, signals) -> fsync the
 *   destinations -> report
 *
 * and one goto ladder at the end of main() closes whatever was opened and,
 * if kcopy refused before the job started, removes the files it created
 * and cuts back the ones it extended: a refusal changes nothing on disk.
 * With --via, the mount is checked first, the engine's devices are closed
 * before the job, and the daemon validates and runs it (via_run_job()).
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <ctype.h>
#include <getopt.h>
#include <inttypes.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "kcopyd.h"
#include "kcopy.h"
#include "proto/status.h"
#include "via.h"


/* ---------------------------------------------------------------------
 * Small helpers
 * --------------------------------------------------------------------- */

/*
 * exit_status_for() - the exit status for a failed stage.
 * @error: the stage's negative errno.
 *
 * -EINVAL, -ERANGE and -EBADF are what the command line and
 * kcopyd_validate() refuse (usage errors), -EBUSY a destination device in
 * use, -EFBIG a range no file there can hold, and -E2BIG a job description
 * too long for a kcopydfs daemon (--via): all refused regions.  Anything
 * else came from the system (a file that cannot be opened, no memory, ...).
 */
static int exit_status_for(int error)
{
	switch (error) {
	case -EINVAL:
	case -ERANGE:
	case -EBADF:
	case -E2BIG:
	case -EBUSY:	/* a destination mounted or held by another program */
	case -EFBIG:	/* a range past the file size limit or the filesystem's largest file */
	case -EROFS:	/* a read-only NBD export as a destination */
		return EXIT_USAGE;
	default:
		return EXIT_IO_ERROR;
	}
}

/*
 * parse_region_arg() - split (PATH|URI)[:SECTOR[+COUNT]] by the grammar
 * kcopydfs's ctl uses (jobspec_parse_region_flags(), kcopy(1) REGIONS),
 * as a command-line word: a relative path is taken, and the shell's
 * quoting is not ours (blanks in a name need no double quotes).
 * @arg:    the command-line argument.
 * @region: receives the path or URI (malloc'd) and the numbers.
 * Return: 0; -EINVAL or -ERANGE for a bad number or an empty path
 * (reported, with the grammar's reason); -ENOMEM.
 */
static int parse_region_arg(const char *arg, struct jobspec_region *region)
{
	char why[512];
	int ret;

	ret = jobspec_parse_region_flags(arg, strlen(arg), JOBSPEC_REGION_WORD, region, why, sizeof(why));
	if (ret == -ENOMEM)
		complain("out of memory");
	else if (ret)
		complain("%s", why);
	return ret;
}

/* ---------------------------------------------------------------------
 * The command line
 * --------------------------------------------------------------------- */

enum {
	OPTION_PAGES = 256,
	OPTION_SUBJOB_KB,
	OPTION_DEPTH,
	OPTION_IGNORE_ERRORS,
	OPTION_WRITE_SEQ,
	OPTION_PROGRESS,
	OPTION_ZERO,
	OPTION_VIA,
	OPTION_DESTINATION_IS_ZERO,
	OPTION_ALLOCATED,
	OPTION_NO_OFFLOAD,
	OPTION_IO_ENGINE,
	OPTION_HASH,
	OPTION_VERIFY,
	OPTION_RATE,
};

static const struct option long_options[] = {
	{ "pages",		required_argument,	NULL, OPTION_PAGES },
	{ "subjob-kb",		required_argument,	NULL, OPTION_SUBJOB_KB },
	{ "depth",		required_argument,	NULL, OPTION_DEPTH },
	{ "ignore-errors",	no_argument,		NULL, OPTION_IGNORE_ERRORS },
	{ "write-seq",		no_argument,		NULL, OPTION_WRITE_SEQ },
	{ "quiet",		no_argument,		NULL, 'q' },
	{ "progress",		optional_argument,	NULL, OPTION_PROGRESS },
	{ "zero",		no_argument,		NULL, OPTION_ZERO },
	{ "destination-is-zero", no_argument,		NULL, OPTION_DESTINATION_IS_ZERO },
	{ "allocated",		no_argument,		NULL, OPTION_ALLOCATED },
	{ "no-offload",		no_argument,		NULL, OPTION_NO_OFFLOAD },
	{ "io-engine",		required_argument,	NULL, OPTION_IO_ENGINE },
	{ "hash",		required_argument,	NULL, OPTION_HASH },
	{ "verify",		no_argument,		NULL, OPTION_VERIFY },
	{ "rate",		required_argument,	NULL, OPTION_RATE },
	{ "verbose",		no_argument,		NULL, 'v' },
	{ "via",		required_argument,	NULL, OPTION_VIA },
	{ "help",		no_argument,		NULL, 'h' },
	{ "version",		no_argument,		NULL, 'V' },
	{ NULL, 0, NULL, 0 },
};

/* print_usage() - the --help text. */
static void print_usage(FILE *out)
{
	fprintf(out,
"Usage: kcopy [OPTIONS] SRC[:SECTOR[+COUNT]] DST[:SECTOR] [DST[:SECTOR]...]\n"
"       kcopy [OPTIONS] --zero DST[:SECTOR[+COUNT]]...\n"
"\n"
"Copy a range of a block device or file to up to %u destinations with the\n"
"libkcopyd engine (O_DIRECT; io_uring or libaio), or write zeros to ranges.\n"
"\n"
"SRC and DST are files, block devices or NBD URIs (nbd://HOST[:PORT]/EXPORT,\n"
"nbd+unix:///EXPORT?socket=PATH, nbds://...).  SECTOR and COUNT are 512-byte\n"
"sectors, or bytes with a B, K, M, G, T, KiB, MiB, GiB or TiB unit (powers\n"
"of 1024, a multiple of 512).  Without COUNT the copy runs to the end of\n"
"SRC; every destination gets the same count.  A destination file that does\n"
"not exist is created, one that is too small is extended.\n"
"\n"
"Copies are sparse: holes of SRC are not read, and ranges that read as zeros\n"
"are zeroed (holes punched, BLKZEROOUT) or, in a file kcopy created or past\n"
"the old end of one it extended, skipped; file to file is copy_file_range(2)\n"
"(a reflink on btrfs and XFS).\n"
"\n"
"Options:\n"
"      --pages N        I/O buffer budget in 4 KiB pages (default %u = 64 MiB)\n"
"      --subjob-kb N    sub-job size in KiB, a multiple of 4 (default %u)\n"
"      --depth N        sub-jobs in flight (default %u)\n"
"      --io-engine=ENGINE  auto (io_uring where the kernel allows it, else\n"
"                       libaio; the default, or $KCOPYD_IO_ENGINE), io_uring\n"
"                       or libaio (an engine named that cannot run is an error)\n"
"      --ignore-errors  go on after I/O errors (unreadable data is written as zeros)\n"
"      --write-seq      write each destination in ascending order\n"
"      --zero           write zeros instead of copying (no SRC)\n"
"      --destination-is-zero\n"
"                       every destination reads as zeros already: skip zero\n"
"                       ranges instead of zeroing them\n"
"      --allocated      leave every destination range allocated: zero ranges\n"
"                       as zero writes that keep it (no holes punched)\n"
"      --no-offload     never copy_file_range(2): read and write everything\n"
"      --hash=ALG[,ALG] digests of the source as it is read, printed as\n"
"                       hash: ALG:HEX (md5, sha1, sha256, sha512, blake2b512,\n"
"                       xxh128: what md5sum ... b2sum and xxhsum -H2 print)\n"
"      --verify         read every destination back after the copy and\n"
"                       compare it with what was read (exit 3 if one differs)\n"
"      --rate=BYTES     read at most BYTES a second (K, M, G, T or KiB ...\n"
"                       suffixes, powers of 1024; at least 4K)\n"
"      --via MOUNT      run the job in the kcopydfs daemon mounted at MOUNT\n"
"                       instead of in this process (not with --pages,\n"
"                       --subjob-kb, --depth or --io-engine: the daemon's)\n"
"      --progress       show a progress bar even when stderr is no terminal\n"
"      --progress=FD    write progress for programs to descriptor FD, one line\n"
"                       about a second: PERCENT/100 DONE_BYTES TOTAL_BYTES STATE\n"
"                       (STATE: running; at the end done, cancelled or failed)\n"
"  -q, --quiet          no progress bar and no summary\n"
"  -v, --verbose        say how the copy runs: the I/O engine and why, the\n"
"                       buffers, the sub-jobs\n"
"  -h, --help           show this help and exit\n"
"  -V, --version        show the version and exit\n"
"\n"
"SIGUSR1 prints the progress on stderr (not with --quiet).  SIGINT, SIGTERM\n"
"or SIGHUP cancel the copy; kcopy then prints the command that copies the\n"
"rest.  ^Z (SIGTSTP) stops kcopy, and with --via pauses the daemon's job.\n"
"\n"
"Exit status: 0 success, 1 I/O error or cancelled, 2 usage or refused regions,\n"
"3 --verify found a destination that does not read back as the source.\n"
"Cancelled by SIGHUP, SIGINT or SIGTERM: 129, 130 or 143.  See kcopy(1).\n",
		KCOPYD_MAX_REGIONS, KCOPY_DEFAULT_PAGES, KCOPYD_DEFAULT_SUBJOB_SECTORS / 2, KCOPYD_DEFAULT_DEPTH);
}

/*
 * parse_unsigned_option() - read the argument of a numeric option.
 * @name:    the option, for messages.
 * @text:    its argument.
 * @minimum: the smallest value allowed.
 * @maximum: the largest value allowed.
 * @value:   receives the number.
 * Return: 0, or -EINVAL (reported).
 */
static int parse_unsigned_option(const char *name, const char *text, unsigned long minimum,
				  unsigned long maximum, unsigned int *value)
{
	unsigned long number;
	char *end;

	if (text[0] < '0' || text[0] > '9')
		goto err_bad_number;
	errno = 0;
	number = strtoul(text, &end, 10);
	if (errno || *end)
		goto err_bad_number;
	if (number < minimum || number > maximum) {
		complain("--%s: %s is out of range (%lu to %lu)", name, text, minimum, maximum);
		return -EINVAL;
	}
	*value = (unsigned int)number;
	return 0;

err_bad_number:
	complain("--%s: '%s' is not a number", name, text);
	return -EINVAL;
}

/*
 * parse_progress_fd() - read the FD of --progress=FD: a descriptor open
 * for writing.
 * Return: 0, or -EINVAL (reported).
 */
static int parse_progress_fd(const char *text, int *fd)
{
	unsigned int number;
	int flags;

	if (parse_unsigned_option("progress", text, 0, INT_MAX, &number))
		return -EINVAL;
	flags = fcntl((int)number, F_GETFL);
	if (flags < 0) {
		complain("--progress=%u: descriptor %u is not open", number, number);
		return -EINVAL;
	}
	if ((flags & O_ACCMODE) == O_RDONLY) {
		complain("--progress=%u: descriptor %u is not open for writing", number, number);
		return -EINVAL;
	}
	*fd = (int)number;
	return 0;
}

/*
 * parse_rate() - the BYTES of --rate, as ctl's rate= and kcopydfs --rate
 * read them (jobspec_parse_rate()).
 * Return: 0 and *@bytes; -EINVAL (reported).
 */
static int parse_rate(const char *text, uint64_t *bytes)
{
	char why[160];

	if (jobspec_parse_rate(text, strlen(text), bytes, why, sizeof(why)) == 0)
		return 0;
	complain("--rate: %s", why);
	return -EINVAL;
}

/*
 * parse_hashes() - the ALG[,ALG...] of --hash, added to *@hashes: names
 * as kcopyd_hash_parse() takes them.
 * Return: 0; -EINVAL for an unknown or empty name (reported).
 */
static int parse_hashes(const char *text, unsigned int *hashes)
{
	const char *name = text;

	for (;;) {
		size_t len = strcspn(name, ",");
		char word[32];
		unsigned int hash;

		if (len == 0 || len >= sizeof(word)) {
			complain("--hash=%s: %s", text, len ? "an unknown algorithm" : "an empty algorithm name");
			goto err_list;
		}
		memcpy(word, name, len);
		word[len] = '\0';
		if (kcopyd_hash_parse(word, &hash)) {
			complain("--hash=%s: unknown algorithm '%s'", text, word);
			goto err_list;
		}
		*hashes |= hash;
		if (name[len] == '\0')
			return 0;
		name += len + 1;
	}

err_list:
	fputs("kcopy: algorithms: md5, sha1, sha256, sha512, blake2b512 (b2), xxh128 (xxh3-128)\n", stderr);
	return -EINVAL;
}

/*
 * engine_asked() - the I/O engine this run asks for, for --verbose:
 * --io-engine, else $KCOPYD_IO_ENGINE, else auto (as the library resolves
 * it; an unknown name in the variable was refused by check_engine_env()).
 */
static unsigned int engine_asked(const struct kcopy *state)
{
	/* secure_getenv(), as the library reads it. */
	const char *name = secure_getenv("KCOPYD_IO_ENGINE");
	unsigned int engine = KCOPYD_IO_ENGINE_AUTO;

	if (state->config.io_engine != KCOPYD_IO_ENGINE_DEFAULT)
		return state->config.io_engine;
	if (name && *name)
		(void)kcopyd_io_engine_parse(name, &engine);
	return engine;
}

/*
 * check_engine_env() - refuse a $KCOPYD_IO_ENGINE that names no engine,
 * when it is the choice (no --io-engine: the option wins, and the library
 * then never reads the variable).  Return: 0 or -EINVAL (reported).
 */
static int check_engine_env(const struct kcopy *state)
{
	const char *name = secure_getenv("KCOPYD_IO_ENGINE");
	unsigned int engine;

	if (state->config.io_engine != KCOPYD_IO_ENGINE_DEFAULT || !name || !*name ||
	    kcopyd_io_engine_parse(name, &engine) == 0)
		return 0;
	complain("KCOPYD_IO_ENGINE='%s' is not auto, io_uring or libaio", name);
	return -EINVAL;
}

/* say_engine() - --verbose: the I/O engine @client runs, and why; its buffers and sub-jobs. */
static void say_engine(const struct kcopy *state, struct kcopyd_client *client)
{
	struct kcopyd_stats stats;
	char why[256];
	unsigned int engine = kcopyd_client_io_engine(client, why, sizeof(why));

	kcopyd_client_stats(client, &stats);
	fprintf(stderr, "kcopy: I/O engine %s (asked: %s)%s%s\n", kcopyd_io_engine_name(engine),
		kcopyd_io_engine_name(engine_asked(state)), why[0] ? ": " : "", why);
	fprintf(stderr, "kcopy: %u pages of buffers, sub-jobs of %u KiB, %u in flight\n", stats.pages_total,
		stats.subjob_sectors / 2, stats.depth);
}

/*
 * parse_command_line() - fill @state from the arguments.
 * @exit_now: set when --help or --version was handled.
 * Return: 0; -EINVAL or -ERANGE for a usage error (reported, with the
 * hint to try --help); -ENOMEM.
 */
static int parse_command_line(int argc, char **argv, struct kcopy *state, bool *exit_now)
{
	unsigned int subjob_kb;
	unsigned int min_args;
	int option, arg_index, ret;

	state->config.num_pages = KCOPY_DEFAULT_PAGES;
	opterr = 0;	/* our own messages: argv[0] may be a libtool "lt-kcopy" */
	while ((option = getopt_long(argc, argv, ":qvhV", long_options, NULL)) != -1) {
		switch (option) {
		case OPTION_PAGES:
			ret = parse_unsigned_option("pages", optarg, 1, UINT_MAX, &state->config.num_pages);
			if (ret)
				goto err_usage;
			state->engine_options = true;
			break;
		case OPTION_SUBJOB_KB:
			ret = parse_unsigned_option("subjob-kb", optarg, KCOPYD_PAGE_SIZE / 1024,
						    UINT_MAX / 2, &subjob_kb);
			if (ret)
				goto err_usage;
			if (subjob_kb % (KCOPYD_PAGE_SIZE / 1024)) {
				complain("--subjob-kb: %u is not a multiple of %u (one page)",
					 subjob_kb, KCOPYD_PAGE_SIZE / 1024);
				ret = -EINVAL;
				goto err_usage;
			}
			state->config.subjob_sectors = subjob_kb * (1024 / KCOPYD_SECTOR_SIZE);
			state->engine_options = true;
			break;
		case OPTION_DEPTH:
			ret = parse_unsigned_option("depth", optarg, 1, UINT_MAX, &state->config.depth);
			if (ret)
				goto err_usage;
			state->engine_options = true;
			break;
		case OPTION_VIA:
			if (!optarg[0]) {
				complain("--via: an empty mountpoint");
				ret = -EINVAL;
				goto err_usage;
			}
			state->via = optarg;
			break;
		case OPTION_IGNORE_ERRORS:
			state->job_flags |= KCOPYD_IGNORE_ERROR;
			break;
		case OPTION_WRITE_SEQ:
			state->job_flags |= KCOPYD_WRITE_SEQ;
			break;
		case OPTION_PROGRESS:
			if (!optarg) {
				state->progress_forced = true;
				break;
			}
			ret = parse_progress_fd(optarg, &state->progress_fd);
			if (ret)
				goto err_usage;
			break;
		case OPTION_ZERO:
			state->zero = true;
			break;
		case OPTION_DESTINATION_IS_ZERO:
			state->job_flags |= KCOPYD_DEST_ZERO;
			break;
		case OPTION_ALLOCATED:
			state->job_flags |= KCOPYD_ALLOCATED;
			break;
		case OPTION_NO_OFFLOAD:
			state->job_flags |= KCOPYD_NO_OFFLOAD;
			break;
		case OPTION_IO_ENGINE:
			if (kcopyd_io_engine_parse(optarg, &state->config.io_engine)) {
				complain("--io-engine: '%s' is not auto, io_uring or libaio", optarg);
				ret = -EINVAL;
				goto err_usage;
			}
			state->engine_options = true;
			break;
		case OPTION_HASH:
			ret = parse_hashes(optarg, &state->hashes);
			if (ret)
				goto err_usage;
			break;
		case OPTION_VERIFY:
			state->verify = true;
			break;
		case OPTION_RATE:
			ret = parse_rate(optarg, &state->rate);
			if (ret)
				goto err_usage;
			break;
		case 'q':
			state->quiet = true;
			break;
		case 'v':
			state->verbose = true;
			break;
		case 'h':
			print_usage(stdout);
			*exit_now = true;
			return 0;
		case 'V':
			printf("kcopy (kcopyd) %s\n"
			       "License LGPLv2.1+: GNU LGPL version 2.1 or later <https://gnu.org/licenses/lgpl-2.1.html>.\n"
			       "This is free software: you are free to change and redistribute it.\n"
			       "There is NO WARRANTY, to the extent permitted by law.\n",
			       PACKAGE_VERSION);
			*exit_now = true;
			return 0;
		case ':':
			complain("option '%s' needs an argument", argv[optind - 1]);
			ret = -EINVAL;
			goto err_usage;
		default:
			if (strncmp(argv[optind - 1], "--", 2) == 0 || !optopt)
				complain("unrecognized or ambiguous option '%s'", argv[optind - 1]);
			else
				complain("unknown option '-%c'", optopt);
			ret = -EINVAL;
			goto err_usage;
		}
	}

	if (state->via && state->engine_options) {
		/* They size the engine, and with --via the engine is the daemon's (kcopydfs(8) options). */
		complain("--pages, --subjob-kb, --depth and --io-engine cannot go with --via: "
			 "the daemon's engine is set up by kcopydfs");
		ret = -EINVAL;
		goto err_usage;
	}

	if (state->zero && (state->hashes || state->verify || state->rate)) {
		/* A zero job reads nothing to hash, to compare with or to count against a rate. */
		complain("--%s cannot go with --zero: there is no source", state->hashes ? "hash" :
			 state->verify ? "verify" : "rate");
		ret = -EINVAL;
		goto err_usage;
	}

	if (!state->via && check_engine_env(state)) {
		ret = -EINVAL;
		goto err_usage;
	}

	min_args = state->zero ? 1 : 2;
	if ((unsigned int)(argc - optind) < min_args) {
		complain(state->zero ? "--zero needs at least one destination"
				     : "needs a source and at least one destination");
		ret = -EINVAL;
		goto err_usage;
	}
	state->num_dests = (unsigned int)(argc - optind) - (state->zero ? 0 : 1);
	if (state->num_dests > KCOPYD_MAX_REGIONS) {
		complain("%u destinations: at most %u are allowed", state->num_dests, KCOPYD_MAX_REGIONS);
		ret = -EINVAL;
		goto err_usage;
	}

	arg_index = optind;
	if (!state->zero) {
		ret = parse_region_arg(argv[arg_index++], &state->source);
		if (ret)
			goto err_usage;
	}
	for (unsigned int dest_index = 0; dest_index < state->num_dests; dest_index++) {
		ret = parse_region_arg(argv[arg_index++], &state->dests[dest_index].where);
		if (ret)
			goto err_usage;
	}
	return 0;

err_usage:
	if (ret != -ENOMEM)
		fputs("Try 'kcopy --help' for more information.\n", stderr);
	return ret;
}

/* ---------------------------------------------------------------------
 * Opening the source and the destinations
 * --------------------------------------------------------------------- */

/*
 * nbd_open_problem() - what an NBD open's -errno means to a user, in
 * words: kcopyd_dev_open_nbd()'s documented errors, one phrase each.
 */
static const char *nbd_open_problem(int error, int flags, char *errbuf, size_t errbuf_len)
{
	switch (error) {
	case -ECONNREFUSED:
		return "connection refused (no NBD server listens there)";
	case -EHOSTUNREACH:
	case -ENETUNREACH:
		return "host unreachable";
	case -ENOENT:
		return "no such host, socket or export";
	case -EACCES:
		return "TLS refused: the key is wrong, or the server requires TLS and none was given (nbds://...?tls-psk-file=)";
	case -EROFS:
		return flags == O_RDWR ? "the export is read-only: it cannot be a destination" : "read-only";
	case -ETIMEDOUT:
		return "the server did not answer in time";
	case -EINVAL:
		return "not an NBD URI kcopy can use";
	case -EPROTONOSUPPORT:
		return "NBD is not supported by this build";
	default:
		return errno_text(error, errbuf, errbuf_len);
	}
}

/*
 * open_region() - open @where for the engine: a path with
 * kcopyd_dev_open(), an NBD URI with kcopyd_dev_open_nbd() (for its
 * reason, libnbd's words where it had some).
 * @flags: O_RDONLY for the source, O_RDWR for a destination.
 * Return: 0; the -errno of the open (reported, one line).
 */
static int open_region(const struct jobspec_region *where, int flags, struct kcopyd_dev **dev)
{
	char errbuf[ERRNO_TEXT_LEN], why[512] = "";
	int ret;

	if (!where->is_uri) {
		ret = kcopyd_dev_open(where->path, flags, dev);
		if (ret == -EINVAL)
			complain("%s: not a block device or regular file", where->path);
		else if (ret)
			complain("%s: cannot open%s: %s", where->path, flags == O_RDWR ? " for writing" : "",
				 errno_text(ret, errbuf, sizeof(errbuf)));
		return ret;
	}
	ret = kcopyd_dev_open_nbd(where->path, flags, NULL, 0, dev, why, sizeof(why));
	if (ret)
		complain("%s: cannot open%s: %s%s%s%s", where->path, flags == O_RDWR ? " for writing" : "",
			 nbd_open_problem(ret, flags, errbuf, sizeof(errbuf)), why[0] ? " (" : "", why,
			 why[0] ? ")" : "");
	return ret;
}

/*
 * check_source_region() - the checks of kcopyd_validate() that concern the
 * source alone, done before any destination is created or extended, with
 * a message that names SRC.
 * Return: 0; -ERANGE past the end; -EINVAL misaligned (reported).
 */
static int check_source_region(const struct kcopy *state)
{
	const char *path = state->source.path;
	uint64_t sector = state->source.sector;
	unsigned int block_size = kcopyd_dev_block_size(state->source_dev);
	uint64_t source_sectors = kcopyd_dev_sectors(state->source_dev);
	uint64_t block_sectors = block_size / KCOPYD_SECTOR_SIZE;

	if (sector > source_sectors || state->count > source_sectors - sector) {
		complain("%s: sectors %" PRIu64 "+%" PRIu64 " run past its end (%" PRIu64 " sectors)",
			 path, sector, state->count, source_sectors);
		return -ERANGE;
	}
	if (block_sectors > 1 && (sector % block_sectors || state->count % block_sectors)) {
		complain("%s: sectors %" PRIu64 "+%" PRIu64 " are not aligned to its %u-byte blocks",
			 path, sector, state->count, block_size);
		return -EINVAL;
	}
	return 0;
}

/*
 * open_source() - open SRC read-only, settle the count of the copy (COUNT
 * if given, else the rest of SRC from SECTOR) and check the source region.
 * Return: 0; as check_source_region(); the -errno of kcopyd_dev_open().
 * All reported.
 */
static int open_source(struct kcopy *state)
{
	struct jobspec_region *source = &state->source;
	uint64_t source_sectors;
	int ret;

	ret = open_region(source, O_RDONLY, &state->source_dev);
	if (ret)
		return ret;
	source_sectors = kcopyd_dev_sectors(state->source_dev);
	if (source->has_count) {
		state->count = source->count;
	} else if (source->sector > source_sectors) {
		complain("%s: sector %" PRIu64 " is past its end (%" PRIu64 " sectors)",
			 source->path, source->sector, source_sectors);
		return -ERANGE;
	} else {
		state->count = source_sectors - source->sector;
	}
	return check_source_region(state);
}

/*
 * claim_block_device() - hold the block device open as @dest->sync_fd
 * with O_EXCL for the whole copy, as the kcopydfs daemon does: one that is
 * mounted or held exclusively by another program (a RAID member, a swap
 * device, another kcopy) is refused, and nobody can mount it while we
 * write.  The claim reopens that descriptor (/proc/self/fd), so it is of
 * the device opened, whatever the path leads to by now.  A device given
 * twice is claimed once, by its first destination.
 * Return: 0; -EBUSY if it is in use; the -errno of open(2).  Reported.
 */
static int claim_block_device(struct kcopy *state, unsigned int dest_index)
{
	struct destination *dest = &state->dests[dest_index];
	char errbuf[ERRNO_TEXT_LEN], fd_path[64];
	int ret;

	for (unsigned int other = 0; other < dest_index; other++)
		if (state->dests[other].claim_fd >= 0 && state->dests[other].before.st_rdev == dest->before.st_rdev)
			return 0;
	snprintf(fd_path, sizeof(fd_path), "/proc/self/fd/%d", dest->sync_fd);
	dest->claim_fd = open(fd_path, O_RDONLY | O_EXCL | O_CLOEXEC | O_NONBLOCK);
	if (dest->claim_fd >= 0)
		return 0;
	ret = -errno;
	if (ret == -EBUSY)
		complain("%s: in use (mounted, or held exclusively by another program): refusing to write to it "
			 "(a disk and a partition of it cannot both be destinations of one copy)", dest->where.path);
	else
		complain("%s: cannot open: %s", dest->where.path, errno_text(ret, errbuf, sizeof(errbuf)));
	return ret;
}

/*
 * open_destination() - open one existing destination for writing and for
 * the final fsync.
 * Return: 0; the -errno of the step that failed (reported).
 */
static int open_destination(struct destination *dest)
{
	const char *path = dest->where.path;
	char errbuf[ERRNO_TEXT_LEN];
	int ret;

	/*
	 * The engine's device is opaque; fsync through any descriptor of the
	 * file flushes it.  O_NONBLOCK: a FIFO given by mistake must not hang
	 * us here (kcopyd_dev_open() refuses it next).
	 */
	dest->sync_fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
	if (dest->sync_fd < 0) {
		ret = -errno;
		complain("%s: cannot open: %s", path, errno_text(ret, errbuf, sizeof(errbuf)));
		return ret;
	}

	ret = open_region(&dest->where, O_RDWR, &dest->dev);
	if (ret)
		goto err_close_sync_fd;
	return 0;

err_close_sync_fd:
	close(dest->sync_fd);
	dest->sync_fd = -1;
	return ret;
}

/*
 * open_existing_destination() - open destination @dest_index, which
 * exists, once: note what it was (->before, from the descriptor), and
 * claim it if it is a block device (not with --via: the daemon claims).
 * Does nothing if it is open already (settle_zero_count() opens the first).
 * Return: 0; as open_destination() and claim_block_device().  Reported.
 */
static int open_existing_destination(struct kcopy *state, unsigned int dest_index)
{
	struct destination *dest = &state->dests[dest_index];
	int ret;

	if (dest->dev)
		return 0;
	if (dest->where.is_uri) {
		/* An export: nothing to stat, claim or fsync; the server has its size and flushes. */
		dest->exists = true;
		return open_region(&dest->where, O_RDWR, &dest->dev);
	}
	ret = open_destination(dest);
	if (ret)
		return ret;
	dest->exists = true;
	if (fstat(dest->sync_fd, &dest->before) < 0) {
		ret = -errno;
		complain("%s: cannot stat: %s", dest->where.path, strerror(-ret));
		return ret;
	}
	if (S_ISBLK(dest->before.st_mode) && !state->via)
		return claim_block_device(state, dest_index);
	return 0;
}

/*
 * probe_file_size() - whether a file of @end_bytes can be made beside
 * @path, without making one: an O_TMPFILE in its directory (never linked,
 * gone at close) is extended to that size.  Also learns the alignment a
 * new file there will have.
 * @block_size: receives that alignment; 0 if it cannot be learnt.
 * Return: 0; -EFBIG if the filesystem refuses that size (reported).  A
 * filesystem without O_TMPFILE is not probed (0, *@block_size 0): the
 * file is then removed again if its extension fails.
 */
static int probe_file_size(const char *path, uint64_t end_bytes, unsigned int *block_size)
{
	char *slash = strrchr(path, '/');
	char dir[PATH_MAX];
	struct kcopyd_dev *probe;
	int fd;

	*block_size = 0;
	if (!slash)
		snprintf(dir, sizeof(dir), ".");
	else if (slash == path)
		snprintf(dir, sizeof(dir), "/");
	else
		snprintf(dir, sizeof(dir), "%.*s", (int)(slash - path), path);
	fd = open(dir, O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
	if (fd < 0)
		return 0;
	if (ftruncate(fd, (off_t)end_bytes) && (errno == EFBIG || errno == EINVAL)) {
		close(fd);
		complain("%s: %" PRIu64 " bytes is beyond the largest file its filesystem allows", path, end_bytes);
		return -EFBIG;
	}
	if (kcopyd_dev_from_fd(fd, &probe) == 0) {	/* closes fd either way */
		*block_size = kcopyd_dev_block_size(probe);
		kcopyd_dev_close(probe);
	}
	return 0;
}

/*
 * plan_destination() - look at one destination without changing it: claim
 * and open it if it exists, and decide whether it must be created or
 * extended, and whether it can be (the file size limit of ulimit -f, the
 * filesystem's largest file).
 * Return: 0; -EBUSY (in use), -EFBIG (too large), -ERANGE; the -errno of a
 * step that failed.  Reported.
 */
static int plan_destination(struct kcopy *state, unsigned int dest_index)
{
	struct destination *dest = &state->dests[dest_index];
	const char *path = dest->where.path;
	char errbuf[ERRNO_TEXT_LEN];
	struct rlimit fsize;
	struct stat dir_st;
	int ret;

	if (dest->where.sector > UINT64_MAX - state->count ||
	    dest->where.sector + state->count > (uint64_t)INT64_MAX >> KCOPYD_SECTOR_SHIFT) {
		complain("%s: sector %" PRIu64 " + %" PRIu64 " is beyond any file or device size",
			 path, dest->where.sector, state->count);
		return -ERANGE;
	}
	dest->end_bytes = (dest->where.sector + state->count) << KCOPYD_SECTOR_SHIFT;

	/* An NBD export is not a file: it is neither created nor extended, its size is the server's. */
	if (dest->where.is_uri)
		return open_existing_destination(state, dest_index);
	if (stat(path, &dest->before) == 0) {
		ret = open_existing_destination(state, dest_index);
		if (ret)
			return ret;
		if (!S_ISREG(dest->before.st_mode))
			return 0;
		dest->grow = (uint64_t)dest->before.st_size < dest->end_bytes;
	} else if (errno == ENOENT) {
		char *slash = strrchr(path, '/');
		char dir[PATH_MAX];

		dest->grow = true;
		dest->new_name = slash ? slash + 1 : path;
		snprintf(dir, sizeof(dir), "%.*s", slash ? (int)(slash - path) + 1 : 1, slash ? path : ".");
		if (stat(dir, &dir_st) == 0) {
			dest->new_dir_dev = dir_st.st_dev;
			dest->new_dir_ino = dir_st.st_ino;
		}
	} else {
		ret = -errno;
		complain("%s: %s", path, errno_text(ret, errbuf, sizeof(errbuf)));
		return ret;
	}

	/* Writing past RLIMIT_FSIZE would fail (EFBIG) half-way: refuse it now. */
	if (getrlimit(RLIMIT_FSIZE, &fsize) == 0 && fsize.rlim_cur != RLIM_INFINITY &&
	    dest->end_bytes > (uint64_t)fsize.rlim_cur) {
		complain("%s: the range ends at byte %" PRIu64 ", beyond the file size limit of %" PRIu64
			 " bytes (ulimit -f)", path, dest->end_bytes, (uint64_t)fsize.rlim_cur);
		return -EFBIG;
	}
	if (dest->grow)
		return probe_file_size(path, dest->end_bytes, &dest->new_block_size);
	return 0;
}

/*
 * check_planned_regions() - what kcopyd_validate() will check, on the
 * destinations as they will be once created and extended: inside, aligned,
 * no overlap with the source or each other (through loop devices and
 * partitions too: kcopyd_regions_overlap()).  Nothing exists yet to hand
 * kcopyd_validate() itself, which is called again afterwards.
 * Return: 0; -ERANGE; -EINVAL.  Reported, naming the destination.
 */
static int check_planned_regions(struct kcopy *state)
{
	struct io_region source = { .bdev = state->source_dev, .sector = state->source.sector, .count = state->count };

	for (unsigned int dest_index = 0; dest_index < state->num_dests; dest_index++) {
		struct destination *dest = &state->dests[dest_index];
		struct io_region here = { .bdev = dest->dev, .sector = dest->where.sector, .count = state->count };
		uint64_t sectors, block_sectors;
		unsigned int block_size;

		block_size = dest->dev ? kcopyd_dev_block_size(dest->dev) : dest->new_block_size;
		sectors = dest->grow ? dest->end_bytes >> KCOPYD_SECTOR_SHIFT : kcopyd_dev_sectors(dest->dev);
		if (dest->grow && dest->dev && kcopyd_dev_sectors(dest->dev) > sectors)
			sectors = kcopyd_dev_sectors(dest->dev);
		if (here.sector > sectors || state->count > sectors - here.sector) {
			complain("%s: destination %u sectors %" PRIu64 "+%" PRIu64
				 " run past the end of its device (%" PRIu64 " sectors)",
				 dest->where.path, dest_index, here.sector, state->count, sectors);
			return -ERANGE;
		}
		block_sectors = block_size >> KCOPYD_SECTOR_SHIFT;
		if (block_sectors > 1 && (here.sector % block_sectors || state->count % block_sectors)) {
			complain("%s: destination %u sectors %" PRIu64 "+%" PRIu64
				 " are not aligned to its block size of %u bytes",
				 dest->where.path, dest_index, here.sector, state->count, block_size);
			return -EINVAL;
		}
		if (!state->zero && kcopyd_regions_overlap(&source, &here)) {
			complain("%s: destination %u overlaps the source", dest->where.path, dest_index);
			return -EINVAL;
		}
		for (unsigned int other = 0; other < dest_index; other++) {
			const struct destination *earlier = &state->dests[other];
			struct io_region there = { .bdev = earlier->dev, .sector = earlier->where.sector,
						   .count = state->count };
			bool same_new_file = !dest->exists && !earlier->exists && dest->new_name &&
					     earlier->new_name && dest->new_dir_dev == earlier->new_dir_dev &&
					     dest->new_dir_ino == earlier->new_dir_ino &&
					     !strcmp(dest->new_name, earlier->new_name);

			if (kcopyd_regions_overlap(&there, &here) ||
			    (same_new_file && here.sector < there.sector + state->count &&
			     there.sector < here.sector + state->count)) {
				complain("%s: destination %u overlaps destination %u", dest->where.path,
					 dest_index, other);
				return -EINVAL;
			}
		}
	}
	return 0;
}

/*
 * note_made_file() - record that destination @dest_index reads as zeros
 * past some offset because this run made or extended it: @ours (created
 * it, or extended an existing file) from its size before the run; or an
 * earlier destination made or extended the same file (@st: it, open).
 */
static void note_made_file(struct kcopy *state, unsigned int dest_index, const struct stat *st, bool ours)
{
	struct destination *dest = &state->dests[dest_index];

	dest->made_dev = st->st_dev;
	dest->made_ino = st->st_ino;
	if (ours) {
		dest->made_by_kcopy = true;
		dest->zeros_from_bytes = dest->created ? 0 : (uint64_t)dest->before.st_size;
		return;
	}
	for (unsigned int other = 0; other < dest_index; other++) {
		const struct destination *earlier = &state->dests[other];

		if (earlier->made_by_kcopy && earlier->made_dev == st->st_dev && earlier->made_ino == st->st_ino) {
			dest->made_by_kcopy = true;
			dest->zeros_from_bytes = earlier->zeros_from_bytes;
			return;
		}
	}
}

/*
 * make_destination_files() - create the destination files that do not
 * exist and extend the short ones with ftruncate(2), as dd does, then open
 * them.  Everything was checked before; what is done here is recorded for
 * undo_destination_files().  A name given twice is made once.
 * Return: 0; the -errno of the step that failed (reported).
 */
static int make_destination_files(struct kcopy *state)
{
	char errbuf[ERRNO_TEXT_LEN];
	struct stat st;
	int fd, ret;

	for (unsigned int dest_index = 0; dest_index < state->num_dests; dest_index++) {
		struct destination *dest = &state->dests[dest_index];
		const char *path = dest->where.path;
		bool fresh;

		if (!dest->grow)
			continue;
		/* 0666 & ~umask, as open(2) applies the umask itself.  O_EXCL: what we remove is ours. */
		fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
		fresh = fd >= 0;
		if (fd < 0 && errno == EEXIST)	/* given twice, made by an earlier destination */
			fd = open(path, O_WRONLY | O_CLOEXEC);
		if (fd < 0) {
			ret = -errno;
			complain("%s: cannot %s: %s", path, dest->exists ? "open" : "create",
				 errno_text(ret, errbuf, sizeof(errbuf)));
			return ret;
		}
		dest->created = fresh;
		if (fstat(fd, &st)) {
			ret = -errno;
			complain("%s: cannot stat: %s", path, errno_text(ret, errbuf, sizeof(errbuf)));
			close(fd);
			return ret;
		}
		if (S_ISREG(st.st_mode) && (uint64_t)st.st_size < dest->end_bytes) {
			if (ftruncate(fd, (off_t)dest->end_bytes)) {
				ret = -errno;
				complain("%s: cannot extend to %" PRIu64 " bytes: %s", path, dest->end_bytes,
					 errno_text(ret, errbuf, sizeof(errbuf)));
				close(fd);
				return ret;
			}
			dest->extended = dest->exists;
			note_made_file(state, dest_index, &st, fresh || dest->exists);
		} else if (S_ISREG(st.st_mode)) {
			note_made_file(state, dest_index, &st, fresh);
		}
		close(fd);
		/* Opened again: the engine reads a file's size when it opens it. */
		kcopyd_dev_close(dest->dev);
		dest->dev = NULL;
		if (dest->sync_fd >= 0)
			close(dest->sync_fd);
		dest->sync_fd = -1;
		ret = open_destination(dest);
		if (ret)
			return ret;
	}
	return 0;
}

/*
 * undo_destination_files() - kcopy refused after all, before the job:
 * remove the files it created and cut the ones it extended back to their
 * size, with their access and modification times as they were (the
 * change time cannot be put back).
 */
static void undo_destination_files(struct kcopy *state)
{
	for (unsigned int dest_index = 0; dest_index < state->num_dests; dest_index++) {
		struct destination *dest = &state->dests[dest_index];
		struct timespec times[2];

		if (dest->created) {
			if (unlink(dest->where.path))
				complain("%s: cannot remove the file made for this copy: %s", dest->where.path,
					 strerror(errno));
			dest->created = false;
		}
		if (dest->extended) {
			times[0] = dest->before.st_atim;
			times[1] = dest->before.st_mtim;
			if (truncate(dest->where.path, dest->before.st_size) ||
			    utimensat(AT_FDCWD, dest->where.path, times, 0))
				complain("%s: cannot put back its size of %lld bytes and its times: %s",
					 dest->where.path, (long long)dest->before.st_size, strerror(errno));
			dest->extended = false;
		}
	}
}

/*
 * settle_zero_count() - the count of a --zero job: the first COUNT given
 * on the command line, or else the rest of the first destination from its
 * SECTOR (which then must exist, and is claimed and opened here).
 * Return: 0; -ERANGE if SECTOR is past the end; as open_destination().
 */
static int settle_zero_count(struct kcopy *state)
{
	struct destination *first = &state->dests[0];
	uint64_t first_sectors;
	struct stat st;
	int ret;

	for (unsigned int dest_index = 0; dest_index < state->num_dests; dest_index++) {
		if (state->dests[dest_index].where.has_count) {
			state->count = state->dests[dest_index].where.count;
			return 0;
		}
	}

	if (!first->where.is_uri && stat(first->where.path, &st) && errno == ENOENT) {
		complain("%s: does not exist; give :SECTOR+COUNT to create it", first->where.path);
		return -ENOENT;
	}
	/* Any other stat error: the open reports it. */
	ret = open_existing_destination(state, 0);
	if (ret)
		return ret;
	first_sectors = kcopyd_dev_sectors(first->dev);
	if (first->where.sector > first_sectors) {
		complain("%s: sector %" PRIu64 " is past its end (%" PRIu64 " sectors)",
			 first->where.path, first->where.sector, first_sectors);
		return -ERANGE;
	}
	state->count = first_sectors - first->where.sector;
	return 0;
}

/*
 * open_destinations() - check that no destination asks for another count;
 * claim, open and check every destination as it will be, before anything
 * is created or extended; then create and extend.  With --via, the
 * regions are checked here only if a file is to be created or extended:
 * otherwise the daemon's check, and its reason, are the ones that count.
 * Return: 0; -EINVAL for a mismatched COUNT; as plan_destination(),
 * check_planned_regions() and make_destination_files().
 */
static int open_destinations(struct kcopy *state)
{
	bool grow_any = false;
	int ret;

	for (unsigned int dest_index = 0; dest_index < state->num_dests; dest_index++) {
		const struct jobspec_region *where = &state->dests[dest_index].where;

		if (where->has_count && where->count != state->count) {
			complain("%s: COUNT %" PRIu64 " differs from the %" PRIu64 " sectors of the %s",
				 where->path, where->count, state->count,
				 state->zero ? "first COUNT given" : "source");
			return -EINVAL;
		}
	}
	for (unsigned int dest_index = 0; dest_index < state->num_dests; dest_index++) {
		ret = plan_destination(state, dest_index);
		if (ret)
			return ret;
		grow_any = grow_any || state->dests[dest_index].grow;
	}
	/*
	 * With --via the daemon checks the regions and gives its own reason;
	 * ours are needed only before a file is created or extended.
	 */
	if (!state->via || grow_any) {
		ret = check_planned_regions(state);
		if (ret)
			return ret;
	}
	return make_destination_files(state);
}

/*
 * dests_read_as_zeros() - whether every destination range reads as zeros
 * already, so that the engine can skip zero ranges (KCOPYD_DEST_ZERO)
 * instead of zeroing them: each lies in a regular file this run created,
 * or past the old end of one it extended, as cp --sparse=always assumes
 * of the file it makes.  The engine's flag is the job's, so a single
 * destination with old bytes in its range (an existing file, a block
 * device) leaves every zero range to be zeroed; on a range that is a hole
 * already that zeroing is a punch that finds nothing to free (doc/SPARSE.md).
 */
static bool dests_read_as_zeros(const struct kcopy *state)
{
	for (unsigned int dest_index = 0; dest_index < state->num_dests; dest_index++) {
		const struct destination *dest = &state->dests[dest_index];

		if (!dest->made_by_kcopy ||
		    (dest->where.sector << KCOPYD_SECTOR_SHIFT) < dest->zeros_from_bytes)
			return false;
	}
	return state->num_dests > 0;
}

/* engine_flags() - the job's flags for the engine: as asked, and KCOPYD_DEST_ZERO when known. */
static unsigned int engine_flags(const struct kcopy *state)
{
	return state->job_flags | (state->dests_zero_known ? KCOPYD_DEST_ZERO : 0);
}

/* ---------------------------------------------------------------------
 * Validation
 * --------------------------------------------------------------------- */

/*
 * validate_regions() - build the engine's regions and check them with
 * kcopyd_validate().  The source was checked by open_source(); the
 * destinations are added one at a time, so that the first refusal is due
 * to the destination just added and the message can name its path.
 * Return: 0, or the negative errno of the refusal (reported).
 */
static int validate_regions(struct kcopy *state)
{
	const struct io_region *from = state->zero ? NULL : &state->from;
	char why[256];
	int ret;

	if (!state->zero) {
		state->from.bdev = state->source_dev;
		state->from.sector = state->source.sector;
		state->from.count = state->count;
	}
	for (unsigned int dest_index = 0; dest_index < state->num_dests; dest_index++) {
		state->regions[dest_index].bdev = state->dests[dest_index].dev;
		state->regions[dest_index].sector = state->dests[dest_index].where.sector;
		state->regions[dest_index].count = state->count;
	}

	for (unsigned int num_checked = 1; num_checked <= state->num_dests; num_checked++) {
		ret = kcopyd_validate(from, num_checked, state->regions, engine_flags(state),
				      why, sizeof(why));
		if (ret) {
			complain("%s: %s", state->dests[num_checked - 1].where.path, why);
			return ret;
		}
	}
	return 0;
}

/* ---------------------------------------------------------------------
 * Running the job
 * --------------------------------------------------------------------- */

/*
 * job_done() - the completion routine: wake the main thread.  Runs on the
 * engine's completion thread.
 * @context: the eventfd the main thread polls.
 */
static void job_done(int read_err, unsigned int write_err, void *context)
{
	const uint64_t one = 1;
	int done_fd = *(const int *)context;

	/* An eventfd write of 1 cannot fail short of a counter overflow. */
	if (write(done_fd, &one, sizeof(one)) != sizeof(one))
		abort();
}

/* cancel_engine_job() - the job_control's cancel for a libkcopyd job. */
static int cancel_engine_job(void *context)
{
	return kcopyd_job_cancel(context);
}

/* read_engine_reading() - a libkcopyd job's progress and phase (kcopyd_job_counts()). */
static void read_engine_reading(const struct kcopyd_job *job, struct progress_reading *reading)
{
	struct kcopyd_counts counts;

	memset(&counts, 0, sizeof(counts));
	if (kcopyd_job_counts(job, &counts, sizeof(counts))) {
		kcopyd_job_progress(job, &reading->sectors_done, &reading->sectors_total);
		return;
	}
	reading->sectors_done = counts.sectors_done;
	reading->sectors_total = counts.sectors_total;
	reading->phase = counts.phase;
	reading->sectors_verified = counts.sectors_verified;
	reading->sectors_verify_total = counts.sectors_verify_total;
}

/* read_engine_progress() - the job_control's progress of a libkcopyd job. */
static void read_engine_progress(struct progress_reading *reading, void *context)
{
	read_engine_reading(context, reading);
}

static const struct job_control engine_job_control = {
	.cancel = cancel_engine_job,
	.read_progress = read_engine_progress,
};

/*
 * wait_for_job() - wait for @job to finish, showing its progress and
 * handling the signals of job_signals_open() meanwhile.
 * @signal_fd:   the signalfd of job_signals_open().
 * @done_fd:     the eventfd job_done() writes.
 * @stop_signal: receives the signal that cancelled the job, if any.
 * Should poll(2) fail, it falls back to a plain kcopyd_job_wait().
 */
static void wait_for_job(struct kcopy *state, struct kcopyd_job *job, int signal_fd,
			int done_fd, int *stop_signal)
{
	struct progress *progress = &state->progress;
	bool ticking = progress->bar || progress->fd >= 0;
	int interval_ms = progress_interval_ms(progress);
	struct pollfd waits[2] = {
		{ .fd = signal_fd, .events = POLLIN },
		{ .fd = done_fd, .events = POLLIN },
	};
	double next_draw = monotonic_seconds() + interval_ms / 1000.0;
	struct progress_reading reading = { 0 };

	for (;;) {
		int timeout_ms = -1;
		int ready;

		if (ticking) {
			double wait_seconds = next_draw - monotonic_seconds();

			timeout_ms = wait_seconds > 0 ? (int)(wait_seconds * 1000.0) + 1 : 0;
		}
		ready = poll(waits, 2, timeout_ms);
		if (ready < 0 && errno != EINTR) {
			char errbuf[ERRNO_TEXT_LEN];

			complain("poll: %s; waiting without progress", errno_text(errno, errbuf, sizeof(errbuf)));
			break;
		}
		if (ready > 0 && (waits[1].revents & POLLIN))
			break;
		if (ready > 0 && (waits[0].revents & POLLIN))
			handle_job_signals(signal_fd, progress, stop_signal, &engine_job_control, job);
		ticking = progress->bar || progress->fd >= 0;	/* a failed --progress=FD is dropped */
		if (ticking && monotonic_seconds() >= next_draw) {
			read_engine_reading(job, &reading);
			progress_update(progress, &reading);
			next_draw += interval_ms / 1000.0;
			if (next_draw < monotonic_seconds())
				next_draw = monotonic_seconds() + interval_ms / 1000.0;
		}
	}

	kcopyd_job_wait(job);
	read_engine_reading(job, &reading);
	progress_end(progress, &reading);
}

/*
 * run_job() - create the client, submit the job, wait for it and collect
 * its result.  The signals of job_signals_open() are blocked in every
 * thread meanwhile (the engine's threads inherit the mask) and read from a
 * signalfd.
 * @outcome: receives the job's result, its checkpoint and the signal that
 * stopped it.
 * Return: 0 once the job ran (whatever its result), with the client left
 * in state->client for main() to destroy; the -errno of a setup step
 * (reported).
 */
static int run_job(struct kcopy *state, struct run_outcome *outcome)
{
	char errbuf[ERRNO_TEXT_LEN];
	struct kcopyd_job_options options = { 0 };
	struct kcopyd_client *client;
	struct kcopyd_job *job;
	sigset_t old_mask;
	int signal_fd, done_fd, ret;

	signal_fd = job_signals_open(&old_mask);
	if (signal_fd < 0)
		return signal_fd;
	done_fd = eventfd(0, EFD_CLOEXEC);
	if (done_fd < 0) {
		ret = -errno;
		complain("eventfd: %s", errno_text(ret, errbuf, sizeof(errbuf)));
		goto out_close_signal_fd;
	}

	ret = kcopyd_client_create_config(&state->config, &client);
	if (ret) {
		char why[256];

		/* The probe resolves the variable as the client did; only a named io_uring can fail it here. */
		if (kcopyd_io_engine_probe(state->config.io_engine, why, sizeof(why)) < 0)
			complain("cannot start the engine: io_uring: %s", why);
		else
			complain("cannot start the engine: %s", errno_text(ret, errbuf, sizeof(errbuf)));
		goto out_close_done_fd;
	}
	if (state->verbose)
		say_engine(state, client);

	state->progress.start_seconds = monotonic_seconds();
	options.flags = engine_flags(state) | (state->verify ? KCOPYD_VERIFY : 0);
	options.hashes = state->hashes;
	options.rate = state->rate;
	ret = kcopyd_submit_options(client, state->zero ? NULL : &state->from, state->num_dests, state->regions,
				    &options, sizeof(options), job_done, &done_fd, &job);
	if (ret) {
		complain("cannot submit the job: %s", errno_text(ret, errbuf, sizeof(errbuf)));
		goto err_destroy_client;
	}
	state->job_started = true;

	wait_for_job(state, job, signal_fd, done_fd, &outcome->stop_signal);
	kcopyd_job_result(job, &outcome->result);
	outcome->counts_known = true;
	kcopyd_job_checkpoint(job, &outcome->checkpoint);
	kcopyd_job_release(job);
	state->client = client;
	ret = 0;
	goto out_close_done_fd;

err_destroy_client:
	kcopyd_client_destroy(client);
out_close_done_fd:
	close(done_fd);
out_close_signal_fd:
	job_signals_close(signal_fd, &old_mask);
	return ret;
}

/* ---------------------------------------------------------------------
 * After the job
 * --------------------------------------------------------------------- */

/*
 * sync_destinations() - fsync every destination through its separate
 * descriptor, and flush every NBD export (kcopyd_dev_sync(); with --via
 * the daemon's devices are flushed by the daemon, ours are closed).  A
 * failure is recorded in the destination's fsync_error and reported by
 * report_result() as a write error.
 */
static void sync_destinations(struct kcopy *state)
{
	for (unsigned int dest_index = 0; dest_index < state->num_dests; dest_index++) {
		struct destination *dest = &state->dests[dest_index];

		if (dest->sync_fd >= 0 && fsync(dest->sync_fd))
			dest->fsync_error = -errno;
		else if (dest->where.is_uri && dest->dev)
			dest->fsync_error = kcopyd_dev_sync(dest->dev);
	}
}

/*
 * report_hashes() - the "hash: ALG:HEX" line of every --hash algorithm,
 * the digest of the whole source range as read (with --ignore-errors, a
 * chunk that could not be read counts as the zeros written for it); "ALG:none"
 * for a job that stopped before every chunk was hashed.  Printed with
 * --quiet too: the digest is what was asked for.
 */
static void report_hashes(const struct kcopy *state, const struct kcopyd_result *result)
{
	char text[PROTO_DIGEST_TEXT_LEN];

	for (unsigned int bit = 0; bit < KCOPYD_HASH_COUNT; bit++) {
		unsigned int hash = 1u << bit;

		if (!(state->hashes & hash))
			continue;
		if (result->hashes & hash)
			complain("hash: %s", proto_digest_render(hash, &result->digests[bit], text, sizeof(text)));
		else
			complain("hash: %s:none (the copy stopped before the whole range was read)",
				 kcopyd_hash_name(hash));
	}
}

/*
 * report_verify() - the outcome of --verify: "verify: ok", or "verify:
 * mismatch" and the lowest range of each destination that did not read
 * back as the source (EBADMSG: other bytes; else the read-back's errno),
 * or "verify: not done" when the copy failed or was cancelled first.
 */
static void report_verify(const struct kcopy *state, const struct kcopyd_result *result)
{
	char errbuf[ERRNO_TEXT_LEN];

	if (!state->verify)
		return;
	if (result->verified > 0) {
		if (!state->quiet)
			complain("verify: ok (%u destination%s read back as the source)", state->num_dests,
				 state->num_dests == 1 ? "" : "s");
		return;
	}
	if (result->verified == 0) {
		complain("verify: not done (the copy failed or was cancelled first)");
		return;
	}
	complain("verify: mismatch");
	for (unsigned int dest_index = 0; dest_index < state->num_dests; dest_index++) {
		const struct kcopyd_failure *failure = &result->verify[dest_index];

		if (result->verify_err & (1u << dest_index))
			complain("verify error on %s (destination %u) sectors %" PRIu64 "+%" PRIu64 ": %s",
				 state->dests[dest_index].where.path, dest_index, failure->sector, failure->count,
				 errno_text(failure->error ? failure->error : EBADMSG, errbuf, sizeof(errbuf)));
	}
}

/*
 * write_failure_is_verify() - the write failure of @dest_index is only its
 * verify failure (the engine sets a destination's write_err bit for a
 * verify failure too, with the same range or none in write[]): reported
 * by report_verify() alone.
 */
static bool write_failure_is_verify(const struct kcopyd_result *result, unsigned int dest_index)
{
	const struct kcopyd_failure *write = &result->write[dest_index];
	const struct kcopyd_failure *verify = &result->verify[dest_index];

	if (!(result->verify_err & (1u << dest_index)))
		return false;
	return !write->error || (write->error == verify->error && write->sector == verify->sector &&
				 write->count == verify->count);
}

/*
 * report_result() - print the errors, or the summary, of a finished job,
 * and its digests and verify outcome.
 * @seconds: from submission to the end of the fsyncs.
 * Return: the exit status: 0; 1 for I/O errors; 3 when the copy itself
 * went well and only --verify failed; 128 + the signal that cancelled the
 * job.
 */
static int report_result(const struct kcopy *state, const struct run_outcome *outcome, double seconds)
{
	const struct kcopyd_result *result = &outcome->result;
	unsigned int write_err = result->write_err;
	unsigned int copy_write_err = 0;	/* write_err without the destinations that failed only the verify */
	uint64_t done_bytes = result->sectors_done << KCOPYD_SECTOR_SHIFT;
	uint64_t total_bytes = result->sectors_total << KCOPYD_SECTOR_SHIFT;
	char errbuf[ERRNO_TEXT_LEN], counts[96] = "";
	double rate = seconds > 0 ? (double)done_bytes / seconds / 1e6 : 0;
	bool failed;

	for (unsigned int dest_index = 0; dest_index < state->num_dests; dest_index++) {
		if (state->dests[dest_index].fsync_error)
			write_err |= 1u << dest_index;
		if ((write_err & (1u << dest_index)) &&
		    (state->dests[dest_index].fsync_error || !write_failure_is_verify(result, dest_index)))
			copy_write_err |= 1u << dest_index;
	}
	failed = result->read_err || write_err || result->cancelled || outcome->failed_otherwise;

	if (result->read_err && result->read.error)
		complain("read error on %s sectors %" PRIu64 "+%" PRIu64 ": %s", state->source.path,
			 result->read.sector, result->read.count,
			 errno_text(result->read.error, errbuf, sizeof(errbuf)));
	for (unsigned int dest_index = 0; dest_index < state->num_dests; dest_index++) {
		const struct destination *dest = &state->dests[dest_index];
		const struct kcopyd_failure *failure = &result->write[dest_index];

		if ((result->write_err & (1u << dest_index)) && failure->error &&
		    !write_failure_is_verify(result, dest_index))
			complain("write error on %s (destination %u) sectors %" PRIu64 "+%" PRIu64 ": %s",
				 dest->where.path, dest_index, failure->sector, failure->count,
				 errno_text(failure->error, errbuf, sizeof(errbuf)));
		if (dest->fsync_error)
			complain("write error on %s (destination %u): %s: %s", dest->where.path, dest_index,
				 dest->where.is_uri ? "flush" : "fsync", errno_text(dest->fsync_error, errbuf, sizeof(errbuf)));
	}
	if (result->read_err || copy_write_err)
		complain("read_err=%d write_err=0x%x", result->read_err, write_err);
	if (result->cancelled) {
		const char *name = outcome->stop_signal ? sigabbrev_np(outcome->stop_signal) : NULL;

		complain("cancelled%s%s after %" PRIu64 " of %" PRIu64 " bytes",
			 name ? " by SIG" : "", name ? name : "", done_bytes, total_bytes);
	}

	/* How the copy's sectors were written; a zero job's are all zeros, nothing to tell. */
	if (outcome->counts_known && !state->zero)
		snprintf(counts, sizeof(counts), " (%" PRIu64 " data, %" PRIu64 " zero, %" PRIu64 " offloaded)",
			 result->counts.sectors_data, result->counts.sectors_zero, result->counts.sectors_offloaded);
	if (failed)
		complain("%s %" PRIu64 " of %" PRIu64 " bytes (%" PRIu64 " sectors) %s %u destination%s in %.3f s%s",
			 state->zero ? "zeroed" : "copied", done_bytes, total_bytes, result->sectors_done,
			 state->zero ? "on" : "to", state->num_dests, state->num_dests == 1 ? "" : "s",
			 seconds, counts);
	else if (!state->quiet)
		complain("%s %" PRIu64 " bytes (%" PRIu64 " sectors) %s %u destination%s in %.3f s, %.1f MB/s%s",
			 state->zero ? "zeroed" : "copied", done_bytes, result->sectors_done,
			 state->zero ? "on" : "to", state->num_dests, state->num_dests == 1 ? "" : "s",
			 seconds, rate, counts);
	report_hashes(state, result);
	report_verify(state, result);

	if (result->cancelled && outcome->stop_signal)
		return 128 + outcome->stop_signal;
	if (!failed)
		return EXIT_OK;
	/* Copied and flushed in full, only the read-back differs: a status of its own for scripts. */
	if (result->verified < 0 && !result->read_err && !copy_write_err && !result->cancelled &&
	    !outcome->failed_otherwise)
		return EXIT_VERIFY;
	return EXIT_IO_ERROR;
}

/*
 * print_resume_command() - after a job that did not succeed, print the
 * command that copies what it left, from its checkpoint on, as ddrescue's
 * mapfile lets a copy go on.  A destination whose flush failed may have
 * lost anything: then the command is the whole copy again.
 */
static void print_resume_command(const struct kcopy *state, const struct run_outcome *outcome)
{
	uint64_t checkpoint = outcome->checkpoint;
	char *command;

	for (unsigned int dest_index = 0; dest_index < state->num_dests; dest_index++)
		if (state->dests[dest_index].fsync_error)
			checkpoint = 0;
	command = format_resume_command(state, checkpoint);
	if (!command)
		return;
	if (checkpoint)
		complain("%s the rest, from sector %" PRIu64 " of %" PRIu64 " on, run:",
			 state->zero ? "to zero" : "to copy", checkpoint, state->count);
	else
		complain("to run the %s again, run:", state->zero ? "zeroing" : "copy");
	fprintf(stderr, "%s\n", command);
	free(command);
	if (checkpoint && state->hashes)
		complain("(no --hash in it: a digest of the rest is not the whole range's; for that, copy the "
			 "whole range again with --hash, or hash the source with sha256sum and the like)");
}

/* close_devices() - close the engine's devices of the source and destinations (not the sync_fds). */
static void close_devices(struct kcopy *state)
{
	for (unsigned int dest_index = 0; dest_index < state->num_dests; dest_index++) {
		kcopyd_dev_close(state->dests[dest_index].dev);
		state->dests[dest_index].dev = NULL;
	}
	kcopyd_dev_close(state->source_dev);
	state->source_dev = NULL;
}

int main(int argc, char **argv)
{
	struct kcopy state;
	struct run_outcome outcome;
	sigset_t early_signals;
	bool exit_now = false;
	int status, ret;

	memset(&state, 0, sizeof(state));
	memset(&outcome, 0, sizeof(outcome));
	state.progress_fd = -1;
	for (unsigned int dest_index = 0; dest_index < KCOPYD_MAX_REGIONS; dest_index++) {
		state.dests[dest_index].sync_fd = -1;
		state.dests[dest_index].claim_fd = -1;
	}
	/* Past RLIMIT_FSIZE a write fails with EFBIG, reported; it must not kill us. */
	signal(SIGXFSZ, SIG_IGN);
	/*
	 * A SIGUSR1 (dd's "how far are you?") or a SIGWINCH while the files
	 * are opened must not kill us either: held until the job's signalfd
	 * takes them (job_signals_open()).
	 */
	sigemptyset(&early_signals);
	sigaddset(&early_signals, SIGUSR1);
	sigaddset(&early_signals, SIGWINCH);
	pthread_sigmask(SIG_BLOCK, &early_signals, NULL);

	ret = parse_command_line(argc, argv, &state, &exit_now);
	if (ret || exit_now) {
		status = ret ? exit_status_for(ret) : EXIT_OK;
		goto out_free_paths;
	}
	progress_init(&state.progress, !state.quiet && (state.progress_forced || isatty(STDERR_FILENO)),
		      state.progress_fd);
	state.progress.quiet = state.quiet;
	/* A reader of --progress=FD that goes away must not kill the copy: the write fails with EPIPE, reported. */
	if (state.progress_fd >= 0)
		signal(SIGPIPE, SIG_IGN);

	if (state.via) {
		/* Before any destination is created: is there a daemon to take the job? */
		ret = via_check_mount(state.via);
		if (ret)
			goto err_close_devices;
	}
	ret = state.zero ? settle_zero_count(&state) : open_source(&state);
	if (ret)
		goto err_close_devices;
	ret = open_destinations(&state);
	if (ret)
		goto err_close_devices;

	if (state.via) {
		/*
		 * The daemon opens the regions itself and checks them as the
		 * engine would: ours only sized them and created or extended
		 * the files.  The sync_fds stay for the final fsync, which the
		 * daemon does not do (it flushes only with --state-dir).
		 */
		close_devices(&state);
		ret = via_run_job(&state, &outcome);
	} else {
		/*
		 * Not with --via: the daemon's description takes only the
		 * flags asked for (a daemon before dest_zero would refuse it),
		 * and its zeroing of a hole is a punch that frees nothing.
		 */
		state.dests_zero_known = !(state.job_flags & KCOPYD_ALLOCATED) && dests_read_as_zeros(&state);
		ret = validate_regions(&state);
		if (ret)
			goto err_close_devices;
		ret = run_job(&state, &outcome);
	}
	if (ret)
		goto err_close_devices;
	sync_destinations(&state);
	status = report_result(&state, &outcome, monotonic_seconds() - state.progress.start_seconds);
	if (status != EXIT_OK)
		print_resume_command(&state, &outcome);
	progress_final(&state.progress, outcome.result.sectors_done,
		       status == EXIT_OK ? "done" : outcome.result.cancelled ? "cancelled" : "failed");
	goto out_close_devices;

err_close_devices:
	status = exit_status_for(ret);
	if (!state.job_started)
		undo_destination_files(&state);
out_close_devices:
	if (state.client)
		kcopyd_client_destroy(state.client);
	close_devices(&state);
	for (unsigned int dest_index = 0; dest_index < state.num_dests; dest_index++) {
		if (state.dests[dest_index].sync_fd >= 0)
			close(state.dests[dest_index].sync_fd);
		if (state.dests[dest_index].claim_fd >= 0)
			close(state.dests[dest_index].claim_fd);	/* after the engine's device: the claim outlives the writes */
	}
out_free_paths:
	for (unsigned int dest_index = 0; dest_index < state.num_dests; dest_index++)
		free(state.dests[dest_index].where.path);
	free(state.source.path);
	return status;
}
