/* parse.c — job_parse: size, UTF-8 and JSON checks, then the field-by-field validation of
 * CONTRACT §1 on the json reader's values, read in place; the strings a valid job keeps are decoded
 * at the end into the job's own allocation. On failure it still salvages job_id, conversation_id and
 * metadata for an error reply. Also the parser of one stored history entry. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "job/job.h"
#include "job/job_json.h"
#include "json/json.h"

#define JOB_INT_MAX     9007199254740991LL /* 2^53 - 1: the largest integer a double holds exactly */
#define KAFKA_TOPIC_MAX 249

static const char *const error_code_names[] = {
    [JOB_ERR_NONE] = "none",
    [JOB_ERR_INVALID_JOB] = "invalid_job",
    [JOB_ERR_DEADLINE_EXCEEDED] = "deadline_exceeded",
    [JOB_ERR_ALL_PROVIDERS_FAILED] = "all_providers_failed",
    [JOB_ERR_HISTORY_UNAVAILABLE] = "history_unavailable",
    [JOB_ERR_UNKNOWN_ROUTE] = "unknown_route",
    [JOB_ERR_REPLY_TOPIC_NOT_ALLOWED] = "reply_topic_not_allowed",
    [JOB_ERR_TOO_LARGE] = "too_large",
    [JOB_ERR_INTERNAL] = "internal_error",
};

const char *job_error_code_name(job_error_code_t code)
{
    if ((size_t)code >= BASE_ARRAY_LEN(error_code_names))
        return "internal_error";
    return error_code_names[code];
}

job_limits_t job_limits_default(void)
{
    return (job_limits_t){
        .max_message_bytes = 1024 * 1024,
        .max_job_id = 128,
        .max_conversation_id = 256,
        .max_content_bytes = 256 * 1024,
        .max_system_bytes = 64 * 1024,
        .max_history_messages = 1000,
        .max_history_entry_bytes = 64 * 1024,
        .max_metadata_bytes = 16 * 1024,
        .max_stop = 4,
        .max_stop_bytes = 256,
        .max_route = 128,
    };
}

bool job_error_ids_readable(const job_error_t *err) { return err->job_id && err->conversation_id; }

void job_error_free(job_error_t *err)
{
    free(err->job_id);
    free(err->conversation_id);
    free(err->metadata_json);
    err->job_id = err->conversation_id = err->metadata_json = NULL;
}

/* ---- errors ---- */

static int fail(job_error_t *err, job_error_code_t code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Records the first error only; always returns -1. */
static int fail(job_error_t *err, job_error_code_t code, const char *fmt, ...)
{
    if (err->code != JOB_ERR_NONE)
        return -1;
    err->code = code;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err->message, sizeof err->message, fmt, ap);
    va_end(ap);
    return -1;
}

static int fail_oom(job_error_t *err) { return fail(err, JOB_ERR_INTERNAL, "out of memory"); }

static int fail_scan(job_error_t *err, const char *what, job_scan_result_t r, size_t at)
{
    switch (r) {
    case JOB_SCAN_BAD_UTF8:
        return fail(err, JOB_ERR_INVALID_JOB, "%s: invalid UTF-8 at byte %zu", what, at);
    case JOB_SCAN_CONTROL:
        return fail(err, JOB_ERR_INVALID_JOB, "%s: not JSON (control character at byte %zu)", what, at);
    default:
        return fail(err, JOB_ERR_INVALID_JOB, "%s: strings must not contain \\u0000 (at byte %zu)", what, at);
    }
}

/* ---- the whole value ---- */

/* 3 when text[0..len) starts with a UTF-8 byte order mark, else 0. */
static size_t bom_len(const char *text, size_t len)
{
    return len >= 3 && memcmp(text, "\xEF\xBB\xBF", 3) == 0 ? 3 : 0;
}

