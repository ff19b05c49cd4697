/* Request bodies in, JSON responses and JSON errors out. */
#include "aiprov_io.h"
#include "aiprov_crypto.h"

#include <http_core.h>
#include <http_protocol.h>
#include <http_request.h>
#include <util_filter.h>

static const struct {
    const char *name;
    int status;
} errors[] = {
    [AIPROV_OK] = { "OK", HTTP_OK },
    [AIPROV_E_UNAUTHORIZED] = { "UNAUTHORIZED", HTTP_UNAUTHORIZED },
    [AIPROV_E_INVALID_REQUEST] = { "INVALID_REQUEST", HTTP_BAD_REQUEST },
    [AIPROV_E_INVALID_API_KEY] = { "INVALID_API_KEY", HTTP_BAD_REQUEST },
    [AIPROV_E_PROVIDER_NOT_FOUND] = { "PROVIDER_NOT_FOUND", HTTP_NOT_FOUND },
    [AIPROV_E_DUPLICATE_PROVIDER] = { "DUPLICATE_PROVIDER", HTTP_CONFLICT },
    [AIPROV_E_USAGE_LIMIT_EXCEEDED] = { "USAGE_LIMIT_EXCEEDED", HTTP_TOO_MANY_REQUESTS },
    [AIPROV_E_OAUTH_EXCHANGE_FAILED] = { "OAUTH_EXCHANGE_FAILED", HTTP_BAD_REQUEST },
    [AIPROV_E_ENCRYPTION_FAILED] = { "ENCRYPTION_FAILED", HTTP_INTERNAL_SERVER_ERROR },
    [AIPROV_E_PROVIDER_INACTIVE] = { "PROVIDER_INACTIVE", HTTP_FORBIDDEN },
    [AIPROV_E_METHOD_NOT_ALLOWED] = { "METHOD_NOT_ALLOWED", HTTP_METHOD_NOT_ALLOWED },
    [AIPROV_E_PAYLOAD_TOO_LARGE] = { "PAYLOAD_TOO_LARGE", HTTP_REQUEST_ENTITY_TOO_LARGE },
    [AIPROV_E_UNSUPPORTED_MEDIA_TYPE] = { "UNSUPPORTED_MEDIA_TYPE",
                                          HTTP_UNSUPPORTED_MEDIA_TYPE },
    [AIPROV_E_DATABASE_UNAVAILABLE] = { "DATABASE_UNAVAILABLE", HTTP_SERVICE_UNAVAILABLE },
    [AIPROV_E_UPSTREAM_FAILED] = { "UPSTREAM_FAILED", HTTP_BAD_GATEWAY },
    [AIPROV_E_UPSTREAM_TIMEOUT] = { "UPSTREAM_TIMEOUT", HTTP_GATEWAY_TIME_OUT },
};

static apr_status_t json_cleanup(void *data)
{
    json_decref(data);
    return APR_SUCCESS;
}

json_t *aiprov_json_pool(apr_pool_t *p, json_t *j)
{
    if (j) {
        apr_pool_cleanup_register(p, j, json_cleanup, apr_pool_cleanup_null);
    }
    return j;
}

/* The body as text in r->pool; NULL when out of memory. */
static char *dump(request_rec *r, json_t *j)
{
    char *s = json_dumps(j, JSON_COMPACT);
    char *copy = NULL;
    if (s) {
        copy = apr_pstrdup(r->pool, s);
        free(s);
    }
    return copy;
}

static int send_text(request_rec *r, int status, const char *body)
{
    apr_bucket_brigade *bb;
    apr_status_t rv;
    apr_size_t len = strlen(body);

    r->status = status;
    ap_set_content_type(r, "application/json");
    apr_table_setn(r->headers_out, "Cache-Control", "no-store");
    ap_set_content_length(r, (apr_off_t)len);
    if (r->header_only) {
        return OK;
    }
    bb = apr_brigade_create(r->pool, r->connection->bucket_alloc);
    APR_BRIGADE_INSERT_TAIL(bb, apr_bucket_pool_create(body, len, r->pool,
                                                       r->connection->bucket_alloc));
    APR_BRIGADE_INSERT_TAIL(bb, apr_bucket_eos_create(r->connection->bucket_alloc));
    rv = ap_pass_brigade(r->output_filters, bb);
    if (rv != APR_SUCCESS) {
        /* the client went away: nothing more can be told to it */
        ap_log_rerror(APLOG_MARK, APLOG_DEBUG, rv, r, AIPROV_LOGNO(00201)
                      "sending the response failed");
        return AP_FILTER_ERROR;
    }
    return OK;
}

int aiprov_send_json(request_rec *r, int status, json_t *j)
{
    char *body = dump(r, j);
    json_decref(j);
    if (!body) {
        return HTTP_INTERNAL_SERVER_ERROR;
    }
    return send_text(r, status, body);
}

static char *error_body(request_rec *r, aiprov_err_e code, const char *message)
{
    json_t *j = json_pack("{s:s, s:s}", "error", errors[code].name, "message", message);
    char *body = j ? dump(r, j) : NULL;
    json_decref(j);
    return body;
}

