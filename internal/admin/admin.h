/* admin — the operations HTTP endpoint (libmicrohttpd, on its own thread): GET /metrics
 * (Prometheus text, or OpenMetrics when Accept asks for it), /healthz (the loop's heartbeat is
 * fresh), /readyz (every readiness check passes; the JSON body names the failing ones) and
 * /status (a JSON snapshot the loop publishes). Anything else is 404.
 * It never touches loop state: the loop writes heartbeats and checks through atomics and
 * admin_publish_status(); the admin thread only reads them. */
#ifndef PARLEY_ADMIN_H
#define PARLEY_ADMIN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct admin admin_t;

typedef enum {
    ADMIN_CHECK_ASSIGNED = 0, /* the consumer holds an assignment in its group */
    ADMIN_CHECK_REDIS,        /* Redis is reachable */
    ADMIN_CHECK_PROVIDERS,    /* at least one provider is not open-circuited */
    ADMIN_N_CHECKS
} admin_check_t;

typedef struct {
    const char *listen;       /* "host:port" */
    int64_t heartbeat_max_ms; /* /healthz fails when the loop is silent longer (default 5000) */
} admin_options_t;

/* Starts listening; NULL with err filled on failure (e.g. port in use). */
admin_t *admin_start(const admin_options_t *opts, char *err, size_t errlen);
void admin_stop(admin_t *a);

/* Loop side: cheap, lock-free. */
void admin_heartbeat(admin_t *a);
void admin_set_check(admin_t *a, admin_check_t check, bool ok);
/* Replaces the /status document (JSON text, copied). */
void admin_publish_status(admin_t *a, const char *json);
/* The port actually bound (useful with port 0). */
int admin_port(const admin_t *a);

#endif
