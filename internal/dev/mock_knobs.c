/* mock_knobs.c — the mock provider's knobs (a table of typed fields set from "k=v" text or a JSON
 * object), its seeded random source, and its counters rendered as the /stats JSON. */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "mock.h"

typedef enum { KNOB_INT, KNOB_DBL, KNOB_BOOL } knob_type_t;

typedef struct {
    const char *name;
    knob_type_t type;
    size_t off;
    double min, max;
} knob_def_t;

#define KNOB_AT(f) offsetof(mock_knobs_t, f)

/* Every knob: name, type, field, range. */
static const knob_def_t knob_defs[] = {
    {"latency_ms", KNOB_INT, KNOB_AT(latency_ms), 0, 3600000},
    {"tail_ms", KNOB_INT, KNOB_AT(tail_ms), 0, 3600000},
    {"tail_prob", KNOB_DBL, KNOB_AT(tail_prob), 0, 1},
    {"token_ms", KNOB_INT, KNOB_AT(token_ms), 0, 600000},
    {"fail_rate", KNOB_DBL, KNOB_AT(fail_rate), 0, 1},
    {"fail_status", KNOB_INT, KNOB_AT(fail_status), 100, 599},
    {"fail_next", KNOB_INT, KNOB_AT(fail_next), 0, 1e9},
    {"retry_after_s", KNOB_INT, KNOB_AT(retry_after_s), 0, 86400},
    {"cut_after", KNOB_INT, KNOB_AT(cut_after), -1, 1e9},
    {"error_after", KNOB_INT, KNOB_AT(error_after), -1, 1e9},
    {"drip_ms", KNOB_INT, KNOB_AT(drip_ms), 0, 600000},
    {"not_json", KNOB_BOOL, KNOB_AT(not_json), 0, 1},
    {"pad_bytes", KNOB_INT, KNOB_AT(pad_bytes), 0, 4194304},
    {"comments", KNOB_BOOL, KNOB_AT(comments), 0, 1},
    {"crlf", KNOB_BOOL, KNOB_AT(crlf), 0, 1},
    {"ping", KNOB_BOOL, KNOB_AT(ping), 0, 1},
    {"thinking", KNOB_BOOL, KNOB_AT(thinking), 0, 1},
    {"seed", KNOB_INT, KNOB_AT(seed), 0, 9007199254740991.0},
    {"h2_max_streams", KNOB_INT, KNOB_AT(h2_max_streams), 1, 1000000},
};

void mock_knobs_defaults(mock_knobs_t *k)
{
    memset(k, 0, sizeof *k);
    k->fail_status = 500;
    k->retry_after_s = 1;
    k->cut_after = -1;
    k->error_after = -1;
    k->comments = true;
    k->ping = true;
    k->seed = 1;
    k->h2_max_streams = 128;
}

