/* fuzz_job.c — libFuzzer target for the job module: job_parse (with default limits, or small
 * ones that reach the too_large and salvage paths), then every encoder on what it produced, with
 * the output checked to be valid JSON that decodes back to the input; every job it accepts is read
 * the same by cJSON (job_parse reads with json/ and is stricter, never looser); the post-scan answers
 * as the prescan on every text the json reader accepts; also the history entry parser and the string
 * escaper on the raw bytes. Any broken invariant traps. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cJSON.h>

#include "base/base.h"
#include "job/job.h"
#include "job/job_json.h"
#include "json/json.h"

#define CHECK(cond)                                                                                          \
    do {                                                                                                     \
        if (!(cond))                                                                                         \
            __builtin_trap();                                                                                \
    } while (0)

static const char *content_of(const cJSON *reply)
{
    const cJSON *m = cJSON_GetObjectItemCaseSensitive(reply, "message");
    const cJSON *c = cJSON_GetObjectItemCaseSensitive(m, "content");
    return cJSON_IsString(c) ? c->valuestring : NULL;
}

/* a and b print the same (cJSON_Compare fails on infinities, which metadata kept as written may hold). */
static bool same_json(const cJSON *a, const cJSON *b)
{
    char *pa = cJSON_PrintUnformatted(a), *pb = cJSON_PrintUnformatted(b);
    bool same = pa && pb && strcmp(pa, pb) == 0;
    free(pa);
    free(pb);
    return same;
}

static void check_reply_of_job(const job_t *job)
{
    job_attempt_t at;
    job_attempt_init(&at, job->route ? job->route : "default", JOB_OUTCOME_WON);
    at.reason = job->system;
    job_reply_t r;
    job_reply_init(&r, job->job_id, job->conversation_id);
    r.content = job->message.content;
    r.content_len = job->message.content_len;
    r.provider = job->reply_topic;
    r.attempts = &at;
    r.n_attempts = 1;
    r.metadata_json = job->metadata_json;
    size_t len;
    char *s = job_reply_encode(&r, &len);
    CHECK(s && strlen(s) == len);
    cJSON *t = cJSON_ParseWithLength(s, len);
    CHECK(t);
    CHECK(strcmp(cJSON_GetObjectItemCaseSensitive(t, "job_id")->valuestring, job->job_id) == 0);
    const char *content = content_of(t);
    CHECK(content && strcmp(content, job->message.content) == 0);
    if (job->metadata_json) {
        cJSON *meta = cJSON_Parse(job->metadata_json);
        CHECK(meta && same_json(meta, cJSON_GetObjectItemCaseSensitive(t, "metadata")));
        cJSON_Delete(meta);
    }
    cJSON_Delete(t);
    free(s);

    for (size_t i = 0; i < job->n_history; i++) {
        char *e = job_history_entry_encode(&job->history[i], &len);
        CHECK(e);
        chat_message_t back;
        job_error_t err;
        CHECK(job_history_entry_parse(e, len, len, &back, &err) == 0);
        CHECK(back.role == job->history[i].role && back.content_len == job->history[i].content_len);
        CHECK(memcmp(back.content, job->history[i].content, back.content_len) == 0);
        job_message_release(&back);
        free(e);
    }
    char *d = job_delta_encode(job->job_id, job->conversation_id, job->n_history, job->message.content,
                               job->message.content_len, "p", &len);
    CHECK(d);
    t = cJSON_ParseWithLength(d, len);
    CHECK(t && strcmp(cJSON_GetObjectItemCaseSensitive(t, "delta")->valuestring, job->message.content) == 0);
    cJSON_Delete(t);
    free(d);
}

/* s is cJSON's string v. */
static bool same_string(const cJSON *v, const char *s)
{
    return s ? cJSON_IsString(v) && strcmp(v->valuestring, s) == 0 : !v || cJSON_IsNull(v);
}

