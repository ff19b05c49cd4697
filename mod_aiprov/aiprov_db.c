/* mod_dbd glue: connections, statements per SQL dialect, rows, transactions. */
#include "aiprov_db.h"

#include <http_request.h>

static APR_OPTIONAL_FN_TYPE(ap_dbd_acquire) *dbd_acquire;
static APR_OPTIONAL_FN_TYPE(ap_dbd_open) *dbd_open;
static APR_OPTIONAL_FN_TYPE(ap_dbd_close) *dbd_close;

void aiprov_db_retrieve_functions(void)
{
    dbd_acquire = APR_RETRIEVE_OPTIONAL_FN(ap_dbd_acquire);
    dbd_open = APR_RETRIEVE_OPTIONAL_FN(ap_dbd_open);
    dbd_close = APR_RETRIEVE_OPTIONAL_FN(ap_dbd_close);
}

int aiprov_db_available(void)
{
    return dbd_acquire && dbd_open && dbd_close;
}

#define CONN_READY_KEY "aiprov_conn_ready"

/*
 * SQLite settings are per connection, so they are set on each connection the
 * first time this module uses it: foreign keys (ON DELETE CASCADE), secure
 * deletion (deleted ciphertexts are overwritten in the file), a busy
 * timeout for the other httpd processes that write, and WAL's usual
 * synchronous level.
 */
static apr_status_t conn_init(aiprov_db_t *db)
{
    void *ready = NULL;
    static const char *const sqlite_pragmas[] = {
        "PRAGMA foreign_keys = ON",
        "PRAGMA secure_delete = ON",
        "PRAGMA busy_timeout = 5000",
        /* with WAL, commits need no fsync; a power cut may lose the last ones */
        "PRAGMA synchronous = NORMAL",
    };
    apr_size_t i;

    apr_pool_userdata_get(&ready, CONN_READY_KEY, db->dbd->pool);
    if (ready) {
        return APR_SUCCESS;
    }
    if (db->dialect == AIPROV_SQLITE) {
        for (i = 0; i < sizeof(sqlite_pragmas) / sizeof(sqlite_pragmas[0]); i++) {
            /* some pragmas answer a row: select, and drain it */
            apr_dbd_results_t *res = NULL;
            apr_dbd_row_t *row = NULL;
            int rc = apr_dbd_select(db->dbd->driver, db->r->pool, db->dbd->handle, &res,
                                    sqlite_pragmas[i], 1);
            if (rc != 0) {
                ap_log_rerror(APLOG_MARK, APLOG_ERR, 0, db->r, AIPROV_LOGNO(00101)
                              "%s failed: %s", sqlite_pragmas[i],
                              apr_dbd_error(db->dbd->driver, db->dbd->handle, rc));
                return APR_EGENERAL;
            }
            while (aiprov_db_next_row(db, res, &row))
                ;
        }
    }
    apr_pool_userdata_setn((void *)1, CONN_READY_KEY, NULL, db->dbd->pool);
    return APR_SUCCESS;
}

/* Fill db for the connection dbd: dialect, per-connection settings. */
static apr_status_t attach(aiprov_db_t *db, ap_dbd_t *dbd)
{
    const char *name = apr_dbd_name(dbd->driver);

    db->dbd = dbd;
    if (strcmp(name, "sqlite3") == 0) {
        db->dialect = AIPROV_SQLITE;
    }
    else if (strcmp(name, "pgsql") == 0) {
        db->dialect = AIPROV_PGSQL;
    }
    else {
        ap_log_rerror(APLOG_MARK, APLOG_ERR, 0, db->r, AIPROV_LOGNO(00104)
                      "DBDriver %s is not supported: use sqlite3 or pgsql", name);
        return APR_ENOTIMPL;
    }
    return conn_init(db);
}

static apr_status_t release_cleanup(void *data)
{
    aiprov_db_release(data);
    return APR_SUCCESS;
}

