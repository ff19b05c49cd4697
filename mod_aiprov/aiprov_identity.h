/* Who is calling: a bearer session token, or REMOTE_USER when trusted. */
#ifndef AIPROV_IDENTITY_H
#define AIPROV_IDENTITY_H

#include "aiprov.h"
#include "aiprov_config.h"
#include "aiprov_db.h"

/*
 * The user id of the request, or NULL with *err set: AIPROV_E_UNAUTHORIZED,
 * or AIPROV_E_DATABASE_UNAVAILABLE when the session could not be looked up.
 */
const char *aiprov_identity_user(request_rec *r, const aiprov_dir_conf *conf,
                                 aiprov_db_t *db, aiprov_err_e *err);

#endif
