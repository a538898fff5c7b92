/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The text of the metrics file (src/kcopydfs/metrics.c, kfs_render_metrics()):
 * a pure function of a struct kfs_metrics, tested without a mount.  The
 * mount's file is checked by promtool in tests/test-kcopydfs-metrics.sh;
 * here, the rules of the format that a wrong number would not show.
 */
#include "config.h"

#include <criterion/criterion.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kcopydfs/metrics.h"

TestSuite(metrics, .timeout = 30);

static struct kfs_metrics sample_metrics(void)
{
	struct kfs_metrics metrics = { 0 };

	metrics.stats.jobs_created = 9;
	metrics.stats.jobs_done = 5;
	metrics.stats.jobs_failed = 2;
	metrics.stats.jobs_cancelled = 1;
	metrics.stats.max_jobs = 4096;
	metrics.stats.heap_in_use = 123456;
	metrics.stats.engine.jobs_total = 8;
	metrics.stats.engine.sectors_read = 2048;
	metrics.stats.engine.sectors_written = 6144;
	metrics.stats.engine.sectors_zero = 100;
	metrics.stats.engine.sectors_offloaded = 7;
	metrics.stats.engine.sectors_hashed = 2000;
	metrics.stats.engine.sectors_verified = 4096;
	metrics.stats.engine.read_errors = 3;
	metrics.stats.engine.write_errors = 4;
	metrics.stats.engine.verify_errors = 6;
	metrics.stats.engine.zero_fallbacks = 11;
	metrics.stats.engine.offload_fallbacks = 12;
	metrics.stats.engine.rate = 16 << 20;
	metrics.stats.engine.throttled_ns = 1500000000ull;
	metrics.stats.engine.pages_total = 8192;
	metrics.stats.engine.pages_in_use = 256;
	metrics.stats.engine.pages_peak = 512;
	metrics.stats.engine.subjob_sectors = 2048;
	metrics.stats.engine.depth = 8;
	metrics.stats.engine.io_engine = KCOPYD_IO_ENGINE_LIBAIO;
	metrics.jobs_by_state[KFS_IDLE] = 1;
	metrics.jobs_by_state[KFS_RUNNING] = 2;
	metrics.jobs_by_state[KFS_DONE] = 3;
	metrics.jobs_by_state[KFS_INTERRUPTED] = 4;
	metrics.jobs_paused = 5;
	metrics.started.tv_sec = 1765150000;
	metrics.started.tv_nsec = 250000000;
	return metrics;
}

/* The value of the sample line that starts with @series (a name, with its labels) followed by a blank; NULL if none. */
static const char *sample(const char *text, const char *series)
{
	size_t len = strlen(series);
	const char *line;

	for (line = text; line && *line; line = strchr(line, '\n') ? strchr(line, '\n') + 1 : NULL)
		if (strncmp(line, series, len) == 0 && line[len] == ' ')
			return line + len + 1;
	return NULL;
}

static void expect_value(const char *text, const char *series, const char *want)
{
	const char *value = sample(text, series);
	size_t len = strlen(want);

	cr_expect(value && strncmp(value, want, len) == 0 && value[len] == '\n',
		  "%s: expected \"%s\", the line says \"%.*s\"; the text:\n%s", series, want,
		  value ? (int)strcspn(value, "\n") : 6, value ? value : "absent", text);
}

