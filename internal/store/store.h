/* store — parley's only Redis client: the idempotency check and history load of a job in one round
 * trip, and the history append plus stored final reply in one atomic step (CONTRACT.md §3: a Lua
 * script each, run with EVALSHA, atomic as MULTI/EXEC and one command instead of six); and one
 * generic primitive, store_eval, that runs another module's Lua script atomically (limits' fleet-wide
 * rate budgets).
 * It owns one hiredis async connection on the caller's libuv loop, its handshake (AUTH, SELECT,
 * CLIENT SETNAME), reconnection with jittered exponential backoff, and a deadline per command. For
 * rediss:// (hiredis 0.14 has no TLS) hiredis talks to an in-process relay on 127.0.0.1 that speaks
 * TLS to Redis (peer and host name verified, TLS 1.2+; see tls_bridge.h).
 * It never blocks the loop (names are resolved with uv_getaddrinfo), never queues commands while
 * Redis is down (they fail fast with STORE_ERR_UNAVAILABLE; the caller waits for on_state(true)),
 * never parses the JSON it stores, and never puts the Redis password in a log line or message.
 *
 * Keys: P:{conv}:history (LIST of JSON entries, oldest first) and P:{conv}:job:JOB_ID (STRING, the
 * final reply), P = key_prefix; ids are binary safe.
 *
 * Requests: each store_job_* call returns 0 when the request was sent, and then its callback runs
 * exactly once, later, from the loop (never from inside the call); or it returns a negative
 * store_err_t and the callback is never called. Everything a callback receives (result, entries,
 * errmsg) is valid only while the callback runs. A request that failed with STORE_ERR_TIMEOUT or
 * STORE_ERR_UNAVAILABLE may still have been applied by Redis: since the history append and the job
 * key are written in one transaction, a caller that retries a commit should first call
 * store_job_begin — if the stored reply is there, the commit went through. */
#ifndef PARLEY_STORE_H
#define PARLEY_STORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <uv.h>

typedef enum {
    STORE_OK = 0,
    STORE_ERR_UNAVAILABLE = -1, /* not connected, the connection dropped before the reply, or Redis
                                   said READONLY/LOADING/MASTERDOWN/TRYAGAIN/CLUSTERDOWN (failover or
                                   restart: the store then drops the connection and reconnects) */
    STORE_ERR_TIMEOUT = -2,     /* no reply within command_timeout_ms (the command may still run) */
    STORE_ERR_REDIS = -3,       /* Redis answered an error (WRONGTYPE, OOM, ...); for a refused
                                   transaction errmsg is the command's error, not just EXECABORT */
    STORE_ERR_PROTOCOL = -4,    /* a reply of an unexpected shape */
    STORE_ERR_INVALID = -5,     /* bad argument (empty or too long id, ...) */
    STORE_ERR_NOMEM = -6,
    STORE_ERR_CLOSED = -7, /* store_close was called before the reply */
} store_err_t;

/* Bounds on what the store accepts for one key part. */
#define STORE_MAX_ID_BYTES     1024
#define STORE_MAX_PREFIX_BYTES 256

/* A byte string that is not necessarily NUL-terminated (nor NUL-free). */
typedef struct {
    const char *data;
    size_t len;
} store_bytes_t;

#define STORE_BYTES(p, n) ((store_bytes_t){.data = (p), .len = (n)})

typedef struct {
    const char *url;              /* see store_url_parse; holds the password: never logged */
    const char *key_prefix;       /* P; default "parley" */
    const char *client_name;      /* CLIENT SETNAME; NULL or "" sends none */
    const char *ca_file;          /* rediss://: the CA bundle the server's certificate must chain to; NULL
                                     or "" = the system store. Read once by store_new */
    int64_t idempotency_ttl_s;    /* job key TTL; 0 = no expiry */
    int64_t history_max_messages; /* entries loaded (newest N); 0 = load none */
    int64_t history_max_len;      /* entries kept after an append (>= 1 when append) */
    int64_t history_ttl_s;        /* refreshed on every append; 0 = leave the TTL alone */
    bool history_append;          /* false: a commit only stores the reply */
    int64_t max_entry_bytes;      /* a loaded entry over this is skipped and counted */
    int64_t connect_timeout_ms;   /* connect + handshake */
    int64_t command_timeout_ms;   /* per request */
    int64_t stall_timeout_ms;     /* no reply for this long while one is owed: drop the connection and
                                     reconnect (catches a black-holed peer); 0 = 3 x command_timeout_ms,
                                     negative = never */
    int64_t backoff_min_ms;       /* reconnect delay, doubled per failure up to backoff_max_ms, jittered */
    int64_t backoff_max_ms;
    void (*on_state)(void *ctx, bool up); /* Redis became usable (true) or was lost (false) */
    void *ctx;
} store_options_t;

