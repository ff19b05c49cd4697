/*
 * Token usage read from a provider's answer as it streams past.
 *
 * Where the providers put it:
 *  - OpenAI style (OpenAI, OpenRouter, Groq, Gemini, Cohere, Ollama's /v1):
 *    "usage": {"total_tokens": n} in the document or in a late stream chunk
 *    (prompt_tokens + completion_tokens when total_tokens is missing);
 *    Groq's stream may carry it in "x_groq": {"usage": …}.
 *  - Anthropic: "usage": {"input_tokens", "output_tokens"}; streamed, first in
 *    message_start's "message" and then in message_delta, whose counts are
 *    cumulative (the latest replaces, never adds).
 *  - Ollama's native API: "prompt_eval_count" + "eval_count" on the final
 *    object (done: true).
 * Each JSON object of the answer is examined; the latest report wins.
 */
#include "aiprov_usage.h"
#include <jansson.h>

#define LINE_MAX_BYTES  (1024 * 1024)      /* one event; longer ones are skipped */
#define DOC_MAX_BYTES   (8 * 1024 * 1024)  /* a whole JSON answer kept to be read */

typedef enum { SHAPE_JSON, SHAPE_SSE, SHAPE_NDJSON } shape_e;

struct aiprov_usage_t {
    apr_pool_t *pool;
    shape_e shape;
    char *buf;            /* the current line, or the whole document */
    apr_size_t len, cap, max;
    int overflow;         /* the current line (or document) was too long */
    apr_int64_t total;    /* OpenAI style, -1 until seen */
    apr_int64_t input, output;   /* Anthropic, -1 until seen */
    apr_int64_t ollama;   /* native counts, -1 until seen */
};

aiprov_usage_t *aiprov_usage_make(apr_pool_t *p, const char *content_type)
{
    aiprov_usage_t *u = apr_pcalloc(p, sizeof(*u));
    u->pool = p;
    u->shape = SHAPE_JSON;
    if (content_type) {
        if (strncasecmp(content_type, "text/event-stream", 17) == 0) {
            u->shape = SHAPE_SSE;
        }
        else if (strncasecmp(content_type, "application/x-ndjson", 20) == 0) {
            u->shape = SHAPE_NDJSON;
        }
    }
    u->max = u->shape == SHAPE_JSON ? DOC_MAX_BYTES : LINE_MAX_BYTES;
    u->total = u->input = u->output = u->ollama = -1;
    return u;
}

static int get_int(json_t *o, const char *k, apr_int64_t *v)
{
    json_t *j = json_object_get(o, k);
    if (json_is_integer(j) && json_integer_value(j) >= 0) {
        *v = json_integer_value(j);
        return 1;
    }
    return 0;
}

static void openai_usage(aiprov_usage_t *u, json_t *usage)
{
    apr_int64_t t, pr, co;
    if (!json_is_object(usage)) {
        return;
    }
    if (get_int(usage, "total_tokens", &t)) {
        u->total = t;
    }
    else if (get_int(usage, "prompt_tokens", &pr) && get_int(usage, "completion_tokens", &co)) {
        u->total = pr + co;
    }
    /* Anthropic's names; output is cumulative in message_delta */
    if (get_int(usage, "input_tokens", &t)) {
        u->input = t;
    }
    if (get_int(usage, "output_tokens", &t)) {
        u->output = t;
    }
}

static void examine(aiprov_usage_t *u, json_t *o)
{
    apr_int64_t pr, ev;
    json_t *x;

    if (!json_is_object(o)) {
        return;
    }
    openai_usage(u, json_object_get(o, "usage"));
    x = json_object_get(o, "x_groq");
    if (json_is_object(x)) {
        openai_usage(u, json_object_get(x, "usage"));
    }
    x = json_object_get(o, "message");   /* Anthropic's message_start */
    if (json_is_object(x)) {
        openai_usage(u, json_object_get(x, "usage"));
    }
    if (get_int(o, "prompt_eval_count", &pr) && get_int(o, "eval_count", &ev)) {
        u->ollama = pr + ev;
    }
}

static void parse(aiprov_usage_t *u, const char *text, apr_size_t len)
{
    json_t *j;
    /* cheap test first: most stream events carry no usage at all */
    if (len < 2 || (!memmem(text, len, "usage", 5) && !memmem(text, len, "eval_count", 10))) {
        return;
    }
    j = json_loadb(text, len, JSON_DECODE_ANY, NULL);
    if (j) {
        examine(u, j);
        json_decref(j);
    }
}

/* One complete line of a stream. */
static void line(aiprov_usage_t *u, const char *s, apr_size_t len)
{
    if (len && s[len - 1] == '\r') {
        len--;
    }
    if (u->shape == SHAPE_NDJSON) {
        parse(u, s, len);
    }
    else if (len >= 5 && memcmp(s, "data:", 5) == 0) {
        s += 5;
        len -= 5;
        if (len && *s == ' ') {
            s++;
            len--;
        }
        if (!(len == 6 && memcmp(s, "[DONE]", 6) == 0)) {
            parse(u, s, len);
        }
    }
}

static void append(aiprov_usage_t *u, const char *data, apr_size_t len)
{
    if (u->overflow || len == 0) {
        return;
    }
    if (u->len + len > u->max) {
        u->overflow = 1;
        return;
    }
    if (u->len + len > u->cap) {
        apr_size_t cap = u->cap ? u->cap : 4096;
        char *nb;
        while (cap < u->len + len) {
            cap *= 2;
        }
        nb = apr_palloc(u->pool, cap);
        if (u->len) {
            memcpy(nb, u->buf, u->len);
        }
        u->buf = nb;
        u->cap = cap;
    }
    memcpy(u->buf + u->len, data, len);
    u->len += len;
}

void aiprov_usage_feed(aiprov_usage_t *u, const char *data, apr_size_t len)
{
    const char *nl;

    if (u->shape == SHAPE_JSON) {
        append(u, data, len);
        return;
    }
    while (len > 0 && (nl = memchr(data, '\n', len)) != NULL) {
        apr_size_t part = (apr_size_t)(nl - data);
        if (u->len == 0 && !u->overflow) {
            line(u, data, part);         /* the common case: no copy */
        }
        else {
            append(u, data, part);
            if (!u->overflow) {
                line(u, u->buf, u->len);
            }
        }
        u->len = 0;
        u->overflow = 0;
        data = nl + 1;
        len -= part + 1;
    }
    append(u, data, len);
}

int aiprov_usage_total(aiprov_usage_t *u, apr_int64_t *tokens)
{
    if (u->shape == SHAPE_JSON) {
        if (!u->overflow && u->len) {
            parse(u, u->buf, u->len);
        }
    }
    else if (u->len && !u->overflow) {
        line(u, u->buf, u->len);       /* a last line without its newline */
    }
    u->len = 0;
    if (u->total >= 0) {
        *tokens = u->total;
    }
    else if (u->input >= 0 || u->output >= 0) {
        *tokens = (u->input > 0 ? u->input : 0) + (u->output > 0 ? u->output : 0);
    }
    else if (u->ollama >= 0) {
        *tokens = u->ollama;
    }
    else {
        return 0;
    }
    return 1;
}