/* Parses text[0..len) picking the root members keys[0..n) into f, with the checks of the prescan (UTF-8,
 * control characters, \u0000), whose errors come first, then the parse error or a lone surrogate escape,
 * whichever comes first (errors as cJSON had them). A leading UTF-8 byte order mark is skipped, as cJSON
 * did. Texts the reader accepts get the faster post-scan, which answers the same. 0, or -1 after fail()
 * naming what; "not JSON" names the first byte that does not fit (len when the text ends early). */
static int value_parse(const char *text, size_t len, const char *what, json_doc_t *doc, json_value_t *root,
                       const char *const *keys, size_t n, json_value_t *f, job_error_t *err)
{
    size_t bom = bom_len(text, len), at = 0, lone;
    json_err_t jerr;
    int rc = json_parse_get(text + bom, len - bom, doc, root, keys, n, f, &jerr);
    job_scan_result_t scan =
        rc == 0 ? job_json_postscan(text, len, &at, &lone) : job_json_prescan(text, len, &at, &lone);
    if (scan != JOB_SCAN_OK)
        return fail_scan(err, what, scan, at);
    if (rc < 0 && jerr.offset + bom < lone)
        lone = jerr.offset + bom;
    if (lone == SIZE_MAX)
        return 0;
    return fail(err, JOB_ERR_INVALID_JOB, "%s: not JSON (error at byte %zu)", what, lone);
}

/* ---- field readers: each returns 0, or -1 after fail() ---- */

static bool absent(json_value_t v) { return v.type == JSON_NONE || v.type == JSON_NULL; }

/* Validates a string of min_len..max decoded bytes; longer ones fail with code_long. */
static int read_string(json_value_t v, const char *field, size_t min_len, size_t max,
                       job_error_code_t code_long, job_error_t *err)
{
    if (v.type != JSON_STRING)
        return fail(err, JOB_ERR_INVALID_JOB, "%s: must be a string", field);
    size_t raw = v.len - 2; /* decoding never grows, and only "" decodes to nothing */
    if (raw < min_len)
        return fail(err, JOB_ERR_INVALID_JOB, "%s: must not be empty", field);
    if (raw > max && json_str_len(v) > max)
        return fail(err, code_long, "%s: longer than %zu bytes", field, max);
    return 0;
}

static int read_required_id(json_value_t v, const char *field, size_t max, job_error_t *err)
{
    if (absent(v))
        return fail(err, JOB_ERR_INVALID_JOB, "%s: required", field);
    return read_string(v, field, 1, max, JOB_ERR_INVALID_JOB, err);
}

static bool is_ws(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; }

/* Just after the validated string whose opening quote is at q (its closing quote comes before end). */
static const char *string_end(const char *q, const char *end)
{
    for (q++;; q++) {
        q = memchr(q, '"', (size_t)(end - q));
        size_t bs = 0;
        while (q[-1 - (ptrdiff_t)bs] == '\\')
            bs++;
        if (bs % 2 == 0)
            return q + 1;
    }
}

/* The length of the validated container v with the whitespace between its tokens dropped, written to
 * dst unless it is NULL; SIZE_MAX once it passes max. Strings and numbers stay as the producer wrote
 * them. */
static size_t compact(json_value_t v, char *dst, size_t max)
{
    size_t n = 0;
    for (const char *p = v.p, *end = v.p + v.len; p < end;) {
        const char *q = p;
        while (q < end && !is_ws(*q))
            q = *q == '"' ? string_end(q, end) : q + 1;
        if ((size_t)(q - p) > max - n)
            return SIZE_MAX;
        if (dst)
            memcpy(dst + n, p, (size_t)(q - p));
        n += (size_t)(q - p);
        for (p = q; p < end && is_ws(*p);)
            p++;
    }
    return n;
}

/* Validates metadata: absent, or an object of at most max bytes compacted (its length in *out_len). */
static int read_metadata(json_value_t v, size_t max, size_t *out_len, job_error_t *err)
{
    if (absent(v))
        return 0;
    if (v.type != JSON_OBJECT)
        return fail(err, JOB_ERR_INVALID_JOB, "metadata: must be an object");
    if ((*out_len = compact(v, NULL, max)) == SIZE_MAX)
        return fail(err, JOB_ERR_TOO_LARGE, "metadata: more than %zu bytes serialized", max);
    return 0;
}

