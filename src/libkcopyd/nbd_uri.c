/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * NBD URIs: recognising one, and splitting one into its parts without
 * connecting.  The split follows libnbd 1.14's own nbd_aio_connect_uri()
 * (lib/uri.c): libxml2's xmlParseURI(), the "scheme://" form insisted on,
 * the export name the decoded path without its leading '/', the query
 * split at '&' (or ';') and each name and value decoded, the TLS user name
 * the URI's user part.  Where libnbd 1.14 is lax this is stricter, because
 * a service that connects on a caller's behalf must not guess: an unknown
 * query parameter (a typo of tls-psk-file would silently connect without
 * the key), or a TLS parameter on a scheme without TLS, is refused.  The
 * scheme is matched without regard to case (libnbd wants it lower case:
 * drv_nbd.c lowers it before handing the URI on).
 */
#include "config.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <libxml/uri.h>

#include "kcopyd.h"
#include "libkcopyd/internal.h"

struct nbd_scheme {
	const char *name;
	enum kcopyd_nbd_transport transport;
	int tls;
};

static const struct nbd_scheme nbd_schemes[] = {
	{ "nbd", KCOPYD_NBD_TCP, 0 },
	{ "nbds", KCOPYD_NBD_TCP, 1 },
	{ "nbd+unix", KCOPYD_NBD_UNIX, 0 },
	{ "nbds+unix", KCOPYD_NBD_UNIX, 1 },
	{ "nbd+vsock", KCOPYD_NBD_VSOCK, 0 },
	{ "nbds+vsock", KCOPYD_NBD_VSOCK, 1 },
};

/* The scheme @name starts with, followed by "://", or NULL. */
static const struct nbd_scheme *nbd_scheme_of(const char *name)
{
	size_t index;

	if (!name)
		return NULL;
	for (index = 0; index < sizeof(nbd_schemes) / sizeof(nbd_schemes[0]); index++) {
		size_t len = strlen(nbd_schemes[index].name);

		if (strncasecmp(name, nbd_schemes[index].name, len) == 0 && strncmp(name + len, "://", 3) == 0)
			return &nbd_schemes[index];
	}
	return NULL;
}

int kcopyd_is_nbd_uri(const char *name)
{
	return nbd_scheme_of(name) != NULL;
}


/* libnbd's boolean words (tls-verify-peer and the like). Return: 1, 0, or -1. */
static int parse_bool(const char *value)
{
	static const char *const yes[] = { "1", "true", "yes", "on" }, *const no[] = { "0", "false", "no", "off" };
	size_t index;

	for (index = 0; index < 4; index++) {
		if (strcasecmp(value, yes[index]) == 0)
			return 1;
		if (strcasecmp(value, no[index]) == 0)
			return 0;
	}
	return -1;
}

/* Decode @len bytes at @text (percent-escapes).  Return: a new string, or NULL (ENOMEM). */
static char *unescape(const char *text, size_t len)
{
	/* xmlURIUnescapeString() with a length of 0 decodes the whole string. */
	if (len == 0)
		return strdup("");
	return xmlURIUnescapeString(text, (int)len, NULL);
}

/* Store the query parameter @name=@value in @result.  Return: 0 or -errno (with @why). */
static int uri_query_param(struct kcopyd_nbd_uri *result, const char *name, char *value, char *why, size_t why_len)
{
	char **slot = NULL;

	if (strcmp(name, "socket") == 0) {
		slot = &result->socket_path;
	} else if (strncmp(name, "tls-", 4) == 0 && !result->tls) {
		free(value);
		return internal_refuse(-EINVAL, why, why_len,
				  "%s is a TLS parameter, but the scheme does not use TLS (nbds:// does)", name);
	} else if (strcmp(name, "tls-psk-file") == 0) {
		slot = &result->tls_psk_file;
	} else if (strcmp(name, "tls-certificates") == 0) {
		slot = &result->tls_certificates;
	} else if (strcmp(name, "tls-username") == 0) {
		slot = &result->tls_username;
	} else if (strcmp(name, "tls-verify-peer") == 0) {
		result->tls_verify_peer = parse_bool(value);
		free(value);
		if (result->tls_verify_peer < 0)
			return internal_refuse(-EINVAL, why, why_len, "tls-verify-peer takes true or false");
		return 0;
	} else {
		free(value);
		return internal_refuse(-EINVAL, why, why_len, "unknown NBD URI query parameter \"%s\"", name);
	}
	free(*slot);	/* the last of a repeated parameter wins, as in libnbd */
	*slot = value;
	return 0;
}

