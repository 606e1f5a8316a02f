/* report.c — DIR/report.html: figures of summary.h drawn as inline SVG, and the slowest turns' answers
 * side by side. The page holds no script and loads nothing. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "replay/replay.h"
#include "replay/replay_int.h"

#define SLOWEST    50
#define ANSWER_MAX 400
#define HIST_BINS  20
#define W          420
#define H          220
#define PAD        36

static const char *const colors[] = {"#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b"};

typedef struct {
    char turn_id[320];
    double latency; /* the slowest target's */
    char *answers[REPLAY_MAX_TARGETS];
    double lat[REPLAY_MAX_TARGETS];
    bool has[REPLAY_MAX_TARGETS];
} slow_turn_t;

typedef struct {
    slow_turn_t rows[SLOWEST];
    size_t n;
    replay_stats_t *st; /* pass 2: target names */
} slow_t;

static slow_turn_t *slow_find(slow_t *s, const char *turn_id)
{
    for (size_t i = 0; i < s->n; i++)
        if (strcmp(s->rows[i].turn_id, turn_id) == 0)
            return &s->rows[i];
    return NULL;
}

/* Pass 1: keeps the SLOWEST turns by their slowest result. */
static int slow_pick(void *ctx, const cJSON *o)
{
    slow_t *s = ctx;
    const char *turn = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(o, "turn_id"));
    const cJSON *lat = cJSON_GetObjectItemCaseSensitive(o, "latency_ms");
    if (!turn || !cJSON_IsNumber(lat) || strlen(turn) >= sizeof s->rows[0].turn_id)
        return 0;
    slow_turn_t *r = slow_find(s, turn);
    if (!r && s->n < SLOWEST)
        r = &s->rows[s->n++];
    else if (!r) {
        size_t min = 0;
        for (size_t i = 1; i < s->n; i++)
            if (s->rows[i].latency < s->rows[min].latency)
                min = i;
        if (s->rows[min].latency >= lat->valuedouble)
            return 0;
        r = &s->rows[min];
        memset(r, 0, sizeof *r);
    }
    if (!r->turn_id[0])
        snprintf(r->turn_id, sizeof r->turn_id, "%s", turn);
    if (lat->valuedouble > r->latency)
        r->latency = lat->valuedouble;
    return 0;
}

/* Pass 2: the answers (or errors) of the chosen turns, per target. */
static int slow_fill(void *ctx, const cJSON *o)
{
    slow_t *s = ctx;
    const char *turn = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(o, "turn_id"));
    const char *target = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(o, "target"));
    slow_turn_t *r = turn && target ? slow_find(s, turn) : NULL;
    if (!r)
        return 0;
    size_t t = 0;
    while (t < s->st->n && strcmp(s->st->t[t].name, target) != 0)
        t++;
    if (t == s->st->n || r->has[t])
        return 0;
    const char *answer = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(o, "answer"));
    const cJSON *e = cJSON_GetObjectItemCaseSensitive(o, "error");
    char buf[ANSWER_MAX + 64];
    if (answer)
        snprintf(buf, sizeof buf, "%.*s", ANSWER_MAX, answer);
    else
        snprintf(buf, sizeof buf, "error: %s",
                 cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(e, "kind"))
                     ? cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(e, "kind"))
                     : "?");
    r->answers[t] = base_strdup(buf);
    const cJSON *lat = cJSON_GetObjectItemCaseSensitive(o, "latency_ms");
    r->lat[t] = cJSON_IsNumber(lat) ? lat->valuedouble : 0;
    r->has[t] = true;
    return 0;
}

static int html_text(buf_t *b, const char *s)
{
    int e = 0;
    for (; *s && !e; s++) {
        switch (*s) {
        case '<':
            e = buf_append_str(b, "&lt;");
            break;
        case '>':
            e = buf_append_str(b, "&gt;");
            break;
        case '&':
            e = buf_append_str(b, "&amp;");
            break;
        case '"':
            e = buf_append_str(b, "&quot;");
            break;
        default:
            e = buf_append(b, s, 1);
        }
    }
    return e;
}

