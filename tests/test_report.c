/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * kcopy's texts (src/kcopy/report.c): the progress line fitted to a
 * terminal's width, the lines of --progress=FD and the resume command,
 * all pure functions tested without a job or a terminal.
 */
#include "config.h"

#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kcopy/kcopy.h"

TestSuite(report, .timeout = 30);

#define MIB (1024ull * 1024)

Test(report, progress_fits_every_width)
{
	static const struct {
		uint64_t done, total;
		double elapsed;
	} cases[] = {
		{ 0, 64 * MIB, 0 },
		{ 29 * MIB, 64 * MIB, 0.1 },
		{ 64 * MIB, 64 * MIB, 0.2 },
		{ 1000 * MIB, 1024 * 1024 * MIB, 3600 * 30 },	/* a long ETA */
		{ 512, 1ull << 62, 1e-3 },
	};
	char line[512];

	for (unsigned int index = 0; index < sizeof(cases) / sizeof(cases[0]); index++) {
		for (unsigned int columns = 1; columns <= 300; columns++) {
			size_t len;

			format_progress(cases[index].done, cases[index].total, cases[index].elapsed, columns,
					line, sizeof(line));
			len = strlen(line);
			cr_assert(len <= (columns > PROGRESS_SPARE_COLUMNS ? columns - PROGRESS_SPARE_COLUMNS : 1),
				  "case %u at %u columns: %zu characters, \"%s\"", index, columns, len, line);
			cr_assert(!strchr(line, '\n') && !strchr(line, '\r') && !strchr(line, '\033'),
				  "case %u at %u columns: a control character in \"%s\"", index, columns, line);
			if (columns >= 7 + PROGRESS_SPARE_COLUMNS)
				cr_assert(strchr(line, '%'), "case %u at %u columns: no percentage in \"%s\"",
					  index, columns, line);
		}
	}
}

Test(report, progress_drops_fields_by_width)
{
	static const struct {
		unsigned int columns;
		bool bar, bytes, rate, eta;
	} cases[] = {
		{ 200, true, true, true, true },
		{ 80, true, true, true, true },
		{ 62, true, true, false, true },
		{ 60, true, false, false, true },
		{ 40, true, false, false, true },
		{ 24, true, false, false, false },
		{ 12, false, false, false, false },
	};
	char line[512];

	for (unsigned int index = 0; index < sizeof(cases) / sizeof(cases[0]); index++) {
		format_progress(29 * MIB, 64 * MIB, 2.0, cases[index].columns, line, sizeof(line));
		cr_expect_eq(line[0] == '[', cases[index].bar, "%u columns: bar %d in \"%s\"", cases[index].columns,
			     cases[index].bar, line);
		cr_expect_eq(strstr(line, "MiB /") != NULL, cases[index].bytes, "%u columns: bytes %d in \"%s\"",
			     cases[index].columns, cases[index].bytes, line);
		cr_expect_eq(strstr(line, "MB/s") != NULL, cases[index].rate, "%u columns: rate %d in \"%s\"",
			     cases[index].columns, cases[index].rate, line);
		cr_expect_eq(strstr(line, "ETA") != NULL, cases[index].eta, "%u columns: ETA %d in \"%s\"",
			     cases[index].columns, cases[index].eta, line);
		cr_expect(strstr(line, "45.3%"), "%u columns: no 45.3%% in \"%s\"", cases[index].columns, line);
	}
}

Test(report, progress_bar_fills_with_the_fraction)
{
	char line[512];
	size_t filled = 0, width = 0;

	format_progress(32 * MIB, 64 * MIB, 1.0, 80, line, sizeof(line));
	for (const char *at = line + 1; *at && *at != ']'; at++, width++)
		filled += *at == '#';
	cr_assert(width >= 10, "a bar of %zu columns at 80: \"%s\"", width, line);
	cr_assert_eq(filled, width / 2, "half done: %zu of %zu filled in \"%s\"", filled, width, line);
}

Test(report, fd_lines)
{
	static const struct {
		uint64_t done, total;
		const char *state, *line;
	} cases[] = {
		{ 0, 4096, "running", "0/100 0 4096 running\n" },
		{ 2048, 4096, "running", "50/100 2048 4096 running\n" },
		{ 4095, 4096, "running", "99/100 4095 4096 running\n" },
		{ 4096 * 1000 - 1, 4096 * 1000, "cancelled", "99/100 4095999 4096000 cancelled\n" },
		{ 4096, 4096, "done", "100/100 4096 4096 done\n" },
		{ 0, 0, "done", "100/100 0 0 done\n" },
	};
	char line[128];

	for (unsigned int index = 0; index < sizeof(cases) / sizeof(cases[0]); index++) {
		format_progress_fd_line(cases[index].done, cases[index].total, cases[index].state, line, sizeof(line));
		cr_expect_str_eq(line, cases[index].line, "case %u: \"%s\"", index, line);
	}
}

