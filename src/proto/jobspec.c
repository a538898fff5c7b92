/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Job descriptions: parse the one line written to a job's ctl file into a
 * struct jobspec, and render a struct jobspec back in canonical form.  The
 * grammar is in jobspec.h (and kcopydfs(5)).  Pure functions: no I/O, no
 * FUSE, no engine, so the whole grammar is tested without a mount.
 *
 * Every failure leaves a one-line reason in @why that names the offending
 * token.  Input is quoted into a reason only through show(), which cuts it
 * to SHOWN_BYTES and spells non-printable bytes as \xNN, so a reason never
 * holds a newline or a control character whatever was written to ctl.
 */
#include "config.h"

#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "jobspec.h"

#define SHOWN_BYTES 40					/* input bytes quoted into a reason */
#define SHOWN_SIZE (SHOWN_BYTES * 4 + sizeof("..."))	/* each may become \xNN */
#define SHOWN_QUOTED_SIZE (SHOWN_SIZE + 2)		/* show_quoted() adds two quotes */
#define REGION_WHY_SIZE 512				/* a region's reason, before the key is added */

/* The suffixes of a byte count: the value is shifted left by @shift. */
struct size_suffix {
	char letter;		/* upper case; lower case is accepted too */
	unsigned int shift;	/* log2 of the multiplier */
};

static const struct size_suffix size_suffixes[] = {
	{ 'B', 0 },
	{ 'K', 10 },
	{ 'M', 20 },
	{ 'G', 30 },
	{ 'T', 40 },
};

/*
 * The names flags= accepts, in the order jobspec_render() writes them: the
 * job flags of kcopyd.h, one name each.  Any combination is taken, as
 * kcopyd_validate() takes it (KCOPYD_ALLOCATED wins over KCOPYD_DEST_ZERO).
 */
struct flag_name {
	const char *name;
	unsigned int flag;
};

static const struct flag_name flag_names[] = {
	{ "ignore_error", KCOPYD_IGNORE_ERROR },
	{ "write_seq", KCOPYD_WRITE_SEQ },
	{ "dest_zero", KCOPYD_DEST_ZERO },
	{ "allocated", KCOPYD_ALLOCATED },
	{ "no_offload", KCOPYD_NO_OFFLOAD },
	{ "verify", KCOPYD_VERIFY },
};

#define ARRAY_SIZE(array) (sizeof(array) / sizeof((array)[0]))

/* ---- reasons ---------------------------------------------------------- */

/* Format a reason into @why (if there is room for one) and return @err. */
__attribute__((format(printf, 4, 5)))
static int refuse(int err, char *why, size_t why_len, const char *fmt, ...)
{
	va_list ap;

	if (why && why_len) {
		va_start(ap, fmt);
		vsnprintf(why, why_len, fmt, ap);
		va_end(ap);
	}
	return err;
}

/*
 * Copy at most SHOWN_BYTES of @text into @shown (SHOWN_SIZE bytes), each
 * byte outside printable ASCII written as \xNN, and "..." when cut short.
 */
static void show(char *shown, const char *text, size_t len)
{
	size_t shown_bytes = len > SHOWN_BYTES ? SHOWN_BYTES : len;
	size_t in_pos, out_pos = 0;

	for (in_pos = 0; in_pos < shown_bytes; in_pos++) {
		unsigned char byte = (unsigned char)text[in_pos];

		if (byte < 0x20 || byte >= 0x7f)
			out_pos += (size_t)snprintf(shown + out_pos, SHOWN_SIZE - out_pos, "\\x%02x", byte);
		else
			shown[out_pos++] = (char)byte;
	}
	if (len > shown_bytes) {
		memcpy(shown + out_pos, "...", 3);
		out_pos += 3;
	}
	shown[out_pos] = '\0';
}

/*
 * Like show(), in double quotes (SHOWN_QUOTED_SIZE bytes) unless @text
 * already starts with one, so a region reads the same whether or not
 * the user quoted its path: to="rel/path", to="/my disk:x".
 */
static void show_quoted(char *shown, const char *text, size_t len)
{
	if (len && text[0] == '"') {
		show(shown, text, len);
		return;
	}
	shown[0] = '"';
	show(shown + 1, text, len);
	strcat(shown, "\"");
}

/* ---- characters and words --------------------------------------------- */

/* The token separators. */
static bool is_blank(char c)
{
	return c == ' ' || c == '\t';
}

static bool is_digit(char c)
{
	return c >= '0' && c <= '9';
}

/*
 * A byte no job description may hold: a control character.  Tab is the
 * exception because it separates tokens (and, inside quotes, is part of
 * the path).
 */
static bool is_forbidden_control(unsigned char byte)
{
	return (byte < 0x20 && byte != '\t') || byte == 0x7f;
}

/* @text[0, @len) is exactly @word. */
static bool word_is(const char *text, size_t len, const char *word)
{
	return len == strlen(word) && memcmp(text, word, len) == 0;
}