/* Writes metadata that read_metadata passed, n bytes compacted, and a NUL to dst; returns dst. */
static char *metadata_copy(json_value_t v, size_t n, char *dst)
{
    if (n == v.len)
        memcpy(dst, v.p, n); /* no whitespace to drop */
    else
        compact(v, dst, n);
    dst[n] = '\0';
    return dst;
}

/* A malloc'd copy of metadata_copy, or NULL. */
static char *metadata_dup(json_value_t v, size_t n)
{
    char *copy = base_malloc(n + 1);
    return copy ? metadata_copy(v, n, copy) : NULL;
}

static bool as_number(json_value_t v, double lo, double hi, double *out)
{
    double d;
    if (json_double(v, &d) < 0 || !(d >= lo && d <= hi))
        return false;
    *out = d;
    return true;
}

static const char *role_static(json_value_t v)
{
    static const char *const roles[] = {"system", "user", "assistant"};
    for (size_t i = 0; i < BASE_ARRAY_LEN(roles); i++)
        if (json_str_eq(v, roles[i]))
            return roles[i];
    return NULL;
}

/* Appends name to the comma-separated list in buf, or "..." once it does not fit. */
static void list_append(char *buf, size_t size, const char *name)
{
    size_t used = strlen(buf);
    if (used >= 3 && strcmp(buf + used - 3, "...") == 0)
        return;
    size_t need = strlen(name) + (used ? 1 : 0);
    if (used + need + 1 > size - 4) {
        snprintf(buf + used, size - used, "%s...", used ? "," : "");
        return;
    }
    snprintf(buf + used, size - used, "%s%s", used ? "," : "", name);
}

/* ---- the strings a job keeps: noted while validating, decoded once the job's size is known ---- */

typedef struct {
    json_value_t v;
    const char **dst;
    size_t *dst_len; /* NULL: not wanted */
} kept_t;

typedef struct {
    kept_t local[12]; /* enough for a job without inline history */
    kept_t *items;    /* local, or a heap array when more were reserved */
    size_t n, cap;
    size_t bytes; /* room for all of them decoded, NULs included */
} keep_list_t;

static void keep_init(keep_list_t *k)
{
    k->items = k->local;
    k->n = k->bytes = 0;
    k->cap = BASE_ARRAY_LEN(k->local);
}

static void keep_free(keep_list_t *k)
{
    if (k->items != k->local)
        free(k->items);
}

/* Makes room for more strings; -1 out of memory. */
static int keep_reserve(keep_list_t *k, size_t more)
{
    if (k->cap - k->n >= more)
        return 0;
    kept_t *items = base_malloc((k->n + more) * sizeof *items);
    if (!items)
        return -1;
    memcpy(items, k->items, k->n * sizeof *items);
    keep_free(k);
    k->items = items;
    k->cap = k->n + more;
    return 0;
}

/* Notes the string v (validated, room reserved) to be decoded into *dst (and its length into *dst_len). */
static void keep(keep_list_t *k, json_value_t v, const char **dst, size_t *dst_len)
{
    k->items[k->n++] = (kept_t){.v = v, .dst = dst, .dst_len = dst_len};
    k->bytes += v.len - 1; /* the body and a NUL */
}

/* Decodes every kept string into at, one after the other; returns the end. */
static char *keep_decode(const keep_list_t *k, char *at)
{
    for (size_t i = 0; i < k->n; i++) {
        size_t n = json_str_decode(k->items[i].v, at);
        at[n] = '\0';
        *k->items[i].dst = at;
        if (k->items[i].dst_len)
            *k->items[i].dst_len = n;
        at += n + 1;
    }
    return at;
}

/* read_string, then keep. */
static int keep_string(keep_list_t *k, json_value_t v, const char *field, size_t min_len, size_t max,
                       job_error_code_t code_long, const char **out, size_t *out_len, job_error_t *err)
{
    if (read_string(v, field, min_len, max, code_long, err) < 0)
        return -1;
    if (keep_reserve(k, 1) < 0)
        return fail_oom(err);
    keep(k, v, out, out_len);
    return 0;
}