static struct kcopy copy_state(const char *source, const char *dest0, const char *dest1)
{
	struct kcopy state;

	memset(&state, 0, sizeof(state));
	state.config.num_pages = KCOPY_DEFAULT_PAGES;
	state.source.path = (char *)source;
	state.source.sector = 2048;
	state.count = 8192;
	state.num_dests = dest1 ? 2 : 1;
	state.dests[0].where.path = (char *)dest0;
	state.dests[0].where.sector = 0;
	if (dest1) {
		state.dests[1].where.path = (char *)dest1;
		state.dests[1].where.sector = 16;
	}
	return state;
}

Test(report, resume_command)
{
	struct kcopy state = copy_state("/dev/loop0", "disk.img", "/mnt/it's here/b c.img");
	char *command;

	command = format_resume_command(&state, 1024);
	cr_assert_str_eq(command, "kcopy /dev/loop0:3072+7168 disk.img:1024 '/mnt/it'\\''s here/b c.img:1040'",
			 "got %s", command);
	free(command);

	command = format_resume_command(&state, 8192);
	cr_assert_null(command, "nothing left: got %s", command);

	state.job_flags = KCOPYD_IGNORE_ERROR | KCOPYD_WRITE_SEQ;
	state.config.depth = 2;
	state.config.subjob_sectors = 128;
	state.via = "/mnt/kcopyd";
	state.progress_fd = 3;
	command = format_resume_command(&state, 0);
	cr_assert_str_eq(command, "kcopy --via /mnt/kcopyd --subjob-kb 64 --depth 2 --ignore-errors --write-seq "
			 "/dev/loop0:2048+8192 disk.img:0 '/mnt/it'\\''s here/b c.img:16'", "got %s", command);
	free(command);
}

Test(report, resume_command_sparse_options)
{
	struct kcopy state = copy_state("src.img", "dst.img", NULL);
	char *command;

	state.job_flags = KCOPYD_DEST_ZERO | KCOPYD_ALLOCATED | KCOPYD_NO_OFFLOAD;
	command = format_resume_command(&state, 1024);
	cr_assert_str_eq(command, "kcopy --destination-is-zero --allocated --no-offload src.img:3072+7168 dst.img:1024",
			 "the three options asked for: got %s", command);
	free(command);

	/* Known, not asked: the files made by the first run are half written by now. */
	state.job_flags = 0;
	state.dests_zero_known = true;
	command = format_resume_command(&state, 1024);
	cr_assert_str_eq(command, "kcopy src.img:3072+7168 dst.img:1024",
			 "dest_zero the run worked out is not repeated: got %s", command);
	free(command);
}

/* A region that starts with '-' comes after "--", so that kcopy does not take it for an option. */
Test(report, resume_command_dash_paths)
{
	struct kcopy state = copy_state("-src.img", "dst.img", NULL);
	char *command;

	command = format_resume_command(&state, 1024);
	cr_assert_str_eq(command, "kcopy -- -src.img:3072+7168 dst.img:1024", "a source: got %s", command);
	free(command);
	state = copy_state("src.img", "d.img", "-d.img");
	command = format_resume_command(&state, 1024);
	cr_assert_str_eq(command, "kcopy -- src.img:3072+7168 d.img:1024 -d.img:1040", "a destination: got %s", command);
	free(command);
}

Test(report, resume_command_zero)
{
	struct kcopy state = copy_state(NULL, "/dev/loop1", "$HOME.img");
	char *command;

	state.zero = true;
	state.quiet = true;
	command = format_resume_command(&state, 4096);
	cr_assert_str_eq(command, "kcopy --quiet --zero /dev/loop1:4096+4096 '$HOME.img:4112+4096'", "got %s", command);
	free(command);
}

/* URIs in the resume command: as given, read back by kcopy's grammar (a URI without a path in double quotes). */
Test(report, resume_command_uris)
{
	struct kcopy state = copy_state("nbd://host:10809", "nbd+unix:///e?socket=/run/s.sock", "\"odd\".img");
	char *command;

	state.source.is_uri = true;
	state.dests[0].where.is_uri = true;
	command = format_resume_command(&state, 1024);
	cr_assert_str_eq(command, "kcopy '\"nbd://host:10809\":3072+7168' 'nbd+unix:///e?socket=/run/s.sock:1024' "
			 "'\"\\\"odd\\\".img\":1040'", "got %s", command);
	free(command);
}