/* The shift of size suffix @letter (either case), or -1 if it is not one. */
static int suffix_shift(char letter)
{
	size_t suffix_index;

	if (letter >= 'a' && letter <= 'z')
		letter = (char)(letter - 'a' + 'A');
	for (suffix_index = 0; suffix_index < ARRAY_SIZE(size_suffixes); suffix_index++)
		if (size_suffixes[suffix_index].letter == letter)
			return (int)size_suffixes[suffix_index].shift;
	return -1;
}

/* The case-insensitive equality of @text[0, @len) and @word. */
static bool word_is_nocase(const char *text, size_t len, const char *word)
{
	size_t pos;

	if (len != strlen(word))
		return false;
	for (pos = 0; pos < len; pos++) {
		char c = text[pos];

		if (c >= 'a' && c <= 'z')
			c = (char)(c - 'a' + 'A');
		if (c != word[pos])
			return false;
	}
	return true;
}

/* How the unit after a number's digits reads. */
enum unit_kind {
	UNIT_NONE,		/* no unit: sectors */
	UNIT_BINARY,		/* B, K, M, G, T or KiB, MiB, GiB, TiB: powers of 1024 */
	UNIT_DECIMAL,		/* KB, MB, GB, TB: 1000-based to many tools, refused */
	UNIT_OTHER,		/* anything else: not a number at all */
};

/* Lex the unit @text[0, @len) (either case); *@shift is log2 of a binary unit's multiplier. */
static enum unit_kind lex_unit(const char *text, size_t len, int *shift)
{
	if (len == 0)
		return UNIT_NONE;
	*shift = suffix_shift(text[0]);
	if (*shift < 0)
		return UNIT_OTHER;
	if (len == 1)
		return UNIT_BINARY;
	if (*shift > 0 && len == 3 && word_is_nocase(text + 1, 2, "IB"))
		return UNIT_BINARY;
	if (*shift > 0 && len == 2 && (text[1] == 'B' || text[1] == 'b'))
		return UNIT_DECIMAL;
	return UNIT_OTHER;
}

/*
 * @text has the shape of a number: DIGITS with an optional unit, a
 * 1000-based one included (so that it is refused with its reason, not
 * taken as part of a path).
 */
static bool looks_like_number(const char *text, size_t len)
{
	size_t digits = 0;
	int shift;

	while (digits < len && is_digit(text[digits]))
		digits++;
	if (digits == 0)
		return false;
	return lex_unit(text + digits, len - digits, &shift) != UNIT_OTHER;
}

/* @text has the shape of a region suffix: NUMBER or NUMBER+NUMBER. */
static bool looks_like_sector_spec(const char *text, size_t len)
{
	const char *plus = memchr(text, '+', len);

	if (!plus)
		return looks_like_number(text, len);
	return looks_like_number(text, (size_t)(plus - text)) &&
	       looks_like_number(plus + 1, len - (size_t)(plus - text) - 1);
}

/* ---- numbers and regions ---------------------------------------------- */

/*
 * jobspec_parse_number() with the reason of a failure: *@problem is what
 * follows the number in a message ("is not a number", ...).
 */
static int parse_number(const char *text, size_t len, uint64_t *sectors, const char **problem)
{
	uint64_t value = 0;
	size_t pos;
	int shift = 0;

	*problem = "is not a number";
	if (!text || !looks_like_number(text, len))
		return -EINVAL;
	for (pos = 0; pos < len && is_digit(text[pos]); pos++) {
		unsigned int digit = (unsigned int)(text[pos] - '0');

		if (value > (UINT64_MAX - digit) / 10) {
			*problem = "does not fit in 64 bits";
			return -ERANGE;
		}
		value = value * 10 + digit;
	}
	switch (lex_unit(text + pos, len - pos, &shift)) {
	case UNIT_NONE:
		break;
	case UNIT_DECIMAL:
		*problem = "has a 1000-based unit (KB, MB, GB, TB are not taken: write KiB or K, MiB or M, ... "
			   "for powers of 1024, or sectors)";
		return -EINVAL;
	case UNIT_OTHER:
		return -EINVAL;
	case UNIT_BINARY:
		if (shift < KCOPYD_SECTOR_SHIFT) {
			/* Plain bytes (B): they must make whole sectors. */
			if (value % KCOPYD_SECTOR_SIZE) {
				*problem = "is not a multiple of 512 bytes";
				return -EINVAL;
			}
			value >>= KCOPYD_SECTOR_SHIFT;
		} else {
			/* K and up are whole sectors: a shift by (suffix shift - 9). */
			unsigned int sector_shift = (unsigned int)shift - KCOPYD_SECTOR_SHIFT;

			if (value > (UINT64_MAX >> sector_shift)) {
				*problem = "does not fit in 64 bits";
				return -ERANGE;
			}
			value <<= sector_shift;
		}
		break;
	}
	*sectors = value;
	return 0;
}

