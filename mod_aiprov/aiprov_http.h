/* Outbound HTTP: the module's only user of libcurl. */
#ifndef AIPROV_HTTP_H
#define AIPROV_HTTP_H

#include "aiprov.h"

typedef struct {
    const char *method;            /* "GET", "POST" … */
    const char *url;               /* never carries a secret: keys go in headers */
    apr_array_header_t *headers;   /* of const char *, "Name: value"; may be NULL */
    const char *body;              /* NULL: none */
    apr_size_t body_len;
    int timeout;                   /* seconds, for connect and for the whole call */
    apr_size_t max_response;       /* body bytes accepted */
} aiprov_http_req_t;

typedef enum {
    AIPROV_HTTP_OK = 0,            /* an answer came, whatever its status */
    AIPROV_HTTP_UNREACHABLE,       /* no connection (refused, DNS, TLS) */
    AIPROV_HTTP_TIMEOUT,
    AIPROV_HTTP_TOO_LARGE,         /* the body passed max_response */
    AIPROV_HTTP_FAILED,            /* anything else (reset mid-body …) */
    AIPROV_HTTP_STOPPED            /* the sink asked to stop */
} aiprov_http_result_e;

typedef struct {
    long status;
    const char *content_type;      /* or NULL */
    char *body;                    /* NUL-terminated, in r->pool, wiped at its cleanup */
    apr_size_t len;
} aiprov_http_resp_t;

/*
 * A streaming receiver. on_head is called once the status line and headers
 * are in (content_type may be NULL, content_length -1); on_body with each piece of the body as it
 * arrives; on_tick about once a second while the call lasts. Each returns 0
 * to go on, anything else to stop the transfer (the result is then
 * AIPROV_HTTP_STOPPED).
 */
typedef struct {
    void *ctx;
    int (*on_head)(void *ctx, long status, const char *content_type,
                   apr_off_t content_length);   /* -1: not announced */
    int (*on_body)(void *ctx, const char *data, apr_size_t len);
    int (*on_tick)(void *ctx);   /* now and then, even while nothing arrives; may be NULL */
} aiprov_http_sink_t;

/* Once per process, before any thread: curl_global_init. */
void aiprov_http_global_init(apr_pool_t *process_pool);

/* In each child: the per-thread handle cache. */
void aiprov_http_child_init(apr_pool_t *pchild);

/* One call (on the thread's reused easy handle), streamed into sink (max_response is not
 * applied: the sink decides). Failures are logged without secrets. */
aiprov_http_result_e aiprov_http_stream(request_rec *r, const aiprov_http_req_t *req,
                                        const aiprov_http_sink_t *sink);

/* One call, the body collected up to req->max_response. */
aiprov_http_result_e aiprov_http_fetch(request_rec *r, const aiprov_http_req_t *req,
                                       aiprov_http_resp_t *resp);

#endif
