/* input.c — one replay input line: a recorded conversation or an OpenAI Batch API request. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "replay/replay.h"

#define MAX_ID       256
#define MAX_MESSAGES 1000
#define MAX_LINE     (8u * 1024u * 1024u)

static const char *static_role(const char *r)
{
    static const char *const roles[] = {"system", "user", "assistant", "developer"};
    for (size_t i = 0; i < BASE_ARRAY_LEN(roles); i++)
        if (strcmp(r, roles[i]) == 0)
            return roles[i];
    return NULL;
}

/* Content as a string, or the "text" blocks of an array joined; malloc'd, NULL when neither. */
static char *content_text(const cJSON *c, size_t *len)
{
    if (cJSON_IsString(c)) {
        *len = strlen(c->valuestring);
        return base_strdup(c->valuestring);
    }
    if (!cJSON_IsArray(c))
        return NULL;
    buf_t b;
    buf_init(&b, MAX_LINE);
    const cJSON *blk;
    cJSON_ArrayForEach(blk, c)
    {
        const char *t = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(blk, "text"));
        if (t && buf_append_str(&b, t) != 0) {
            buf_free(&b);
            return NULL;
        }
    }
    char *r = buf_steal(&b, len);
    if (!r) {
        *len = 0;
        r = base_strdup("");
    }
    return r;
}

static int parse_messages(const cJSON *arr, replay_line_t *out, char *err, size_t errlen)
{
    if (!cJSON_IsArray(arr)) {
        snprintf(err, errlen, "messages: must be an array");
        return -1;
    }
    int n = cJSON_GetArraySize(arr);
    if (n < 1 || n > MAX_MESSAGES) {
        snprintf(err, errlen, "messages: must hold 1..%d entries", MAX_MESSAGES);
        return -1;
    }
    out->messages = base_calloc((size_t)n, sizeof *out->messages);
    if (!out->messages) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    const cJSON *m;
    size_t i = 0;
    cJSON_ArrayForEach(m, arr)
    {
        const char *role = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(m, "role"));
        const char *sr = role ? static_role(role) : NULL;
        if (!sr) {
            snprintf(err, errlen, "messages[%zu].role: must be system, user or assistant", i);
            return -1;
        }
        size_t len = 0;
        char *text = content_text(cJSON_GetObjectItemCaseSensitive(m, "content"), &len);
        if (!text) {
            snprintf(err, errlen, "messages[%zu].content: must be a string", i);
            return -1;
        }
        out->messages[i].role = sr;
        out->messages[i].content = text;
        out->messages[i].content_len = len;
        out->n_messages = ++i;
    }
    return 0;
}

static int parse_id(const cJSON *o, const char *name, replay_line_t *out, char *err, size_t errlen)
{
    const char *id = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(o, name));
    if (!id || !*id || strlen(id) > MAX_ID) {
        snprintf(err, errlen, "%s: must be a string of 1..%d bytes", name, MAX_ID);
        return -1;
    }
    out->id = base_strdup(id);
    if (!out->id) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    return 0;
}

static void parse_params(const cJSON *body, replay_line_t *out)
{
    const cJSON *v;
    if (cJSON_IsNumber(v = cJSON_GetObjectItemCaseSensitive(body, "temperature"))) {
        out->has_temperature = true;
        out->temperature = v->valuedouble;
    }
    if (cJSON_IsNumber(v = cJSON_GetObjectItemCaseSensitive(body, "top_p"))) {
        out->has_top_p = true;
        out->top_p = v->valuedouble;
    }
    if (cJSON_IsNumber(v = cJSON_GetObjectItemCaseSensitive(body, "max_tokens")) ||
        cJSON_IsNumber(v = cJSON_GetObjectItemCaseSensitive(body, "max_completion_tokens"))) {
        out->has_max_tokens = true;
        out->max_tokens = (int64_t)v->valuedouble;
    }
    if (cJSON_IsNumber(v = cJSON_GetObjectItemCaseSensitive(body, "seed"))) {
        out->has_seed = true;
        out->seed = (int64_t)v->valuedouble;
    }
}

int replay_line_parse(const char *s, size_t len, replay_line_t *out, char *err, size_t errlen)
{
    memset(out, 0, sizeof *out);
    if (len > MAX_LINE) {
        snprintf(err, errlen, "line longer than %u bytes", MAX_LINE);
        return -1;
    }
    cJSON *o = cJSON_ParseWithLength(s, len);
    int rc = -1;
    if (!cJSON_IsObject(o)) {
        snprintf(err, errlen, "not a JSON object");
        goto out;
    }
    if (cJSON_GetObjectItemCaseSensitive(o, "custom_id")) {
        out->kind = REPLAY_LINE_BATCH;
        const cJSON *body = cJSON_GetObjectItemCaseSensitive(o, "body");
        if (parse_id(o, "custom_id", out, err, errlen) != 0)
            goto out;
        if (!cJSON_IsObject(body)) {
            snprintf(err, errlen, "body: must be an object");
            goto out;
        }
        if (parse_messages(cJSON_GetObjectItemCaseSensitive(body, "messages"), out, err, errlen) != 0)
            goto out;
        const char *model = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(body, "model"));
        if (model && !(out->model = base_strdup(model)))
            goto out;
        parse_params(body, out);
    } else {
        out->kind = REPLAY_LINE_CONVERSATION;
        if (parse_id(o, "conversation_id", out, err, errlen) != 0 ||
            parse_messages(cJSON_GetObjectItemCaseSensitive(o, "messages"), out, err, errlen) != 0)
            goto out;
        const cJSON *md = cJSON_GetObjectItemCaseSensitive(o, "metadata");
        if (cJSON_IsObject(md) && !(out->metadata_json = cJSON_PrintUnformatted(md))) {
            snprintf(err, errlen, "out of memory");
            goto out;
        }
    }
    if (replay_line_turns(out, REPLAY_TURNS_LAST, NULL, 0) == 0) {
        snprintf(err, errlen, "messages: no user message to replay");
        goto out;
    }
    rc = 0;
out:
    cJSON_Delete(o);
    if (rc != 0)
        replay_line_clear(out);
    return rc;
}

void replay_line_clear(replay_line_t *l)
{
    for (size_t i = 0; i < l->n_messages; i++)
        free((char *)l->messages[i].content);
    free(l->messages);
    free(l->id);
    free(l->metadata_json);
    free(l->model);
    memset(l, 0, sizeof *l);
}

size_t replay_line_turns(const replay_line_t *l, replay_turns_t turns, size_t *idx, size_t max)
{
    size_t n = 0;
    for (size_t i = l->n_messages; i-- > 0;) {
        if (strcmp(l->messages[i].role, "user") != 0)
            continue;
        if (turns == REPLAY_TURNS_LAST) {
            if (idx && max > 0)
                idx[0] = i;
            return 1;
        }
        n++;
    }
    size_t k = 0;
    for (size_t i = 0; i < l->n_messages && k < max; i++)
        if (strcmp(l->messages[i].role, "user") == 0)
            idx[k++] = i;
    return idx ? k : n;
}
