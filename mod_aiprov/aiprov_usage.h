/*
 * Token usage read from a provider's answer as it streams past, whatever
 * its shape: one JSON document, server-sent events, or NDJSON lines.
 */
#ifndef AIPROV_USAGE_H
#define AIPROV_USAGE_H

#include "aiprov.h"

typedef struct aiprov_usage_t aiprov_usage_t;

/* A reader for an answer of this Content-Type. */
aiprov_usage_t *aiprov_usage_make(apr_pool_t *p, const char *content_type);

/* More of the body (any split: events may straddle pieces). */
void aiprov_usage_feed(aiprov_usage_t *u, const char *data, apr_size_t len);

/* The end of the body: 1 and *tokens when the answer reported usage. */
int aiprov_usage_total(aiprov_usage_t *u, apr_int64_t *tokens);

#endif
