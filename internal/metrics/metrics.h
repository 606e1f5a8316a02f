/* metrics — process-wide counters, gauges and histograms, rendered in the Prometheus text format
 * (0.0.4) or OpenMetrics 1.0. Metrics are registered once (at start-up or on first use of a label
 * set) and updated with relaxed atomics from the loop; the admin thread renders them. Label sets
 * are fixed strings chosen by the caller (provider names, status codes): never job or
 * conversation ids, so cardinality stays bounded. It owns the registry; it never does I/O. */
#ifndef PARLEY_METRICS_H
#define PARLEY_METRICS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "base/base.h"

typedef struct metric metric_t;

/* Registration returns the same metric for the same name and labels; labels is the inside of the
 * braces, e.g. "provider=\"openai\",outcome=\"won\"", or NULL. NULL only when out of memory. */
metric_t *metrics_counter(const char *name, const char *help, const char *labels);
metric_t *metrics_gauge(const char *name, const char *help, const char *labels);
/* bounds: ascending upper bounds (le), without +Inf. */
metric_t *metrics_histogram(const char *name, const char *help, const char *labels, const double *bounds,
                            size_t n_bounds);
/* A counter of a fractional quantity (USD): kept in millionths, rendered as a decimal. */
metric_t *metrics_counter_float(const char *name, const char *help, const char *labels);
/* Removes one series and frees it (e.g. a revoked partition's); the caller holds the only pointer. */
void metrics_unregister(metric_t *m);
/* Writes v into out as a label value, escaping \, " and newlines; truncates to fit. */
void metrics_label_value(char *out, size_t outlen, const char *v);

void metric_add(metric_t *m, uint64_t n); /* counter */
void metric_set(metric_t *m, int64_t v);  /* gauge */
void metric_gauge_add(metric_t *m, int64_t d);
/* Copies a cumulative count kept by another module (store, router, kafka) into a counter. */
void metric_counter_set(metric_t *m, uint64_t v);
void metric_add_float(metric_t *m, double v); /* float counter; negative values are ignored */
void metric_observe(metric_t *m, double v);   /* histogram */
static inline void metric_inc(metric_t *m) { metric_add(m, 1); }

uint64_t metric_counter_value(const metric_t *m);
int64_t metric_gauge_value(const metric_t *m);

/* Latency buckets in seconds used by every *_seconds histogram. */
extern const double metrics_latency_bounds[];
extern const size_t metrics_latency_n_bounds;

/* Appends the exposition of every metric to out. 0 on success. */
int metrics_render(buf_t *out, bool openmetrics);
/* Frees the registry (tests). */
void metrics_reset(void);

#endif