/* cJSON reads the value job_parse accepted as job: the same strings, numbers and metadata. */
static void check_job_against_cjson(const char *v, size_t size, const job_t *job)
{
    cJSON *t = cJSON_ParseWithLength(v, size);
    CHECK(cJSON_IsObject(t));
    const cJSON *msg = cJSON_GetObjectItemCaseSensitive(t, "message");
    CHECK(same_string(cJSON_GetObjectItemCaseSensitive(t, "job_id"), job->job_id));
    CHECK(same_string(cJSON_GetObjectItemCaseSensitive(t, "conversation_id"), job->conversation_id));
    CHECK(same_string(cJSON_GetObjectItemCaseSensitive(msg, "content"), job->message.content));
    CHECK(same_string(cJSON_GetObjectItemCaseSensitive(t, "route"), job->route));
    CHECK(same_string(cJSON_GetObjectItemCaseSensitive(t, "system"), job->system));
    CHECK(same_string(cJSON_GetObjectItemCaseSensitive(t, "reply_topic"), job->reply_topic));
    const cJSON *h = cJSON_GetObjectItemCaseSensitive(t, "history");
    CHECK((size_t)cJSON_GetArraySize(h) == job->n_history);
    for (size_t i = 0; i < job->n_history; i++) {
        const cJSON *e = cJSON_GetArrayItem(h, (int)i);
        CHECK(same_string(cJSON_GetObjectItemCaseSensitive(e, "role"), job->history[i].role));
        CHECK(same_string(cJSON_GetObjectItemCaseSensitive(e, "content"), job->history[i].content));
    }
    const cJSON *params = cJSON_GetObjectItemCaseSensitive(t, "params");
    const cJSON *stop = cJSON_GetObjectItemCaseSensitive(params, "stop");
    for (size_t i = 0; i < job->params.n_stop; i++)
        CHECK(
            same_string(cJSON_IsArray(stop) ? cJSON_GetArrayItem(stop, (int)i) : stop, job->params.stop[i]));
    if (job->params.has_temperature)
        CHECK(cJSON_GetObjectItemCaseSensitive(params, "temperature")->valuedouble ==
              job->params.temperature);
    if (job->params.has_top_p)
        CHECK(cJSON_GetObjectItemCaseSensitive(params, "top_p")->valuedouble == job->params.top_p);
    if (job->params.has_max_tokens)
        CHECK(cJSON_GetObjectItemCaseSensitive(params, "max_tokens")->valuedouble ==
              (double)job->params.max_tokens);
    if (job->params.has_seed)
        CHECK(cJSON_GetObjectItemCaseSensitive(params, "seed")->valuedouble == (double)job->params.seed);
    if (job->has_deadline)
        CHECK(cJSON_GetObjectItemCaseSensitive(t, "deadline_ms")->valuedouble == (double)job->deadline_ms);
    CHECK(cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(t, "stream")) == job->stream);
    const cJSON *meta = cJSON_GetObjectItemCaseSensitive(t, "metadata");
    if (job->metadata_json) { /* compacted, the same value */
        cJSON *m = cJSON_Parse(job->metadata_json);
        CHECK(m && same_json(m, meta));
        cJSON_Delete(m);
    } else {
        CHECK(!meta || cJSON_IsNull(meta));
    }
    cJSON_Delete(t);
}

/* On a text the json reader accepts, the post-scan gives the prescan's answer. */
static void check_scans(const char *v, size_t size)
{
    size_t bom = size >= 3 && memcmp(v, "\xEF\xBB\xBF", 3) == 0 ? 3 : 0;
    json_value_t root;
    if (json_parse(v + bom, size - bom, NULL, &root, NULL) < 0)
        return;
    size_t at1 = 0, at2 = 0, lone1, lone2;
    job_scan_result_t r1 = job_json_prescan(v, size, &at1, &lone1);
    job_scan_result_t r2 = job_json_postscan(v, size, &at2, &lone2);
    CHECK(r1 == r2 && at1 == at2 && lone1 == lone2);
}