/* Word overlap (Jaccard over the distinct words of the first 400 bytes) of two answers, 0..1. */
static double overlap(const char *a, const char *b)
{
    char wa[64][32], wb[64][32];
    size_t na = 0, nb = 0;
    const char *srcs[2] = {a, b};
    for (int k = 0; k < 2; k++) {
        char(*w)[32] = k ? wb : wa;
        size_t *n = k ? &nb : &na;
        for (const char *p = srcs[k]; *p && *n < 64;) {
            while (*p == ' ')
                p++;
            size_t l = strcspn(p, " ");
            if (l == 0)
                break;
            snprintf(w[*n], 32, "%.*s", (int)(l < 31 ? l : 31), p);
            bool dup = false;
            for (size_t i = 0; i < *n && !dup; i++)
                dup = strcmp(w[i], w[*n]) == 0;
            if (!dup)
                (*n)++;
            p += l;
        }
    }
    size_t both = 0;
    for (size_t i = 0; i < na; i++)
        for (size_t j = 0; j < nb; j++)
            both += strcmp(wa[i], wb[j]) == 0;
    size_t uni = na + nb - both;
    return uni ? (double)both / (double)uni : 1;
}

/* Latency CDF of every target in one chart: one polyline per target. */
static int chart_cdf(buf_t *b, const replay_stats_t *st)
{
    double max = 1;
    for (size_t i = 0; i < st->n; i++)
        if (st->t[i].latency.n && st->t[i].latency.v[st->t[i].latency.n - 1] > max)
            max = st->t[i].latency.v[st->t[i].latency.n - 1];
    int e =
        buf_printf(b,
                   "<svg id=\"latency-cdf\" class=\"chart\" width=\"%d\" height=\"%d\" viewBox=\"0 0 %d %d\">"
                   "<line x1=\"%d\" y1=\"%d\" x2=\"%d\" y2=\"%d\" stroke=\"#333\"/>"
                   "<line x1=\"%d\" y1=\"%d\" x2=\"%d\" y2=\"%d\" stroke=\"#333\"/>"
                   "<text x=\"%d\" y=\"%d\" font-size=\"11\">0</text>"
                   "<text x=\"%d\" y=\"%d\" font-size=\"11\" text-anchor=\"end\">%.0f ms</text>"
                   "<text x=\"4\" y=\"%d\" font-size=\"11\">100%%</text>",
                   W, H, W, H, PAD, H - PAD, W - 10, H - PAD, PAD, 10, PAD, H - PAD, PAD, H - PAD + 14,
                   W - 10, H - PAD + 14, max, 14);
    for (size_t i = 0; i < st->n && !e; i++) {
        const replay_series_t *s = &st->t[i].latency;
        e = buf_printf(b, "<polyline class=\"cdf-line\" data-target=\"");
        e = e || html_text(b, st->t[i].name) ||
            buf_printf(b, "\" data-points=\"%zu\" fill=\"none\" stroke=\"%s\" stroke-width=\"2\" points=\"",
                       s->n, colors[i % BASE_ARRAY_LEN(colors)]);
        size_t step = s->n > 400 ? s->n / 400 : 1;
        for (size_t j = 0; j < s->n && !e; j += step) {
            double x = PAD + (s->v[j] / max) * (W - 10 - PAD);
            double y = (H - PAD) - ((double)(j + 1) / (double)s->n) * (H - PAD - 10);
            e = buf_printf(b, "%.1f,%.1f ", x, y);
        }
        e = e || buf_append_str(b, "\"/>");
    }
    return e || buf_append_str(b, "</svg>");
}

