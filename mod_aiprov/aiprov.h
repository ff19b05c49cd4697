/*
 * mod_aiprov: users connect and manage their own AI providers.
 * Shared declarations for every file of the module.
 */
#ifndef AIPROV_H
#define AIPROV_H

#include <httpd.h>
#include <http_config.h>
#include <http_log.h>
#include <apr_strings.h>
#include <apr_tables.h>

extern module AP_MODULE_DECLARE_DATA aiprov_module;

/* AP_DECLARE_MODULE declares the log index in mod_aiprov.c itself. */
#ifndef AIPROV_MODULE_FILE
APLOG_USE_MODULE(aiprov);
#endif

/* Our own log tags: httpd's AHnnnnn are reserved for httpd's modules.
 * Unique per call site, never reused. */
#define AIPROV_LOGNO(n) "AIPROV" #n ": "

#define AIPROV_HANDLER "aiprov"

/* Limits */
#define AIPROV_JSON_BODY_MAX      (1024 * 1024)  /* when LimitRequestBody is not set */
#define AIPROV_KEY_MIN            8
#define AIPROV_KEY_MAX            512
#define AIPROV_LABEL_MAX          100
#define AIPROV_URL_MAX            2048
#define AIPROV_CONFIG_JSON_MAX    (16 * 1024)
#define AIPROV_MODELS_MAX         500
#define AIPROV_MODEL_NAME_MAX     200
#define AIPROV_PROVIDER_USER_MAX  255
#define AIPROV_TOKEN_MAX          512
#define AIPROV_USAGE_LIMIT_MAX    9007199254740991LL  /* 2^53-1: exact in JavaScript */

/* The error codes of the contract (section 5). */
typedef enum {
    AIPROV_OK = 0,
    AIPROV_E_UNAUTHORIZED,
    AIPROV_E_INVALID_REQUEST,
    AIPROV_E_INVALID_API_KEY,
    AIPROV_E_PROVIDER_NOT_FOUND,
    AIPROV_E_DUPLICATE_PROVIDER,
    AIPROV_E_USAGE_LIMIT_EXCEEDED,
    AIPROV_E_OAUTH_EXCHANGE_FAILED,
    AIPROV_E_ENCRYPTION_FAILED,
    AIPROV_E_PROVIDER_INACTIVE,
    AIPROV_E_METHOD_NOT_ALLOWED,
    AIPROV_E_PAYLOAD_TOO_LARGE,
    AIPROV_E_UNSUPPORTED_MEDIA_TYPE,
    AIPROV_E_DATABASE_UNAVAILABLE,
    AIPROV_E_UPSTREAM_FAILED,
    AIPROV_E_UPSTREAM_TIMEOUT
} aiprov_err_e;

#endif /* AIPROV_H */
