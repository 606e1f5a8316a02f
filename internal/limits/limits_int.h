/* limits_int.h — what the files of limits share: the circuit breaker (breaker.c, pure logic on an
 * injected time), the local GCRA bucket (bucket.c), and the limits_t record (limits.c, rate.c). */
#ifndef PARLEY_LIMITS_INT_H
#define PARLEY_LIMITS_INT_H

#include "limits/limits.h"

#define LIMITS_WINDOW_MS       60000 /* rpm and tpm are per minute; the burst is a minute's worth */
#define BREAKER_MAX_BUCKETS    60
#define BREAKER_MAX_WINDOW_S   86400
#define BREAKER_MAX_COOLDOWN_S 86400

/* ---- breaker ------------------------------------------------------------------------------ */

typedef struct {
    int64_t slot; /* now / width_ms when last used */
    uint32_t ok, fail;
} breaker_bucket_t;

typedef struct {
    const char *name; /* the provider, for logs */
    config_breaker_t cfg;
    breaker_state_t state;
    int consecutive; /* failures in a row while closed */
    int64_t open_until_ms;
    bool probe_out; /* half-open and its probe is running */
    int64_t width_ms;
    breaker_bucket_t *buckets; /* the sliding window: n_buckets of width_ms */
    size_t n_buckets;
    uint64_t opened, half_opened, closed;
} breaker_t;

/* 0, or -1 with err filled when cfg is out of range or memory is short. */
int breaker_init(breaker_t *b, const char *name, const config_breaker_t *cfg, char *err, size_t errlen);
void breaker_free(breaker_t *b);
/* Whether an attempt may start now (turns open into half-open once the cooldown has passed). */
bool breaker_can_start(breaker_t *b, int64_t now_ms);
/* An attempt started after breaker_can_start said yes; *probe: it is the half-open probe. */
void breaker_started(breaker_t *b, bool *probe);
void breaker_record(breaker_t *b, int64_t now_ms, limits_outcome_t outcome);
breaker_state_t breaker_state_at(const breaker_t *b, int64_t now_ms);

/* ---- local GCRA bucket -------------------------------------------------------------------- */

typedef struct {
    double tat_ms; /* theoretical arrival time on the limits clock */
} gcra_t;

/* Milliseconds until cost units fit under rate per minute (0: now); a rate <= 0 is no limit. */
int64_t gcra_wait_ms(const gcra_t *g, int64_t rate, int64_t cost, int64_t now_ms);
/* Charges units (negative: refunds), keeping the debt within [now, now + one burst]. */
void gcra_add(gcra_t *g, int64_t rate, int64_t units, int64_t now_ms);

/* ---- limits ------------------------------------------------------------------------------- */

typedef struct {
    const config_provider_t *cfg;
    breaker_t br;
    size_t in_flight;
    gcra_t local_rpm, local_tpm;
    char *key_rpm, *key_tpm; /* P:ratelimit:{name}:rpm / :tpm */
    limits_stats_t st;       /* the counters limits keeps itself (breaker ones come from br) */
} limits_prov_t;

struct limits {
    uv_loop_t *loop;
    store_t *store;
    store_script_t *script;
    limits_prov_t *prov;
    size_t n_prov;
    int64_t (*now_ms)(void *ctx);
    void *clock_ctx;
    uv_timer_t timer;     /* the earliest due wait */
    limits_wait_t *due;   /* waits in the timer's list, earliest first */
    size_t store_pending; /* store_eval requests not answered yet */
    bool in_outage;       /* the local bucket is deciding; logged once */
    bool closing, timer_closed;
};

static inline int64_t limits_now(const limits_t *l) { return l->now_ms(l->clock_ctx); }

/* rate.c: the script registration and key names of every provider (0 or -1 with err filled), and the
 * part of limits_free that drops the waits. */
int limits_rate_init(limits_t *l, char *err, size_t errlen);
void limits_rate_drop_waits(limits_t *l);
/* limits.c: frees l once it is closing, its timer closed and the store owes it nothing. */
void limits_maybe_release(limits_t *l);

#endif