int aiprov_send_error(request_rec *r, aiprov_err_e code, const char *fmt, ...)
{
    va_list ap;
    const char *message;
    char *body;

    va_start(ap, fmt);
    message = apr_pvsprintf(r->pool, fmt, ap);
    va_end(ap);
    if (code == AIPROV_E_UNAUTHORIZED) {
        apr_table_setn(r->err_headers_out, "WWW-Authenticate", "Bearer");
    }
    ap_log_rerror(APLOG_MARK, APLOG_DEBUG, 0, r, AIPROV_LOGNO(00202)
                  "%s: %s", errors[code].name, message);
    body = error_body(r, code, message);
    if (!body) {
        return HTTP_INTERNAL_SERVER_ERROR;
    }
    return send_text(r, errors[code].status, body);
}

/* ------------------------------------------------------------ errors httpd makes */

#define JSON_ERRORS_NOTE "aiprov-json-errors"

void aiprov_io_json_errors(request_rec *r)
{
    apr_table_setn(r->notes, JSON_ERRORS_NOTE, "1");
}

/*
 * httpd answers a body over LimitRequestBody or a broken chunked body itself,
 * with an HTML page. For our API the same status goes out as our JSON: this
 * filter replaces the HTML on its way out.
 */
static apr_status_t json_error_filter(ap_filter_t *f, apr_bucket_brigade *bb)
{
    request_rec *r = f->r;
    aiprov_err_e code = r->status == HTTP_REQUEST_ENTITY_TOO_LARGE
                        ? AIPROV_E_PAYLOAD_TOO_LARGE : AIPROV_E_INVALID_REQUEST;
    const char *message = code == AIPROV_E_PAYLOAD_TOO_LARGE
                          ? "the request body is larger than this server accepts"
                          : "the request body could not be read";
    char *body = error_body(r, code, message);
    apr_bucket_brigade *out;

    ap_remove_output_filter(f);
    apr_brigade_cleanup(bb);
    if (!body) {
        return APR_ENOMEM;
    }
    ap_set_content_type(r, "application/json");
    apr_table_setn(r->headers_out, "Cache-Control", "no-store");
    ap_set_content_length(r, (apr_off_t)strlen(body));
    out = apr_brigade_create(r->pool, r->connection->bucket_alloc);
    if (!r->header_only) {
        APR_BRIGADE_INSERT_TAIL(out, apr_bucket_pool_create(body, strlen(body), r->pool,
                                                            r->connection->bucket_alloc));
    }
    APR_BRIGADE_INSERT_TAIL(out, apr_bucket_eos_create(r->connection->bucket_alloc));
    return ap_pass_brigade(r->output_filters, out);
}

static void insert_error_filter(request_rec *r)
{
    if (apr_table_get(r->notes, JSON_ERRORS_NOTE)
        && (r->status == HTTP_REQUEST_ENTITY_TOO_LARGE || r->status == HTTP_BAD_REQUEST)) {
        ap_add_output_filter("AIPROV_JSON_ERROR", NULL, r, r->connection);
    }
}

void aiprov_io_register_hooks(apr_pool_t *p)
{
    ap_register_output_filter("AIPROV_JSON_ERROR", json_error_filter, NULL,
                              AP_FTYPE_RESOURCE);
    ap_hook_insert_error_filter(insert_error_filter, NULL, NULL, APR_HOOK_MIDDLE);
}

/* ------------------------------------------------------------ request bodies */

/* The body may hold an API key: its copies are wiped, not just freed. */
void aiprov_io_wipe_brigade(apr_bucket_brigade *bb)
{
    apr_bucket *b;
    for (b = APR_BRIGADE_FIRST(bb); b != APR_BRIGADE_SENTINEL(bb); b = APR_BUCKET_NEXT(b)) {
        const char *data;
        apr_size_t len;
        if ((APR_BUCKET_IS_HEAP(b) || APR_BUCKET_IS_POOL(b))
            && apr_bucket_read(b, &data, &len, APR_NONBLOCK_READ) == APR_SUCCESS) {
            aiprov_wipe((char *)data, len);
        }
    }
    apr_brigade_cleanup(bb);
}

static int is_json_media_type(const char *ct)
{
    const char *semi;
    apr_size_t len;

    if (!ct) {
        return 0;
    }
    while (*ct == ' ' || *ct == '\t') {
        ct++;
    }
    semi = strchr(ct, ';');
    len = semi ? (apr_size_t)(semi - ct) : strlen(ct);
    while (len > 0 && (ct[len - 1] == ' ' || ct[len - 1] == '\t')) {
        len--;
    }
    return len == 16 && strncasecmp(ct, "application/json", 16) == 0;
}

/* LimitRequestBody when the administrator set one, else the fallback.
 * ap_get_limit_req_body() cannot tell: it answers httpd's 1 GiB default.
 * Unset is -1 (AP_LIMIT_REQ_BODY_UNSET, private to core.c). */