/* Fills o with parley's defaults (CONTRACT.md §4); the caller then sets url and what it overrides. */
void store_options_init(store_options_t *o);

typedef struct store store_t;

/* Validates the options, parses the URL and starts connecting (a host name is resolved with
 * uv_getaddrinfo on every attempt, its first IPv4 address preferred); the store starts down and
 * calls on_state(true) when the first handshake completes. NULL (err filled) on a bad option or URL. */
store_t *store_new(uv_loop_t *loop, const store_options_t *opts, char *err, size_t errlen);

/* Drops the connection, completes every request still owed a reply with STORE_ERR_CLOSED (those
 * callbacks may run before store_close returns), closes the store's handles and calls on_closed
 * (from the loop) once the store is freed. May be called from any store callback, on_state
 * included. No other store_* call is allowed afterwards. */
void store_close(store_t *s, void (*on_closed)(void *ctx), void *ctx);

bool store_is_up(const store_t *s);
/* Why the last connection attempt or connection failed ("" if none); never holds the password. */
const char *store_last_error(const store_t *s);
const char *store_strerror(int err);

/* What store_job_begin learnt. */
typedef struct {
    int err;                      /* STORE_OK or a store_err_t */
    const char *errmsg;           /* detail when err != STORE_OK */
    bool has_reply;               /* P:{conv}:job:JOB_ID exists */
    store_bytes_t reply;          /* its bytes when has_reply */
    const store_bytes_t *entries; /* the newest history_max_messages entries, oldest first */
    size_t n_entries;
    size_t n_skipped; /* entries left out: over max_entry_bytes, or not strings */
} store_begin_result_t;

typedef void (*store_begin_cb)(void *ctx, const store_begin_result_t *res);
/* err is STORE_OK or a store_err_t; errmsg is "" on success. */
typedef void (*store_done_cb)(void *ctx, int err, const char *errmsg);

#define STORE_BEGIN_NO_HISTORY 1u /* the job carries inline history: only check the job key */

/* One round trip: GET the job key and (unless STORE_BEGIN_NO_HISTORY or history_max_messages is 0)
 * LRANGE the newest history entries, in one script (EVALSHA) so both come from one instant; without
 * history a plain GET. */
int store_job_begin(store_t *s, store_bytes_t conv, store_bytes_t job_id, unsigned flags, store_begin_cb cb,
                    void *ctx);

/* One script (EVALSHA), atomic: RPUSH history user assistant; LTRIM to history_max_len; EXPIRE
 * history_ttl_s (unless 0); SET the job key to reply [EX idempotency_ttl_s]. Without history_append
 * only the SET (a plain SET). Any failed command makes the whole request fail (STORE_ERR_REDIS with
 * that command's error, or UNAVAILABLE as above). As with MULTI/EXEC there is no roll back: after a
 * run-time error (WRONGTYPE history) the other commands, the SET included, did run; a write refused
 * at once (OOM, READONLY) means none ran. A NOSCRIPT answer (Redis restarted, SCRIPT FLUSH) is
 * answered by sending the script body once more, invisibly to the caller. */
int store_job_commit(store_t *s, store_bytes_t conv, store_bytes_t job_id, store_bytes_t user_entry,
                     store_bytes_t assistant_entry, store_bytes_t reply, store_done_cb cb, void *ctx);

/* Only SET the job key to reply EX idempotency_ttl_s: for finals without a history turn. parley
 * stores `error` and `expired` finals too, so a redelivered job answers the same, except
 * `history_unavailable` (Redis was the problem; a redelivery should try again) — that choice is the
 * engine's, this call stores whatever it is given. */
