/* Request bodies in, JSON responses and JSON errors out. */
#ifndef AIPROV_IO_H
#define AIPROV_IO_H

#include "aiprov.h"
#include <jansson.h>

/* Tie a json_t to a pool: decref'd when the pool is cleared. */
json_t *aiprov_json_pool(apr_pool_t *p, json_t *j);

/* Send j (reference stolen) with the status; returns OK for the handler. */
int aiprov_send_json(request_rec *r, int status, json_t *j);

/* Send {"error":CODE,"message":…} with the code's status; returns OK. */
int aiprov_send_error(request_rec *r, aiprov_err_e code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/*
 * Read a JSON object body: checks the media type, the size limit and the
 * syntax. On success *obj is a pool-bound object and the result is OK; on
 * failure the error has been sent (or httpd's own body filter answered), and
 * the result (DONE or an error status) is what the handler returns.
 */
int aiprov_read_json_object(request_rec *r, json_t **obj);

/* LimitRequestBody where the administrator set one, else fallback. */
apr_off_t aiprov_body_limit(request_rec *r, apr_off_t fallback);

/* Read the whole body, at most limit bytes; OK, or what the handler returns
 * after the error went out. The buffer is wiped at the request's end. */
int aiprov_read_body(request_rec *r, apr_off_t limit, char **data, apr_size_t *size);

/* Wipe the data of a brigade's memory buckets (it may hold a key), then empty it. */
void aiprov_io_wipe_brigade(apr_bucket_brigade *bb);

/* Mark the request so that errors httpd produces itself (413 and 400 from
 * its body filters) go out as our JSON too. */
void aiprov_io_json_errors(request_rec *r);
void aiprov_io_register_hooks(apr_pool_t *p);

#endif
