/* summary.c — DIR/summary.json computed from DIR/results.jsonl (streamed, one line at a time). */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "job/job.h"
#include "replay/replay.h"
#include "replay/replay_int.h"

double replay_percentile(const double *sorted, size_t n, double p)
{
    if (n == 0)
        return 0;
    double rank = ceil(p / 100.0 * (double)n);
    size_t i = rank < 1 ? 0 : (size_t)rank - 1;
    return sorted[i < n ? i : n - 1];
}

static int push(replay_series_t *s, double v)
{
    if (s->n == s->cap) {
        size_t cap = s->cap ? s->cap * 2 : 256;
        double *nv = base_realloc(s->v, cap * sizeof *nv);
        if (!nv)
            return -1;
        s->v = nv;
        s->cap = cap;
    }
    s->v[s->n++] = v;
    return 0;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static replay_target_stats_t *target_of(replay_stats_t *st, const char *name)
{
    for (size_t i = 0; i < st->n; i++)
        if (strcmp(st->t[i].name, name) == 0)
            return &st->t[i];
    if (st->n == REPLAY_MAX_TARGETS)
        return NULL;
    replay_target_stats_t *t = &st->t[st->n];
    memset(t, 0, sizeof *t);
    snprintf(t->name, sizeof t->name, "%s", name);
    st->n++;
    return t;
}

static void count_kind(replay_target_stats_t *t, const char *kind)
{
    for (size_t i = 0; i < t->n_errs; i++)
        if (strcmp(t->errs[i].kind, kind) == 0) {
            t->errs[i].n++;
            return;
        }
    if (t->n_errs < REPLAY_MAX_ERR_KINDS) {
        snprintf(t->errs[t->n_errs].kind, sizeof t->errs[0].kind, "%s", kind);
        t->errs[t->n_errs++].n = 1;
    }
}

static double num(const cJSON *o, const char *name)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, name);
    return cJSON_IsNumber(v) ? v->valuedouble : -1;
}

/* Adds one results line to the stats; lines that are not results are counted as bad. */
static int add_line(replay_stats_t *st, const cJSON *o, replay_stats_line_cb cb, void *ctx)
{
    const char *target = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(o, "target"));
    const char *status = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(o, "status"));
    replay_target_stats_t *t = target && status ? target_of(st, target) : NULL;
    if (!t) {
        st->bad_lines++;
        return 0;
    }
    st->results++;
    t->results++;
    bool ok = strcmp(status, "ok") == 0;
    const cJSON *usage = cJSON_GetObjectItemCaseSensitive(o, "usage");
    if (cJSON_IsObject(usage)) {
        t->prompt_tokens += (int64_t)fmax(0, num(usage, "prompt_tokens"));
        t->completion_tokens += (int64_t)fmax(0, num(usage, "completion_tokens"));
        t->total_tokens += (int64_t)fmax(0, num(usage, "total_tokens"));
    }
    double cost = num(o, "cost_usd");
    if (cost >= 0) {
        t->cost_usd += cost;
        t->has_cost = true;
    }
    if (ok) {
        t->ok++;
        double lat = num(o, "latency_ms"), ttft = num(o, "ttft_ms");
        if ((lat >= 0 && push(&t->latency, lat) != 0) || (ttft >= 0 && push(&t->ttft, ttft) != 0))
            return -1;
    } else {
        t->errors++;
        const cJSON *e = cJSON_GetObjectItemCaseSensitive(o, "error");
        const char *kind = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(e, "kind"));
        count_kind(t, kind ? kind : "error");
    }
    return cb ? cb(ctx, o) : 0;
}

int replay_stats_load(const char *dir, replay_stats_t *st, replay_stats_line_cb cb, void *ctx, char *err,
                      size_t errlen)
{
    memset(st, 0, sizeof *st);
    char path[4096];
    snprintf(path, sizeof path, "%s/results.jsonl", dir);
    FILE *f = fopen(path, "r");
    if (!f) {
        snprintf(err, errlen, "%s: %s", path, strerror(errno));
        return -1;
    }
    char *line = NULL;
    size_t cap = 0;
    ssize_t n;
    int rc = 0;
    while (rc == 0 && (n = getline(&line, &cap, f)) > 0) {
        cJSON *o = cJSON_ParseWithLength(line, (size_t)n);
        if (!o) {
            st->bad_lines++;
            continue;
        }
        rc = add_line(st, o, cb, ctx);
        cJSON_Delete(o);
    }
    free(line);
    fclose(f);
    for (size_t i = 0; i < st->n; i++) {
        qsort(st->t[i].latency.v, st->t[i].latency.n, sizeof(double), cmp_double);
        qsort(st->t[i].ttft.v, st->t[i].ttft.n, sizeof(double), cmp_double);
    }
    if (rc != 0)
        snprintf(err, errlen, "%s: out of memory", path);
    return rc;
}

