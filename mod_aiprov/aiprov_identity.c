/* Who is calling: a bearer session token, or REMOTE_USER when trusted. */
#include "aiprov_identity.h"

#include <apr_lib.h>

/* better-auth's session table; AIProvSessionQuery replaces it. */
static const aiprov_sql_t sql_session_default = {
    "aiprov_session_default",
    "SELECT user_id FROM session WHERE token = %s AND expires_at > unixepoch()",
    "SELECT user_id FROM session WHERE token = %s AND expires_at > now()"
};

/* The token of "Authorization: Bearer <token>" (RFC 6750 token68), or NULL. */
static const char *bearer_token(request_rec *r)
{
    const char *h = apr_table_get(r->headers_in, "Authorization");
    const char *t, *c;

    if (!h || strncasecmp(h, "Bearer ", 7) != 0) {
        return NULL;
    }
    for (t = h + 7; *t == ' '; t++)
        ;
    for (c = t; *c; c++) {
        if (!apr_isalnum(*c) && !strchr("-._~+/=", *c)) {
            return NULL;
        }
    }
    if (c == t || c - t > AIPROV_TOKEN_MAX) {
        return NULL;
    }
    return t;
}

const char *aiprov_identity_user(request_rec *r, const aiprov_dir_conf *conf,
                                 aiprov_db_t *db, aiprov_err_e *err)
{
    const char *token, *user = NULL;
    const char *args[1];

    if (aiprov_config_trust_remote_user(conf) && r->user && *r->user) {
        return r->user;
    }
    if (!(token = bearer_token(r))) {
        *err = AIPROV_E_UNAUTHORIZED;
        return NULL;
    }
    args[0] = token;
    if (aiprov_db_select_one(db, conf->session_sql ? conf->session_sql : &sql_session_default,
                             &user, 1, args) != APR_SUCCESS) {
        *err = AIPROV_E_DATABASE_UNAVAILABLE;
        return NULL;
    }
    if (!user || !*user) {
        /* no row, or a NULL user id: the same answer, and no hint which */
        *err = AIPROV_E_UNAUTHORIZED;
        return NULL;
    }
    return user;
}