int jobspec_parse_number(const char *text, size_t len, uint64_t *sectors)
{
	const char *problem;

	return parse_number(text, len, sectors, &problem);
}

int jobspec_parse_rate(const char *text, size_t len, uint64_t *bytes, char *why, size_t why_len)
{
	char shown[SHOWN_SIZE];
	uint64_t value = 0;
	size_t pos;
	int shift = 0;

	if (!text)
		text = "";
	show(shown, text, len);
	/* The region numbers' lexer: the same units, the same refusal of KB and friends. */
	if (!looks_like_number(text, len))
		return refuse(-EINVAL, why, why_len,
			      "rate '%s' is not a number of bytes per second (write e.g. 16M, 16MiB or 16777216)",
			      shown);
	for (pos = 0; pos < len && is_digit(text[pos]); pos++) {
		unsigned int digit = (unsigned int)(text[pos] - '0');

		if (value > (UINT64_MAX - digit) / 10)
			return refuse(-ERANGE, why, why_len, "rate '%s' does not fit in 64 bits", shown);
		value = value * 10 + digit;
	}
	switch (lex_unit(text + pos, len - pos, &shift)) {
	case UNIT_DECIMAL:
		return refuse(-EINVAL, why, why_len,
			      "rate '%s' has a 1000-based unit (KB, MB, GB, TB are not taken: write KiB or K, MiB "
			      "or M, ... for powers of 1024, or bytes)", shown);
	case UNIT_OTHER:
		return refuse(-EINVAL, why, why_len, "rate '%s' is not a number of bytes per second", shown);
	case UNIT_BINARY:
		if (value > (UINT64_MAX >> shift))
			return refuse(-ERANGE, why, why_len, "rate '%s' does not fit in 64 bits", shown);
		value <<= shift;
		break;
	case UNIT_NONE:
		break;
	}
	if (value < KCOPYD_MIN_RATE)
		return refuse(-EINVAL, why, why_len,
			      "rate '%s' is below %u bytes per second, the lowest limit (for none, leave the rate "
			      "out; a job's ctl takes rate=none)",
			      shown, KCOPYD_MIN_RATE);
	*bytes = value;
	return 0;
}

/*
 * Read the quoted path that starts @text (text[0] is '"') into a new
 * string at *@path.  *@consumed is the length up to and including the
 * closing quote.  @shown names the region in a reason.
 */
static int unquote_path(const char *text, size_t len, unsigned int flags, char **path, size_t *path_len,
			size_t *consumed, const char *shown, char *why, size_t why_len)
{
	char *unquoted = malloc(len);	/* the quotes alone make it shorter than @text */
	size_t in_pos = 1, out_pos = 0;
	int r;

	if (!unquoted)
		return refuse(-ENOMEM, why, why_len, "%s: out of memory", shown);
	while (in_pos < len && text[in_pos] != '"') {
		unsigned char byte = (unsigned char)text[in_pos];

		if (byte == '\\') {
			if (in_pos + 1 >= len)
				break;	/* a lone backslash: the quote is not closed */
			if (text[in_pos + 1] != '"' && text[in_pos + 1] != '\\') {
				char escape[SHOWN_SIZE];

				show(escape, text + in_pos, 2);
				r = refuse(-EINVAL, why, why_len,
					   "%s: unknown escape %s in a quoted path (only \\\" and \\\\)", shown,
					   escape);
				goto err_free_unquoted;
			}
			in_pos++;
			byte = (unsigned char)text[in_pos];
		} else if (is_forbidden_control(byte) && !(flags & JOBSPEC_REGION_WORD)) {
			r = refuse(-EINVAL, why, why_len, "%s: control character \\x%02x in the path", shown,
				   byte);
			goto err_free_unquoted;
		}
		unquoted[out_pos++] = (char)byte;
		in_pos++;
	}
	if (in_pos >= len) {
		r = refuse(-EINVAL, why, why_len, "%s: unterminated quote", shown);
		goto err_free_unquoted;
	}
	unquoted[out_pos] = '\0';
	*path = unquoted;
	*path_len = out_pos;
	*consumed = in_pos + 1;
	return 0;

err_free_unquoted:
	free(unquoted);
	return r;
}

/*
 * Check an unquoted path: it cannot hold what would have split the token
 * (blanks), what only a quoted path may hold (quotes), or control bytes.
 * A command-line word (JOBSPEC_REGION_WORD) was split by the shell
 * already: there the name is taken as it is.
 */
