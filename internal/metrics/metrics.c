/* metrics.c — a registry of metric families; values are atomics, the registry has a mutex. */
#include "metrics/metrics.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define METRIC_LE_MAX 40

typedef enum { METRIC_COUNTER, METRIC_GAUGE, METRIC_HISTOGRAM } metric_kind_t;

struct metric {
    metric_kind_t kind;
    char *name;
    char *help;
    char *labels;
    bool fractional;        /* a float counter: count holds millionths */
    _Atomic uint64_t count; /* counter value, or histogram observation count */
    _Atomic int64_t gauge;
    _Atomic uint64_t sum_micros; /* histogram sum, in millionths */
    const double *bounds;
    size_t n_bounds;
    _Atomic uint64_t *buckets; /* n_bounds (non-cumulative) */
    char *le;                  /* n_bounds label texts le="…" of METRIC_LE_MAX bytes, formatted once */
    metric_t *next;
};

static pthread_mutex_t registry_lock = PTHREAD_MUTEX_INITIALIZER;
static metric_t *registry_head, *registry_tail;

const double metrics_latency_bounds[] = {0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
                                         0.5,   1,      2.5,   5,    10,    30,   60};
const size_t metrics_latency_n_bounds = sizeof metrics_latency_bounds / sizeof metrics_latency_bounds[0];

static bool same_labels(const char *a, const char *b) { return strcmp(a ? a : "", b ? b : "") == 0; }

static void metric_destroy(metric_t *m)
{
    free(m->name);
    free(m->help);
    free(m->labels);
    free(m->buckets);
    free(m->le);
    free(m);
}

static metric_t *metric_register(metric_kind_t kind, const char *name, const char *help, const char *labels,
                                 const double *bounds, size_t n_bounds)
{
    pthread_mutex_lock(&registry_lock);
    metric_t *m;
    for (m = registry_head; m; m = m->next)
        if (m->kind == kind && strcmp(m->name, name) == 0 && same_labels(m->labels, labels))
            goto out;
    m = base_calloc(1, sizeof *m);
    if (!m)
        goto out;
    m->kind = kind;
    m->name = base_strdup(name);
    m->help = base_strdup(help ? help : "");
    m->labels = base_strdup(labels ? labels : "");
    if (kind == METRIC_HISTOGRAM) {
        m->bounds = bounds;
        m->n_bounds = n_bounds;
        m->buckets = base_calloc(n_bounds ? n_bounds : 1, sizeof *m->buckets);
        m->le = base_calloc(n_bounds ? n_bounds : 1, METRIC_LE_MAX);
        for (size_t i = 0; m->le && i < n_bounds; i++)
            snprintf(m->le + i * METRIC_LE_MAX, METRIC_LE_MAX, "le=\"%g\"", bounds[i]);
    }
    if (!m->name || !m->help || !m->labels || (kind == METRIC_HISTOGRAM && (!m->buckets || !m->le))) {
        metric_destroy(m);
        m = NULL;
        goto out;
    }
    /* Keep families together: insert after the last metric of the same name. */
    metric_t *after = NULL;
    for (metric_t *it = registry_head; it; it = it->next)
        if (strcmp(it->name, name) == 0)
            after = it;
    if (after) {
        m->next = after->next;
        after->next = m;
        if (registry_tail == after)
            registry_tail = m;
    } else if (registry_tail) {
        registry_tail->next = m;
        registry_tail = m;
    } else {
        registry_head = registry_tail = m;
    }
out:
    pthread_mutex_unlock(&registry_lock);
    return m;
}

metric_t *metrics_counter(const char *name, const char *help, const char *labels)
{
    return metric_register(METRIC_COUNTER, name, help, labels, NULL, 0);
}

metric_t *metrics_gauge(const char *name, const char *help, const char *labels)
{
    return metric_register(METRIC_GAUGE, name, help, labels, NULL, 0);
}

metric_t *metrics_histogram(const char *name, const char *help, const char *labels, const double *bounds,
                            size_t n_bounds)
{
    return metric_register(METRIC_HISTOGRAM, name, help, labels, bounds, n_bounds);
}