/* TTFT histogram of one target: HIST_BINS bars from 0 to its max. */
static int chart_hist(buf_t *b, const replay_target_stats_t *t, size_t idx)
{
    const replay_series_t *s = &t->ttft;
    uint64_t bins[HIST_BINS] = {0};
    double max = s->n ? s->v[s->n - 1] : 1;
    if (max <= 0)
        max = 1;
    uint64_t top = 1;
    for (size_t j = 0; j < s->n; j++) {
        size_t k = (size_t)(s->v[j] / max * HIST_BINS);
        k = k >= HIST_BINS ? HIST_BINS - 1 : k;
        if (++bins[k] > top)
            top = bins[k];
    }
    int e = buf_printf(b, "<svg class=\"chart ttft-hist\" data-target=\"") || html_text(b, t->name) ||
            buf_printf(b,
                       "\" data-samples=\"%zu\" width=\"%d\" height=\"%d\" viewBox=\"0 0 %d %d\">"
                       "<line x1=\"%d\" y1=\"%d\" x2=\"%d\" y2=\"%d\" stroke=\"#333\"/>"
                       "<text x=\"%d\" y=\"%d\" font-size=\"11\">0</text>"
                       "<text x=\"%d\" y=\"%d\" font-size=\"11\" text-anchor=\"end\">%.0f ms</text>",
                       s->n, W, H, W, H, PAD, H - PAD, W - 10, H - PAD, PAD, H - PAD + 14, W - 10,
                       H - PAD + 14, max);
    double bw = (double)(W - 10 - PAD) / HIST_BINS;
    for (size_t k = 0; k < HIST_BINS && !e; k++) {
        double h = (double)bins[k] / (double)top * (H - PAD - 10);
        e = buf_printf(
            b,
            "<rect class=\"bar\" data-count=\"%llu\" x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" height=\"%.1f\" "
            "fill=\"%s\"/>",
            (unsigned long long)bins[k], PAD + k * bw, (H - PAD) - h, bw - 1, h,
            colors[idx % BASE_ARRAY_LEN(colors)]);
    }
    return e || buf_append_str(b, "</svg>");
}

static int target_table(buf_t *b, const replay_stats_t *st)
{
    int e = buf_append_str(
        b, "<table id=\"figures\"><tr><th>target</th><th>results</th><th>ok</th><th>errors</th>"
           "<th>latency p50/p95/p99 ms</th><th>TTFT p50/p95/p99 ms</th><th>tokens in/out</th>"
           "<th>cost USD</th></tr>");
    for (size_t i = 0; i < st->n && !e; i++) {
        const replay_target_stats_t *t = &st->t[i];
        const replay_series_t *l = &t->latency, *f = &t->ttft;
        e = buf_append_str(b, "<tr class=\"target-row\"><td>") || html_text(b, t->name) ||
            buf_printf(b, "</td><td>%llu</td><td>%llu</td><td>", (unsigned long long)t->results,
                       (unsigned long long)t->ok);
        for (size_t j = 0; j < t->n_errs && !e; j++)
            e = html_text(b, t->errs[j].kind) || buf_printf(b, "=%llu ", (unsigned long long)t->errs[j].n);
        e = e ||
            buf_printf(b,
                       "%s</td><td>%.0f / %.0f / %.0f</td><td>%.0f / %.0f / %.0f</td><td>%lld / %lld</td>"
                       "<td>%.6f</td></tr>",
                       t->errors ? "" : "0", replay_percentile(l->v, l->n, 50),
                       replay_percentile(l->v, l->n, 95), replay_percentile(l->v, l->n, 99),
                       replay_percentile(f->v, f->n, 50), replay_percentile(f->v, f->n, 95),
                       replay_percentile(f->v, f->n, 99), (long long)t->prompt_tokens,
                       (long long)t->completion_tokens, t->cost_usd);
    }
    return e || buf_append_str(b, "</table>");
}

static int cmp_slow(const void *a, const void *b)
{
    double x = ((const slow_turn_t *)a)->latency, y = ((const slow_turn_t *)b)->latency;
    return x < y ? 1 : x > y ? -1 : 0;
}

