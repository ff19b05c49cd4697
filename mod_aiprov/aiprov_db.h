/* mod_dbd glue: connections, statements per SQL dialect, rows, transactions. */
#ifndef AIPROV_DB_H
#define AIPROV_DB_H

#include "aiprov.h"
#include <apr_dbd.h>
#include <mod_dbd.h>

typedef enum { AIPROV_SQLITE = 0, AIPROV_PGSQL } aiprov_dialect_e;

/*
 * One statement in the two dialects; NULL where a dialect needs none.
 * Statements are prepared on each connection the first time it is used
 * (mod_dbd has no per-driver registration), under the label.
 */
typedef struct {
    const char *label;
    const char *sqlite;
    const char *pgsql;
} aiprov_sql_t;

typedef struct {
    request_rec *r;
    ap_dbd_t *dbd;
    aiprov_dialect_e dialect;
    apr_dbd_transaction_t *trans;
    int owned;          /* from ap_dbd_open: given back by aiprov_db_release */
} aiprov_db_t;

/* Resolve mod_dbd's optional functions (post_config). */
void aiprov_db_retrieve_functions(void);
int aiprov_db_available(void);

/* A connection for the request, NULL (logged) when there is none. */
aiprov_db_t *aiprov_db_acquire(request_rec *r);

/*
 * A connection that can be given back before the request ends: the proxy
 * holds none while it waits for a provider (mod_dbd's pool is small).
 * release() gives it back; reopen() takes one again (APR_SUCCESS or not).
 */
aiprov_db_t *aiprov_db_open(request_rec *r);
void aiprov_db_release(aiprov_db_t *db);
apr_status_t aiprov_db_reopen(aiprov_db_t *db);

/*
 * Run a statement. Arguments are strings (NULL is SQL NULL).
 * select: rows land in *res (random access, every row fetched).
 * query: *nrows gets the affected row count (may be NULL).
 * Failures are logged with the statement label and driver message.
 */
apr_status_t aiprov_db_select(aiprov_db_t *db, const aiprov_sql_t *sql,
                              apr_dbd_results_t **res, int nargs, const char **args);
apr_status_t aiprov_db_query(aiprov_db_t *db, const aiprov_sql_t *sql, int *nrows,
                             int nargs, const char **args);

/* Steps *row (NULL before the first call) to the next row; 0 after the last.
 * Callers loop to the end: a row left behind keeps the statement busy. */
int aiprov_db_next_row(aiprov_db_t *db, apr_dbd_results_t *res, apr_dbd_row_t **row);

/* A column's text; NULL for SQL NULL (both drivers). */
const char *aiprov_db_get(aiprov_db_t *db, apr_dbd_row_t *row, int col);

/* A SELECT's first column of its first row: NULL without rows, "" for SQL NULL. */
apr_status_t aiprov_db_select_one(aiprov_db_t *db, const aiprov_sql_t *sql,
                                  const char **value, int nargs, const char **args);

/* Transactions: end() commits, or rolls back after any failure or rollback(). */
apr_status_t aiprov_db_begin(aiprov_db_t *db);
void aiprov_db_rollback(aiprov_db_t *db);
apr_status_t aiprov_db_end(aiprov_db_t *db);

#endif