void replay_stats_free(replay_stats_t *st)
{
    for (size_t i = 0; i < st->n; i++) {
        free(st->t[i].latency.v);
        free(st->t[i].ttft.v);
    }
    memset(st, 0, sizeof *st);
}

static int put_series(buf_t *b, const char *name, const replay_series_t *s)
{
    double sum = 0;
    for (size_t i = 0; i < s->n; i++)
        sum += s->v[i];
    return buf_printf(b,
                      "\"%s\":{\"n\":%zu,\"p50\":%.6g,\"p95\":%.6g,\"p99\":%.6g,\"mean\":%.6g,\"min\":%.6g,"
                      "\"max\":%.6g}",
                      name, s->n, replay_percentile(s->v, s->n, 50), replay_percentile(s->v, s->n, 95),
                      replay_percentile(s->v, s->n, 99), s->n ? sum / (double)s->n : 0, s->n ? s->v[0] : 0,
                      s->n ? s->v[s->n - 1] : 0);
}

int replay_summary_json(const replay_stats_t *st, buf_t *b)
{
    int e = buf_printf(b, "{\"generated_at_ms\":%lld,\"results\":%llu,\"bad_lines\":%llu,\"targets\":{",
                       (long long)base_wall_ms(), (unsigned long long)st->results,
                       (unsigned long long)st->bad_lines);
    for (size_t i = 0; i < st->n && !e; i++) {
        const replay_target_stats_t *t = &st->t[i];
        e = (i && buf_append_str(b, ",")) || job_json_append_string(b, t->name, strlen(t->name), 0) ||
            buf_printf(
                b, ":{\"results\":%llu,\"ok\":%llu,\"errors\":%llu,\"error_rate\":%.6g,\"error_breakdown\":{",
                (unsigned long long)t->results, (unsigned long long)t->ok, (unsigned long long)t->errors,
                t->results ? (double)t->errors / (double)t->results : 0);
        for (size_t j = 0; j < t->n_errs && !e; j++)
            e = (j && buf_append_str(b, ",")) ||
                job_json_append_string(b, t->errs[j].kind, strlen(t->errs[j].kind), 0) ||
                buf_printf(b, ":%llu", (unsigned long long)t->errs[j].n);
        e = e || buf_append_str(b, "},") || put_series(b, "latency_ms", &t->latency) ||
            buf_append_str(b, ",") || put_series(b, "ttft_ms", &t->ttft) ||
            buf_printf(b, ",\"tokens\":{\"prompt\":%lld,\"completion\":%lld,\"total\":%lld}",
                       (long long)t->prompt_tokens, (long long)t->completion_tokens,
                       (long long)t->total_tokens);
        if (t->has_cost)
            e = e || buf_printf(b, ",\"cost_usd\":%.10g", t->cost_usd);
        e = e || buf_append_str(b, "}");
    }
    return e || buf_append_str(b, "}}\n") ? -1 : 0;
}

int replay_write_file(const char *dir, const char *name, const char *data, size_t len, char *err,
                      size_t errlen)
{
    char path[4096], tmp[4200];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    FILE *f = fopen(tmp, "w");
    if (!f || fwrite(data, 1, len, f) != len || fclose(f) != 0 || rename(tmp, path) != 0) {
        snprintf(err, errlen, "%s: %s", path, strerror(errno));
        return -1;
    }
    return 0;
}

int replay_summary_write(const char *dir, char *err, size_t errlen)
{
    replay_stats_t *st = base_calloc(1, sizeof *st);
    if (!st) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    buf_t b;
    buf_init(&b, 0);
    int rc = replay_stats_load(dir, st, NULL, NULL, err, errlen);
    if (rc == 0 && replay_summary_json(st, &b) != 0) {
        snprintf(err, errlen, "summary: out of memory");
        rc = -1;
    }
    if (rc == 0)
        rc = replay_write_file(dir, "summary.json", b.data, b.len, err, errlen);
    buf_free(&b);
    replay_stats_free(st);
    free(st);
    return rc;
}