static aiprov_db_t *get(request_rec *r, int owned)
{
    aiprov_db_t *db;

    if (!aiprov_db_available()) {
        ap_log_rerror(APLOG_MARK, APLOG_ERR, 0, r, AIPROV_LOGNO(00102)
                      "mod_dbd is not loaded: LoadModule dbd_module and configure DBDriver");
        return NULL;
    }
    db = apr_pcalloc(r->pool, sizeof(*db));
    db->r = r;
    db->owned = owned;
    if (owned) {
        /* given back at the latest when the request ends */
        apr_pool_cleanup_register(r->pool, db, release_cleanup, apr_pool_cleanup_null);
    }
    if (aiprov_db_reopen(db) != APR_SUCCESS) {
        return NULL;
    }
    return db;
}

aiprov_db_t *aiprov_db_acquire(request_rec *r)
{
    return get(r, 0);
}

aiprov_db_t *aiprov_db_open(request_rec *r)
{
    return get(r, 1);
}

apr_status_t aiprov_db_reopen(aiprov_db_t *db)
{
    ap_dbd_t *dbd = db->owned ? dbd_open(db->r->pool, db->r->server) : dbd_acquire(db->r);

    if (!dbd) {
        ap_log_rerror(APLOG_MARK, APLOG_ERR, 0, db->r, AIPROV_LOGNO(00103)
                      "no database connection from mod_dbd");
        return APR_EGENERAL;
    }
    if (attach(db, dbd) != APR_SUCCESS) {
        aiprov_db_release(db);
        return APR_EGENERAL;
    }
    return APR_SUCCESS;
}

void aiprov_db_release(aiprov_db_t *db)
{
    if (db->owned && db->dbd) {
        dbd_close(db->r->server, db->dbd);
    }
    if (db->owned) {
        db->dbd = NULL;
    }
}

/* The connection's prepared statement for sql, prepared now if need be. */
static apr_dbd_prepared_t *statement(aiprov_db_t *db, const aiprov_sql_t *sql)
{
    apr_dbd_prepared_t *stmt = apr_hash_get(db->dbd->prepared, sql->label,
                                            APR_HASH_KEY_STRING);
    const char *text = db->dialect == AIPROV_PGSQL ? sql->pgsql : sql->sqlite;
    int rc;

    if (stmt) {
        return stmt;
    }
    /* statements live as long as the connection, in its pool */
    rc = apr_dbd_prepare(db->dbd->driver, db->dbd->pool, db->dbd->handle, text,
                         sql->label, &stmt);
    if (rc != 0) {
        ap_log_rerror(APLOG_MARK, APLOG_ERR, 0, db->r, AIPROV_LOGNO(00105)
                      "cannot prepare statement %s: %s", sql->label,
                      apr_dbd_error(db->dbd->driver, db->dbd->handle, rc));
        return NULL;
    }
    apr_hash_set(db->dbd->prepared, sql->label, APR_HASH_KEY_STRING, stmt);
    return stmt;
}

static void log_failure(aiprov_db_t *db, const aiprov_sql_t *sql, int rc)
{
    /* the driver's message names the statement's problem, never its arguments */
    ap_log_rerror(APLOG_MARK, APLOG_ERR, 0, db->r, AIPROV_LOGNO(00106)
                  "statement %s failed: %s", sql->label,
                  apr_dbd_error(db->dbd->driver, db->dbd->handle, rc));
}

apr_status_t aiprov_db_select(aiprov_db_t *db, const aiprov_sql_t *sql,
                              apr_dbd_results_t **res, int nargs, const char **args)
{
    apr_dbd_prepared_t *stmt = statement(db, sql);
    int rc;

    if (!stmt) {
        return APR_EGENERAL;
    }
    *res = NULL;
    rc = apr_dbd_pselect(db->dbd->driver, db->r->pool, db->dbd->handle, res, stmt,
                         1, nargs, args);
    if (rc != 0) {
        log_failure(db, sql, rc);
        return APR_EGENERAL;
    }
    return APR_SUCCESS;
}

