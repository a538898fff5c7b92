/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * ctl_stdio_writer: write a line to a kcopydfs ctl (or clone) file the way
 * a C program with stdio does, through a fully buffered stream of a given
 * size, so that a line longer than the buffer reaches the daemon as
 * several write(2)s.  Used by tests/test-kcopydfs-ctl-lines.sh.
 *
 *   ctl_stdio_writer [-c] PATH BUFFER_BYTES < LINE
 *
 * The line is read whole from stdin and written with one fwrite(3), then
 * the stream is closed with fclose(3).  With -c, PATH is a clone file:
 * the job's number is read from it first and printed on stdout.
 *
 * Exit status: 0 when fwrite and fclose succeeded; 1 when fwrite failed,
 * 2 when fclose failed (the error named on stderr: "fwrite: E2BIG ...");
 * 3 for a usage or setup error.
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* The errno names the tests look for; others are shown as numbers. */
static const char *errno_name(int error)
{
	switch (error) {
	case E2BIG: return "E2BIG";
	case EINVAL: return "EINVAL";
	case EBUSY: return "EBUSY";
	case ENOENT: return "ENOENT";
	case ERANGE: return "ERANGE";
	default: return "other";
	}
}

int main(int argc, char **argv)
{
	bool clone = argc > 1 && strcmp(argv[1], "-c") == 0;
	static char line[1 << 20];
	char number[64];
	size_t line_len = 0, buffer_bytes;
	ssize_t got;
	char *buffer;
	FILE *stream;
	int fd;

	if (argc != 3 + clone) {
		fprintf(stderr, "usage: %s [-c] PATH BUFFER_BYTES < LINE\n", argv[0]);
		return 3;
	}
	buffer_bytes = strtoul(argv[2 + clone], NULL, 10);
	while ((got = read(0, line + line_len, sizeof(line) - line_len)) > 0)
		line_len += (size_t)got;
	fd = open(argv[1 + clone], clone ? O_RDWR : O_WRONLY | O_TRUNC);
	if (fd < 0) {
		fprintf(stderr, "open %s: %s\n", argv[1 + clone], strerror(errno));
		return 3;
	}
	if (clone) {
		got = read(fd, number, sizeof(number) - 1);
		if (got <= 0) {
			fprintf(stderr, "read the job number: %s\n", got < 0 ? strerror(errno) : "nothing");
			return 3;
		}
		number[got] = '\0';
		fputs(number, stdout);
		fflush(stdout);
	}
	stream = fdopen(fd, "w");
	buffer = malloc(buffer_bytes);
	if (!stream || !buffer || setvbuf(stream, buffer, _IOFBF, buffer_bytes) != 0) {
		fprintf(stderr, "cannot set up a stream with a %zu-byte buffer\n", buffer_bytes);
		return 3;
	}
	if (fwrite(line, 1, line_len, stream) != line_len) {
		fprintf(stderr, "fwrite: %s (%s)\n", errno_name(errno), strerror(errno));
		fclose(stream);
		free(buffer);
		return 1;
	}
	if (fclose(stream) != 0) {
		fprintf(stderr, "fclose: %s (%s)\n", errno_name(errno), strerror(errno));
		free(buffer);
		return 2;
	}
	free(buffer);
	return 0;
}