Test(metrics, numbers_in_base_units)
{
	struct kfs_metrics metrics = sample_metrics();
	static char text[KFS_METRICS_MAX];
	int len = kfs_render_metrics(&metrics, text, sizeof(text));

	cr_assert(len > 0 && (size_t)len < sizeof(text), "rendered %d bytes", len);
	cr_expect(text[len - 1] == '\n', "the text ends with a newline:\n%s", text);
	/* Bytes are the engine's sectors times 512, exactly. */
	expect_value(text, "kcopyd_read_bytes_total", "1048576");
	expect_value(text, "kcopyd_written_bytes_total", "3145728");
	expect_value(text, "kcopyd_zeroed_bytes_total", "51200");
	expect_value(text, "kcopyd_offloaded_bytes_total", "3584");
	expect_value(text, "kcopyd_hashed_bytes_total", "1024000");
	expect_value(text, "kcopyd_verified_bytes_total", "2097152");
	expect_value(text, "kcopyd_read_errors_total", "3");
	expect_value(text, "kcopyd_write_errors_total", "4");
	expect_value(text, "kcopyd_verify_errors_total", "6");
	expect_value(text, "kcopyd_zero_fallbacks_total", "11");
	expect_value(text, "kcopyd_offload_fallbacks_total", "12");
	/* Time in seconds, from nanoseconds; the start as Unix time. */
	expect_value(text, "kcopyd_throttled_seconds_total", "1.500000000");
	expect_value(text, "kcopyd_start_time_seconds", "1765150000.250");
	expect_value(text, "kcopyd_rate_limit_bytes_per_second", "16777216");
	expect_value(text, "kcopyd_pages_budget", "8192");
	expect_value(text, "kcopyd_pages_in_use", "256");
	expect_value(text, "kcopyd_pages_peak", "512");
	expect_value(text, "kcopyd_subjob_size_bytes", "1048576");
	expect_value(text, "kcopyd_subjob_depth", "8");
	expect_value(text, "kcopyd_heap_bytes", "123456");
	expect_value(text, "kcopyd_jobs_max", "4096");
	expect_value(text, "kcopyd_jobs_created_total", "9");
	expect_value(text, "kcopyd_jobs_started_total", "8");
	expect_value(text, "kcopyd_jobs_ended_total{state=\"done\"}", "5");
	expect_value(text, "kcopyd_jobs_ended_total{state=\"failed\"}", "2");
	expect_value(text, "kcopyd_jobs_ended_total{state=\"cancelled\"}", "1");
	expect_value(text, "kcopyd_build_info{version=\"" PACKAGE_VERSION "\",io_engine=\"libaio\"}", "1");
}

Test(metrics, a_gauge_for_every_state)
{
	struct kfs_metrics metrics = sample_metrics();
	static char text[KFS_METRICS_MAX];
	char series[64], want[32];
	unsigned int state, named = 0;

	kfs_render_metrics(&metrics, text, sizeof(text));
	/* Every state the service has a name for, those with no job included (a series must not vanish). */
	for (state = 0; state < KFS_METRICS_STATES; state++) {
		const char *name = kfs_state_name((enum kfs_state)state);

		if (strcmp(name, "unknown") == 0)
			continue;
		named++;
		snprintf(series, sizeof(series), "kcopyd_jobs{state=\"%s\"}", name);
		snprintf(want, sizeof(want), "%" PRIu64, metrics.jobs_by_state[state]);
		expect_value(text, series, want);
	}
	cr_expect(named >= 7, "%u states named: idle, queued, running, done, failed, cancelled, interrupted at least",
		  named);
	/* Paused is not a state of its own in the service: a flag on a queued, running or interrupted job. */
	expect_value(text, "kcopyd_jobs{state=\"paused\"}", "5");
	expect_value(text, "kcopyd_jobs{state=\"interrupted\"}", "4");
	expect_value(text, "kcopyd_jobs{state=\"queued\"}", "0");
}

/*
 * The format's rules: each family's HELP then TYPE, once, before its
 * samples; counters and only counters end in _total; only the labels
 * version, io_engine and state (nothing of a job or a user); a sample line
 * is NAME[{LABELS}] VALUE with nothing else.
 */