/* Split the raw query as libnbd's parse_uri_queries() does, decoding names and values. */
static int uri_queries(struct kcopyd_nbd_uri *result, const char *query, char *why, size_t why_len)
{
	while (query && *query) {
		const char *end = strchr(query, '&'), *eq;
		char *name, *value;
		int r;

		if (!end)
			end = strchr(query, ';');
		if (!end)
			end = query + strlen(query);
		eq = memchr(query, '=', (size_t)(end - query));
		if (end != query && eq != query) {
			name = unescape(query, (size_t)((eq ? eq : end) - query));
			value = eq ? unescape(eq + 1, (size_t)(end - eq - 1)) : strdup("");
			if (!name || !value) {
				free(name);
				free(value);
				return -ENOMEM;
			}
			r = uri_query_param(result, name, value, why, why_len);
			free(name);
			if (r < 0)
				return r;
		}
		query = *end ? end + 1 : end;
	}
	return 0;
}

void kcopyd_nbd_uri_free(struct kcopyd_nbd_uri *uri)
{
	if (!uri)
		return;
	free(uri->host);
	free(uri->port);
	free(uri->export_name);
	free(uri->socket_path);
	free(uri->tls_psk_file);
	free(uri->tls_certificates);
	free(uri->tls_username);
	memset(uri, 0, sizeof(*uri));
	uri->tls_verify_peer = -1;
}

/* The host of @parsed: an IPv6 literal without its brackets. */
static char *uri_host(const xmlURI *parsed)
{
	const char *server = parsed->server;
	size_t len = server ? strlen(server) : 0;

	if (len >= 2 && server[0] == '[' && server[len - 1] == ']')
		return strndup(server + 1, len - 2);
	return strdup(server ? server : "");
}

int kcopyd_nbd_uri_parse(const char *uri, struct kcopyd_nbd_uri *result, char *why, size_t why_len)
{
	const struct nbd_scheme *scheme = nbd_scheme_of(uri);
	xmlURIPtr parsed;
	char *lowered;
	size_t index;
	int r;

	if (why && why_len)
		why[0] = '\0';
	if (!result)
		return -EINVAL;
	memset(result, 0, sizeof(*result));
	result->tls_verify_peer = -1;
	if (!scheme)
		return internal_refuse(-EINVAL, why, why_len,
				  "not an NBD URI (nbd://, nbds://, nbd+unix://, nbds+unix://, nbd+vsock://, nbds+vsock://)");
	/* libxml2 keeps the scheme as written; libnbd compares it in lower case. */
	lowered = strdup(uri);
	if (!lowered)
		return -ENOMEM;
	for (index = 0; index < strlen(scheme->name); index++)
		lowered[index] = scheme->name[index];
	parsed = xmlParseURI(lowered);
	free(lowered);
	if (!parsed)
		return internal_refuse(-EINVAL, why, why_len, "unable to parse the NBD URI");
	result->transport = scheme->transport;
	result->tls = scheme->tls;
	r = uri_queries(result, parsed->query_raw, why, why_len);
	if (r < 0)
		goto err_free;
	r = -ENOMEM;
	if (parsed->path && parsed->path[0] != '/') {
		r = internal_refuse(-EINVAL, why, why_len, "the export name must follow a '/'");
		goto err_free;
	}
	result->export_name = strdup(parsed->path ? parsed->path + 1 : "");
	if (!result->export_name)
		goto err_free;
	if (parsed->user) {
		if (!result->tls) {
			r = internal_refuse(-EINVAL, why, why_len, "a user name is for TLS, but the scheme does not use TLS");
			goto err_free;
		}
		if (!result->tls_username) {
			result->tls_username = strdup(parsed->user);
			if (!result->tls_username)
				goto err_free;
		}
	}
	if (parsed->port > 0 && asprintf(&result->port, "%d", parsed->port) < 0) {
		result->port = NULL;
		goto err_free;
	}
	switch (scheme->transport) {
	case KCOPYD_NBD_UNIX:
		if (!result->socket_path) {
			r = internal_refuse(-EINVAL, why, why_len, "an nbd+unix URI needs ?socket=PATH");
			goto err_free;
		}
		if ((parsed->server && parsed->server[0]) || result->port) {
			r = internal_refuse(-EINVAL, why, why_len,
				       "an nbd+unix URI names no host (nbd+unix:///EXPORT?socket=PATH)");
			goto err_free;
		}
		break;
	case KCOPYD_NBD_TCP:
	case KCOPYD_NBD_VSOCK:
		if (result->socket_path) {
			r = internal_refuse(-EINVAL, why, why_len, "socket= is only for the nbd+unix schemes");
			goto err_free;
		}
		result->host = uri_host(parsed);
		if (!result->host)
			goto err_free;
		if (!result->host[0] && scheme->transport == KCOPYD_NBD_TCP) {
			/* libnbd connects to localhost then. */
			free(result->host);
			result->host = strdup("localhost");
			if (!result->host)
				goto err_free;
		}
		break;
	}
	xmlFreeURI(parsed);
	return 0;

err_free:
	xmlFreeURI(parsed);
	kcopyd_nbd_uri_free(result);
	if (r == -ENOMEM)
		internal_refuse(-ENOMEM, why, why_len, "out of memory");
	return r;
}
