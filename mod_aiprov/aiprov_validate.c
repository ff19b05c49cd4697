/* Request bodies of the provider endpoints: types, bounds, key formats. */
#include "aiprov_validate.h"
#include "aiprov_config.h"

#include <apr_lib.h>
#include <apr_uri.h>

int aiprov_is_uuid(const char *s)
{
    int i;
    for (i = 0; i < 36; i++) {
        if (i == 8 || i == 13 || i == 18 || i == 23) {
            if (s[i] != '-') {
                return 0;
            }
        }
        else if (!apr_isxdigit(s[i])) {
            return 0;
        }
    }
    return s[36] == '\0';
}

const char *aiprov_validate_key_format(apr_pool_t *p, int provider, const char *key,
                                       apr_size_t len)
{
    const char *prefix = aiprov_providers[provider].key_prefix;
    apr_size_t i;

    if (len < AIPROV_KEY_MIN || len > AIPROV_KEY_MAX) {
        return "apiKey must be 8 to 512 characters long";
    }
    for (i = 0; i < len; i++) {
        if (key[i] < 0x21 || key[i] > 0x7e) {
            return "apiKey must be printable ASCII without white space";
        }
    }
    if (prefix && strncmp(key, prefix, strlen(prefix)) != 0) {
        return apr_psprintf(p, "a %s apiKey starts with %s",
                            aiprov_providers[provider].name, prefix);
    }
    return NULL;
}

/* ------------------------------------------------------------ field checks */

/* Each returns NULL or the reason, naming the field. */

static const char *check_text(apr_pool_t *p, const char *field, json_t *v,
                              apr_size_t max, const char **out)
{
    const char *s;
    apr_size_t len, i;

    if (!json_is_string(v)) {
        return apr_psprintf(p, "%s must be a string", field);
    }
    s = json_string_value(v);
    len = json_string_length(v);
    if (len < 1 || len > max) {
        return apr_psprintf(p, "%s must be 1 to %" APR_SIZE_T_FMT " bytes long", field, max);
    }
    for (i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c < 0x20 || c == 0x7f) {
            return apr_psprintf(p, "%s must not contain control characters", field);
        }
    }
    *out = apr_pstrmemdup(p, s, len);
    return NULL;
}

static const char *check_text_or_null(apr_pool_t *p, const char *field, json_t *v,
                                      apr_size_t max, const char **out)
{
    if (json_is_null(v)) {
        *out = NULL;
        return NULL;
    }
    return check_text(p, field, v, max, out);
}

static const char *check_bool(apr_pool_t *p, const char *field, json_t *v, int *out)
{
    if (!json_is_boolean(v)) {
        return apr_psprintf(p, "%s must be true or false", field);
    }
    *out = json_is_true(v);
    return NULL;
}

static const char *check_usage_limit(apr_pool_t *p, json_t *v, const char **out)
{
    json_int_t n;
    if (json_is_null(v)) {
        *out = NULL;
        return NULL;
    }
    if (!json_is_integer(v)) {
        return "usageLimit must be a whole number or null";
    }
    n = json_integer_value(v);
    if (n < 0 || n > AIPROV_USAGE_LIMIT_MAX) {
        return "usageLimit must be from 0 to 9007199254740991, or null";
    }
    *out = apr_psprintf(p, "%" APR_INT64_T_FMT, (apr_int64_t)n);
    return NULL;
}

static const char *check_url(apr_pool_t *p, json_t *v, const char **out)
{
    const char *s, *err = check_text(p, "apiUrl", v, AIPROV_URL_MAX, &s);
    const char *c;
    apr_uri_t uri;

    if (err) {
        return err;
    }
    if (strncasecmp(s, "http://", 7) != 0 && strncasecmp(s, "https://", 8) != 0) {
        return "apiUrl must start with http:// or https://";
    }
    for (c = s; *c; c++) {
        if (*c == ' ' || (unsigned char)*c > 0x7e) {
            return "apiUrl must not contain spaces or non-ASCII characters";
        }
    }
    if (apr_uri_parse(p, s, &uri) != APR_SUCCESS || !uri.hostname || !*uri.hostname) {
        return "apiUrl must be a URL with a host";
    }
    *out = s;
    return NULL;
}

