/* Outbound HTTP: the module's only user of libcurl. */
#include "aiprov_http.h"
#include "aiprov_crypto.h"
#include "aiprov_io.h"

#include <apr_thread_proc.h>
#include <curl/curl.h>

static int curl_ready;

static apr_status_t global_cleanup(void *data)
{
    curl_global_cleanup();
    curl_ready = 0;
    return APR_SUCCESS;
}

void aiprov_http_global_init(apr_pool_t *process_pool)
{
    /* not thread-safe in older libcurl: the parent does it, once */
    if (!curl_ready && curl_global_init(CURL_GLOBAL_DEFAULT) == CURLE_OK) {
        curl_ready = 1;
        apr_pool_cleanup_register(process_pool, NULL, global_cleanup,
                                  apr_pool_cleanup_null);
    }
}

/*
 * One easy handle per worker thread, reset between calls: its connection
 * cache keeps the TCP (and TLS) connection to a provider open from one call
 * to the next, instead of a new handshake per request.
 */
static apr_threadkey_t *handle_key;

static void handle_destroy(void *handle)
{
    if (handle) {
        curl_easy_cleanup(handle);
    }
}

void aiprov_http_child_init(apr_pool_t *pchild)
{
    if (apr_threadkey_private_create(&handle_key, handle_destroy, pchild) != APR_SUCCESS) {
        handle_key = NULL;   /* then a handle per call */
    }
}

static CURL *handle_get(void)
{
    void *h = NULL;
    if (handle_key && apr_threadkey_private_get(&h, handle_key) == APR_SUCCESS && h) {
        curl_easy_reset(h);
        return h;
    }
    h = curl_easy_init();
    if (h && handle_key && apr_threadkey_private_set(h, handle_key) == APR_SUCCESS) {
        return h;
    }
    return h;
}

static void handle_put(CURL *h)
{
    void *kept = NULL;
    if (handle_key && apr_threadkey_private_get(&kept, handle_key) == APR_SUCCESS
        && kept == h) {
        return;   /* the thread's own: kept for the next call */
    }
    curl_easy_cleanup(h);
}

typedef struct {
    CURL *curl;
    const aiprov_http_sink_t *sink;
    int head_done;
    int stopped;
} transfer_t;

/* The blank line that ends a header block: the head is complete. */
static size_t on_header(char *line, size_t size, size_t n, void *userp)
{
    transfer_t *t = userp;
    size_t len = size * n;
    long status = 0;
    char *ct = NULL;
    curl_off_t cl = -1;

    if (t->head_done || !(len <= 2 && (line[0] == '\r' || line[0] == '\n'))) {
        return len;
    }
    curl_easy_getinfo(t->curl, CURLINFO_RESPONSE_CODE, &status);
    if (status >= 100 && status < 200) {
        return len;   /* an interim 100 Continue: the real head follows */
    }
    t->head_done = 1;
    curl_easy_getinfo(t->curl, CURLINFO_CONTENT_TYPE, &ct);
    curl_easy_getinfo(t->curl, CURLINFO_CONTENT_LENGTH_DOWNLOAD_T, &cl);
    if (t->sink->on_head
        && t->sink->on_head(t->sink->ctx, status, ct, cl >= 0 ? (apr_off_t)cl : -1) != 0) {
        t->stopped = 1;
        return 0;
    }
    return len;
}

static size_t on_data(char *data, size_t size, size_t n, void *userp)
{
    transfer_t *t = userp;
    size_t len = size * n;

    if (t->sink->on_body && len > 0 && t->sink->on_body(t->sink->ctx, data, len) != 0) {
        t->stopped = 1;
        return 0;   /* stops the transfer */
    }
    return len;
}

static int on_progress(void *userp, curl_off_t dltotal, curl_off_t dlnow,
                       curl_off_t ultotal, curl_off_t ulnow)
{
    transfer_t *t = userp;
    if (t->sink->on_tick(t->sink->ctx) != 0) {
        t->stopped = 1;
        return 1;   /* aborts the transfer */
    }
    return 0;
}