/* ---- the job's members ---- */

static const char *const message_names[] = {"role", "content"};

static int read_message(keep_list_t *k, json_value_t v, const job_limits_t *lim, chat_message_t *m,
                        job_error_t *err)
{
    if (absent(v))
        return fail(err, JOB_ERR_INVALID_JOB, "message: required");
    if (v.type != JSON_OBJECT)
        return fail(err, JOB_ERR_INVALID_JOB, "message: must be an object");
    json_value_t f[2];
    json_get_many(v, message_names, 2, f);
    if (absent(f[0]))
        return fail(err, JOB_ERR_INVALID_JOB, "message.role: required");
    if (!json_str_eq(f[0], "user"))
        return fail(err, JOB_ERR_INVALID_JOB, "message.role: must be \"user\"");
    if (absent(f[1]))
        return fail(err, JOB_ERR_INVALID_JOB, "message.content: required");
    m->role = "user";
    return keep_string(k, f[1], "message.content", 1, lim->max_content_bytes, JOB_ERR_TOO_LARGE, &m->content,
                       &m->content_len, err);
}

static int read_history(job_t *job, keep_list_t *k, json_value_t v, const job_limits_t *lim, job_error_t *err)
{
    if (absent(v))
        return 0;
    if (v.type != JSON_ARRAY)
        return fail(err, JOB_ERR_INVALID_JOB, "history: must be an array");
    size_t n = 0;
    json_value_t e;
    for (json_iter_t it = json_iter(v); json_next(&it, NULL, &e);)
        if (++n > lim->max_history_messages)
            return fail(err, JOB_ERR_TOO_LARGE, "history: more than %zu messages", lim->max_history_messages);
    job->has_history = true;
    job->history = base_calloc(n ? n : 1, sizeof *job->history);
    if (!job->history || keep_reserve(k, n) < 0)
        return fail_oom(err);
    size_t i = 0;
    for (json_iter_t it = json_iter(v); json_next(&it, NULL, &e); i++) {
        char field[64];
        if (e.type != JSON_OBJECT)
            return fail(err, JOB_ERR_INVALID_JOB, "history[%zu]: must be an object", i);
        json_value_t f[2];
        json_get_many(e, message_names, 2, f);
        chat_message_t *m = &job->history[i];
        m->role = role_static(f[0]);
        if (!m->role)
            return fail(err, JOB_ERR_INVALID_JOB, "history[%zu].role: must be system, user or assistant", i);
        snprintf(field, sizeof field, "history[%zu].content", i);
        if (read_string(f[1], field, 0, lim->max_history_entry_bytes, JOB_ERR_TOO_LARGE, err) < 0)
            return -1;
        keep(k, f[1], &m->content, &m->content_len);
        job->n_history = i + 1;
    }
    return 0;
}

static int read_stop(job_params_t *p, keep_list_t *k, json_value_t v, const job_limits_t *lim,
                     job_error_t *err)
{
    size_t n = 1;
    if (v.type == JSON_ARRAY) {
        n = json_count(v);
        if (n > lim->max_stop)
            return fail(err, JOB_ERR_INVALID_JOB, "params.stop: more than %zu sequences", lim->max_stop);
    } else if (v.type != JSON_STRING) {
        return fail(err, JOB_ERR_INVALID_JOB, "params.stop: must be a string or an array of strings");
    }
    p->stop = base_calloc(n ? n : 1, sizeof *p->stop);
    if (!p->stop || keep_reserve(k, n) < 0)
        return fail_oom(err);
    if (v.type == JSON_STRING)
        return keep_string(k, v, "params.stop", 1, lim->max_stop_bytes, JOB_ERR_INVALID_JOB,
                           &p->stop[p->n_stop++], NULL, err);
    json_value_t e;
    for (json_iter_t it = json_iter(v); json_next(&it, NULL, &e);) {
        char field[32];
        snprintf(field, sizeof field, "params.stop[%zu]", p->n_stop);
        if (keep_string(k, e, field, 1, lim->max_stop_bytes, JOB_ERR_INVALID_JOB, &p->stop[p->n_stop], NULL,
                        err) < 0)
            return -1;
        p->n_stop++;
    }
    return 0;
}