apr_off_t aiprov_body_limit(request_rec *r, apr_off_t fallback)
{
    core_dir_config *d = ap_get_core_module_config(r->per_dir_config);
    return d->limit_req_body > 0 ? d->limit_req_body : fallback;
}

/* An error was sent: the handler is done, and says so (OK would mean "go on"). */
static int answered(int rc)
{
    return rc == OK ? DONE : rc;
}

static int too_large(request_rec *r, apr_off_t limit)
{
    /* the rest of the body is not read: the connection cannot be reused */
    r->connection->keepalive = AP_CONN_CLOSE;
    return answered(aiprov_send_error(r, AIPROV_E_PAYLOAD_TOO_LARGE,
                                      "the request body is larger than %" APR_OFF_T_FMT
                                      " bytes", limit));
}

int aiprov_read_body(request_rec *r, apr_off_t limit, char **data, apr_size_t *size)
{
    const char *cl = apr_table_get(r->headers_in, "Content-Length");
    apr_bucket_brigade *bb, *body;
    char *buf;
    apr_size_t used = 0;
    int seen_eos = 0;

    if (cl) {
        char *end;
        apr_off_t n;
        if (apr_strtoff(&n, cl, &end, 10) != APR_SUCCESS || *end || n < 0) {
            return answered(aiprov_send_error(r, AIPROV_E_INVALID_REQUEST,
                                              "bad Content-Length"));
        }
        if (n > limit) {
            return too_large(r, limit);
        }
    }

    aiprov_io_json_errors(r);
    body = apr_brigade_create(r->pool, r->connection->bucket_alloc);
    bb = apr_brigade_create(r->pool, r->connection->bucket_alloc);
    do {
        apr_bucket *b;
        apr_status_t rv = ap_get_brigade(r->input_filters, bb, AP_MODE_READBYTES,
                                         APR_BLOCK_READ, HUGE_STRING_LEN);
        if (rv != APR_SUCCESS) {
            /* httpd's body filter has answered already (see the error filter) */
            return ap_map_http_request_error(rv, HTTP_BAD_REQUEST);
        }
        for (b = APR_BRIGADE_FIRST(bb); b != APR_BRIGADE_SENTINEL(bb);
             b = APR_BUCKET_NEXT(b)) {
            const char *d;
            apr_size_t len;
            if (APR_BUCKET_IS_EOS(b)) {
                seen_eos = 1;
                break;
            }
            if (APR_BUCKET_IS_METADATA(b)) {
                continue;
            }
            if (apr_bucket_read(b, &d, &len, APR_BLOCK_READ) != APR_SUCCESS) {
                return answered(aiprov_send_error(r, AIPROV_E_INVALID_REQUEST,
                                                  "the request body could not be read"));
            }
            used += len;
            if ((apr_off_t)used > limit) {
                return too_large(r, limit);
            }
        }
        /* keep the data, drop the EOS and what follows it */
        if (seen_eos) {
            apr_bucket *rest = b;
            while (rest != APR_BRIGADE_SENTINEL(bb)) {
                apr_bucket *next = APR_BUCKET_NEXT(rest);
                apr_bucket_delete(rest);
                rest = next;
            }
        }
        if (ap_save_brigade(NULL, &body, &bb, r->pool) != APR_SUCCESS) {
            return HTTP_INTERNAL_SERVER_ERROR;
        }
        apr_brigade_cleanup(bb);
    } while (!seen_eos);
    if (apr_brigade_pflatten(body, &buf, &used, r->pool) != APR_SUCCESS) {
        return HTTP_INTERNAL_SERVER_ERROR;
    }
    aiprov_io_wipe_brigade(body);
    aiprov_wipe_on_cleanup(r->pool, buf, used);
    *data = buf;
    *size = used;
    return OK;
}

int aiprov_read_json_object(request_rec *r, json_t **obj)
{
    char *buf;
    apr_size_t used;
    json_error_t jerr;
    json_t *j;
    int rc;

    if (!is_json_media_type(apr_table_get(r->headers_in, "Content-Type"))) {
        return answered(aiprov_send_error(r, AIPROV_E_UNSUPPORTED_MEDIA_TYPE,
                                          "the request body must be application/json"));
    }
    if ((rc = aiprov_read_body(r, aiprov_body_limit(r, AIPROV_JSON_BODY_MAX), &buf, &used))
        != OK) {
        return rc;
    }

    if (used == 0) {
        return answered(aiprov_send_error(r, AIPROV_E_INVALID_REQUEST,
                                 "the request body is empty: a JSON object is expected"));
    }
    /* NUL in strings is refused by jansson unless asked for: good */
    j = json_loadb(buf, used, JSON_REJECT_DUPLICATES, &jerr);
    if (!j) {
        return answered(aiprov_send_error(r, AIPROV_E_INVALID_REQUEST,
                                 "malformed JSON at line %d, column %d",
                                 jerr.line, jerr.column));
    }
    aiprov_json_pool(r->pool, j);
    if (!json_is_object(j)) {
        return answered(aiprov_send_error(r, AIPROV_E_INVALID_REQUEST,
                                 "the request body must be a JSON object"));
    }
    *obj = j;
    return OK;
}