static int check_unquoted_path(const char *path, size_t len, unsigned int flags, const char *shown, char *why,
			       size_t why_len)
{
	size_t pos;

	if (flags & JOBSPEC_REGION_WORD)
		return 0;
	for (pos = 0; pos < len; pos++) {
		unsigned char byte = (unsigned char)path[pos];

		if (byte == '"')
			return refuse(-EINVAL, why, why_len,
				      "%s: a quote inside an unquoted path (quote the whole path)", shown);
		if (is_blank((char)byte))
			return refuse(-EINVAL, why, why_len, "%s: a blank in an unquoted path (quote the path)",
				      shown);
		if (is_forbidden_control(byte))
			return refuse(-EINVAL, why, why_len, "%s: control character \\x%02x in the path", shown,
				      byte);
	}
	return 0;
}

/* Parse SECTOR[+COUNT] (already known to have that shape) into @region. */
static int parse_sector_spec(const char *spec, size_t len, struct jobspec_region *region, const char *shown,
			     char *why, size_t why_len)
{
	const char *plus = memchr(spec, '+', len);
	size_t sector_len = plus ? (size_t)(plus - spec) : len;
	char number[SHOWN_SIZE];
	const char *problem;
	int r;

	r = parse_number(spec, sector_len, &region->sector, &problem);
	if (r) {
		show(number, spec, sector_len);
		return refuse(r, why, why_len, "%s: sector %s %s", shown, number, problem);
	}
	if (!plus)
		return 0;
	r = parse_number(plus + 1, len - sector_len - 1, &region->count, &problem);
	if (r) {
		show(number, plus + 1, len - sector_len - 1);
		return refuse(r, why, why_len, "%s: count %s %s", shown, number, problem);
	}
	if (region->count > UINT64_MAX - region->sector)
		return refuse(-ERANGE, why, why_len, "%s: sector %llu + count %llu is past 2^64 sectors", shown,
			      (unsigned long long)region->sector, (unsigned long long)region->count);
	region->has_count = true;
	return 0;
}

bool jobspec_is_uri(const char *text, size_t len)
{
	char head[JOBSPEC_URI_SCHEME_MAX + 1];
	size_t head_len = len < JOBSPEC_URI_SCHEME_MAX ? len : JOBSPEC_URI_SCHEME_MAX;

	const char *colon;

	/*
	 * kcopyd_is_nbd_uri() decides on the scheme, within the first bytes;
	 * the grammar also wants "://" right after it (nbd:x is a file).
	 */
	memcpy(head, text, head_len);
	head[head_len] = '\0';
	colon = strchr(head, ':');
	return kcopyd_is_nbd_uri(head) == 1 && colon && strncmp(colon, "://", 3) == 0;
}

/*
 * Where the path of URI @text starts: just after the authority, at the
 * first '/' after "://" (@len when there is none: nbd://host:10809).
 */
static size_t uri_path_start(const char *text, size_t len)
{
	const char *separator = NULL;
	size_t pos;

	for (pos = 0; pos + 3 <= len; pos++)
		if (memcmp(text + pos, "://", 3) == 0) {
			separator = text + pos;
			break;
		}
	if (!separator)
		return len;
	for (pos = (size_t)(separator - text) + 3; pos < len; pos++)
		if (text[pos] == '/')
			return pos;
	return len;
}

int jobspec_parse_region_flags(const char *text, size_t len, unsigned int flags, struct jobspec_region *region,
			       char *why, size_t why_len)
{
	char shown[SHOWN_QUOTED_SIZE];
	const char *sector_spec = NULL;
	size_t sector_spec_len = 0;
	char *path = NULL;
	size_t path_len = 0;
	int r;

	memset(region, 0, sizeof(*region));
	if (!text)
		return refuse(-EINVAL, why, why_len, "no region");
	show_quoted(shown, text, len);

	if (len && text[0] == '"') {
		size_t consumed = 0;

		r = unquote_path(text, len, flags, &path, &path_len, &consumed, shown, why, why_len);
		if (r)
			return r;
		if (consumed < len) {
			/* After the closing quote only ":SECTOR[+COUNT]" may follow. */
			sector_spec = text + consumed + 1;
			sector_spec_len = len - consumed - 1;
			if (text[consumed] != ':' || !looks_like_sector_spec(sector_spec, sector_spec_len)) {
				r = refuse(-EINVAL, why, why_len,
					   "%s: after the quoted path only :SECTOR[+COUNT] may follow", shown);
				goto err_free_path;
			}
		}
		region->is_uri = jobspec_is_uri(path, path_len);
	} else {
		/*
		 * The suffix is split off at the last ':' only when what
		 * follows is SECTOR[+COUNT], so paths with colons in them
		 * (/dev/disk/by-path/pci-0000:00:1f.2-ata-1) need no quotes.
		 * In a URI only a colon after the authority counts: the one
		 * of nbd://host:10809 is the port's.
		 */
		size_t colon_pos = len, lowest = 0;

		region->is_uri = jobspec_is_uri(text, len);
		if (region->is_uri)
			lowest = uri_path_start(text, len);
		while (colon_pos > lowest && text[colon_pos - 1] != ':')
			colon_pos--;
		path_len = len;
		if (colon_pos > lowest && looks_like_sector_spec(text + colon_pos, len - colon_pos)) {
			path_len = colon_pos - 1;
			sector_spec = text + colon_pos;
			sector_spec_len = len - colon_pos;
		}
		r = check_unquoted_path(text, path_len, flags, shown, why, why_len);
		if (r)
			return r;
		path = malloc(path_len + 1);
		if (!path)
			return refuse(-ENOMEM, why, why_len, "%s: out of memory", shown);
		memcpy(path, text, path_len);
		path[path_len] = '\0';
	}

	if (path_len == 0) {
		r = refuse(-EINVAL, why, why_len, "%s: empty path", shown);
		goto err_free_path;
	}
	if (memchr(path, '\0', path_len)) {
		r = refuse(-EINVAL, why, why_len, "%s: a NUL byte in the path", shown);
		goto err_free_path;
	}
	if (!region->is_uri && path[0] != '/' && !(flags & JOBSPEC_REGION_WORD)) {
		r = refuse(-EINVAL, why, why_len, "%s: relative path", shown);
		goto err_free_path;
	}
	if (sector_spec) {
		r = parse_sector_spec(sector_spec, sector_spec_len, region, shown, why, why_len);
		if (r)
			goto err_free_path;
	}
	region->path = path;
	return 0;

err_free_path:
	free(path);
	memset(region, 0, sizeof(*region));
	return r;
}