enum { P_TEMPERATURE, P_TOP_P, P_MAX_TOKENS, P_STOP, P_SEED, P_COUNT };
static const char *const param_names[P_COUNT] = {"temperature", "top_p", "max_tokens", "stop", "seed"};

/* Puts the first member of params named param_names[i] in f[i]; the names of the others, decoded, go to
 * the job's unknown_params. */
static void collect_params(job_t *job, json_value_t v, json_value_t *f)
{
    json_value_t key, val;
    for (json_iter_t it = json_iter(v); json_next(&it, &key, &val);) {
        size_t i = 0;
        while (i < P_COUNT && !json_str_eq(key, param_names[i]))
            i++;
        if (i < P_COUNT) {
            if (f[i].type == JSON_NONE)
                f[i] = val;
        } else {
            char name[sizeof job->unknown_params]; /* a longer name does not fit the list anyway */
            name[json_str_prefix(key, name, sizeof name - 1)] = '\0';
            list_append(job->unknown_params, sizeof job->unknown_params, name);
        }
    }
}

static int read_params(job_t *job, keep_list_t *k, json_value_t v, const job_limits_t *lim, job_error_t *err)
{
    if (absent(v))
        return 0;
    if (v.type != JSON_OBJECT)
        return fail(err, JOB_ERR_INVALID_JOB, "params: must be an object");
    json_value_t f[P_COUNT] = {0};
    collect_params(job, v, f);
    job_params_t *p = &job->params;
    if (!absent(f[P_TEMPERATURE]) &&
        !(p->has_temperature = as_number(f[P_TEMPERATURE], 0, 2, &p->temperature)))
        return fail(err, JOB_ERR_INVALID_JOB, "params.temperature: must be a number from 0 to 2");
    if (!absent(f[P_TOP_P]) && !(p->has_top_p = as_number(f[P_TOP_P], 0, 1, &p->top_p)))
        return fail(err, JOB_ERR_INVALID_JOB, "params.top_p: must be a number from 0 to 1");
    if (!absent(f[P_MAX_TOKENS]) &&
        !(p->has_max_tokens = json_int(f[P_MAX_TOKENS], 1, 1000000, &p->max_tokens) == 0))
        return fail(err, JOB_ERR_INVALID_JOB, "params.max_tokens: must be an integer from 1 to 1000000");
    if (!absent(f[P_SEED]) && !(p->has_seed = json_int(f[P_SEED], -JOB_INT_MAX, JOB_INT_MAX, &p->seed) == 0))
        return fail(err, JOB_ERR_INVALID_JOB, "params.seed: must be an integer within +-2^53");
    if (!absent(f[P_STOP]))
        return read_stop(p, k, f[P_STOP], lim, err);
    return 0;
}