apr_status_t aiprov_db_query(aiprov_db_t *db, const aiprov_sql_t *sql, int *nrows,
                             int nargs, const char **args)
{
    apr_dbd_prepared_t *stmt = statement(db, sql);
    int rc, n = 0;

    if (!stmt) {
        return APR_EGENERAL;
    }
    rc = apr_dbd_pquery(db->dbd->driver, db->r->pool, db->dbd->handle, &n, stmt,
                        nargs, args);
    if (rc != 0) {
        log_failure(db, sql, rc);
        return APR_EGENERAL;
    }
    if (nrows) {
        *nrows = n;
    }
    return APR_SUCCESS;
}

int aiprov_db_next_row(aiprov_db_t *db, apr_dbd_results_t *res, apr_dbd_row_t **row)
{
    /* the pgsql driver keeps its position in the row: pass the same one back */
    return apr_dbd_get_row(db->dbd->driver, db->r->pool, res, row, -1) == 0;
}

const char *aiprov_db_get(aiprov_db_t *db, apr_dbd_row_t *row, int col)
{
    char *value = NULL;
    if (apr_dbd_datum_get(db->dbd->driver, row, col, APR_DBD_TYPE_STRING, &value)
        != APR_SUCCESS) {
        return NULL;   /* SQL NULL (APR_ENOENT) */
    }
    return value;
}

apr_status_t aiprov_db_select_one(aiprov_db_t *db, const aiprov_sql_t *sql,
                                  const char **value, int nargs, const char **args)
{
    apr_dbd_results_t *res;
    apr_dbd_row_t *row = NULL;
    apr_status_t rv = aiprov_db_select(db, sql, &res, nargs, args);

    *value = NULL;
    if (rv != APR_SUCCESS) {
        return rv;
    }
    while (aiprov_db_next_row(db, res, &row)) {
        if (!*value) {
            const char *v = aiprov_db_get(db, row, 0);
            *value = v ? apr_pstrdup(db->r->pool, v) : "";
        }
    }
    return APR_SUCCESS;
}

apr_status_t aiprov_db_begin(aiprov_db_t *db)
{
    int rc;
    db->trans = NULL;
    rc = apr_dbd_transaction_start(db->dbd->driver, db->r->pool, db->dbd->handle,
                                   &db->trans);
    if (rc != 0) {
        ap_log_rerror(APLOG_MARK, APLOG_ERR, 0, db->r, AIPROV_LOGNO(00107)
                      "cannot start a transaction: %s",
                      apr_dbd_error(db->dbd->driver, db->dbd->handle, rc));
        /* the sqlite3 driver records a transaction even when BEGIN failed */
        if (db->trans) {
            apr_dbd_transaction_mode_set(db->dbd->driver, db->trans,
                                         APR_DBD_TRANSACTION_ROLLBACK);
            apr_dbd_transaction_end(db->dbd->driver, db->r->pool, db->trans);
            db->trans = NULL;
        }
        return APR_EGENERAL;
    }
    return APR_SUCCESS;
}

void aiprov_db_rollback(aiprov_db_t *db)
{
    if (db->trans) {
        apr_dbd_transaction_mode_set(db->dbd->driver, db->trans,
                                     APR_DBD_TRANSACTION_ROLLBACK);
    }
}

apr_status_t aiprov_db_end(aiprov_db_t *db)
{
    int rc;
    if (!db->trans) {
        return APR_SUCCESS;
    }
    rc = apr_dbd_transaction_end(db->dbd->driver, db->r->pool, db->trans);
    db->trans = NULL;
    if (rc != 0) {
        ap_log_rerror(APLOG_MARK, APLOG_ERR, 0, db->r, AIPROV_LOGNO(00108)
                      "cannot end a transaction: %s",
                      apr_dbd_error(db->dbd->driver, db->dbd->handle, rc));
        return APR_EGENERAL;
    }
    return APR_SUCCESS;
}