int jobspec_parse_region(const char *text, size_t len, struct jobspec_region *region, char *why,
			 size_t why_len)
{
	return jobspec_parse_region_flags(text, len, 0, region, why, why_len);
}

/* ---- the line ---------------------------------------------------------- */

/* What jobspec_parse() has seen so far, and where its reason goes. */
struct line_parser {
	struct jobspec *spec;
	bool have_from;
	bool have_flags;
	bool have_hash;
	bool have_rate;
	char *why;
	size_t why_len;
};

/* Refuse a line that holds any control character other than tab. */
static int check_line_bytes(const char *text, size_t len, char *why, size_t why_len)
{
	size_t pos;

	for (pos = 0; pos < len; pos++) {
		unsigned char byte = (unsigned char)text[pos];

		if (is_forbidden_control(byte))
			return refuse(-EINVAL, why, why_len,
				      "control character \\x%02x at byte %zu (a job description is one line of text)",
				      byte, pos);
	}
	return 0;
}

/*
 * Find the next token at or after *@pos: a run of bytes up to a blank
 * outside double quotes.  Sets *@token_len to 0 at the end of the line.
 * Inside quotes a backslash takes the next byte with it, so \" does not
 * close them; what the escapes mean is the region parser's business.
 */
static int next_token(const char *text, size_t len, size_t *pos, const char **token, size_t *token_len,
		      char *why, size_t why_len)
{
	size_t start = *pos, end;
	bool in_quotes = false;

	while (start < len && is_blank(text[start]))
		start++;
	for (end = start; end < len; end++) {
		if (in_quotes && text[end] == '\\' && end + 1 < len)
			end++;
		else if (text[end] == '"')
			in_quotes = !in_quotes;
		else if (!in_quotes && is_blank(text[end]))
			break;
	}
	if (in_quotes) {
		char shown[SHOWN_SIZE];

		show(shown, text + start, end - start);
		return refuse(-EINVAL, why, why_len, "%s: unterminated quote", shown);
	}
	*token = text + start;
	*token_len = end - start;
	*pos = end;
	return 0;
}

/* Parse one region into @region; the reason is "KEY=<region's reason>". */
static int parse_keyed_region(struct line_parser *parser, const char *key, const char *value, size_t value_len,
			      struct jobspec_region *region)
{
	char region_why[REGION_WHY_SIZE];
	int r;

	r = jobspec_parse_region(value, value_len, region, region_why, sizeof(region_why));
	if (r)
		return refuse(r, parser->why, parser->why_len, "%s=%s", key, region_why);
	return 0;
}

/* flags=NAME[,NAME...]; an empty list means no flags. */
static int parse_flags(struct line_parser *parser, const char *value, size_t value_len)
{
	size_t name_start = 0;

	if (value_len == 0)
		return 0;
	for (;;) {
		const char *comma = memchr(value + name_start, ',', value_len - name_start);
		size_t name_end = comma ? (size_t)(comma - value) : value_len;
		const char *name = value + name_start;
		size_t name_len = name_end - name_start;
		size_t flag_index;
		char shown[SHOWN_SIZE];

		for (flag_index = 0; flag_index < ARRAY_SIZE(flag_names); flag_index++)
			if (word_is(name, name_len, flag_names[flag_index].name))
				break;
		if (flag_index == ARRAY_SIZE(flag_names)) {
			if (name_len == 0) {
				show(shown, value, value_len);
				return refuse(-EINVAL, parser->why, parser->why_len, "flags=%s: empty flag name",
					      shown);
			}
			show(shown, name, name_len);
			return refuse(-EINVAL, parser->why, parser->why_len, "unknown flag '%s' (known: %s)", shown,
				      JOBSPEC_FLAG_NAMES);
		}
		parser->spec->flags |= flag_names[flag_index].flag;
		if (!comma)
			return 0;
		name_start = name_end + 1;
	}
}