metric_t *metrics_counter_float(const char *name, const char *help, const char *labels)
{
    metric_t *m = metric_register(METRIC_COUNTER, name, help, labels, NULL, 0);
    if (m)
        m->fractional = true;
    return m;
}

void metrics_unregister(metric_t *m)
{
    if (!m)
        return;
    pthread_mutex_lock(&registry_lock);
    metric_t *prev = NULL, *it = registry_head;
    while (it && it != m) {
        prev = it;
        it = it->next;
    }
    if (it) {
        if (prev)
            prev->next = m->next;
        else
            registry_head = m->next;
        if (registry_tail == m)
            registry_tail = prev;
        metric_destroy(m);
    }
    pthread_mutex_unlock(&registry_lock);
}

void metrics_label_value(char *out, size_t outlen, const char *v)
{
    size_t o = 0;
    if (!outlen)
        return;
    for (; v && *v; v++) {
        char esc = *v == '\\' ? '\\' : *v == '"' ? '"' : *v == '\n' ? 'n' : 0;
        size_t need = esc ? 2 : 1;
        if (o + need >= outlen)
            break;
        if (esc) {
            out[o++] = '\\';
            out[o++] = esc;
        } else {
            out[o++] = *v;
        }
    }
    out[o] = '\0';
}

void metric_counter_set(metric_t *m, uint64_t v)
{
    if (m)
        atomic_store_explicit(&m->count, v, memory_order_relaxed);
}

void metric_add_float(metric_t *m, double v)
{
    if (m && v > 0)
        atomic_fetch_add_explicit(&m->count, (uint64_t)(v * 1e6 + 0.5), memory_order_relaxed);
}

void metric_add(metric_t *m, uint64_t n)
{
    if (m)
        atomic_fetch_add_explicit(&m->count, n, memory_order_relaxed);
}

void metric_set(metric_t *m, int64_t v)
{
    if (m)
        atomic_store_explicit(&m->gauge, v, memory_order_relaxed);
}

void metric_gauge_add(metric_t *m, int64_t d)
{
    if (m)
        atomic_fetch_add_explicit(&m->gauge, d, memory_order_relaxed);
}

void metric_observe(metric_t *m, double v)
{
    if (!m)
        return;
    size_t i = 0;
    while (i < m->n_bounds && v > m->bounds[i])
        i++;
    if (i < m->n_bounds)
        atomic_fetch_add_explicit(&m->buckets[i], 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&m->count, 1, memory_order_relaxed);
    if (v > 0)
        atomic_fetch_add_explicit(&m->sum_micros, (uint64_t)(v * 1e6 + 0.5), memory_order_relaxed);
}

uint64_t metric_counter_value(const metric_t *m)
{
    return m ? atomic_load_explicit(&((metric_t *)m)->count, memory_order_relaxed) : 0;
}

int64_t metric_gauge_value(const metric_t *m)
{
    return m ? atomic_load_explicit(&((metric_t *)m)->gauge, memory_order_relaxed) : 0;
}

static const char *kind_name(metric_kind_t k)
{
    return k == METRIC_COUNTER ? "counter" : k == METRIC_GAUGE ? "gauge" : "histogram";
}

/* Writes NAME{labels[,extra]} ; pieces are appended, not formatted (a scrape renders hundreds). */
static int render_series(buf_t *out, const char *name, const char *suffix, const char *labels,
                         const char *extra)
{
    bool has = labels && *labels, has_extra = extra && *extra;
    int rc = buf_append_str(out, name) | buf_append_str(out, suffix);
    if (has || has_extra) {
        rc |= buf_append(out, "{", 1);
        if (has)
            rc |= buf_append_str(out, labels);
        if (has && has_extra)
            rc |= buf_append(out, ",", 1);
        if (has_extra)
            rc |= buf_append_str(out, extra);
        rc |= buf_append(out, "}", 1);
    }
    return rc | buf_append(out, " ", 1);
}