/* JSON text of an object (or NULL for null), bounded. */
static const char *check_config(apr_pool_t *p, const char *field, json_t *v,
                                const char **out)
{
    char *s;
    if (json_is_null(v)) {
        *out = NULL;
        return NULL;
    }
    if (!json_is_object(v)) {
        return apr_psprintf(p, "%s must be an object or null", field);
    }
    s = json_dumps(v, JSON_COMPACT);
    if (!s) {
        return apr_psprintf(p, "%s cannot be stored", field);
    }
    if (strlen(s) > AIPROV_CONFIG_JSON_MAX) {
        free(s);
        return apr_psprintf(p, "%s must be at most %d bytes of JSON", field,
                            AIPROV_CONFIG_JSON_MAX);
    }
    *out = apr_pstrdup(p, s);
    free(s);
    return NULL;
}

static const char *check_models(apr_pool_t *p, json_t *v, const char **out)
{
    size_t i;
    json_t *m;
    char *s;

    if (json_is_null(v)) {
        *out = NULL;
        return NULL;
    }
    if (!json_is_array(v)) {
        return "supportedModels must be an array of strings or null";
    }
    if (json_array_size(v) > AIPROV_MODELS_MAX) {
        return apr_psprintf(p, "supportedModels must have at most %d entries",
                            AIPROV_MODELS_MAX);
    }
    json_array_foreach(v, i, m) {
        const char *ignored;
        if (check_text(p, "each of supportedModels", m, AIPROV_MODEL_NAME_MAX, &ignored)) {
            return apr_psprintf(p, "supportedModels entries must be strings of 1 to %d bytes"
                                " without control characters", AIPROV_MODEL_NAME_MAX);
        }
    }
    s = json_dumps(v, JSON_COMPACT);
    if (!s) {
        return "supportedModels cannot be stored";
    }
    *out = apr_pstrdup(p, s);
    free(s);
    return NULL;
}

/* ------------------------------------------------------------ bodies */

/* A field name fit to echo: quoted when it looks like a name, never
 * anything else (a pasted key in the wrong place must not come back). */
const char *aiprov_field_name(apr_pool_t *p, const char *field)
{
    const char *c;
    if (strlen(field) > 40) {
        return "(a long name)";
    }
    for (c = field; *c; c++) {
        if (!apr_isalnum(*c) && *c != '_') {
            return "(a name with other characters than letters, digits and _)";
        }
    }
    return apr_psprintf(p, "'%s'", field);
}