int store_job_put_reply(store_t *s, store_bytes_t conv, store_bytes_t job_id, store_bytes_t reply,
                        store_done_cb cb, void *ctx);

/* ---- scripts ------------------------------------------------------------------------------ */

/* Bounds of one store_eval call. */
#define STORE_MAX_SCRIPT_BYTES (64 * 1024)
#define STORE_EVAL_MAX_KEYS    8
#define STORE_EVAL_MAX_ARGS    16
#define STORE_EVAL_MAX_BYTES   (16 * 1024) /* keys and args together */
#define STORE_EVAL_MAX_INTS    8           /* integers in the reply */

/* A Lua script known to the store; owned by the store (freed by store_close). */
typedef struct store_script store_script_t;

/* Registers a script (the body is copied; registering the same body again returns the same handle).
 * The store loads it with SCRIPT LOAD once per connection, on the first store_eval after connecting,
 * and runs it with EVALSHA afterwards. NULL when the body is empty, over STORE_MAX_SCRIPT_BYTES, or
 * memory is short. */
store_script_t *store_script_add(store_t *s, const char *body);

/* What a script answered: an integer (n_ints = 1) or an array of at most STORE_EVAL_MAX_INTS
 * integers. Anything else is STORE_ERR_PROTOCOL; a script error is STORE_ERR_REDIS with its message. */
typedef struct {
    int err;               /* STORE_OK or a store_err_t */
    const char *errmsg;    /* "" on success */
    const long long *ints; /* valid while the callback runs */
    size_t n_ints;
} store_eval_result_t;

typedef void (*store_eval_cb)(void *ctx, const store_eval_result_t *res);

/* Runs script with keys (used verbatim: the caller adds key_prefix, see store_key_prefix) and args,
 * all binary safe: EVALSHA, or "SCRIPT LOAD + EVAL" on the first call of a connection, and EVAL again
 * if Redis answers NOSCRIPT (its script cache was flushed). timeout_ms bounds this request (0 =
 * command_timeout_ms): a caller that must decide quickly passes a small one. Same callback contract
 * as the store_job_* calls: 0 and cb exactly once later, or a negative store_err_t at once (down,
 * closed, too many or too large keys/args). */
int store_eval(store_t *s, store_script_t *script, const store_bytes_t *keys, size_t n_keys,
               const store_bytes_t *args, size_t n_args, int64_t timeout_ms, store_eval_cb cb, void *ctx);

/* The key prefix P of the options (for callers building their own keys under it). */
const char *store_key_prefix(const store_t *s);

typedef struct {
    uint64_t requests;         /* store_job_* and store_eval requests sent */
    uint64_t commands;         /* Redis commands sent for them (SCRIPT LOAD and NOSCRIPT resends count) */
    uint64_t errors;           /* requests that completed with an error other than a timeout */
    uint64_t timeouts;         /* requests that completed with STORE_ERR_TIMEOUT */
    uint64_t late_replies;     /* replies that arrived after their request timed out */
    uint64_t rejected;         /* requests refused at once (down, bad argument) */
    uint64_t connects;         /* handshakes completed */
    uint64_t reconnects;       /* handshakes completed after the first */
    uint64_t connect_failures; /* attempts that did not reach a working connection */
    uint64_t disconnects;      /* working connections lost */
    uint64_t in_flight;        /* requests owed a reply now */
    bool up;
} store_stats_t;

void store_stats(const store_t *s, store_stats_t *out);

/* A parsed redis.url: redis://[user[:password]@]host[:port][/db] (user and password
 * percent-decoded; host may be [v6]), rediss://... (the same, over TLS),
 * unix://[user[:password]@]/path[?db=N]. */
typedef struct {
    bool is_unix;
    bool tls;   /* rediss:// */
    char *host; /* or the socket path */
    int port;
    char *user;     /* NULL when absent */
    char *password; /* NULL when absent */
    int db;
} store_url_t;

/* 0, or -1 with err filled (never with the password in it). Free with store_url_free. */
int store_url_parse(const char *url, store_url_t *out, char *err, size_t errlen);
void store_url_free(store_url_t *u);

#endif
