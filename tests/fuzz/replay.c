/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * A main() for a fuzz target without libFuzzer: feed it every file named
 * on the command line (a directory: every file in it), or with no
 * arguments every file of the target's seed corpus,
 * $TESTS_SRCDIR/fuzz/corpus/FUZZ_CORPUS.  `make check` runs it so that the
 * targets build with any compiler and the corpus passes their checks.
 * Exit 0 when every input passed (a failed check aborts), 1 when an input
 * could not be read, 77 when the corpus is not found.
 */
#include "config.h"

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "fuzz.h"

static int replay_file(const char *path, unsigned int *count)
{
	FILE *f = fopen(path, "rb");
	unsigned char *data = NULL;
	size_t size = 0, room = 0, got;

	if (!f) {
		perror(path);
		return -1;
	}
	do {
		if (size == room) {
			unsigned char *grown = realloc(data, room = room ? room * 2 : 4096);

			if (!grown) {
				fclose(f);
				free(data);
				return -1;
			}
			data = grown;
		}
		got = fread(data + size, 1, room - size, f);
		size += got;
	} while (got > 0);
	fclose(f);
	LLVMFuzzerTestOneInput(data, size);
	free(data);
	(*count)++;
	return 0;
}

static int replay_path(const char *path, unsigned int *count)
{
	struct dirent *entry;
	struct stat st;
	char child[4096];
	DIR *dir;
	int r = 0;

	if (stat(path, &st) < 0) {
		perror(path);
		return -1;
	}
	if (!S_ISDIR(st.st_mode))
		return replay_file(path, count);
	dir = opendir(path);
	if (!dir) {
		perror(path);
		return -1;
	}
	while ((entry = readdir(dir)) && r == 0) {
		if (entry->d_name[0] == '.')
			continue;
		snprintf(child, sizeof(child), "%s/%s", path, entry->d_name);
		r = replay_path(child, count);
	}
	closedir(dir);
	return r;
}

int main(int argc, char *argv[])
{
	const char *srcdir = getenv("TESTS_SRCDIR");
	unsigned int count = 0;
	char corpus[4096];
	int index;

	if (argc < 2) {
		struct stat st;

		snprintf(corpus, sizeof(corpus), "%s/fuzz/corpus/%s", srcdir ? srcdir : "tests", FUZZ_CORPUS);
		if (stat(corpus, &st) < 0) {
			printf("SKIP: no corpus at %s (set TESTS_SRCDIR)\n", corpus);
			return 77;
		}
		if (replay_path(corpus, &count) < 0)
			return 1;
	}
	for (index = 1; index < argc; index++)
		if (replay_path(argv[index], &count) < 0)
			return 1;
	if (count == 0) {
		printf("FAIL: no input replayed\n");
		return 1;
	}
	printf("%s: %u inputs replayed, every check held\n", FUZZ_CORPUS, count);
	return 0;
}