static void check_error_reply(const job_error_t *err)
{
    CHECK(err->code != JOB_ERR_NONE && err->message[0]);
    if (!job_error_ids_readable(err))
        return;
    job_reply_t r;
    job_reply_init(&r, err->job_id, err->conversation_id);
    r.status = JOB_STATUS_ERROR;
    r.error_code = err->code;
    r.error_message = err->message;
    r.metadata_json = err->metadata_json;
    size_t len;
    char *s = job_reply_encode(&r, &len);
    CHECK(s);
    cJSON *t = cJSON_ParseWithLength(s, len);
    CHECK(t && cJSON_IsObject(cJSON_GetObjectItemCaseSensitive(t, "metadata")));
    CHECK(strcmp(cJSON_GetObjectItemCaseSensitive(t, "conversation_id")->valuestring, err->conversation_id) ==
          0);
    cJSON_Delete(t);
    free(s);
}

static bool utf8_valid(const char *s, size_t n)
{
    for (size_t i = 0, l; i < n; i += l)
        if (!(l = base_utf8_seq_len((const unsigned char *)s + i, n - i)))
            return false;
    return true;
}

/* The escaper makes valid JSON of any bytes; valid UTF-8 without NUL comes back unchanged. */
static void check_escaper(const char *data, size_t size)
{
    buf_t b;
    buf_init(&b, 0);
    CHECK(job_json_append_string(&b, data, size, size & 1 ? JOB_JSON_ESCAPE_LINESEP : 0) == 0);
    CHECK(utf8_valid(b.data, b.len));
    cJSON *t = cJSON_ParseWithLength(b.data, b.len);
    CHECK(t && cJSON_IsString(t));
    size_t n = strlen(t->valuestring);
    CHECK(utf8_valid(t->valuestring, n));
    if (utf8_valid(data, size) && !memchr(data, 0, size))
        CHECK(n == size && memcmp(t->valuestring, data, size) == 0);
    cJSON_Delete(t);
    buf_free(&b);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *v = (const char *)data;
    job_limits_t lim = job_limits_default();
    if (size % 3 == 0) {
        lim.max_message_bytes = 256;
        lim.max_job_id = 8;
        lim.max_conversation_id = 8;
        lim.max_content_bytes = 16;
        lim.max_history_messages = 2;
        lim.max_history_entry_bytes = 8;
        lim.max_metadata_bytes = 24;
        lim.max_stop = 2;
        lim.max_stop_bytes = 3;
        lim.max_route = 4;
        lim.max_system_bytes = 8;
    }
    job_t *job = NULL;
    job_error_t err;
    if (job_parse(v, size, &lim, &job, &err) == 0) {
        CHECK(job && err.code == JOB_ERR_NONE);
        check_job_against_cjson(v, size, job);
        check_reply_of_job(job);
        job_free(job);
    } else {
        CHECK(!job);
        check_error_reply(&err);
    }
    job_error_free(&err);

    chat_message_t m;
    if (job_history_entry_parse(v, size, 4096, &m, &err) == 0) {
        CHECK(m.role && m.content && strlen(m.content) == m.content_len);
        /* the fast path and the json reader's slow path read the entry as cJSON does */
        cJSON *ref = cJSON_ParseWithLength(v, size);
        const cJSON *role = cJSON_GetObjectItemCaseSensitive(ref, "role");
        const cJSON *content = cJSON_GetObjectItemCaseSensitive(ref, "content");
        CHECK(cJSON_IsString(role) && strcmp(role->valuestring, m.role) == 0);
        CHECK(cJSON_IsString(content) && strcmp(content->valuestring, m.content) == 0);
        cJSON_Delete(ref);
        if (m.content_json) { /* the escaped form kept for request bodies reads back as the content */
            char *lit = malloc(m.content_json_len + 3);
            CHECK(lit);
            lit[0] = '"';
            memcpy(lit + 1, m.content_json, m.content_json_len);
            memcpy(lit + 1 + m.content_json_len, "\"", 2);
            cJSON *s = cJSON_Parse(lit);
            CHECK(cJSON_IsString(s) && strcmp(s->valuestring, m.content) == 0);
            cJSON_Delete(s);
            free(lit);
        }
        job_message_release(&m);
    }
    check_scans(v, size);
    check_escaper(v, size);
    return 0;
}
