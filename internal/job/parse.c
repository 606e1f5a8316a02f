/* parse.c — job_parse: size, UTF-8 and JSON checks, then the field-by-field validation of
 * CONTRACT §1; on failure it still salvages job_id, conversation_id and metadata for an error
 * reply. Also the parser of one stored history entry. */
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cJSON.h>

#include "job/job.h"
#include "job/job_json.h"

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

/* ---- cJSON with base_malloc, telling "out of memory" apart from "not JSON" ---- */

static _Thread_local bool cjson_oom;
static pthread_once_t cjson_hooks_once = PTHREAD_ONCE_INIT;

static void *cjson_malloc(size_t n)
{
    void *p = base_malloc(n);
    if (!p)
        cjson_oom = true;
    return p;
}

static void cjson_hooks_install(void)
{
    cJSON_Hooks hooks = {.malloc_fn = cjson_malloc, .free_fn = free};
    cJSON_InitHooks(&hooks);
}

/* Parses p[0..n) as one JSON value followed only by whitespace; *oom tells why it failed. */
static cJSON *tree_parse(const char *p, size_t n, bool *oom, size_t *error_at)
{
    pthread_once(&cjson_hooks_once, cjson_hooks_install);
    cjson_oom = false;
    const char *end = NULL;
    cJSON *tree = cJSON_ParseWithLengthOpts(p, n, &end, 0);
    *oom = cjson_oom;
    *error_at = end && end >= p && end <= p + n ? (size_t)(end - p) : 0;
    if (!tree)
        return NULL;
    for (const char *q = end; q < p + n; q++) {
        if (*q != ' ' && *q != '\t' && *q != '\n' && *q != '\r') {
            cJSON_Delete(tree);
            *error_at = (size_t)(q - p);
            return NULL;
        }
    }
    return tree;
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

/* ---- field readers: each returns 0, or -1 after fail() ---- */

static bool absent(const cJSON *v) { return !v || cJSON_IsNull(v); }

/* A string of min_len..max bytes; longer ones fail with code_long. */
static int read_string(const cJSON *v, const char *field, size_t min_len, size_t max,
                       job_error_code_t code_long, const char **out, size_t *out_len, job_error_t *err)
{
    if (!cJSON_IsString(v) || !v->valuestring)
        return fail(err, JOB_ERR_INVALID_JOB, "%s: must be a string", field);
    size_t n = strlen(v->valuestring);
    if (n < min_len)
        return fail(err, JOB_ERR_INVALID_JOB, "%s: must not be empty", field);
    if (n > max)
        return fail(err, code_long, "%s: longer than %zu bytes", field, max);
    *out = v->valuestring;
    if (out_len)
        *out_len = n;
    return 0;
}

static int read_required_id(const cJSON *v, const char *field, size_t max, const char **out, job_error_t *err)
{
    if (absent(v))
        return fail(err, JOB_ERR_INVALID_JOB, "%s: required", field);
    return read_string(v, field, 1, max, JOB_ERR_INVALID_JOB, out, NULL, err);
}

static int read_metadata(const cJSON *v, size_t max, char **out, job_error_t *err)
{
    if (absent(v))
        return 0;
    if (!cJSON_IsObject(v))
        return fail(err, JOB_ERR_INVALID_JOB, "metadata: must be an object");
    char *text = cJSON_PrintUnformatted(v);
    if (!text)
        return fail_oom(err);
    if (strlen(text) > max) {
        free(text);
        return fail(err, JOB_ERR_TOO_LARGE, "metadata: more than %zu bytes serialized", max);
    }
    *out = text;
    return 0;
}

/* An integral JSON number in lo..hi. */
static bool as_int(const cJSON *v, int64_t lo, int64_t hi, int64_t *out)
{
    if (!cJSON_IsNumber(v))
        return false;
    double d = v->valuedouble;
    if (!(d >= (double)lo && d <= (double)hi) || d != (double)(int64_t)d)
        return false;
    *out = (int64_t)d;
    return true;
}

static bool as_number(const cJSON *v, double lo, double hi, double *out)
{
    if (!cJSON_IsNumber(v) || !(v->valuedouble >= lo && v->valuedouble <= hi))
        return false;
    *out = v->valuedouble;
    return true;
}

static const char *role_static(const cJSON *v)
{
    static const char *const roles[] = {"system", "user", "assistant"};
    if (!cJSON_IsString(v) || !v->valuestring)
        return NULL;
    for (size_t i = 0; i < BASE_ARRAY_LEN(roles); i++)
        if (strcmp(v->valuestring, roles[i]) == 0)
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

/* Puts the first member of obj named names[i] in slots[i]; unmatched names go to unknown. */
static void collect(const cJSON *obj, const char *const *names, size_t n, const cJSON **slots, char *unknown,
                    size_t unknown_size)
{
    for (const cJSON *c = obj->child; c; c = c->next) {
        size_t i = 0;
        while (i < n && strcmp(c->string, names[i]) != 0)
            i++;
        if (i < n) {
            if (!slots[i])
                slots[i] = c;
        } else if (unknown) {
            list_append(unknown, unknown_size, c->string);
        }
    }
}

static int read_message(const cJSON *v, const job_limits_t *lim, chat_message_t *m, job_error_t *err)
{
    if (absent(v))
        return fail(err, JOB_ERR_INVALID_JOB, "message: required");
    if (!cJSON_IsObject(v))
        return fail(err, JOB_ERR_INVALID_JOB, "message: must be an object");
    const cJSON *role = cJSON_GetObjectItemCaseSensitive(v, "role");
    const cJSON *content = cJSON_GetObjectItemCaseSensitive(v, "content");
    if (absent(role))
        return fail(err, JOB_ERR_INVALID_JOB, "message.role: required");
    if (!cJSON_IsString(role) || strcmp(role->valuestring, "user") != 0)
        return fail(err, JOB_ERR_INVALID_JOB, "message.role: must be \"user\"");
    if (absent(content))
        return fail(err, JOB_ERR_INVALID_JOB, "message.content: required");
    m->role = "user";
    return read_string(content, "message.content", 1, lim->max_content_bytes, JOB_ERR_TOO_LARGE, &m->content,
                       &m->content_len, err);
}

static int read_history(job_t *job, const cJSON *v, const job_limits_t *lim, job_error_t *err)
{
    if (absent(v))
        return 0;
    if (!cJSON_IsArray(v))
        return fail(err, JOB_ERR_INVALID_JOB, "history: must be an array");
    size_t n = 0;
    for (const cJSON *e = v->child; e; e = e->next)
        if (++n > lim->max_history_messages)
            return fail(err, JOB_ERR_TOO_LARGE, "history: more than %zu messages", lim->max_history_messages);
    job->has_history = true;
    job->history = base_calloc(n ? n : 1, sizeof *job->history);
    if (!job->history)
        return fail_oom(err);
    size_t i = 0;
    for (const cJSON *e = v->child; e; e = e->next, i++) {
        char field[64];
        if (!cJSON_IsObject(e))
            return fail(err, JOB_ERR_INVALID_JOB, "history[%zu]: must be an object", i);
        chat_message_t *m = &job->history[i];
        m->role = role_static(cJSON_GetObjectItemCaseSensitive(e, "role"));
        if (!m->role)
            return fail(err, JOB_ERR_INVALID_JOB, "history[%zu].role: must be system, user or assistant", i);
        snprintf(field, sizeof field, "history[%zu].content", i);
        if (read_string(cJSON_GetObjectItemCaseSensitive(e, "content"), field, 0,
                        lim->max_history_entry_bytes, JOB_ERR_TOO_LARGE, &m->content, &m->content_len,
                        err) < 0)
            return -1;
        job->n_history = i + 1;
    }
    return 0;
}

static int read_stop(job_params_t *p, const cJSON *v, const job_limits_t *lim, job_error_t *err)
{
    size_t n = 1;
    if (cJSON_IsArray(v)) {
        n = 0;
        for (const cJSON *e = v->child; e; e = e->next)
            n++;
        if (n > lim->max_stop)
            return fail(err, JOB_ERR_INVALID_JOB, "params.stop: more than %zu sequences", lim->max_stop);
    } else if (!cJSON_IsString(v)) {
        return fail(err, JOB_ERR_INVALID_JOB, "params.stop: must be a string or an array of strings");
    }
    p->stop = base_calloc(n ? n : 1, sizeof *p->stop);
    if (!p->stop)
        return fail_oom(err);
    if (!cJSON_IsArray(v))
        return read_string(v, "params.stop", 1, lim->max_stop_bytes, JOB_ERR_INVALID_JOB,
                           &p->stop[p->n_stop++], NULL, err);
    for (const cJSON *e = v->child; e; e = e->next) {
        char field[32];
        snprintf(field, sizeof field, "params.stop[%zu]", p->n_stop);
        if (read_string(e, field, 1, lim->max_stop_bytes, JOB_ERR_INVALID_JOB, &p->stop[p->n_stop], NULL,
                        err) < 0)
            return -1;
        p->n_stop++;
    }
    return 0;
}

enum { P_TEMPERATURE, P_TOP_P, P_MAX_TOKENS, P_STOP, P_SEED, P_COUNT };
static const char *const param_names[P_COUNT] = {"temperature", "top_p", "max_tokens", "stop", "seed"};

static int read_params(job_t *job, const cJSON *v, const job_limits_t *lim, job_error_t *err)
{
    if (absent(v))
        return 0;
    if (!cJSON_IsObject(v))
        return fail(err, JOB_ERR_INVALID_JOB, "params: must be an object");
    const cJSON *f[P_COUNT] = {0};
    collect(v, param_names, P_COUNT, f, job->unknown_params, sizeof job->unknown_params);
    job_params_t *p = &job->params;
    if (!absent(f[P_TEMPERATURE]) &&
        !(p->has_temperature = as_number(f[P_TEMPERATURE], 0, 2, &p->temperature)))
        return fail(err, JOB_ERR_INVALID_JOB, "params.temperature: must be a number from 0 to 2");
    if (!absent(f[P_TOP_P]) && !(p->has_top_p = as_number(f[P_TOP_P], 0, 1, &p->top_p)))
        return fail(err, JOB_ERR_INVALID_JOB, "params.top_p: must be a number from 0 to 1");
    if (!absent(f[P_MAX_TOKENS]) &&
        !(p->has_max_tokens = as_int(f[P_MAX_TOKENS], 1, 1000000, &p->max_tokens)))
        return fail(err, JOB_ERR_INVALID_JOB, "params.max_tokens: must be an integer from 1 to 1000000");
    if (!absent(f[P_SEED]) && !(p->has_seed = as_int(f[P_SEED], -JOB_INT_MAX, JOB_INT_MAX, &p->seed)))
        return fail(err, JOB_ERR_INVALID_JOB, "params.seed: must be an integer within +-2^53");
    if (!absent(f[P_STOP]))
        return read_stop(p, f[P_STOP], lim, err);
    return 0;
}

static bool topic_name_ok(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n > KAFKA_TOPIC_MAX || strcmp(s, ".") == 0 || strcmp(s, "..") == 0)
        return false;
    return strspn(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-") == n;
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
static int read_rest(job_t *job, const cJSON **f, const job_limits_t *lim, job_error_t *err)
{
    if (read_message(f[F_MESSAGE], lim, &job->message, err) < 0)
        return -1;
    if (!absent(f[F_ROUTE]) &&
        read_string(f[F_ROUTE], "route", 1, lim->max_route, JOB_ERR_INVALID_JOB, &job->route, NULL, err) < 0)
        return -1;
    if (!absent(f[F_SYSTEM]) && read_string(f[F_SYSTEM], "system", 0, lim->max_system_bytes,
                                            JOB_ERR_TOO_LARGE, &job->system, &job->system_len, err) < 0)
        return -1;
    if (read_history(job, f[F_HISTORY], lim, err) < 0 || read_params(job, f[F_PARAMS], lim, err) < 0)
        return -1;
    if (!absent(f[F_STREAM])) {
        if (!cJSON_IsBool(f[F_STREAM]))
            return fail(err, JOB_ERR_INVALID_JOB, "stream: must be true or false");
        job->stream = cJSON_IsTrue(f[F_STREAM]);
    }
    if (!absent(f[F_REPLY_TOPIC])) {
        if (!cJSON_IsString(f[F_REPLY_TOPIC]) || !topic_name_ok(f[F_REPLY_TOPIC]->valuestring))
            return fail(err, JOB_ERR_INVALID_JOB, "reply_topic: must be 1 to %d characters of [A-Za-z0-9._-]",
                        KAFKA_TOPIC_MAX);
        job->reply_topic = f[F_REPLY_TOPIC]->valuestring;
    }
    if (!absent(f[F_DEADLINE])) {
        if (!as_int(f[F_DEADLINE], 0, JOB_INT_MAX, &job->deadline_ms))
            return fail(err, JOB_ERR_INVALID_JOB,
                        "deadline_ms: must be a non-negative integer (Unix epoch ms)");
        job->has_deadline = true;
    }
    return 0;
}

/* Copies what an error reply needs from a job that failed validation. */
static void salvage_job(job_t *job, job_error_t *err)
{
    err->job_id = job->job_id ? base_strdup(job->job_id) : NULL;
    err->conversation_id = job->conversation_id ? base_strdup(job->conversation_id) : NULL;
    err->metadata_json = job->metadata_json;
    job->metadata_json = NULL;
}

/* The raw top-level member key of a value that could not be parsed, as a small tree. */
static cJSON *raw_member(const char *value, size_t len, const char *key, size_t max_tok)
{
    const char *tok;
    size_t tok_len, at;
    bool oom;
    if (!job_json_find_member(value, len, key, &tok, &tok_len) || tok_len > max_tok ||
        job_json_prescan(tok, tok_len, &at) != JOB_SCAN_OK)
        return NULL;
    return tree_parse(tok, tok_len, &oom, &at);
}

/* An id read from the raw value: a malloc'd copy, or NULL. */
static char *raw_id(const char *value, size_t len, const char *key, size_t max)
{
    job_error_t scratch = {0};
    const char *s = NULL;
    cJSON *t = raw_member(value, len, key, 6 * max + 2); /* every character escaped as \uXXXX */
    char *copy = NULL;
    if (t && read_string(t, key, 1, max, JOB_ERR_INVALID_JOB, &s, NULL, &scratch) == 0)
        copy = base_strdup(s);
    cJSON_Delete(t);
    return copy;
}

/* For a value that is too large or not parseable: ids and metadata read without a full tree,
 * from its first max_message_bytes only, so that a huge value costs no more than a valid one. */
static void salvage_raw(const char *value, size_t len, const job_limits_t *lim, job_error_t *err)
{
    if (len > lim->max_message_bytes)
        len = lim->max_message_bytes;
    err->job_id = raw_id(value, len, "job_id", lim->max_job_id);
    err->conversation_id = raw_id(value, len, "conversation_id", lim->max_conversation_id);
    job_error_t scratch = {0};
    cJSON *t = raw_member(value, len, "metadata", 8 * lim->max_metadata_bytes);
    if (t && read_metadata(t, lim->max_metadata_bytes, &err->metadata_json, &scratch) < 0)
        err->metadata_json = NULL;
    cJSON_Delete(t);
}

/* Copies s[0..n) and its NUL to *at, returning the copy. */
static const char *move_str(char **at, const char *s, size_t n)
{
    char *copy = *at;
    memcpy(copy, s, n);
    copy[n] = '\0';
    *at += n + 1;
    return copy;
}

/* Moves every string of job out of its tree into one block and frees the tree, which takes several
 * times the strings' size for as long as the job is held. Out of memory: the tree stays. */
static void job_compact(job_t *job)
{
    const char **ids[] = {&job->job_id, &job->conversation_id, &job->route, &job->reply_topic};
    size_t total = job->message.content_len + 1 + (job->system ? job->system_len + 1 : 0);
    for (size_t i = 0; i < BASE_ARRAY_LEN(ids); i++)
        total += *ids[i] ? strlen(*ids[i]) + 1 : 0;
    for (size_t i = 0; i < job->n_history; i++)
        total += job->history[i].content_len + 1;
    for (size_t i = 0; i < job->params.n_stop; i++)
        total += strlen(job->params.stop[i]) + 1;
    char *block = base_malloc(total), *at = block;
    if (!block)
        return;
    for (size_t i = 0; i < BASE_ARRAY_LEN(ids); i++)
        if (*ids[i])
            *ids[i] = move_str(&at, *ids[i], strlen(*ids[i]));
    job->message.content = move_str(&at, job->message.content, job->message.content_len);
    if (job->system)
        job->system = move_str(&at, job->system, job->system_len);
    for (size_t i = 0; i < job->n_history; i++)
        job->history[i].content = move_str(&at, job->history[i].content, job->history[i].content_len);
    for (size_t i = 0; i < job->params.n_stop; i++)
        job->params.stop[i] = move_str(&at, job->params.stop[i], strlen(job->params.stop[i]));
    job->strings = block;
    cJSON_Delete(job->tree);
    job->tree = NULL;
}

int job_parse(const char *value, size_t len, const job_limits_t *limits, job_t **out, job_error_t *err)
{
    job_limits_t defaults = job_limits_default();
    const job_limits_t *lim = limits ? limits : &defaults;
    memset(err, 0, sizeof *err);
    *out = NULL;
    job_t *job = NULL;
    size_t at = 0;
    bool oom = false;
    if (len > lim->max_message_bytes) {
        fail(err, JOB_ERR_TOO_LARGE, "value: %zu bytes, more than %zu", len, lim->max_message_bytes);
        goto salvage;
    }
    job_scan_result_t scan = job_json_prescan(value, len, &at);
    if (scan != JOB_SCAN_OK) {
        fail_scan(err, "value", scan, at);
        goto salvage;
    }
    cJSON *tree = tree_parse(value, len, &oom, &at);
    if (!tree) {
        if (oom)
            fail_oom(err);
        else
            fail(err, JOB_ERR_INVALID_JOB, "value: not JSON (error at byte %zu)", at);
        goto salvage;
    }
    if (!cJSON_IsObject(tree)) {
        cJSON_Delete(tree);
        return fail(err, JOB_ERR_INVALID_JOB, "value: must be a JSON object");
    }
    job = base_calloc(1, sizeof *job);
    if (!job) {
        cJSON_Delete(tree);
        return fail_oom(err);
    }
    job->tree = tree;
    const cJSON *f[F_COUNT] = {0};
    collect(tree, field_names, F_COUNT, f, NULL, 0);
    int rc = read_required_id(f[F_JOB_ID], "job_id", lim->max_job_id, &job->job_id, err);
    rc |=
        read_required_id(f[F_CONV], "conversation_id", lim->max_conversation_id, &job->conversation_id, err);
    rc |= read_metadata(f[F_METADATA], lim->max_metadata_bytes, &job->metadata_json, err);
    if (rc == 0)
        rc = read_rest(job, f, lim, err);
    if (rc < 0) {
        salvage_job(job, err);
        job_free(job);
        return -1;
    }
    job_compact(job);
    *out = job;
    return 0;
salvage:
    salvage_raw(value, len, lim, err);
    return -1;
}

void job_free(job_t *job)
{
    if (!job)
        return;
    cJSON_Delete(job->tree);
    free(job->strings);
    free(job->history);
    free(job->params.stop);
    free(job->metadata_json);
    free(job);
}

/* The exact form job_history_entry_encode writes, {"role":"R","content":"C"} with no \\u escape in C,
 * read without a tree (the prescan has checked UTF-8 and controls). 1 when read into out, 0 when the text
 * has another form (the caller parses it in full), -1 out of memory. */
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

int job_history_entry_parse(const char *value, size_t len, size_t max_bytes, chat_message_t *out,
                            job_error_t *err)
{
    memset(err, 0, sizeof *err);
    memset(out, 0, sizeof *out);
    size_t at = 0;
    bool oom = false;
    if (len > max_bytes)
        return fail(err, JOB_ERR_TOO_LARGE, "history entry: %zu bytes, more than %zu", len, max_bytes);
    job_scan_result_t scan = job_json_prescan(value, len, &at);
    if (scan != JOB_SCAN_OK)
        return fail_scan(err, "history entry", scan, at);
    int fast = history_entry_fast(value, len, out);
    if (fast != 0)
        return fast > 0 ? 0 : fail_oom(err);
    cJSON *tree = tree_parse(value, len, &oom, &at);
    if (!tree)
        return oom ? fail_oom(err)
                   : fail(err, JOB_ERR_INVALID_JOB, "history entry: not JSON (error at byte %zu)", at);
    int rc = -1;
    const char *role = NULL, *content = NULL;
    size_t n = 0;
    if (!cJSON_IsObject(tree)) {
        fail(err, JOB_ERR_INVALID_JOB, "history entry: must be a JSON object");
        goto out;
    }
    role = role_static(cJSON_GetObjectItemCaseSensitive(tree, "role"));
    if (!role) {
        fail(err, JOB_ERR_INVALID_JOB, "history entry.role: must be system, user or assistant");
        goto out;
    }
    if (read_string(cJSON_GetObjectItemCaseSensitive(tree, "content"), "history entry.content", 0, max_bytes,
                    JOB_ERR_TOO_LARGE, &content, &n, err) < 0)
        goto out;
    char *copy = base_strndup(content, n);
    if (!copy) {
        fail_oom(err);
        goto out;
    }
    out->role = role;
    out->content = copy;
    out->content_len = n;
    rc = 0;
out:
    cJSON_Delete(tree);
    return rc;
}

void job_message_release(chat_message_t *m)
{
    free((char *)m->content); /* content_json, when set, is in the same block */
    m->content = m->content_json = NULL;
    m->content_len = m->content_json_len = 0;
}