static int answers_table(buf_t *b, const replay_stats_t *st, slow_t *s)
{
    qsort(s->rows, s->n, sizeof s->rows[0], cmp_slow);
    int e = buf_append_str(b, "<table id=\"answers\"><tr><th>turn</th><th>slowest ms</th>");
    for (size_t i = 0; i < st->n && !e; i++)
        e = buf_append_str(b, "<th>") || html_text(b, st->t[i].name) || buf_append_str(b, "</th>");
    e = e || buf_append_str(b, "<th>word overlap (first two)</th></tr>");
    for (size_t r = 0; r < s->n && !e; r++) {
        slow_turn_t *row = &s->rows[r];
        e = buf_printf(b, "<tr class=\"answer-row\" data-latency=\"%.0f\"><td>", row->latency) ||
            html_text(b, row->turn_id) || buf_printf(b, "</td><td>%.0f</td>", row->latency);
        for (size_t i = 0; i < st->n && !e; i++)
            e = buf_printf(b, "<td><small>%.0f ms</small><br>", row->lat[i]) ||
                html_text(b, row->answers[i] ? row->answers[i] : "-") || buf_append_str(b, "</td>");
        if (st->n >= 2 && row->answers[0] && row->answers[1])
            e = e || buf_printf(b, "<td>%.2f</td></tr>", overlap(row->answers[0], row->answers[1]));
        else
            e = e || buf_append_str(b, "<td>-</td></tr>");
    }
    return e || buf_append_str(b, "</table>");
}

int replay_report_write(const char *dir, char *err, size_t errlen)
{
    replay_stats_t *st = base_calloc(1, sizeof *st);
    slow_t *s = base_calloc(1, sizeof *s);
    buf_t b;
    buf_init(&b, 0);
    int rc = -1;
    if (!st || !s) {
        snprintf(err, errlen, "out of memory");
        goto out;
    }
    replay_stats_t second;
    if (replay_stats_load(dir, st, slow_pick, s, err, errlen) != 0)
        goto out;
    s->st = st;
    if (replay_stats_load(dir, &second, slow_fill, s, err, errlen) != 0)
        goto out;
    replay_stats_free(&second);
    int e = buf_append_str(
        &b, "<!DOCTYPE html><html><head><meta charset=\"utf-8\"><title>parley replay report</title>"
            "<style>body{font:14px sans-serif;margin:20px}table{border-collapse:collapse;margin:12px 0}"
            "td,th{border:1px solid #ccc;padding:4px 8px;vertical-align:top;max-width:420px}"
            ".charts{display:flex;flex-wrap:wrap;gap:16px}figure{margin:0}</style></head><body>"
            "<h1>parley replay report</h1>");
    e = e || buf_printf(&b, "<p id=\"totals\" data-results=\"%llu\">%llu results, %zu targets</p>",
                        (unsigned long long)st->results, (unsigned long long)st->results, st->n);
    e = e || target_table(&b, st) ||
        buf_append_str(&b, "<h2>Latency CDF</h2><div class=\"charts\"><figure>") || chart_cdf(&b, st) ||
        buf_append_str(&b, "<figcaption>");
    for (size_t i = 0; i < st->n && !e; i++)
        e = buf_printf(&b, "<span style=\"color:%s\">&#9632; ", colors[i % BASE_ARRAY_LEN(colors)]) ||
            html_text(&b, st->t[i].name) || buf_append_str(&b, "</span> ");
    e = e ||
        buf_append_str(&b, "</figcaption></figure></div><h2>Time to first token</h2><div class=\"charts\">");
    for (size_t i = 0; i < st->n && !e; i++)
        e = buf_append_str(&b, "<figure>") || chart_hist(&b, &st->t[i], i) ||
            buf_append_str(&b, "<figcaption>") || html_text(&b, st->t[i].name) ||
            buf_append_str(&b, "</figcaption></figure>");
    e = e || buf_append_str(&b, "</div><h2>Slowest turns</h2>") || answers_table(&b, st, s) ||
        buf_append_str(&b, "</body></html>\n");
    if (e) {
        snprintf(err, errlen, "report: out of memory");
        goto out;
    }
    rc = replay_write_file(dir, "report.html", b.data, b.len, err, errlen);
out:
    if (s)
        for (size_t r = 0; r < s->n; r++)
            for (size_t i = 0; i < REPLAY_MAX_TARGETS; i++)
                free(s->rows[r].answers[i]);
    if (st)
        replay_stats_free(st);
    free(st);
    free(s);
    buf_free(&b);
    return rc;
}
