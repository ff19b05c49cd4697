/* The content handler: routes a request below the mount to its endpoint. */
#include "aiprov_handler.h"
#include "aiprov_identity.h"
#include "aiprov_io.h"
#include "aiprov_validate.h"

#include <http_protocol.h>
#include <http_request.h>

typedef int (*aiprov_endpoint_fn)(aiprov_req_t *q);

/* The methods of one path: NULL where the method is not allowed. */
typedef struct {
    const char *allow;          /* the Allow header */
    aiprov_endpoint_fn get, post, put, delete;
} aiprov_route_t;

static const aiprov_route_t route_collection = {
    "GET, POST, OPTIONS", aiprov_api_list, aiprov_api_create, NULL, NULL
};
static const aiprov_route_t route_authorize = {
    "POST, OPTIONS", NULL, aiprov_api_openrouter_authorize, NULL, NULL
};
static const aiprov_route_t route_exchange = {
    "POST, OPTIONS", NULL, aiprov_api_openrouter_exchange, NULL, NULL
};
static const aiprov_route_t route_item = {
    "GET, PUT, DELETE, OPTIONS", aiprov_api_get, NULL, aiprov_api_update, aiprov_api_delete
};

/* The route of the path below the mount; sets q->id. NULL: no such endpoint. */
static const aiprov_route_t *match(aiprov_req_t *q, const char *rest, const char **err)
{
    const char *seg;

    if (*rest == '\0' || strcmp(rest, "/") == 0) {
        return &route_collection;
    }
    if (*rest != '/') {
        return NULL;
    }
    if (strcmp(rest, "/openrouter/authorize") == 0) {
        return &route_authorize;
    }
    if (strcmp(rest, "/openrouter/exchange") == 0) {
        return &route_exchange;
    }
    seg = rest + 1;
    if (strchr(seg, '/')) {
        return NULL;
    }
    if (!aiprov_is_uuid(seg)) {
        *err = "the provider id in the path is not a UUID";
        return NULL;
    }
    q->id = apr_pstrdup(q->r->pool, seg);
    ap_str_tolower((char *)q->id);
    return &route_item;
}

static aiprov_endpoint_fn method_fn(const aiprov_route_t *route, int method)
{
    switch (method) {
    case M_GET:    return route->get;
    case M_POST:   return route->post;
    case M_PUT:    return route->put;
    case M_DELETE: return route->delete;
    default:       return NULL;
    }
}

int aiprov_handler(request_rec *r)
{
    aiprov_req_t q;
    const aiprov_route_t *route;
    aiprov_endpoint_fn fn;
    const char *err = "unknown endpoint";
    apr_size_t mlen;
    aiprov_err_e e = AIPROV_OK;

    if (!r->handler || strcmp(r->handler, AIPROV_HANDLER) != 0) {
        return DECLINED;
    }
    memset(&q, 0, sizeof(q));
    q.r = r;
    q.conf = aiprov_config_get(r);
    q.mount = q.conf->mount;
    aiprov_io_json_errors(r);

    /* the API lives below the <Location> that holds SetHandler aiprov */
    mlen = q.mount ? strlen(q.mount) : 0;
    while (mlen > 0 && q.mount[mlen - 1] == '/') {
        mlen--;
    }
    if (!q.mount || *q.mount != '/' || strncmp(r->uri, q.mount, mlen) != 0) {
        ap_log_rerror(APLOG_MARK, APLOG_ERR, 0, r, AIPROV_LOGNO(00301)
                      "SetHandler aiprov belongs in a <Location> section");
        return HTTP_INTERNAL_SERVER_ERROR;
    }
    q.mount = apr_pstrmemdup(r->pool, q.mount, mlen);

    if (!(route = match(&q, r->uri + mlen, &err))) {
        return aiprov_send_error(r, AIPROV_E_INVALID_REQUEST, "%s", err);
    }
    if (r->method_number == M_OPTIONS) {
        apr_table_setn(r->headers_out, "Allow", route->allow);
        r->status = HTTP_NO_CONTENT;
        return OK;
    }
    if (!(fn = method_fn(route, r->method_number))) {
        apr_table_setn(r->err_headers_out, "Allow", route->allow);
        return aiprov_send_error(r, AIPROV_E_METHOD_NOT_ALLOWED,
                                 "%s is not allowed here: use %s", r->method, route->allow);
    }

    /* no credentials at all: no need to ask the database */
    if (!(aiprov_config_trust_remote_user(q.conf) && r->user)
        && !apr_table_get(r->headers_in, "Authorization")) {
        return aiprov_send_error(r, AIPROV_E_UNAUTHORIZED, "a session is required");
    }
    if (!(q.db = aiprov_db_acquire(r))) {
        return aiprov_send_error(r, AIPROV_E_DATABASE_UNAVAILABLE,
                                 "the database is unavailable");
    }
    if (!(q.user = aiprov_identity_user(r, q.conf, q.db, &e))) {
        return e == AIPROV_E_UNAUTHORIZED
               ? aiprov_send_error(r, e, "the session is missing, unknown or expired")
               : aiprov_send_error(r, e, "the database is unavailable");
    }
    return fn(&q);
}