/* hash=ALG[,ALG...]: at least one name; a name may repeat, as a flag may. */
static int parse_hashes(struct line_parser *parser, const char *value, size_t value_len)
{
	size_t name_start = 0;
	char shown[SHOWN_SIZE];

	if (value_len == 0)
		return refuse(-EINVAL, parser->why, parser->why_len, "hash= names no algorithm (known: %s)",
			      JOBSPEC_HASH_NAMES);
	for (;;) {
		const char *comma = memchr(value + name_start, ',', value_len - name_start);
		size_t name_end = comma ? (size_t)(comma - value) : value_len;
		size_t name_len = name_end - name_start;
		char name[16];
		unsigned int hash;

		show(shown, value + name_start, name_len);
		if (name_len == 0)
			return refuse(-EINVAL, parser->why, parser->why_len, "hash=: empty algorithm name");
		if (name_len >= sizeof(name))
			return refuse(-EINVAL, parser->why, parser->why_len, "unknown hash '%s' (known: %s)", shown,
				      JOBSPEC_HASH_NAMES);
		memcpy(name, value + name_start, name_len);
		name[name_len] = '\0';
		if (kcopyd_hash_parse(name, &hash) < 0)
			return refuse(-EINVAL, parser->why, parser->why_len, "unknown hash '%s' (known: %s)", shown,
				      JOBSPEC_HASH_NAMES);
		parser->spec->hashes |= hash;
		if (!comma)
			return 0;
		name_start = name_end + 1;
	}
}

/* One KEY=VALUE token after the operation. */
static int parse_field(struct line_parser *parser, const char *token, size_t token_len)
{
	struct jobspec *spec = parser->spec;
	const char *equals = memchr(token, '=', token_len);
	const char *key = token, *value;
	size_t key_len, value_len;
	char shown[SHOWN_SIZE];
	int r;

	if (!equals) {
		show(shown, token, token_len);
		return refuse(-EINVAL, parser->why, parser->why_len, "'%s': expected KEY=VALUE", shown);
	}
	key_len = (size_t)(equals - token);
	value = equals + 1;
	value_len = token_len - key_len - 1;

	if (word_is(key, key_len, "from")) {
		if (spec->op == JOBSPEC_ZERO)
			return refuse(-EINVAL, parser->why, parser->why_len,
				      "zero takes no from= (it writes zeros to each to=)");
		if (parser->have_from)
			return refuse(-EINVAL, parser->why, parser->why_len, "from= given twice");
		r = parse_keyed_region(parser, "from", value, value_len, &spec->from);
		if (r)
			return r;
		parser->have_from = true;
		return 0;
	}
	if (word_is(key, key_len, "to")) {
		if (spec->num_dests == KCOPYD_MAX_REGIONS)
			return refuse(-EINVAL, parser->why, parser->why_len,
				      "too many destinations: at most %d to=", KCOPYD_MAX_REGIONS);
		r = parse_keyed_region(parser, "to", value, value_len, &spec->dests[spec->num_dests]);
		if (r)
			return r;
		spec->num_dests++;
		return 0;
	}
	if (word_is(key, key_len, "flags")) {
		if (parser->have_flags)
			return refuse(-EINVAL, parser->why, parser->why_len, "flags= given twice");
		parser->have_flags = true;
		return parse_flags(parser, value, value_len);
	}
	if (word_is(key, key_len, "hash")) {
		if (spec->op == JOBSPEC_ZERO)
			return refuse(-EINVAL, parser->why, parser->why_len,
				      "zero takes no hash= (it reads no source to hash)");
		if (parser->have_hash)
			return refuse(-EINVAL, parser->why, parser->why_len, "hash= given twice");
		parser->have_hash = true;
		return parse_hashes(parser, value, value_len);
	}
	if (word_is(key, key_len, "rate")) {
		if (spec->op == JOBSPEC_ZERO)
			return refuse(-EINVAL, parser->why, parser->why_len,
				      "zero takes no rate= (a rate counts bytes read, and it reads none)");
		if (parser->have_rate)
			return refuse(-EINVAL, parser->why, parser->why_len, "rate= given twice");
		parser->have_rate = true;
		return jobspec_parse_rate(value, value_len, &spec->rate, parser->why, parser->why_len);
	}
	show(shown, key, key_len);
	return refuse(-EINVAL, parser->why, parser->why_len, "unknown key '%s' (known: from, to, flags, hash, rate)",
		      shown);
}

/*
 * The line, without its newline, is a canonical description as the daemon
 * renders it once the regions are open: every count given, and exactly
 * what jobspec_render() makes of @spec.
 */