Test(metrics, the_exposition_format)
{
	struct kfs_metrics metrics = sample_metrics();
	static char text[KFS_METRICS_MAX];
	char family[128] = "", type[16] = "";
	const char *line, *end;
	unsigned int families = 0, samples = 0;

	kfs_render_metrics(&metrics, text, sizeof(text));
	for (line = text; *line; line = end + 1) {
		char name[128], help_name[128];
		const char *value, *labels;
		size_t name_len;

		end = strchr(line, '\n');
		cr_assert(end, "every line ends with a newline: \"%s\"", line);
		if (strncmp(line, "# HELP ", 7) == 0) {
			cr_assert(sscanf(line, "# HELP %127s", help_name) == 1);
			cr_expect(strcmp(help_name, family) != 0, "%s: a second HELP", help_name);
			cr_expect(strncmp(help_name, "kcopyd_", 7) == 0, "%s: the kcopyd_ prefix", help_name);
			strcpy(family, help_name);
			type[0] = '\0';
			families++;
			/* The next line is its TYPE. */
			cr_assert(sscanf(end + 1, "# TYPE %127s %15s", name, type) == 2 && strcmp(name, family) == 0,
				  "%s: a TYPE line after its HELP, not \"%.*s\"", family, (int)strcspn(end + 1, "\n"),
				  end + 1);
			end = strchr(end + 1, '\n');
			cr_assert(strcmp(type, "counter") == 0 || strcmp(type, "gauge") == 0, "%s: type %s", family,
				  type);
			name_len = strlen(family);
			cr_expect((strcmp(type, "counter") == 0) ==
					  (name_len > 6 && strcmp(family + name_len - 6, "_total") == 0),
				  "%s: a %s, and _total is for counters only", family, type);
			continue;
		}
		cr_assert(line[0] != '#', "only HELP and TYPE comments: \"%.*s\"", (int)(end - line), line);
		samples++;
		name_len = strcspn(line, "{ ");
		cr_expect(family[0] && name_len == strlen(family) && strncmp(line, family, name_len) == 0,
			  "a sample of family %s after its HELP and TYPE: \"%.*s\"", family, (int)(end - line), line);
		labels = line[name_len] == '{' ? line + name_len + 1 : NULL;
		while (labels && *labels != '}') {
			size_t key_len = strcspn(labels, "=");
			const char *close;

			cr_assert(labels[key_len] == '=' && labels[key_len + 1] == '"', "a label: \"%.*s\"",
				  (int)(end - line), line);
			cr_expect((key_len == 7 && strncmp(labels, "version", 7) == 0) ||
					  (key_len == 9 && strncmp(labels, "io_engine", 9) == 0) ||
					  (key_len == 5 && strncmp(labels, "state", 5) == 0),
				  "only the labels version, io_engine and state: \"%.*s\"", (int)(end - line), line);
			close = strchr(labels + key_len + 2, '"');
			cr_assert(close && close < end, "a label's value ends: \"%.*s\"", (int)(end - line), line);
			labels = close[1] == ',' ? close + 2 : close + 1;
		}
		value = strchr(labels ? labels : line, ' ');
		cr_assert(value && value < end, "a value: \"%.*s\"", (int)(end - line), line);
		cr_expect(strspn(value + 1, "0123456789.e+") == (size_t)(end - value - 1),
			  "a number and nothing else after it: \"%.*s\"", (int)(end - line), line);
	}
	cr_expect(families >= 25, "%u families", families);
	cr_expect(samples >= families + 8, "%u samples for %u families", samples, families);
}

/* Every number at its largest still fits in KFS_METRICS_MAX (the snapshot of a read). */
Test(metrics, the_longest_text_fits)
{
	struct kfs_metrics metrics;
	static char text[2 * KFS_METRICS_MAX], fitted[KFS_METRICS_MAX];
	unsigned int state;
	int len;

	memset(&metrics, 0xff, sizeof(metrics));
	metrics.stats.engine.io_engine = KCOPYD_IO_ENGINE_IO_URING;
	metrics.started.tv_sec = INT64_MAX;
	metrics.started.tv_nsec = 999999999;
	for (state = 0; state < KFS_METRICS_STATES; state++)
		metrics.jobs_by_state[state] = UINT64_MAX;
	metrics.jobs_paused = UINT64_MAX;
	len = kfs_render_metrics(&metrics, text, sizeof(text));
	cr_assert(len > 0 && len < KFS_METRICS_MAX, "the longest text is %d bytes, at most %d", len,
		  KFS_METRICS_MAX - 1);
	cr_expect(kfs_render_metrics(&metrics, fitted, sizeof(fitted)) == len && strcmp(fitted, text) == 0,
		  "the same text in a KFS_METRICS_MAX buffer");
	/* Past 2^64 bytes (sectors over 2^55), a float, not a wrapped integer. */
	expect_value(text, "kcopyd_read_bytes_total", "9.4447329657392904e+21");
}

/* Cut short, like snprintf: NUL-terminated, and the length of the whole text. */
Test(metrics, a_short_buffer)
{
	struct kfs_metrics metrics = sample_metrics();
	static char whole[KFS_METRICS_MAX];
	char small[100];
	int len = kfs_render_metrics(&metrics, whole, sizeof(whole));

	memset(small, 'x', sizeof(small));
	cr_expect(kfs_render_metrics(&metrics, small, sizeof(small)) == len, "the whole length from a short buffer");
	cr_expect(small[sizeof(small) - 1] == '\0' && strncmp(small, whole, sizeof(small) - 1) == 0,
		  "its first %zu bytes, NUL-terminated: \"%.100s\"", sizeof(small) - 1, small);
	cr_expect(kfs_render_metrics(&metrics, NULL, 0) == len, "the length alone from no buffer");
}