/* Appends v in decimal and a newline. */
static int render_u64(buf_t *out, uint64_t v)
{
    char tmp[21];
    size_t n = base_u64_dec(tmp, v);
    tmp[n++] = '\n';
    return buf_append(out, tmp, n);
}

static int render_i64(buf_t *out, int64_t v)
{
    char tmp[22];
    size_t n = base_i64_dec(tmp, v);
    tmp[n++] = '\n';
    return buf_append(out, tmp, n);
}

/* Appends a value kept in millionths as a decimal with 6 places, and a newline. */
static int render_micros(buf_t *out, uint64_t micros)
{
    char frac[9];
    uint64_t f = micros % 1000000;
    for (int i = 6; i >= 1; i--, f /= 10)
        frac[i] = (char)('0' + f % 10);
    frac[0] = '.';
    frac[7] = '\n';
    char whole[24];
    size_t i = sizeof whole;
    uint64_t w = micros / 1000000;
    do {
        whole[--i] = (char)('0' + w % 10);
        w /= 10;
    } while (w);
    return buf_append(out, whole + i, sizeof whole - i) | buf_append(out, frac, 8);
}

static int render_metric(buf_t *out, metric_t *m)
{
    int rc = 0;
    switch (m->kind) {
    case METRIC_COUNTER:
        rc |= render_series(out, m->name, "", m->labels, NULL);
        rc |= m->fractional ? render_micros(out, metric_counter_value(m))
                            : render_u64(out, metric_counter_value(m));
        break;
    case METRIC_GAUGE:
        rc |= render_series(out, m->name, "", m->labels, NULL);
        rc |= render_i64(out, metric_gauge_value(m));
        break;
    case METRIC_HISTOGRAM: {
        uint64_t cumulative = 0;
        for (size_t i = 0; i < m->n_bounds; i++) {
            cumulative += atomic_load_explicit(&m->buckets[i], memory_order_relaxed);
            rc |= render_series(out, m->name, "_bucket", m->labels, m->le + i * METRIC_LE_MAX);
            rc |= render_u64(out, cumulative);
        }
        uint64_t count = atomic_load_explicit(&m->count, memory_order_relaxed);
        rc |= render_series(out, m->name, "_bucket", m->labels, "le=\"+Inf\"");
        rc |= render_u64(out, count);
        rc |= render_series(out, m->name, "_sum", m->labels, NULL);
        rc |= render_micros(out, atomic_load_explicit(&m->sum_micros, memory_order_relaxed));
        rc |= render_series(out, m->name, "_count", m->labels, NULL);
        rc |= render_u64(out, count);
        break;
    }
    }
    return rc;
}

int metrics_render(buf_t *out, bool openmetrics)
{
    int rc = 0;
    pthread_mutex_lock(&registry_lock);
    const char *family = NULL;
    for (metric_t *m = registry_head; m; m = m->next) {
        if (!family || strcmp(family, m->name) != 0) {
            family = m->name;
            size_t len = strlen(m->name);
            int base_len = (int)len;
            /* OpenMetrics names a counter family without _total and its sample with it. */
            if (openmetrics && m->kind == METRIC_COUNTER && len > 6 &&
                strcmp(m->name + len - 6, "_total") == 0)
                base_len -= 6;
            rc |= buf_printf(out, "# HELP %.*s %s\n", base_len, m->name, m->help);
            rc |= buf_printf(out, "# TYPE %.*s %s\n", base_len, m->name, kind_name(m->kind));
        }
        rc |= render_metric(out, m);
    }
    if (openmetrics)
        rc |= buf_append_str(out, "# EOF\n");
    pthread_mutex_unlock(&registry_lock);
    return rc ? -1 : 0;
}

void metrics_reset(void)
{
    pthread_mutex_lock(&registry_lock);
    metric_t *m = registry_head;
    while (m) {
        metric_t *next = m->next;
        metric_destroy(m);
        m = next;
    }
    registry_head = registry_tail = NULL;
    pthread_mutex_unlock(&registry_lock);
}