aiprov_http_result_e aiprov_http_stream(request_rec *r, const aiprov_http_req_t *req,
                                        const aiprov_http_sink_t *sink)
{
    CURL *c;
    CURLcode cc;
    struct curl_slist *hdrs = NULL, *n;
    transfer_t t;
    char errbuf[CURL_ERROR_SIZE] = "";
    aiprov_http_result_e result = AIPROV_HTTP_FAILED;
    int i;

    if (!(c = handle_get())) {
        return AIPROV_HTTP_FAILED;
    }
    memset(&t, 0, sizeof(t));
    t.curl = c;
    t.sink = sink;
    for (i = 0; req->headers && i < req->headers->nelts; i++) {
        if (!(n = curl_slist_append(hdrs, APR_ARRAY_IDX(req->headers, i, const char *)))) {
            goto end;
        }
        hdrs = n;
    }
    /* no "Expect: 100-continue" round trip before large bodies */
    if (!(n = curl_slist_append(hdrs, "Expect:"))) {
        goto end;
    }
    hdrs = n;
    curl_easy_setopt(c, CURLOPT_URL, req->url);
    if (req->body) {
        curl_easy_setopt(c, CURLOPT_POSTFIELDS, req->body);
        curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)req->body_len);
    }
    curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, req->method);
    if (strcmp(req->method, "HEAD") == 0) {
        curl_easy_setopt(c, CURLOPT_NOBODY, 1L);
    }
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, hdrs);
    /* http and https only, no redirects: a key never follows a Location */
    curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(c, CURLOPT_FOLLOWLOCATION, 0L);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT, (long)req->timeout);
    curl_easy_setopt(c, CURLOPT_TIMEOUT, (long)req->timeout);
    curl_easy_setopt(c, CURLOPT_SSL_VERIFYPEER, 1L);
    curl_easy_setopt(c, CURLOPT_SSL_VERIFYHOST, 2L);
    curl_easy_setopt(c, CURLOPT_USERAGENT, "mod_aiprov");
    /* bodies pass through as the provider sent them */
    curl_easy_setopt(c, CURLOPT_HTTP_CONTENT_DECODING, 0L);
    curl_easy_setopt(c, CURLOPT_ERRORBUFFER, errbuf);
    curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(c, CURLOPT_HEADERDATA, &t);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_data);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &t);
    if (sink->on_tick) {
        curl_easy_setopt(c, CURLOPT_NOPROGRESS, 0L);
        curl_easy_setopt(c, CURLOPT_XFERINFOFUNCTION, on_progress);
        curl_easy_setopt(c, CURLOPT_XFERINFODATA, &t);
    }

    cc = curl_easy_perform(c);
    if (cc == CURLE_OK) {
        result = AIPROV_HTTP_OK;
        if (!t.head_done && sink->on_head) {
            long status = 0;
            char *ct = NULL;
            curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
            curl_easy_getinfo(c, CURLINFO_CONTENT_TYPE, &ct);
            sink->on_head(sink->ctx, status, ct, -1);
        }
    }
    else if (t.stopped) {
        result = AIPROV_HTTP_STOPPED;
    }
    else if (cc == CURLE_OPERATION_TIMEDOUT) {
        result = AIPROV_HTTP_TIMEOUT;
    }
    else if (cc == CURLE_COULDNT_CONNECT || cc == CURLE_COULDNT_RESOLVE_HOST
             || cc == CURLE_SSL_CONNECT_ERROR || cc == CURLE_PEER_FAILED_VERIFICATION) {
        result = AIPROV_HTTP_UNREACHABLE;
    }
    if (result != AIPROV_HTTP_OK && result != AIPROV_HTTP_STOPPED) {
        /* curl's message names hosts and errors, never headers or bodies */
        ap_log_rerror(APLOG_MARK, APLOG_WARNING, 0, r, AIPROV_LOGNO(00501)
                      "%s %s failed: %s", req->method, req->url,
                      *errbuf ? errbuf : curl_easy_strerror(cc));
    }
end:
    for (n = hdrs; n; n = n->next) {
        aiprov_wipe(n->data, strlen(n->data));   /* curl's copies of the key header */
    }
    curl_slist_free_all(hdrs);
    /* the reset at the next use forgets this call's options and callbacks */
    handle_put(c);
    return result;
}

/* ------------------------------------------------------------ buffered calls */

typedef struct {
    request_rec *r;
    aiprov_http_resp_t *resp;
    apr_bucket_brigade *bb;
    apr_size_t max;
    int too_large;
} collect_t;

static int collect_head(void *ctx, long status, const char *content_type,
                        apr_off_t content_length)
{
    collect_t *c = ctx;
    c->resp->status = status;
    c->resp->content_type = content_type ? apr_pstrdup(c->r->pool, content_type) : NULL;
    return 0;
}

static int collect_body(void *ctx, const char *data, apr_size_t len)
{
    collect_t *c = ctx;
    if (c->resp->len + len > c->max) {
        c->too_large = 1;
        return 1;
    }
    if (apr_brigade_write(c->bb, NULL, NULL, data, len) != APR_SUCCESS) {
        return 1;
    }
    c->resp->len += len;
    return 0;
}

aiprov_http_result_e aiprov_http_fetch(request_rec *r, const aiprov_http_req_t *req,
                                       aiprov_http_resp_t *resp)
{
    collect_t c;
    aiprov_http_sink_t sink = { &c, collect_head, collect_body, NULL };
    aiprov_http_result_e result;
    char *body;
    apr_size_t len;

    memset(resp, 0, sizeof(*resp));
    c.r = r;
    c.resp = resp;
    c.bb = apr_brigade_create(r->pool, r->connection->bucket_alloc);
    c.max = req->max_response;
    c.too_large = 0;

    result = aiprov_http_stream(r, req, &sink);
    if (result == AIPROV_HTTP_STOPPED) {
        result = c.too_large ? AIPROV_HTTP_TOO_LARGE : AIPROV_HTTP_FAILED;
        if (c.too_large) {
            ap_log_rerror(APLOG_MARK, APLOG_WARNING, 0, r, AIPROV_LOGNO(00502)
                          "%s %s: the answer is larger than %" APR_SIZE_T_FMT " bytes",
                          req->method, req->url, req->max_response);
        }
    }
    if (result == AIPROV_HTTP_OK) {
        if (apr_brigade_pflatten(c.bb, &body, &len, r->pool) != APR_SUCCESS) {
            result = AIPROV_HTTP_FAILED;
        }
        else {
            /* the answer may hold a key: one NUL-terminated copy, wiped later */
            resp->body = apr_palloc(r->pool, len + 1);
            memcpy(resp->body, body, len);
            resp->body[len] = '\0';
            resp->len = len;
            aiprov_wipe(body, len);
            aiprov_wipe_on_cleanup(r->pool, resp->body, len);
            ap_log_rerror(APLOG_MARK, APLOG_TRACE1, 0, r, "%s %s: HTTP %ld, %"
                          APR_SIZE_T_FMT " bytes", req->method, req->url, resp->status, len);
        }
    }
    aiprov_io_wipe_brigade(c.bb);
    return result;
}