static bool topic_name_ok(const char *s, size_t n)
{
    if (n == 0 || n > KAFKA_TOPIC_MAX || strcmp(s, ".") == 0 || strcmp(s, "..") == 0)
        return false;
    return strspn(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-") == n;
}

static int read_reply_topic(keep_list_t *k, json_value_t v, const char **out, job_error_t *err)
{
    char name[KAFKA_TOPIC_MAX + 2];
    size_t n = json_str_prefix(v, name, sizeof name - 1);
    name[n] = '\0';
    if (v.type != JSON_STRING || !topic_name_ok(name, n))
        return fail(err, JOB_ERR_INVALID_JOB, "reply_topic: must be 1 to %d characters of [A-Za-z0-9._-]",
                    KAFKA_TOPIC_MAX);
    if (keep_reserve(k, 1) < 0)
        return fail_oom(err);
    keep(k, v, out, NULL);
    return 0;
}

enum {
    F_JOB_ID,
    F_CONV,
    F_METADATA,
    F_MESSAGE,
    F_ROUTE,
    F_SYSTEM,
    F_HISTORY,
    F_PARAMS,
    F_STREAM,
    F_REPLY_TOPIC,
    F_DEADLINE,
    F_COUNT
};
static const char *const field_names[F_COUNT] = {"job_id", "conversation_id", "metadata",   "message",
                                                 "route",  "system",          "history",    "params",
                                                 "stream", "reply_topic",     "deadline_ms"};

/* Everything after the ids and metadata, in a fixed order: the first error wins. */
static int read_rest(job_t *job, keep_list_t *k, const json_value_t *f, const job_limits_t *lim,
                     job_error_t *err)
{
    if (read_message(k, f[F_MESSAGE], lim, &job->message, err) < 0)
        return -1;
    if (!absent(f[F_ROUTE]) && keep_string(k, f[F_ROUTE], "route", 1, lim->max_route, JOB_ERR_INVALID_JOB,
                                           &job->route, NULL, err) < 0)
        return -1;
    if (!absent(f[F_SYSTEM]) && keep_string(k, f[F_SYSTEM], "system", 0, lim->max_system_bytes,
                                            JOB_ERR_TOO_LARGE, &job->system, &job->system_len, err) < 0)
        return -1;
    if (read_history(job, k, f[F_HISTORY], lim, err) < 0 || read_params(job, k, f[F_PARAMS], lim, err) < 0)
        return -1;
    if (!absent(f[F_STREAM])) {
        if (f[F_STREAM].type != JSON_TRUE && f[F_STREAM].type != JSON_FALSE)
            return fail(err, JOB_ERR_INVALID_JOB, "stream: must be true or false");
        job->stream = f[F_STREAM].type == JSON_TRUE;
    }
    if (!absent(f[F_REPLY_TOPIC]) && read_reply_topic(k, f[F_REPLY_TOPIC], &job->reply_topic, err) < 0)
        return -1;
    if (!absent(f[F_DEADLINE])) {
        if (json_int(f[F_DEADLINE], 0, JOB_INT_MAX, &job->deadline_ms) < 0)
            return fail(err, JOB_ERR_INVALID_JOB,
                        "deadline_ms: must be a non-negative integer (Unix epoch ms)");
        job->has_deadline = true;
    }
    return 0;
}

/* The raw top-level member key of a value that could not be parsed, checked and parsed on its own as
 * value_parse would (a JSON_NONE value when it cannot be). */
static json_value_t raw_member(const char *value, size_t len, const char *key, size_t max_tok)
{
    const char *tok;
    size_t tok_len, at, lone;
    json_value_t v;
    if (!job_json_find_member(value, len, key, &tok, &tok_len) || tok_len > max_tok ||
        job_json_prescan(tok, tok_len, &at, &lone) != JOB_SCAN_OK || lone != SIZE_MAX ||
        json_parse(tok + bom_len(tok, tok_len), tok_len - bom_len(tok, tok_len), NULL, &v, NULL) < 0)
        return (json_value_t){0};
    return v;
}

/* An id read from the raw value: a malloc'd copy, or NULL. */
static char *raw_id(const char *value, size_t len, const char *key, size_t max)
{
    job_error_t scratch = {0};
    json_value_t v = raw_member(value, len, key, 6 * max + 2); /* every character escaped as \uXXXX */
    return read_string(v, key, 1, max, JOB_ERR_INVALID_JOB, &scratch) == 0 ? json_str_dup(v, NULL) : NULL;
}

/* For a value that is too large or not parseable: ids and metadata read without parsing it whole, from
 * its first max_message_bytes only, so that a huge value costs no more than a valid one. */
static void salvage_raw(const char *value, size_t len, const job_limits_t *lim, job_error_t *err)
{
    if (len > lim->max_message_bytes)
        len = lim->max_message_bytes;
    err->job_id = raw_id(value, len, "job_id", lim->max_job_id);
    err->conversation_id = raw_id(value, len, "conversation_id", lim->max_conversation_id);
    job_error_t scratch = {0};
    json_value_t v = raw_member(value, len, "metadata", 8 * lim->max_metadata_bytes);
    size_t n;
    if (!absent(v) && read_metadata(v, lim->max_metadata_bytes, &n, &scratch) == 0)
        err->metadata_json = metadata_dup(v, n);
}

/* Validates the members f of a job object and builds the job: its strings decoded into its own
 * allocation, after the job_t. On failure, *err gets what an error reply needs. */
static int job_build(const json_value_t *f, const job_limits_t *lim, job_t **out, job_error_t *err)
{
    job_t draft = {0}, *job = NULL;
    keep_list_t k;
    keep_init(&k);
    size_t meta_len = 0;
    bool id_ok = read_required_id(f[F_JOB_ID], "job_id", lim->max_job_id, err) == 0;
    bool conv_ok = read_required_id(f[F_CONV], "conversation_id", lim->max_conversation_id, err) == 0;
    bool meta_ok = read_metadata(f[F_METADATA], lim->max_metadata_bytes, &meta_len, err) == 0;
    bool has_meta = !absent(f[F_METADATA]);
    if (id_ok && conv_ok && meta_ok) {
        keep(&k, f[F_JOB_ID], &draft.job_id, NULL); /* the local room holds these two */
        keep(&k, f[F_CONV], &draft.conversation_id, NULL);
        if (read_rest(&draft, &k, f, lim, err) == 0 &&
            !(job = base_malloc(sizeof *job + k.bytes + (has_meta ? meta_len + 1 : 0))))
            fail_oom(err);
    }
    if (job) {
        char *end = keep_decode(&k, (char *)(job + 1));
        if (has_meta)
            draft.metadata_json = metadata_copy(f[F_METADATA], meta_len, end);
        *job = draft;
        *out = job;
    } else {
        err->job_id = id_ok ? json_str_dup(f[F_JOB_ID], NULL) : NULL;
        err->conversation_id = conv_ok ? json_str_dup(f[F_CONV], NULL) : NULL;
        err->metadata_json = meta_ok && has_meta ? metadata_dup(f[F_METADATA], meta_len) : NULL;
        free(draft.history);
        free(draft.params.stop);
    }
    keep_free(&k);
    return job ? 0 : -1;
}

int job_parse(const char *value, size_t len, const job_limits_t *limits, job_t **out, job_error_t *err)
{
    job_limits_t defaults = job_limits_default();
    const job_limits_t *lim = limits ? limits : &defaults;
    memset(err, 0, sizeof *err);
    *out = NULL;
    json_doc_t doc;
    json_value_t root, f[F_COUNT];
    if (len > lim->max_message_bytes)
        fail(err, JOB_ERR_TOO_LARGE, "value: %zu bytes, more than %zu", len, lim->max_message_bytes);
    else if (value_parse(value, len, "value", &doc, &root, field_names, F_COUNT, f, err) == 0)
        return root.type == JSON_OBJECT ? job_build(f, lim, out, err)
                                        : fail(err, JOB_ERR_INVALID_JOB, "value: must be a JSON object");
    salvage_raw(value, len, lim, err);
    return -1;
}

void job_free(job_t *job)
{
    if (!job)
        return;
    free(job->history);
    free(job->params.stop);
    free(job); /* the strings too */
}

/* The exact form job_history_entry_encode writes, {"role":"R","content":"C"} with no \\u escape in C,
 * read without a parse (a control character is not that form; the caller checks UTF-8 after). 1 when read
 * into out, 0 when the text has another form (the caller parses it in full), -1 out of memory. */
static int history_entry_fast(const char *v, size_t len, chat_message_t *out)
{
    static const char *const roles[] = {"system", "user", "assistant"};
    static const char head[] = "{\"role\":\"", mid[] = "\",\"content\":\"";
    size_t at = sizeof head - 1;
    if (len < at || memcmp(v, head, at) != 0)
        return 0;
    const char *role = NULL;
    for (size_t i = 0; i < BASE_ARRAY_LEN(roles) && !role; i++) {
        size_t rl = strlen(roles[i]);
        if (len - at > rl + sizeof mid - 1 && memcmp(v + at, roles[i], rl) == 0 &&
            memcmp(v + at + rl, mid, sizeof mid - 1) == 0) {
            role = roles[i];
            at += rl + sizeof mid - 1;
        }
    }
    if (!role || len - at < 2 || v[len - 1] != '}' || v[len - 2] != '"')
        return 0;
    const unsigned char *p = (const unsigned char *)v;
    size_t end = len - 2; /* the closing quote of the content */
    size_t raw_at = at, raw_len = end - at;
    /* one block: the content, then the entry's own escaped form of it (request bodies copy that) */
    char *copy = base_malloc(2 * raw_len + 2);
    if (!copy)
        return -1;
    size_t n = 0;
    while (at < end) {
        size_t run = base_json_plain_run(p + at, end - at);
        memcpy(copy + n, v + at, run);
        n += run;
        at += run;
        if (at >= end)
            break;
        if (p[at] >= 0x80) { /* valid UTF-8 (prescanned): copied as is */
            copy[n++] = v[at++];
            continue;
        }
        static const char esc_in[] = "\"\\/bfnrt", esc_out[] = "\"\\/\b\f\n\r\t";
        const char *e = v[at] == '\\' && at + 1 < end ? memchr(esc_in, v[at + 1], sizeof esc_in - 1) : NULL;
        if (!e) { /* a raw quote (the content ended early), \\u or a bad escape: not the fast form */
            free(copy);
            return 0;
        }
        copy[n++] = esc_out[e - esc_in];
        at += 2;
    }
    copy[n] = '\0';
    char *raw = copy + n + 1;
    memcpy(raw, v + raw_at, raw_len);
    raw[raw_len] = '\0';
    out->role = role;
    out->content = copy;
    out->content_len = n;
    out->content_json = raw;
    out->content_json_len = raw_len;
    return 1;
}

static const char *const entry_names[] = {"role", "content"};

int job_history_entry_parse(const char *value, size_t len, size_t max_bytes, chat_message_t *out,
                            job_error_t *err)
{
    memset(err, 0, sizeof *err);
    memset(out, 0, sizeof *out);
    size_t at = 0, lone;
    if (len > max_bytes)
        return fail(err, JOB_ERR_TOO_LARGE, "history entry: %zu bytes, more than %zu", len, max_bytes);
    int fast = history_entry_fast(value, len, out);
    if (fast != 0) { /* the fast form is valid JSON: the post-scan's answers are the prescan's */
        job_scan_result_t scan =
            fast > 0 ? job_json_postscan(value, len, &at, &lone) : job_json_prescan(value, len, &at, &lone);
        if (scan != JOB_SCAN_OK) {
            job_message_release(out);
            return fail_scan(err, "history entry", scan, at);
        }
        return fast > 0 ? 0 : fail_oom(err);
    }
    json_value_t root, f[2];
    if (value_parse(value, len, "history entry", NULL, &root, entry_names, 2, f, err) < 0)
        return -1;
    if (root.type != JSON_OBJECT)
        return fail(err, JOB_ERR_INVALID_JOB, "history entry: must be a JSON object");
    const char *role = role_static(f[0]);
    if (!role)
        return fail(err, JOB_ERR_INVALID_JOB, "history entry.role: must be system, user or assistant");
    if (read_string(f[1], "history entry.content", 0, max_bytes, JOB_ERR_TOO_LARGE, err) < 0)
        return -1;
    char *copy = json_str_dup(f[1], &out->content_len);
    if (!copy)
        return fail_oom(err);
    out->role = role;
    out->content = copy;
    return 0;
}

void job_message_release(chat_message_t *m)
{
    free((char *)m->content); /* content_json, when set, is in the same block */
    m->content = m->content_json = NULL;
    m->content_len = m->content_json_len = 0;
}