static bool is_canonical(const struct jobspec *spec, const char *text, size_t len)
{
	char rendered[JOBSPEC_MAX_CANONICAL];	/* on the stack: no allocation to fail, no errno to lose */
	unsigned int dest_index;

	if (spec->op == JOBSPEC_COPY && !spec->from.has_count)
		return false;
	for (dest_index = 0; dest_index < spec->num_dests; dest_index++)
		if (!spec->dests[dest_index].has_count)
			return false;
	return len + 2 <= sizeof(rendered) && jobspec_render(spec, rendered, len + 2) == (int)len + 1 &&
	       memcmp(rendered, text, len) == 0;
}

/* jobspec_parse() of @len bytes (no newline), whatever their length. */
static int parse_line(const char *text, size_t len, struct jobspec *spec, char *why, size_t why_len)
{
	struct line_parser parser = { .spec = spec, .why = why, .why_len = why_len };
	const char *token;
	size_t pos = 0, token_len;
	char shown[SHOWN_SIZE];
	int r;

	r = check_line_bytes(text, len, why, why_len);
	if (r)
		return r;

	r = next_token(text, len, &pos, &token, &token_len, why, why_len);
	if (r)
		return r;
	if (token_len == 0)
		return refuse(-EINVAL, why, why_len, "empty job description (expected copy or zero)");
	if (word_is(token, token_len, "copy")) {
		spec->op = JOBSPEC_COPY;
	} else if (word_is(token, token_len, "zero")) {
		spec->op = JOBSPEC_ZERO;
	} else {
		show(shown, token, token_len);
		return refuse(-EINVAL, why, why_len, "unknown operation '%s' (expected copy or zero)", shown);
	}

	for (;;) {
		r = next_token(text, len, &pos, &token, &token_len, why, why_len);
		if (r)
			goto err_free_spec;
		if (token_len == 0)
			break;
		r = parse_field(&parser, token, token_len);
		if (r)
			goto err_free_spec;
	}
	if (spec->op == JOBSPEC_COPY && !parser.have_from) {
		r = refuse(-EINVAL, why, why_len, "copy needs a from=REGION");
		goto err_free_spec;
	}
	if (spec->num_dests == 0) {
		r = refuse(-EINVAL, why, why_len, "no destination: give at least one to=REGION");
		goto err_free_spec;
	}
	if (spec->op == JOBSPEC_ZERO && (spec->flags & KCOPYD_VERIFY)) {
		r = refuse(-EINVAL, why, why_len, "zero takes no flags=verify (it reads no source to compare with)");
		goto err_free_spec;
	}
	return 0;

err_free_spec:
	jobspec_free(spec);
	return r;
}

int jobspec_parse(const char *text, size_t len, struct jobspec *spec, char *why, size_t why_len)
{
	int r;

	memset(spec, 0, sizeof(*spec));
	if (why && why_len)
		why[0] = '\0';
	if (!text) {
		if (len)
			return refuse(-EINVAL, why, why_len, "no text");
		text = "";	/* no pointer arithmetic on NULL below */
	}
	if (len && text[len - 1] == '\n')
		len--;
	if (len > JOBSPEC_MAX_CANONICAL_LINE)
		return refuse(-E2BIG, why, why_len, "the line is %zu bytes, at most %d", len, JOBSPEC_MAX_LINE);
	r = parse_line(text, len, spec, why, why_len);
	/*
	 * Over JOBSPEC_MAX_LINE only a canonical description is taken, so
	 * that what the daemon renders (longer than what was written when
	 * paths are quoted and counts filled in) can be written back, and
	 * resumed.  Anything else that long is refused for its length, the
	 * first thing wrong with it.
	 */
	if (len > JOBSPEC_MAX_LINE && r != -ENOMEM && (r < 0 || !is_canonical(spec, text, len))) {
		jobspec_free(spec);
		return refuse(-E2BIG, why, why_len, "the line is %zu bytes, at most %d", len, JOBSPEC_MAX_LINE);
	}
	return r;
}

void jobspec_free(struct jobspec *spec)
{
	unsigned int dest_index;

	if (!spec)
		return;
	free(spec->from.path);
	for (dest_index = 0; dest_index < spec->num_dests && dest_index < KCOPYD_MAX_REGIONS; dest_index++)
		free(spec->dests[dest_index].path);
	memset(spec, 0, sizeof(*spec));
}

/* ---- rendering --------------------------------------------------------- */

/*
 * An output buffer that counts past its end, as snprintf() does, so the
 * renderer runs once and learns both the text and the length it needs.
 */
struct text_out {
	char *buf;
	size_t size;
	size_t used;	/* may exceed size */
};

static void out_bytes(struct text_out *out, const char *bytes, size_t len)
{
	if (out->used < out->size) {
		size_t room = out->size - out->used;

		memcpy(out->buf + out->used, bytes, len < room ? len : room);
	}
	out->used += len;
}