/* splitmix64: small, seedable, good enough for tail and failure draws. */
double mock_rand(dev_mock_t *m)
{
    uint64_t z = (m->rng += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    z ^= z >> 31;
    return (double)(z >> 11) / 9007199254740992.0;
}

int mock_knob_set(dev_mock_t *m, const char *name, const char *value, char *err, size_t errlen)
{
    const knob_def_t *d = NULL;
    for (size_t i = 0; i < BASE_ARRAY_LEN(knob_defs); i++)
        if (strcmp(knob_defs[i].name, name) == 0)
            d = &knob_defs[i];
    if (!d) {
        snprintf(err, errlen, "unknown knob '%s'", name);
        return -1;
    }
    char *end;
    errno = 0;
    double v = strtod(value, &end);
    if (d->type == KNOB_BOOL && (strcmp(value, "true") == 0 || strcmp(value, "on") == 0))
        v = 1, end = (char *)value + strlen(value);
    else if (d->type == KNOB_BOOL && (strcmp(value, "false") == 0 || strcmp(value, "off") == 0))
        v = 0, end = (char *)value + strlen(value);
    if (end == value || *end || errno || !isfinite(v) || v < d->min || v > d->max ||
        (d->type != KNOB_DBL && v != floor(v))) {
        snprintf(err, errlen, "knob %s: '%.40s' is not a %s in [%g, %g]", name, value,
                 d->type == KNOB_DBL ? "number" : "whole number", d->min, d->max);
        return -1;
    }
    char *field = (char *)&m->knobs + d->off;
    if (d->type == KNOB_INT)
        *(int64_t *)(void *)field = (int64_t)v;
    else if (d->type == KNOB_DBL)
        *(double *)(void *)field = v;
    else
        *(bool *)(void *)field = v != 0;
    if (strcmp(name, "seed") == 0)
        m->rng = (uint64_t)m->knobs.seed;
    return 0;
}

int dev_mock_set_knobs(dev_mock_t *m, const char *spec, char *err, size_t errlen)
{
    if (!spec || !*spec)
        return 0;
    char *copy = base_strdup(spec);
    if (!copy) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    int rc = 0;
    for (char *save = NULL, *kv = strtok_r(copy, ",", &save); kv && rc == 0;
         kv = strtok_r(NULL, ",", &save)) {
        char *eq = strchr(kv, '=');
        if (!eq) {
            snprintf(err, errlen, "knob '%s' has no '=value'", kv);
            rc = -1;
            break;
        }
        *eq = '\0';
        rc = mock_knob_set(m, kv, eq + 1, err, errlen);
    }
    free(copy);
    return rc;
}

int mock_knobs_set_json(dev_mock_t *m, const char *json, size_t len, char *err, size_t errlen)
{
    cJSON *root = cJSON_ParseWithLength(json, len);
    int rc = 0;
    if (!cJSON_IsObject(root)) {
        snprintf(err, errlen, "the body must be a JSON object of knobs");
        rc = -1;
        goto out;
    }
    const cJSON *it;
    cJSON_ArrayForEach(it, root)
    {
        char val[64];
        if (cJSON_IsNumber(it))
            snprintf(val, sizeof val, "%.17g", it->valuedouble);
        else if (cJSON_IsBool(it))
            snprintf(val, sizeof val, "%d", cJSON_IsTrue(it) ? 1 : 0);
        else if (cJSON_IsString(it))
            snprintf(val, sizeof val, "%s", it->valuestring);
        else
            snprintf(val, sizeof val, "?");
        if ((rc = mock_knob_set(m, it->string, val, err, errlen)) != 0)
            goto out;
    }
out:
    cJSON_Delete(root);
    return rc;
}

int mock_knobs_json(const dev_mock_t *m, buf_t *out)
{
    int rc = buf_append_str(out, "{");
    for (size_t i = 0; i < BASE_ARRAY_LEN(knob_defs) && rc == 0; i++) {
        const knob_def_t *d = &knob_defs[i];
        const char *field = (const char *)&m->knobs + d->off;
        const char *sep = i ? "," : "";
        if (d->type == KNOB_INT)
            rc = buf_printf(out, "%s\"%s\":%lld", sep, d->name,
                            (long long)*(const int64_t *)(const void *)field);
        else if (d->type == KNOB_DBL)
            rc = buf_printf(out, "%s\"%s\":%.17g", sep, d->name, *(const double *)(const void *)field);
        else
            rc = buf_printf(out, "%s\"%s\":%s", sep, d->name, *(const bool *)field ? "true" : "false");
    }
    return rc ? rc : buf_append_str(out, "}");
}

static const char *const endpoint_names[EP_COUNT] = {"chat_completions", "messages", "stats",
                                                     "stats_reset",      "control",  "other"};

int mock_stats_json(const dev_mock_t *m, buf_t *out)
{
    const mock_stats_t *s = &m->stats;
    int rc = buf_printf(out,
                        "{\"name\":\"%s\",\"type\":\"%s\",\"requests\":{\"total\":%llu,\"streamed\":%llu,"
                        "\"by_endpoint\":{",
                        m->name, dev_mock_type_name(m->type), (unsigned long long)s->requests,
                        (unsigned long long)s->streamed);
    for (int i = 0; i < EP_COUNT && rc == 0; i++)
        rc = buf_printf(out, "%s\"%s\":%llu", i ? "," : "", endpoint_names[i],
                        (unsigned long long)s->by_endpoint[i]);
    rc = rc ? rc : buf_append_str(out, "}},\"responses\":{");
    for (int i = 0, n = 0; i < MOCK_MAX_STATUSES && rc == 0; i++)
        if (s->statuses[i].status)
            rc = buf_printf(out, "%s\"%d\":%llu", n++ ? "," : "", s->statuses[i].status,
                            (unsigned long long)s->statuses[i].count);
    rc =
        rc ? rc
           : buf_printf(
                 out,
                 "},\"in_flight\":{\"now\":%lld,\"peak\":%lld},\"client_disconnects\":%llu,"
                 "\"cut_streams\":%llu,\"bytes_out\":%llu,\"connections\":{\"open\":%lld,\"total\":%llu},"
                 "\"h2_connections_total\":%llu,\"h2_streams_total\":%llu,"
                 "\"first_request_ms\":%lld,\"last_request_ms\":%lld,\"peak_rps\":%llu,"
                 "\"traceparents\":%llu,\"last_traceparent\":\"%s\",\"last_tracestate\":\"%s\",\"knobs\":",
                 (long long)s->in_flight, (long long)s->in_flight_peak, (unsigned long long)s->disconnects,
                 (unsigned long long)s->cut, (unsigned long long)s->bytes_out, (long long)s->connections_open,
                 (unsigned long long)s->connections_total, (unsigned long long)s->h2_connections_total,
                 (unsigned long long)s->h2_streams_total, (long long)s->first_request_ms,
                 (long long)s->last_request_ms, (unsigned long long)s->rps_peak,
                 (unsigned long long)s->traceparents, s->last_traceparent, s->last_tracestate);
    rc = rc ? rc : mock_knobs_json(m, out);
    return rc ? rc : buf_append_str(out, "}");
}

void mock_stats_reset(dev_mock_t *m)
{
    int64_t in_flight = m->stats.in_flight, open = m->stats.connections_open;
    memset(&m->stats, 0, sizeof m->stats);
    m->stats.in_flight = m->stats.in_flight_peak = in_flight;
    m->stats.connections_open = open;
}

void mock_stats_status(dev_mock_t *m, int status)
{
    for (int i = 0; i < MOCK_MAX_STATUSES; i++) {
        if (m->stats.statuses[i].status == status || m->stats.statuses[i].status == 0) {
            m->stats.statuses[i].status = status;
            m->stats.statuses[i].count++;
            return;
        }
    }
}