/* --verify and --rate are kept; --hash only when the command is the whole copy again. */
Test(report, resume_command_trust_options)
{
	struct kcopy state = copy_state("src.img", "dst.img", NULL);
	char *command;

	state.verify = true;
	state.rate = 16 * MIB;
	state.hashes = KCOPYD_HASH_SHA256 | KCOPYD_HASH_MD5;
	command = format_resume_command(&state, 1024);
	cr_assert_str_eq(command, "kcopy --verify --rate=16M src.img:3072+7168 dst.img:1024",
			 "the rest: no --hash (its digest is not the whole range's): got %s", command);
	free(command);
	command = format_resume_command(&state, 0);
	cr_assert_str_eq(command, "kcopy --verify --hash=md5,sha256 --rate=16M src.img:2048+8192 dst.img:0",
			 "the whole copy again keeps --hash: got %s", command);
	free(command);
}

Test(report, rate_text)
{
	static const struct {
		uint64_t bytes;
		const char *text;
	} cases[] = {
		{ 4096, "4K" }, { 6144, "6K" }, { 16 * MIB, "16M" }, { 1536 * MIB, "1536M" },
		{ 1024 * MIB, "1G" }, { 1024ull * 1024 * MIB, "1T" }, { 1024ull * 1024 * 1024 * MIB, "1024T" },
		{ 5000, "5000" }, { 4097, "4097" },
	};
	char text[32];

	for (unsigned int index = 0; index < sizeof(cases) / sizeof(cases[0]); index++)
		cr_expect_str_eq(format_rate(cases[index].bytes, text, sizeof(text)), cases[index].text,
				 "%llu bytes: got %s", (unsigned long long)cases[index].bytes, text);
}

/* The verify phase: "verifying" and a bar of the read-back, fitted to every width as the copy's. */
Test(report, progress_verify_phase)
{
	struct progress_reading reading = {
		.sectors_done = 131072, .sectors_total = 131072, .phase = KCOPYD_PHASE_VERIFY,
		.sectors_verified = 90112, .sectors_verify_total = 262144,
	};
	char line[512];

	format_progress_phase(&reading, 4.0, 1.0, 80, line, sizeof(line));
	cr_assert(strncmp(line, "verifying [", 11) == 0, "80 columns: got %s", line);
	cr_assert(strstr(line, " 34.4%") != NULL, "the read-back's share: got %s", line);
	for (unsigned int columns = 1; columns <= 300; columns++) {
		format_progress_phase(&reading, 4.0, 1.0, columns, line, sizeof(line));
		cr_assert(strlen(line) <= (columns > PROGRESS_SPARE_COLUMNS ? columns - PROGRESS_SPARE_COLUMNS : 1),
			  "%u columns: %zu wide: %s", columns, strlen(line), line);
	}
	reading.phase = KCOPYD_PHASE_FLUSH;
	format_progress_phase(&reading, 4.0, 0, 80, line, sizeof(line));
	cr_assert(strstr(line, "flushing") != NULL, "the flush before it: got %s", line);
	reading.phase = KCOPYD_PHASE_COPY;
	reading.sectors_done = 65536;
	format_progress_phase(&reading, 4.0, 0, 80, line, sizeof(line));
	cr_assert(strstr(line, " 50.0%") != NULL && strncmp(line, "verifying", 9) != 0, "copying: got %s", line);

	reading.phase = KCOPYD_PHASE_VERIFY;
	reading.sectors_done = 131072;
	format_progress_report_phase(&reading, 4.0, 1.0, line, sizeof(line));
	cr_assert_str_eq(line, "67108864 bytes copied; verifying: 46137344 of 134217728 bytes read back (34.4%) in 1.0 s, "
			 "46.1 MB/s, ETA 0:00:02", "SIGUSR1's line: got %s", line);
}

/*
 * The read-back's start, first seen with bytes already read back (a
 * SIGUSR1 between two redraws): it is taken as the last reading of the
 * copy, not as now, which made the first verify rate absurd.
 */
Test(report, verify_start_seen_late)
{
	struct progress progress;
	struct progress_reading copying = { .sectors_done = 1024, .sectors_total = 2048 };
	struct progress_reading verifying = { .sectors_done = 2048, .sectors_total = 2048,
					      .phase = KCOPYD_PHASE_VERIFY, .sectors_verified = 512,
					      .sectors_verify_total = 4096 };

	progress_init(&progress, false, -1);
	progress_record(&progress, &copying);
	cr_assert(progress.copy_seen_seconds > 0);
	cr_assert_eq(progress.verify_start_seconds, 0);
	progress_record(&progress, &verifying);
	cr_assert_eq(progress.verify_start_seconds, progress.copy_seen_seconds,
		     "verify began at %.6f, the copy was last seen at %.6f", progress.verify_start_seconds,
		     progress.copy_seen_seconds);
	verifying.sectors_verified = 1024;
	progress_record(&progress, &verifying);
	cr_assert_eq(progress.verify_start_seconds, progress.copy_seen_seconds, "the start moved");
}