aiprov_err_e aiprov_validate_create(apr_pool_t *p, json_t *body, aiprov_create_t *out,
                                    const char **err)
{
    const char *field, *e = NULL;
    json_t *v, *pv, *cfg = NULL;
    const char *cfg_name = NULL;

    memset(out, 0, sizeof(*out));
    pv = json_object_get(body, "provider");
    if (!pv) {
        *err = "provider is required";
        return AIPROV_E_INVALID_REQUEST;
    }
    if (!json_is_string(pv) || (out->provider = aiprov_provider_find(json_string_value(pv))) < 0) {
        *err = "provider must be one of openrouter, openai, anthropic, ollama, groq, "
               "gemini, cohere";
        return AIPROV_E_INVALID_REQUEST;
    }
    out->row.provider = aiprov_providers[out->provider].name;
    out->row.key_label = aiprov_providers[out->provider].display_name;

    json_object_foreach(body, field, v) {
        if (strcmp(field, "provider") == 0) {
            continue;
        }
        else if (strcmp(field, "apiKey") == 0) {
            if (!json_is_string(v)) {
                e = "apiKey must be a string";
            }
            else {
                out->api_key = json_string_value(v);
                out->api_key_len = json_string_length(v);
            }
        }
        else if (strcmp(field, "keyLabel") == 0) {
            e = check_text(p, "keyLabel", v, AIPROV_LABEL_MAX, &out->row.key_label);
        }
        else if (strcmp(field, "isDefault") == 0) {
            e = check_bool(p, "isDefault", v, &out->row.is_default);
        }
        else if (strcmp(field, "usageLimit") == 0) {
            e = check_usage_limit(p, v, &out->row.usage_limit);
        }
        else if (strcmp(field, "apiUrl") == 0) {
            e = check_url(p, v, &out->row.api_url);
        }
        else if (strcmp(field, "providerConfig") == 0 || strcmp(field, "configuration") == 0) {
            if (cfg) {
                e = "providerConfig and configuration are the same field: send one";
            }
            cfg = v;
            cfg_name = field;
        }
        else if (strcmp(field, "supportedModels") == 0) {
            e = check_models(p, v, &out->row.supported_models);
        }
        else if (strcmp(field, "providerUserId") == 0) {
            e = check_text_or_null(p, "providerUserId", v, AIPROV_PROVIDER_USER_MAX,
                                   &out->row.provider_user_id);
        }
        else {
            e = apr_psprintf(p, "unknown field %s", aiprov_field_name(p, field));
        }
        if (e) {
            *err = e;
            return AIPROV_E_INVALID_REQUEST;
        }
    }
    if (cfg && (e = check_config(p, cfg_name, cfg, &out->row.provider_config)) != NULL) {
        *err = e;
        return AIPROV_E_INVALID_REQUEST;
    }
    if (aiprov_providers[out->provider].needs_key && !out->api_key) {
        *err = apr_psprintf(p, "apiKey is required for %s", out->row.provider);
        return AIPROV_E_INVALID_REQUEST;
    }
    if (out->provider == AIPROV_P_OLLAMA && !out->row.api_url) {
        *err = "apiUrl is required for ollama (for example http://127.0.0.1:11434)";
        return AIPROV_E_INVALID_REQUEST;
    }
    if (out->api_key
        && (e = aiprov_validate_key_format(p, out->provider, out->api_key,
                                           out->api_key_len)) != NULL) {
        *err = e;
        return AIPROV_E_INVALID_API_KEY;
    }
    return AIPROV_OK;
}

aiprov_err_e aiprov_validate_update(apr_pool_t *p, json_t *body, aiprov_change_t *out,
                                    const char **err)
{
    const char *field, *e = NULL;
    json_t *v;

    memset(out, 0, sizeof(*out));
    json_object_foreach(body, field, v) {
        if (strcmp(field, "keyLabel") == 0) {
            out->set_key_label = 1;
            e = check_text_or_null(p, "keyLabel", v, AIPROV_LABEL_MAX, &out->key_label);
        }
        else if (strcmp(field, "isActive") == 0) {
            out->set_is_active = 1;
            e = check_bool(p, "isActive", v, &out->is_active);
        }
        else if (strcmp(field, "isDefault") == 0) {
            out->set_is_default = 1;
            e = check_bool(p, "isDefault", v, &out->is_default);
        }
        else if (strcmp(field, "usageLimit") == 0) {
            out->set_usage_limit = 1;
            e = check_usage_limit(p, v, &out->usage_limit);
        }
        else if (strcmp(field, "supportedModels") == 0) {
            out->set_supported_models = 1;
            e = check_models(p, v, &out->supported_models);
        }
        else if (strcmp(field, "providerConfig") == 0) {
            out->set_provider_config = 1;
            e = check_config(p, "providerConfig", v, &out->provider_config);
        }
        else if (strcmp(field, "apiKey") == 0) {
            e = "apiKey cannot be changed: delete the provider and create it again";
        }
        else {
            e = apr_psprintf(p, "field %s cannot be updated", aiprov_field_name(p, field));
        }
        if (e) {
            *err = e;
            return AIPROV_E_INVALID_REQUEST;
        }
    }
    return AIPROV_OK;
}