static void out_string(struct text_out *out, const char *string)
{
	out_bytes(out, string, strlen(string));
}

static void out_number(struct text_out *out, uint64_t number)
{
	char digits[24];

	snprintf(digits, sizeof(digits), "%llu", (unsigned long long)number);
	out_string(out, digits);
}

/*
 * A path needs quotes when written bare it would not parse back: blanks
 * would split it, quotes and backslashes would be taken as quoting, and
 * non-printable bytes are clearer in quotes (those the parser refuses
 * anyway, control characters, cannot come out of jobspec_parse()).
 */
static bool path_needs_quotes(const char *path)
{
	const unsigned char *byte;

	if (!*path)
		return true;
	for (byte = (const unsigned char *)path; *byte; byte++)
		if (*byte <= ' ' || *byte >= 0x7f || *byte == '"' || *byte == '\\')
			return true;
	return false;
}

static void out_path(struct text_out *out, const char *path, bool is_uri, unsigned int flags)
{
	const char *pos;
	bool quote;

	if (!path)
		path = "";
	/*
	 * A URI without a path (nbd://host:10809) would read back with its
	 * port's colon before the suffix, nbd://host:10809:0 taken whole:
	 * in quotes the suffix stands apart.  A command-line word needs
	 * quotes for nothing else but a leading quote.
	 */
	if (flags & JOBSPEC_REGION_WORD)
		quote = !*path || path[0] == '"';
	else
		quote = path_needs_quotes(path);
	quote = quote || (is_uri && uri_path_start(path, strlen(path)) == strlen(path));
	if (!quote) {
		out_string(out, path);
		return;
	}
	out_bytes(out, "\"", 1);
	for (pos = path; *pos; pos++) {
		if (*pos == '"' || *pos == '\\')
			out_bytes(out, "\\", 1);
		out_bytes(out, pos, 1);
	}
	out_bytes(out, "\"", 1);
}

/* PATH:SECTOR[+COUNT]: the suffix is always there, so a colon in the path needs no quotes. */
static void out_region_text(struct text_out *out, const struct jobspec_region *region, unsigned int flags)
{
	out_path(out, region->path, region->is_uri, flags);
	out_bytes(out, ":", 1);
	out_number(out, region->sector);
	if (region->has_count) {
		out_bytes(out, "+", 1);
		out_number(out, region->count);
	}
}

/*
 * End @out's text with a NUL.  The length must fit the int returned as
 * well as the buffer.  Return: the length, or -ENOSPC (an empty string
 * then, when there is a buffer at all).
 */
static int out_finish(struct text_out *out)
{
	if (out->used >= out->size || out->used > INT_MAX) {
		if (out->size)
			out->buf[0] = '\0';
		return -ENOSPC;
	}
	out->buf[out->used] = '\0';
	return (int)out->used;
}

int jobspec_render_region(const struct jobspec_region *region, unsigned int flags, char *buf, size_t len)
{
	struct text_out out = { .buf = buf, .size = buf ? len : 0, .used = 0 };

	out_region_text(&out, region, flags);
	return out_finish(&out);
}

/* " KEY=PATH:SECTOR[+COUNT]" */
static void out_region(struct text_out *out, const char *key, const struct jobspec_region *region)
{
	out_bytes(out, " ", 1);
	out_string(out, key);
	out_bytes(out, "=", 1);
	out_region_text(out, region, 0);
}

int jobspec_render(const struct jobspec *spec, char *buf, size_t len)
{
	struct text_out out = { .buf = buf, .size = buf ? len : 0, .used = 0 };
	unsigned int dest_index;
	size_t flag_index;
	const char *separator = " flags=";

	out_string(&out, spec->op == JOBSPEC_COPY ? "copy" : "zero");
	if (spec->op == JOBSPEC_COPY)
		out_region(&out, "from", &spec->from);
	for (dest_index = 0; dest_index < spec->num_dests && dest_index < KCOPYD_MAX_REGIONS; dest_index++)
		out_region(&out, "to", &spec->dests[dest_index]);
	for (flag_index = 0; flag_index < ARRAY_SIZE(flag_names); flag_index++) {
		if (!(spec->flags & flag_names[flag_index].flag))
			continue;
		out_string(&out, separator);
		out_string(&out, flag_names[flag_index].name);
		separator = ",";
	}
	separator = " hash=";
	for (unsigned int hash = 1; hash <= KCOPYD_HASH_ALL; hash <<= 1) {
		const char *name = kcopyd_hash_name(hash);

		if (!(spec->hashes & hash) || !name)
			continue;
		out_string(&out, separator);
		out_string(&out, name);
		separator = ",";
	}
	if (spec->rate) {
		out_string(&out, " rate=");
		out_number(&out, spec->rate);
	}
	out_bytes(&out, "\n", 1);
	return out_finish(&out);
}
