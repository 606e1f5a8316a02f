/* store.c — one hiredis async connection on the libuv loop: handshake, reconnect with backoff,
 * per-request deadlines, the job begin / commit / put-reply requests of CONTRACT.md §3, and store_eval.
 *
 * Ownership of a request: a store_req_t is taken from a free list when a request is sent and is
 * owned by the hiredis callbacks of its commands (refs counts them: one, or SCRIPT LOAD and EVAL); the
 * reply to the last command completes the request, an earlier one only notes the first error. If the request
 * times out first, its user callback runs with STORE_ERR_TIMEOUT and the record is marked; the late replies
 * (or the NULL replies hiredis gives when the connection goes) then only return it to the free list.
 *
 * hiredis is never freed from inside its connect or disconnect callbacks (it frees itself there);
 * from reply callbacks redisAsyncFree is safe (hiredis defers it until the callback returns).
 *
 * Scripts (store_eval's and the store's own begin and commit scripts, which replace MULTI/EXEC: one
 * command per request instead of four or six): each connection has a generation number; a script
 * records the generation in which its SCRIPT LOAD answered. An eval keeps a copy of its argv (in a
 * buffer that stays with the request record for reuse) so that a NOSCRIPT answer can be sent again as
 * EVAL from the reply callback (the request's hiredis reference passes to the new command). */
#include "store/store.h"

#include <arpa/inet.h>
#include <limits.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include <hiredis/async.h>
#include <hiredis/hiredis.h>

#include "base/base.h"
#include "log/log.h"
#include "store/tls_bridge.h"

#define STORE_KEY_MAX      (STORE_MAX_PREFIX_BYTES + STORE_MAX_ID_BYTES * 2 + 32)
#define STORE_MAX_MESSAGES 100000
#define STORE_MAX_DB       65535
#define STORE_ERR_MAX      256
#define STORE_LAST_ERR_MAX 512
#define STORE_MAX_ARGS     8
#define STORE_FREE_REQS    256  /* idle request structures kept for reuse */
#define STORE_KEEP_EVAL    8192 /* an idle request keeps an eval buffer up to this size */

typedef enum { CONN_WAITING, CONN_RESOLVING, CONN_CONNECTING, CONN_UP } conn_state_t;

/* What the single callback of a request expects as its reply. */
typedef enum { REQ_BEGIN_SCRIPT, REQ_BEGIN_GET, REQ_COMMIT_SCRIPT, REQ_SET, REQ_EVAL } req_kind_t;

/* The begin script: the job key and the newest history entries, read at one instant: a 2-element array
 * whose elements may be errors (pcall). The entries come as one string, each "LEN:" then its bytes
 * (oldest first), so the reply is two strings however long the history: no reply object per entry. */
static const char begin_lua[] = "local l = redis.pcall('LRANGE', KEYS[2], ARGV[1], -1)\n"
                                "if l.err == nil then\n"
                                "  for i, e in ipairs(l) do l[i] = #e .. ':' .. e end\n"
                                "  l = table.concat(l)\n"
                                "end\n"
                                "return {redis.pcall('GET', KEYS[1]), l}";

/* The commit script (KEYS: history, job key; ARGV: user, assistant, -max_len, history TTL, reply, job
 * TTL; a TTL of "0" is not set). It keeps MULTI/EXEC's outcome: an error on the first write (OOM,
 * READONLY: what MULTI refused while queueing) runs nothing; a WRONGTYPE history is a run-time error,
 * so the other commands, the SET included, still run. Answers 1, or the first error. */
static const char commit_lua[] = "local function failed(r) return type(r) == 'table' and r.err ~= nil end\n"
                                 "local r = redis.pcall('RPUSH', KEYS[1], ARGV[1], ARGV[2])\n"
                                 "if failed(r) and string.sub(r.err, 1, 9) ~= 'WRONGTYPE' then return r end\n"
                                 "local first = failed(r) and r or nil\n"
                                 "local function run(...)\n"
                                 "  local x = redis.pcall(...)\n"
                                 "  if first == nil and failed(x) then first = x end\n"
                                 "end\n"
                                 "run('LTRIM', KEYS[1], ARGV[3], -1)\n"
                                 "if ARGV[4] ~= '0' then run('EXPIRE', KEYS[1], ARGV[4]) end\n"
                                 "if ARGV[6] == '0' then run('SET', KEYS[2], ARGV[5])\n"
                                 "else run('SET', KEYS[2], ARGV[5], 'EX', ARGV[6]) end\n"
                                 "return first or 1\n";

/* Handshake steps, passed to the handshake callback as its privdata. */
typedef enum { HS_AUTH = 1, HS_SELECT, HS_SETNAME, HS_PING } hs_step_t;
static const char *const hs_names[] = {"", "AUTH", "SELECT", "CLIENT SETNAME", "PING"};

struct store_script {
    store_script_t *next;
    char *body;
    size_t len;
    char sha[41];
    uint64_t loaded_gen;  /* connection generation in which SCRIPT LOAD answered (0: none) */
    uint64_t loading_gen; /* generation in which a SCRIPT LOAD was sent */
};

typedef struct store_req store_req_t;
struct store_req {
    store_t *s;
    store_req_t *prev, *next; /* in the awaited list, by deadline; next also links the free list */
    uint64_t deadline_ms;
    unsigned refs;  /* hiredis callbacks still holding this record */
    bool timed_out; /* the user was told STORE_ERR_TIMEOUT */
    bool abandoned; /* the pipeline could not be sent whole; the user was told at once */
    char first_error[160];
    req_kind_t kind;
    store_begin_cb begin_cb;
    store_done_cb done_cb;
    store_eval_cb eval_cb;
    void *ctx;
    /* scripts (REQ_EVAL and the job scripts) only */
    store_script_t *script;
    uint64_t gen;     /* the connection it was sent on */
    unsigned replies; /* replies seen so far */
    bool eval_load;   /* a SCRIPT LOAD went first */
    bool eval_resent; /* NOSCRIPT was answered by sending EVAL */
    void *eval_buf;   /* owns eval_argv, eval_argvlen and the copied keys and args; kept for reuse */
    size_t eval_cap;  /* its size */
    const char **eval_argv;
    size_t *eval_argvlen;
    int eval_argc;
};

/* The libuv side of one hiredis connection (hiredis' own 0.14 adapter ignores poll errors, so a
 * refused connect or a reset would never reach hiredis). */
typedef struct {
    store_t *s;
    redisAsyncContext *ac; /* NULL once hiredis cleaned up */
    uv_poll_t poll;
    int events;
} store_poll_t;

struct store {
    uv_loop_t *loop;
    store_options_t o;
    char *prefix;
    size_t prefix_len;
    char *client_name;
    store_url_t url;
    char endpoint[300]; /* host:port or socket path, for messages */

    redisAsyncContext *ac;
    store_tls_ctx_t *tls;       /* rediss:// only */
    store_tls_bridge_t *bridge; /* the TLS relay of the current connection (rediss://) */
    conn_state_t state;
    uv_timer_t conn_timer; /* the backoff wait, then the connect deadline */
    uv_timer_t req_timer;  /* the earliest request deadline, or the stall check */
    uint64_t req_timer_due;
    uv_getaddrinfo_t gai;
    bool gai_active;
    bool drop_pending; /* a pipeline was cut short: drop the connection from the timer */
    int open_handles;
    unsigned attempt;
    uint64_t rng;
    bool ever_up;
    int64_t stall_ms;

    store_req_t *head, *tail; /* awaited requests, earliest deadline first */
    store_req_t *free_reqs;
    size_t n_free_reqs; /* at most STORE_FREE_REQS kept: a burst's requests are not held for good */
    size_t outstanding; /* requests sent whole and not completed by hiredis, timed out ones included */
    uint64_t last_progress_ms;

    store_bytes_t *entries;
    size_t entries_cap;
    store_script_t *scripts;
    store_script_t *begin_script, *commit_script;
    /* the numeric arguments of the job requests, formatted once */
    char from_arg[24];     /* -history_max_messages */
    char trim_arg[24];     /* -history_max_len */
    char hist_ttl_arg[24]; /* history_ttl_s */
    char job_ttl_arg[24];  /* idempotency_ttl_s */
    uint64_t conn_gen;     /* incremented per hiredis connection opened */
    char last_error[STORE_LAST_ERR_MAX];
    store_stats_t st;

    bool closing;
    void (*on_closed)(void *ctx);
    void *closed_ctx;
};

static void conn_start(store_t *s);
static void conn_down(store_t *s, const char *why, bool drop);
static void req_timer_cb(uv_timer_t *t);
static void req_reply_cb(redisAsyncContext *ac, void *reply, void *priv);
static void backoff_cb(uv_timer_t *t) { conn_start(t->data); }

const char *store_strerror(int err)
{
    switch (err) {
    case STORE_OK:
        return "ok";
    case STORE_ERR_UNAVAILABLE:
        return "redis unavailable";
    case STORE_ERR_TIMEOUT:
        return "redis command timed out";
    case STORE_ERR_REDIS:
        return "redis error";
    case STORE_ERR_PROTOCOL:
        return "unexpected redis reply";
    case STORE_ERR_INVALID:
        return "invalid argument";
    case STORE_ERR_NOMEM:
        return "out of memory";
    case STORE_ERR_CLOSED:
        return "store closed";
    default:
        return "unknown store error";
    }
}

void store_options_init(store_options_t *o)
{
    *o = (store_options_t){
        .key_prefix = "parley",
        .client_name = "parley",
        .idempotency_ttl_s = 86400,
        .history_max_messages = 20,
        .history_max_len = 200,
        .history_ttl_s = 604800,
        .history_append = true,
        .max_entry_bytes = 64 * 1024,
        .connect_timeout_ms = 2000,
        .command_timeout_ms = 5000,
        .backoff_min_ms = 100,
        .backoff_max_ms = 5000,
    };
}

/* ---- URL ---------------------------------------------------------------------------------- */

static int hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* Percent-decodes s[0..n) into a new string; NULL when malformed or out of memory. */
static char *pct_decode(const char *s, size_t n)
{
    char *out = base_malloc(n + 1);
    size_t j = 0;
    if (!out)
        return NULL;
    for (size_t i = 0; i < n; i++) {
        if (s[i] != '%') {
            out[j++] = s[i];
            continue;
        }
        int hi = i + 2 < n ? hexval(s[i + 1]) : -1, lo = i + 2 < n ? hexval(s[i + 2]) : -1;
        if (hi < 0 || lo < 0 || (hi == 0 && lo == 0)) {
            free(out);
            return NULL;
        }
        out[j++] = (char)(hi * 16 + lo);
        i += 2;
    }
    out[j] = '\0';
    return out;
}

/* Parses a decimal in [lo, hi] from s[0..n); -1 when it is not one. */
static long parse_num(const char *s, size_t n, long lo, long hi)
{
    long v = 0;
    if (n == 0 || n > 9)
        return -1;
    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return -1;
        v = v * 10 + (s[i] - '0');
    }
    return v >= lo && v <= hi ? v : -1;
}

/* Splits "user:password" (percent-encoded) into u->user / u->password. */
static int parse_userinfo(const char *s, size_t n, store_url_t *u, char *err, size_t errlen)
{
    const char *colon = memchr(s, ':', n);
    size_t ulen = colon ? (size_t)(colon - s) : n;
    if (ulen > 0 && !(u->user = pct_decode(s, ulen)))
        goto bad;
    if (colon && n - ulen - 1 > 0 && !(u->password = pct_decode(colon + 1, n - ulen - 1)))
        goto bad;
    if (u->user && !u->password) {
        snprintf(err, errlen, "redis url: a user needs a password");
        return -1;
    }
    return 0;
bad:
    snprintf(err, errlen, "redis url: bad percent-encoding in user or password");
    return -1;
}

/* Reads "?db=N" (the only query parameter) into u->db. */
static int parse_query(const char *q, store_url_t *u, char *err, size_t errlen)
{
    if (!*q)
        return 0;
    long db = strncmp(q, "db=", 3) == 0 ? parse_num(q + 3, strlen(q + 3), 0, STORE_MAX_DB) : -2;
    if (db == -2) {
        snprintf(err, errlen, "redis url: the only query parameter is db=N");
        return -1;
    }
    if (db < 0) {
        snprintf(err, errlen, "redis url: db must be 0..%d", STORE_MAX_DB);
        return -1;
    }
    u->db = (int)db;
    return 0;
}

/* Parses "host[:port][/db][?db=N]" (host may be [v6]) into u. */
static int parse_tcp(const char *s, store_url_t *u, char *err, size_t errlen)
{
    const char *h = s, *end;
    size_t hlen;
    if (*s == '[') {
        end = strchr(s, ']');
        if (!end) {
            snprintf(err, errlen, "redis url: unterminated [ in host");
            return -1;
        }
        h = s + 1;
        hlen = (size_t)(end - h);
        end++;
    } else {
        end = s + strcspn(s, ":/?");
        hlen = (size_t)(end - s);
    }
    if (hlen == 0 || hlen > 253) {
        snprintf(err, errlen, "redis url: missing or too long host");
        return -1;
    }
    if (!(u->host = base_strndup(h, hlen)))
        goto nomem;
    u->port = 6379;
    if (*end == ':') {
        size_t plen = strcspn(end + 1, "/?");
        long port = parse_num(end + 1, plen, 1, 65535);
        if (port < 0) {
            snprintf(err, errlen, "redis url: port must be 1..65535");
            return -1;
        }
        u->port = (int)port;
        end += 1 + plen;
    }
    if (*end == '/') {
        size_t dlen = strcspn(end + 1, "?");
        long db = dlen ? parse_num(end + 1, dlen, 0, STORE_MAX_DB) : 0;
        if (db < 0) {
            snprintf(err, errlen, "redis url: db must be 0..%d", STORE_MAX_DB);
            return -1;
        }
        u->db = (int)db;
        end += 1 + dlen;
    }
    if (*end == '?')
        return parse_query(end + 1, u, err, errlen);
    return 0;
nomem:
    snprintf(err, errlen, "redis url: out of memory");
    return -1;
}

/* Parses "/path[?db=N]" into u. */
static int parse_unix(const char *s, store_url_t *u, char *err, size_t errlen)
{
    size_t plen = strcspn(s, "?");
    if (plen < 2 || s[0] != '/' || plen > 107) {
        snprintf(err, errlen, "redis url: unix:// needs an absolute socket path of at most 107 bytes");
        return -1;
    }
    if (!(u->host = base_strndup(s, plen))) {
        snprintf(err, errlen, "redis url: out of memory");
        return -1;
    }
    u->is_unix = true;
    return s[plen] == '?' ? parse_query(s + plen + 1, u, err, errlen) : 0;
}

int store_url_parse(const char *url, store_url_t *out, char *err, size_t errlen)
{
    static const char redis_s[] = "redis://", rediss_s[] = "rediss://", unix_s[] = "unix://";
    int rc = -1;
    *out = (store_url_t){0};
    if (!url || !*url) {
        snprintf(err, errlen, "redis url: empty");
        goto out;
    }
    out->tls = strncmp(url, rediss_s, sizeof rediss_s - 1) == 0;
    bool is_unix = strncmp(url, unix_s, sizeof unix_s - 1) == 0;
    if (!is_unix && !out->tls && strncmp(url, redis_s, sizeof redis_s - 1) != 0) {
        snprintf(err, errlen, "redis url: scheme must be redis://, rediss:// or unix://");
        goto out;
    }
    size_t scheme_len = is_unix ? sizeof unix_s - 1 : sizeof redis_s - 1;
    const char *rest = url + scheme_len + (out->tls ? 1 : 0); /* rediss:// is redis:// plus one 's' */
    const char *at = is_unix ? (*rest == '/' ? NULL : strstr(rest, "@/")) : strrchr(rest, '@');
    if (at) {
        if (parse_userinfo(rest, (size_t)(at - rest), out, err, errlen) < 0)
            goto out;
        rest = at + 1;
    }
    rc = is_unix ? parse_unix(rest, out, err, errlen) : parse_tcp(rest, out, err, errlen);
out:
    if (rc < 0)
        store_url_free(out);
    return rc;
}

void store_url_free(store_url_t *u)
{
    free(u->host);
    free(u->user);
    if (u->password) {
        memset(u->password, 0, strlen(u->password));
        free(u->password);
    }
    *u = (store_url_t){0};
}

/* ---- libuv adapter ------------------------------------------------------------------------ */

static void poll_cb(uv_poll_t *h, int status, int events)
{
    store_poll_t *p = h->data;
    int ev = status < 0 ? p->events : events; /* on a poll error, let hiredis read the socket error */
    if (p->ac && (ev & UV_READABLE))
        redisAsyncHandleRead(p->ac);
    if (p->ac && (ev & UV_WRITABLE))
        redisAsyncHandleWrite(p->ac);
}

/* hiredis asks for write interest once per command: only a change reaches libuv (each uv_poll_start
 * is two epoll_ctl calls). */
static void poll_set(store_poll_t *p, int events)
{
    if (events == p->events && (events == 0) == !uv_is_active((uv_handle_t *)&p->poll))
        return;
    p->events = events;
    if (events)
        uv_poll_start(&p->poll, events, poll_cb);
    else
        uv_poll_stop(&p->poll);
}

static void ev_add_read(void *d) { poll_set(d, ((store_poll_t *)d)->events | UV_READABLE); }
static void ev_del_read(void *d) { poll_set(d, ((store_poll_t *)d)->events & ~UV_READABLE); }
static void ev_add_write(void *d) { poll_set(d, ((store_poll_t *)d)->events | UV_WRITABLE); }
static void ev_del_write(void *d) { poll_set(d, ((store_poll_t *)d)->events & ~UV_WRITABLE); }

static void maybe_finish_close(store_t *s);

static void poll_closed(uv_handle_t *h)
{
    store_poll_t *p = h->data;
    store_t *s = p->s;
    free(p);
    s->open_handles--;
    maybe_finish_close(s);
}

static void ev_cleanup(void *d)
{
    store_poll_t *p = d;
    p->ac = NULL;
    if (!uv_is_closing((uv_handle_t *)&p->poll))
        uv_close((uv_handle_t *)&p->poll, poll_closed);
}

static int poll_attach(store_t *s, redisAsyncContext *ac)
{
    store_poll_t *p = base_calloc(1, sizeof *p);
    if (!p)
        return -1;
    if (uv_poll_init(s->loop, &p->poll, ac->c.fd) != 0) {
        free(p);
        return -1;
    }
    p->s = s;
    p->ac = ac;
    p->poll.data = p;
    ac->ev.data = p;
    ac->ev.addRead = ev_add_read;
    ac->ev.delRead = ev_del_read;
    ac->ev.addWrite = ev_add_write;
    ac->ev.delWrite = ev_del_write;
    ac->ev.cleanup = ev_cleanup;
    s->open_handles++;
    return 0;
}

/* ---- connection --------------------------------------------------------------------------- */

/* The next reconnect delay: backoff_min doubled per failed attempt, capped, with equal jitter. */
static uint64_t backoff_ms(store_t *s)
{
    uint64_t d = (uint64_t)s->o.backoff_min_ms << (s->attempt < 20 ? s->attempt : 20);
    if (d > (uint64_t)s->o.backoff_max_ms)
        d = (uint64_t)s->o.backoff_max_ms;
    s->rng ^= s->rng << 13;
    s->rng ^= s->rng >> 7;
    s->rng ^= s->rng << 17;
    if (s->attempt < 32)
        s->attempt++;
    return d / 2 + s->rng % (d / 2 + 1);
}

static void bridge_freed(void *ctx)
{
    store_t *s = ctx;
    s->open_handles--;
    maybe_finish_close(s);
}

/* Closes the TLS relay of the current connection, if any. */
static void bridge_drop(store_t *s)
{
    store_tls_bridge_t *b = s->bridge;
    s->bridge = NULL;
    if (b)
        store_tls_bridge_free(b, bridge_freed, s);
}

/* The TLS relay failed (handshake, certificate, Redis gone): the connection fails with its reason. */
static void bridge_error(void *ctx, const char *why)
{
    store_t *s = ctx;
    if (s->bridge && !s->closing)
        conn_down(s, why, true);
}

/* The connection is gone or never came up: record why, schedule the next attempt, tell the owner.
 * drop: free the hiredis context here (false when hiredis is freeing it itself). */
static void conn_down(store_t *s, const char *why, bool drop)
{
    redisAsyncContext *ac = s->ac;
    bool was_up = s->state == CONN_UP;
    s->ac = NULL;
    bridge_drop(s);
    s->state = CONN_WAITING;
    s->st.up = false;
    snprintf(s->last_error, sizeof s->last_error, "redis %.200s: %.250s", s->endpoint, why);
    if (was_up) {
        s->st.disconnects++;
        log_warn("redis connection lost", LOG_S("error", s->last_error));
    } else {
        s->st.connect_failures++;
        if (s->attempt == 0)
            log_warn("redis connect failed", LOG_S("error", s->last_error));
        else
            log_debug("redis connect failed", LOG_S("error", s->last_error), LOG_I("attempt", s->attempt));
    }
    if (s->gai_active)
        uv_cancel((uv_req_t *)&s->gai);
    if (!s->closing)
        uv_timer_start(&s->conn_timer, backoff_cb, backoff_ms(s), 0);
    if (was_up && !s->closing && s->o.on_state)
        s->o.on_state(s->o.ctx, false);
    if (drop && ac)
        redisAsyncFree(ac); /* the requests still owed a reply complete now (UNAVAILABLE/CLOSED) */
}

static void conn_up(store_t *s)
{
    uv_timer_stop(&s->conn_timer);
    s->state = CONN_UP;
    s->st.up = true;
    s->attempt = 0;
    s->last_error[0] = '\0';
    s->st.connects++;
    if (s->ever_up)
        s->st.reconnects++;
    s->ever_up = true;
    log_info("redis connected", LOG_S("endpoint", s->endpoint));
    if (s->o.on_state)
        s->o.on_state(s->o.ctx, true);
}

/* The hiredis error text of a context, or a fallback. */
static const char *ac_error(const redisAsyncContext *ac, const char *fallback)
{
    return ac->c.err && ac->c.errstr[0] ? ac->c.errstr : fallback;
}

static void handshake_cb(redisAsyncContext *ac, void *reply, void *priv)
{
    store_t *s = ac->data;
    redisReply *r = reply;
    hs_step_t step = (hs_step_t)(uintptr_t)priv;
    char why[STORE_ERR_MAX];
    if (ac != s->ac)
        return;
    if (!r) {
        conn_down(s, ac_error(ac, "connection lost during handshake"), false);
        return;
    }
    if (r->type == REDIS_REPLY_ERROR) {
        snprintf(why, sizeof why, "%s failed: %.*s", hs_names[step], (int)(r->len < 160 ? r->len : 160),
                 r->str);
        conn_down(s, why, true);
        return;
    }
    if (step == HS_PING)
        conn_up(s);
}

static void on_connect(const redisAsyncContext *ac, int status)
{
    store_t *s = ac->data;
    if (ac != s->ac || status == REDIS_OK)
        return;
    conn_down(s, ac_error(ac, "connect failed"), false); /* hiredis frees ac after we return */
}

static void on_disconnect(const redisAsyncContext *ac, int status)
{
    store_t *s = ac->data;
    if (ac != s->ac)
        return;
    conn_down(s, ac_error(ac, "connection closed"), false);
}

/* Queues the handshake: AUTH, SELECT, CLIENT SETNAME as configured, then PING (up on its reply). */
static int send_handshake(store_t *s, redisAsyncContext *ac)
{
    char db[16];
    int rc = 0;
    if (s->url.password && s->url.user)
        rc |= redisAsyncCommand(ac, handshake_cb, (void *)(uintptr_t)HS_AUTH, "AUTH %s %s", s->url.user,
                                s->url.password);
    else if (s->url.password)
        rc |= redisAsyncCommand(ac, handshake_cb, (void *)(uintptr_t)HS_AUTH, "AUTH %s", s->url.password);
    if (s->url.db != 0) {
        snprintf(db, sizeof db, "%d", s->url.db);
        rc |= redisAsyncCommand(ac, handshake_cb, (void *)(uintptr_t)HS_SELECT, "SELECT %s", db);
    }
    if (s->client_name)
        rc |= redisAsyncCommand(ac, handshake_cb, (void *)(uintptr_t)HS_SETNAME, "CLIENT SETNAME %s",
                                s->client_name);
    rc |= redisAsyncCommand(ac, handshake_cb, (void *)(uintptr_t)HS_PING, "PING");
    return rc == REDIS_OK ? 0 : -1;
}

/* The local port of a TCP socket (0 if unknown). */
static int local_port(int fd)
{
    struct sockaddr_in self;
    socklen_t len = sizeof self;
    if (getsockname(fd, (struct sockaddr *)&self, &len) != 0 || self.sin_family != AF_INET)
        return 0;
    return ntohs(self.sin_port);
}

/* Opens the hiredis connection to a numeric address (or the socket path) and queues the handshake. */
static void conn_open(store_t *s, const char *addr)
{
    char why[STORE_ERR_MAX];
    redisAsyncContext *ac;
    if (s->tls) { /* hiredis talks to the relay on loopback; the relay talks TLS to addr */
        s->bridge = store_tls_bridge_new(s->loop, s->tls, addr, s->url.port, s->url.host, bridge_error, s,
                                         why, sizeof why);
        if (!s->bridge) {
            conn_down(s, why, false);
            return;
        }
        s->open_handles++;
        ac = redisAsyncConnect("127.0.0.1", store_tls_bridge_port(s->bridge));
    } else {
        ac = s->url.is_unix ? redisAsyncConnectUnix(addr) : redisAsyncConnect(addr, s->url.port);
    }
    if (!ac) {
        conn_down(s, "out of memory", false);
        return;
    }
    if (ac->err) {
        snprintf(why, sizeof why, "%s", ac_error(ac, "connect failed"));
        redisAsyncFree(ac);
        conn_down(s, why, false);
        return;
    }
    ac->data = s;
    s->conn_gen++;
    if (poll_attach(s, ac) < 0) {
        redisAsyncFree(ac);
        conn_down(s, "cannot watch the socket", false);
        return;
    }
    if (!s->url.is_unix)
        setsockopt(ac->c.fd, SOL_SOCKET, SO_KEEPALIVE, &(int){1}, sizeof(int));
    if (s->bridge)
        store_tls_bridge_expect(s->bridge, local_port(ac->c.fd));
    redisAsyncSetConnectCallback(ac, on_connect);
    redisAsyncSetDisconnectCallback(ac, on_disconnect);
    s->ac = ac;
    s->state = CONN_CONNECTING;
    if (send_handshake(s, ac) < 0)
        conn_down(s, "out of memory", true);
}

static void gai_cb(uv_getaddrinfo_t *req, int status, struct addrinfo *res)
{
    store_t *s = req->data;
    char addr[INET6_ADDRSTRLEN] = "";
    char why[STORE_ERR_MAX];
    s->gai_active = false;
    if (s->closing || s->state != CONN_RESOLVING) {
        uv_freeaddrinfo(res);
        maybe_finish_close(s);
        return;
    }
    const struct addrinfo *pick = NULL; /* the first IPv4 address, else the first one (as hiredis does) */
    for (const struct addrinfo *a = status == 0 ? res : NULL; a; a = a->ai_next)
        if (!pick || (a->ai_family == AF_INET && pick->ai_family != AF_INET))
            pick = a;
    if (pick && pick->ai_family == AF_INET6)
        uv_ip6_name((const struct sockaddr_in6 *)pick->ai_addr, addr, sizeof addr);
    else if (pick)
        uv_ip4_name((const struct sockaddr_in *)pick->ai_addr, addr, sizeof addr);
    uv_freeaddrinfo(res);
    if (!addr[0]) {
        snprintf(why, sizeof why, "cannot resolve host: %s", status ? uv_strerror(status) : "no address");
        conn_down(s, why, false);
        return;
    }
    conn_open(s, addr);
}

static void conn_timeout_cb(uv_timer_t *t)
{
    store_t *s = t->data;
    char why[64];
    snprintf(why, sizeof why, "connect timed out after %lld ms", (long long)s->o.connect_timeout_ms);
    conn_down(s, why, true);
}

/* One connection attempt: resolve the host off the loop unless it is numeric, then connect; the
 * whole attempt (handshake included) has connect_timeout_ms. */
static void conn_start(store_t *s)
{
    unsigned char tmp[sizeof(struct in6_addr)];
    uv_timer_start(&s->conn_timer, conn_timeout_cb, (uint64_t)s->o.connect_timeout_ms, 0);
    if (s->url.is_unix || inet_pton(AF_INET, s->url.host, tmp) == 1 ||
        inet_pton(AF_INET6, s->url.host, tmp) == 1) {
        conn_open(s, s->url.host);
        return;
    }
    if (s->gai_active) {
        conn_down(s, "name resolution still pending", false);
        return;
    }
    s->state = CONN_RESOLVING;
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM};
    int rc = uv_getaddrinfo(s->loop, &s->gai, gai_cb, s->url.host, NULL, &hints);
    if (rc < 0) {
        conn_down(s, uv_strerror(rc), false);
        return;
    }
    s->gai_active = true;
}

/* ---- requests ----------------------------------------------------------------------------- */

static store_req_t *req_get(store_t *s)
{
    store_req_t *r = s->free_reqs;
    void *buf = NULL;
    size_t cap = 0;
    if (r) {
        s->free_reqs = r->next;
        s->n_free_reqs--;
        buf = r->eval_buf;
        cap = r->eval_cap;
    } else if (!(r = base_malloc(sizeof *r)))
        return NULL;
    *r = (store_req_t){.s = s, .eval_buf = buf, .eval_cap = cap};
    return r;
}

/* Frees r's eval buffer. */
static void req_drop_buf(store_req_t *r)
{
    free(r->eval_buf);
    r->eval_buf = NULL;
    r->eval_cap = 0;
}

/* Returns r to the free list (a small eval buffer stays with it), or frees it when the list is full. */
static void req_put(store_t *s, store_req_t *r)
{
    if (r->eval_cap > STORE_KEEP_EVAL || s->n_free_reqs >= STORE_FREE_REQS)
        req_drop_buf(r);
    if (s->n_free_reqs >= STORE_FREE_REQS) {
        free(r);
        return;
    }
    r->next = s->free_reqs;
    s->free_reqs = r;
    s->n_free_reqs++;
}

static void req_unlink(store_t *s, store_req_t *r)
{
    if (r->prev)
        r->prev->next = r->next;
    else
        s->head = r->next;
    if (r->next)
        r->next->prev = r->prev;
    else
        s->tail = r->prev;
    r->prev = r->next = NULL;
}

/* Runs the user callback of r with an error and no data. */
static void req_fail(store_req_t *r, int err, const char *msg)
{
    if (r->begin_cb) {
        store_begin_result_t res = {.err = err, .errmsg = msg};
        r->begin_cb(r->ctx, &res);
    } else if (r->eval_cb) {
        store_eval_result_t res = {.err = err, .errmsg = msg};
        r->eval_cb(r->ctx, &res);
    } else {
        r->done_cb(r->ctx, err, msg);
    }
}

/* Arms the request timer for `due` unless it is already due earlier. */
static void req_timer_arm(store_t *s, uint64_t due)
{
    uint64_t now = uv_now(s->loop);
    if (uv_is_active((uv_handle_t *)&s->req_timer) && s->req_timer_due <= due)
        return;
    s->req_timer_due = due;
    uv_timer_start(&s->req_timer, req_timer_cb, due > now ? due - now : 0, 0);
}

/* Times out every awaited request past its deadline, drops a stalled connection, re-arms. */
static void req_timer_cb(uv_timer_t *t)
{
    store_t *s = t->data;
    uint64_t now = uv_now(s->loop), next = UINT64_MAX;
    char why[64];
    if (s->drop_pending) {
        s->drop_pending = false;
        if (s->ac)
            conn_down(s, "request pipeline cut short", true);
    }
    while (s->head && s->head->deadline_ms <= now && !s->closing) {
        store_req_t *r = s->head;
        req_unlink(s, r);
        r->timed_out = true;
        s->st.timeouts++;
        req_fail(r, STORE_ERR_TIMEOUT, "no reply within command_timeout_ms");
    }
    if (s->closing)
        return;
    if (s->outstanding && s->stall_ms > 0 && s->ac && now >= s->last_progress_ms + (uint64_t)s->stall_ms) {
        snprintf(why, sizeof why, "no reply for %lld ms", (long long)s->stall_ms);
        conn_down(s, why, true);
        if (s->closing)
            return;
    }
    if (s->head)
        next = s->head->deadline_ms;
    if (s->outstanding && s->stall_ms > 0 && s->ac && s->last_progress_ms + (uint64_t)s->stall_ms < next)
        next = s->last_progress_ms + (uint64_t)s->stall_ms;
    if (next != UINT64_MAX)
        req_timer_arm(s, next);
}

/* Redis errors that mean "this server cannot take our writes now" (failover, restart): the request
 * fails as UNAVAILABLE and the connection is dropped, so that the reconnect finds the new primary. */
static bool is_unavailable_error(const char *msg)
{
    static const char *const prefixes[] = {"READONLY", "LOADING", "MASTERDOWN", "TRYAGAIN", "CLUSTERDOWN"};
    for (size_t i = 0; i < BASE_ARRAY_LEN(prefixes); i++)
        if (strncmp(msg, prefixes[i], strlen(prefixes[i])) == 0)
            return true;
    return false;
}

/* The error of a request whose reply (or an element of it) was r: its message is the first error
 * Redis gave to the request's commands, else r's. */
static int request_error(store_t *s, const store_req_t *q, const redisReply *r, const char **msg)
{
    *msg = q->first_error[0] ? q->first_error : r->str ? r->str : "error";
    if (!is_unavailable_error(*msg))
        return STORE_ERR_REDIS;
    if (s->ac)
        conn_down(s, *msg, true); /* from inside a reply callback: hiredis frees after it returns */
    return STORE_ERR_UNAVAILABLE;
}

/* Splits the begin script's "LEN:BYTES..." history string into res's entries (views into p); an entry
 * over max_entry_bytes, or past the room for entries, is counted as skipped. 0, or -1 when malformed. */
static int entries_unframe(store_t *s, const char *p, size_t n, store_begin_result_t *res)
{
    const char *end = p + n;
    while (p < end) {
        size_t len = 0, digits = 0;
        for (; p < end && *p >= '0' && *p <= '9' && digits < 10; p++, digits++)
            len = len * 10 + (size_t)(*p - '0');
        if (digits == 0 || p == end || *p != ':' || len > (size_t)(end - p - 1))
            return -1;
        p++;
        if (len > (size_t)s->o.max_entry_bytes || res->n_entries == s->entries_cap)
            res->n_skipped++;
        else
            s->entries[res->n_entries++] = STORE_BYTES(p, len);
        p += len;
    }
    return 0;
}

/* Completes a begin request from its reply (the script's array, or the GET reply). */
static void finish_begin(store_t *s, store_req_t *q, const redisReply *r)
{
    store_begin_result_t res = {.err = STORE_OK, .errmsg = ""};
    const redisReply *get = r, *list = NULL;
    if (q->kind == REQ_BEGIN_SCRIPT) {
        if (r->type == REDIS_REPLY_ERROR) {
            get = r;
        } else if (r->type != REDIS_REPLY_ARRAY || r->elements != 2) {
            res.err = STORE_ERR_PROTOCOL;
            res.errmsg = "begin script reply is not a 2-element array";
            goto out;
        } else {
            get = r->element[0];
            list = r->element[1];
        }
    }
    if (get->type == REDIS_REPLY_ERROR || (list && list->type == REDIS_REPLY_ERROR)) {
        res.err = request_error(s, q, get->type == REDIS_REPLY_ERROR ? get : list, &res.errmsg);
        goto out;
    }
    if (get->type == REDIS_REPLY_STRING) {
        res.has_reply = true;
        res.reply = STORE_BYTES(get->str, get->len);
    } else if (get->type != REDIS_REPLY_NIL || (list && list->type != REDIS_REPLY_STRING)) {
        res.err = STORE_ERR_PROTOCOL;
        res.errmsg = "unexpected GET or LRANGE reply type";
        goto out;
    }
    if (list && entries_unframe(s, list->str, list->len, &res) < 0) {
        res.err = STORE_ERR_PROTOCOL;
        res.errmsg = "history entries are not framed as LEN:BYTES";
        goto out;
    }
    res.entries = s->entries;
out:
    if (res.err)
        s->st.errors++;
    q->begin_cb(q->ctx, &res);
}

/* Completes a commit or put-reply request: the SET's status, or the commit script's 1 (its first
 * error otherwise). */
static void finish_done(store_t *s, store_req_t *q, const redisReply *r)
{
    int err = STORE_OK;
    const char *msg = "";
    if (r->type == REDIS_REPLY_ERROR) {
        err = request_error(s, q, r, &msg);
    } else if (q->kind == REQ_SET ? r->type != REDIS_REPLY_STATUS
                                  : r->type != REDIS_REPLY_INTEGER || r->integer != 1) {
        err = STORE_ERR_PROTOCOL;
        msg = q->kind == REQ_SET ? "SET reply is not a status" : "commit script reply is not 1";
    }
    if (err)
        s->st.errors++;
    q->done_cb(q->ctx, err, msg);
}

/* Completes an eval request: the script's integer or array of integers. */
static void finish_eval(store_t *s, store_req_t *q, const redisReply *r)
{
    long long ints[STORE_EVAL_MAX_INTS];
    store_eval_result_t res = {.err = STORE_OK, .errmsg = "", .ints = ints};
    if (r->type == REDIS_REPLY_ERROR) {
        res.err = request_error(s, q, r, &res.errmsg);
    } else if (r->type == REDIS_REPLY_INTEGER) {
        ints[res.n_ints++] = r->integer;
    } else if (r->type == REDIS_REPLY_ARRAY && r->elements <= STORE_EVAL_MAX_INTS) {
        for (size_t i = 0; i < r->elements && !res.err; i++) {
            if (r->element[i]->type != REDIS_REPLY_INTEGER) {
                res.err = STORE_ERR_PROTOCOL;
                res.errmsg = "script reply holds a non-integer";
            } else {
                ints[res.n_ints++] = r->element[i]->integer;
            }
        }
    } else {
        res.err = STORE_ERR_PROTOCOL;
        res.errmsg = "script reply is not an integer or a short array of integers";
    }
    if (res.err) {
        s->st.errors++;
        res.n_ints = 0;
    }
    q->eval_cb(q->ctx, &res);
}

/* Script bookkeeping on a reply r to an eval: notes the SHA from SCRIPT LOAD, and answers NOSCRIPT by
 * sending the script as EVAL. true when r was consumed that way (q's reference moved to the EVAL). */
static bool eval_on_reply(store_t *s, redisAsyncContext *ac, store_req_t *q, const redisReply *r)
{
    store_script_t *sc = q->script;
    if (q->replies++ == 0 && q->eval_load) {
        if (r->type == REDIS_REPLY_STRING && r->len == 40 && q->gen == s->conn_gen) {
            memcpy(sc->sha, r->str, 40);
            sc->sha[40] = '\0';
            sc->loaded_gen = q->gen;
        }
        return false;
    }
    if (r->type != REDIS_REPLY_ERROR || r->len < 8 || memcmp(r->str, "NOSCRIPT", 8) != 0 || q->eval_resent ||
        q->timed_out || ac != s->ac)
        return false;
    sc->loaded_gen = sc->loading_gen = 0; /* the next eval loads it again */
    q->eval_resent = true;
    q->eval_argv[0] = "EVAL";
    q->eval_argvlen[0] = 4;
    q->eval_argv[1] = sc->body;
    q->eval_argvlen[1] = sc->len;
    if (redisAsyncCommandArgv(ac, req_reply_cb, q, q->eval_argc, q->eval_argv, q->eval_argvlen) != REDIS_OK)
        return false;
    s->st.commands++;
    return true;
}

/* The callback of every command of a request; the reply to the last one completes it. */
static void req_reply_cb(redisAsyncContext *ac, void *reply, void *priv)
{
    store_req_t *q = priv;
    store_t *s = q->s;
    const redisReply *r = reply;
    if (r)
        s->last_progress_ms = uv_now(s->loop);
    else if (ac == s->ac)
        conn_down(s, ac_error(ac, "connection lost"), false);
    if (r && q->script && eval_on_reply(s, ac, q, r))
        return;
    if (r && r->type == REDIS_REPLY_ERROR && !q->first_error[0])
        snprintf(q->first_error, sizeof q->first_error, "%.*s", (int)(r->len < 150 ? r->len : 150), r->str);
    if (--q->refs > 0)
        return;
    if (!q->abandoned) {
        s->outstanding--;
        s->st.in_flight = s->outstanding;
    }
    if (q->timed_out || q->abandoned) {
        if (r && q->timed_out)
            s->st.late_replies++;
        req_put(s, q);
        return;
    }
    req_unlink(s, q);
    if (!r) {
        s->st.errors++;
        req_fail(q, s->closing ? STORE_ERR_CLOSED : STORE_ERR_UNAVAILABLE,
                 s->closing ? "store closed" : "redis connection lost");
    } else if (q->begin_cb) {
        finish_begin(s, q, r);
    } else if (q->eval_cb) {
        finish_eval(s, q, r);
    } else {
        finish_done(s, q, r);
    }
    req_put(s, q);
}

/* Key "P:{conv}:<what>[job_id]" into buf (STORE_KEY_MAX bytes); returns its length. */
static size_t make_key(const store_t *s, char *buf, store_bytes_t conv, const char *what,
                       store_bytes_t job_id)
{
    size_t n = 0, wlen = strlen(what);
    memcpy(buf + n, s->prefix, s->prefix_len);
    n += s->prefix_len;
    memcpy(buf + n, ":{", 2);
    n += 2;
    memcpy(buf + n, conv.data, conv.len);
    n += conv.len;
    memcpy(buf + n, "}:", 2);
    n += 2;
    memcpy(buf + n, what, wlen);
    n += wlen;
    if (job_id.len)
        memcpy(buf + n, job_id.data, job_id.len);
    return n + job_id.len;
}

#define B_STR(s) STORE_BYTES((s), strlen(s))

/* Checks that a request may be sent now; 0 or the store_err_t to return. */
static int req_check(store_t *s, store_bytes_t conv, store_bytes_t job_id)
{
    int err = STORE_OK;
    if (s->closing)
        err = STORE_ERR_CLOSED;
    else if (!conv.data || !job_id.data || conv.len == 0 || job_id.len == 0 ||
             conv.len > STORE_MAX_ID_BYTES || job_id.len > STORE_MAX_ID_BYTES)
        err = STORE_ERR_INVALID;
    else if (s->state != CONN_UP || !s->ac)
        err = STORE_ERR_UNAVAILABLE;
    if (err)
        s->st.rejected++;
    return err;
}

/* Writes the type byte t, decimal v and "\r\n" at out; returns the bytes written. */
static size_t resp_header(char *out, char t, size_t v)
{
    out[0] = t;
    size_t n = 1 + base_u64_dec(out + 1, v);
    out[n] = '\r';
    out[n + 1] = '\n';
    return n + 2;
}

/* Queues one command of q with hiredis, encoded in RESP here (hiredis's own formatter is several times
 * slower); false when hiredis refused it (q is then returned to the free list, or abandoned to its
 * earlier commands' callbacks while the connection is dropped). */
static bool req_command(store_t *s, store_req_t *q, int argc, const char **argv, const size_t *argvlen)
{
    char stack[4096];
    size_t need = 24;
    for (int i = 0; i < argc; i++)
        need += argvlen[i] + 26;
    char *cmd = need <= sizeof stack ? stack : base_malloc(need);
    int rc = REDIS_ERR;
    if (cmd) {
        size_t len = resp_header(cmd, '*', (size_t)argc);
        for (int i = 0; i < argc; i++) {
            len += resp_header(cmd + len, '$', argvlen[i]);
            memcpy(cmd + len, argv[i], argvlen[i]);
            len += argvlen[i];
            cmd[len++] = '\r';
            cmd[len++] = '\n';
        }
        cmd[len] = '\0'; /* hiredis scans the command for its name with string functions */
        rc = redisAsyncFormattedCommand(s->ac, req_reply_cb, q, cmd, len);
        if (cmd != stack)
            free(cmd);
    }
    if (rc == REDIS_OK) {
        q->refs++;
        return true;
    }
    s->st.rejected++;
    if (q->refs == 0) {
        req_put(s, q);
        return false;
    }
    q->abandoned = true; /* freed by its last callback, once the connection is dropped */
    s->drop_pending = true;
    req_timer_arm(s, uv_now(s->loop));
    return false;
}

/* q was sent whole as n commands: counts it, starts its deadline and links it among the awaited
 * requests in deadline order (from the tail: deadlines mostly come in order). */
static int req_track(store_t *s, store_req_t *q, size_t n, int64_t timeout_ms)
{
    uint64_t now = uv_now(s->loop);
    if (s->outstanding == 0)
        s->last_progress_ms = now;
    s->outstanding++;
    s->st.in_flight = s->outstanding;
    s->st.requests++;
    s->st.commands += n;
    q->deadline_ms = now + (uint64_t)timeout_ms;
    store_req_t *after = s->tail;
    while (after && after->deadline_ms > q->deadline_ms)
        after = after->prev;
    q->prev = after;
    q->next = after ? after->next : s->head;
    if (q->next)
        q->next->prev = q;
    else
        s->tail = q;
    if (after)
        after->next = q;
    else
        s->head = q;
    req_timer_arm(s, q->deadline_ms);
    return STORE_OK;
}

/* Sends q as the one command args[0..argc) (at most STORE_MAX_ARGS) and starts q's deadline. */
static int req_send(store_t *s, store_req_t *q, const store_bytes_t *args, int argc)
{
    const char *argv[STORE_MAX_ARGS];
    size_t argvlen[STORE_MAX_ARGS];
    for (int i = 0; i < argc; i++) {
        argv[i] = args[i].data;
        argvlen[i] = args[i].len;
    }
    if (!req_command(s, q, argc, argv, argvlen))
        return STORE_ERR_UNAVAILABLE;
    return req_track(s, q, 1, s->o.command_timeout_ms);
}

#define REQ_SEND(s, q, ...)                                                                                  \
    req_send((s), (q), (const store_bytes_t[]){__VA_ARGS__},                                                 \
             (int)(sizeof((const store_bytes_t[]){__VA_ARGS__}) / sizeof(store_bytes_t)))

static int eval_send(store_t *s, store_req_t *q, store_script_t *script, const store_bytes_t *keys,
                     size_t n_keys, const store_bytes_t *args, size_t n_args, size_t data_len,
                     int64_t timeout_ms);

/* The total length of n byte strings. */
static size_t bytes_total(const store_bytes_t *b, size_t n)
{
    size_t total = 0;
    for (size_t i = 0; i < n; i++)
        total += b[i].len;
    return total;
}

int store_job_begin(store_t *s, store_bytes_t conv, store_bytes_t job_id, unsigned flags, store_begin_cb cb,
                    void *ctx)
{
    char jkey[STORE_KEY_MAX], hkey[STORE_KEY_MAX];
    int err = req_check(s, conv, job_id);
    if (err)
        return err;
    store_req_t *q = req_get(s);
    if (!q)
        return STORE_ERR_NOMEM;
    q->begin_cb = cb;
    q->ctx = ctx;
    store_bytes_t keys[2] = {STORE_BYTES(jkey, make_key(s, jkey, conv, "job:", job_id))};
    if ((flags & STORE_BEGIN_NO_HISTORY) || s->o.history_max_messages == 0) {
        q->kind = REQ_BEGIN_GET;
        return REQ_SEND(s, q, B_STR("GET"), keys[0]);
    }
    q->kind = REQ_BEGIN_SCRIPT;
    keys[1] = STORE_BYTES(hkey, make_key(s, hkey, conv, "history", STORE_BYTES("", 0)));
    const store_bytes_t from = B_STR(s->from_arg);
    return eval_send(s, q, s->begin_script, keys, 2, &from, 1, bytes_total(keys, 2) + from.len,
                     s->o.command_timeout_ms);
}

/* Builds and sends a commit (turn: the history append too, by the commit script) or a put-reply (SET). */
static int send_final(store_t *s, store_bytes_t conv, store_bytes_t job_id, const store_bytes_t *turn,
                      store_bytes_t reply, store_done_cb cb, void *ctx)
{
    char jkey[STORE_KEY_MAX], hkey[STORE_KEY_MAX];
    int err = req_check(s, conv, job_id);
    if (err)
        return err;
    if (!reply.data || (turn && (!turn[0].data || !turn[1].data))) {
        s->st.rejected++;
        return STORE_ERR_INVALID;
    }
    store_req_t *q = req_get(s);
    if (!q)
        return STORE_ERR_NOMEM;
    q->done_cb = cb;
    q->ctx = ctx;
    store_bytes_t jk = STORE_BYTES(jkey, make_key(s, jkey, conv, "job:", job_id));
    if (!turn) {
        q->kind = REQ_SET;
        if (s->o.idempotency_ttl_s > 0)
            return REQ_SEND(s, q, B_STR("SET"), jk, reply, B_STR("EX"), B_STR(s->job_ttl_arg));
        return REQ_SEND(s, q, B_STR("SET"), jk, reply);
    }
    q->kind = REQ_COMMIT_SCRIPT;
    const store_bytes_t keys[2] = {STORE_BYTES(hkey, make_key(s, hkey, conv, "history", STORE_BYTES("", 0))),
                                   jk};
    const store_bytes_t args[6] = {
        turn[0], turn[1], B_STR(s->trim_arg), B_STR(s->hist_ttl_arg), reply, B_STR(s->job_ttl_arg)};
    return eval_send(s, q, s->commit_script, keys, 2, args, 6, bytes_total(keys, 2) + bytes_total(args, 6),
                     s->o.command_timeout_ms);
}

int store_job_commit(store_t *s, store_bytes_t conv, store_bytes_t job_id, store_bytes_t user_entry,
                     store_bytes_t assistant_entry, store_bytes_t reply, store_done_cb cb, void *ctx)
{
    const store_bytes_t turn[2] = {user_entry, assistant_entry};
    return send_final(s, conv, job_id, s->o.history_append ? turn : NULL, reply, cb, ctx);
}

int store_job_put_reply(store_t *s, store_bytes_t conv, store_bytes_t job_id, store_bytes_t reply,
                        store_done_cb cb, void *ctx)
{
    return send_final(s, conv, job_id, NULL, reply, cb, ctx);
}

/* ---- scripts ------------------------------------------------------------------------------ */

store_script_t *store_script_add(store_t *s, const char *body)
{
    size_t len = body ? strlen(body) : 0;
    if (len == 0 || len > STORE_MAX_SCRIPT_BYTES || s->closing)
        return NULL;
    for (store_script_t *sc = s->scripts; sc; sc = sc->next)
        if (sc->len == len && memcmp(sc->body, body, len) == 0)
            return sc;
    store_script_t *sc = base_calloc(1, sizeof *sc);
    if (!sc || !(sc->body = base_strndup(body, len))) {
        free(sc);
        return NULL;
    }
    sc->len = len;
    sc->next = s->scripts;
    s->scripts = sc;
    return sc;
}

/* Checks the keys and args of an eval; their total size, or -1 when out of bounds. */
static long eval_args_size(const store_bytes_t *keys, size_t n_keys, const store_bytes_t *args, size_t n_args)
{
    size_t total = 0;
    if (n_keys > STORE_EVAL_MAX_KEYS || n_args > STORE_EVAL_MAX_ARGS || (n_keys && !keys) ||
        (n_args && !args))
        return -1;
    for (size_t i = 0; i < n_keys + n_args; i++) {
        const store_bytes_t *b = i < n_keys ? &keys[i] : &args[i - n_keys];
        if (!b->data && b->len)
            return -1;
        total += b->len;
        if (total > STORE_EVAL_MAX_BYTES)
            return -1;
    }
    return (long)total;
}

/* Builds q's argv "EVALSHA sha numkeys keys... args..." in one buffer (keys and args copied, so that a
 * NOSCRIPT answer can be resent; the buffer of a reused request serves when it is large enough). 0, or
 * STORE_ERR_NOMEM. */
static int eval_build(store_req_t *q, const store_bytes_t *keys, size_t n_keys, const store_bytes_t *args,
                      size_t n_args, size_t data_len)
{
    size_t argc = 3 + n_keys + n_args, need = argc * (sizeof(char *) + sizeof(size_t)) + 24 + data_len;
    if (need > q->eval_cap) {
        req_drop_buf(q);
        if (!(q->eval_buf = base_malloc(need)))
            return STORE_ERR_NOMEM;
        q->eval_cap = need;
    }
    char *buf = q->eval_buf;
    q->eval_argv = (const char **)(void *)buf;
    q->eval_argvlen = (size_t *)(void *)(buf + argc * sizeof(char *));
    char *numkeys = buf + argc * (sizeof(char *) + sizeof(size_t)), *data = numkeys + 24;
    q->eval_argc = (int)argc;
    q->eval_argv[0] = "EVALSHA";
    q->eval_argvlen[0] = 7;
    q->eval_argv[1] = q->script->sha;
    q->eval_argvlen[1] = 40;
    q->eval_argvlen[2] = base_u64_dec(numkeys, n_keys);
    q->eval_argv[2] = numkeys;
    for (size_t i = 0; i < n_keys + n_args; i++) {
        const store_bytes_t *b = i < n_keys ? &keys[i] : &args[i - n_keys];
        if (b->len)
            memcpy(data, b->data, b->len);
        q->eval_argv[3 + i] = data;
        q->eval_argvlen[3 + i] = b->len;
        data += b->len;
    }
    return STORE_OK;
}

int store_eval(store_t *s, store_script_t *script, const store_bytes_t *keys, size_t n_keys,
               const store_bytes_t *args, size_t n_args, int64_t timeout_ms, store_eval_cb cb, void *ctx)
{
    long data_len = eval_args_size(keys, n_keys, args, n_args);
    int err = STORE_OK;
    if (s->closing)
        err = STORE_ERR_CLOSED;
    else if (!script || !cb || data_len < 0 || timeout_ms < 0)
        err = STORE_ERR_INVALID;
    else if (s->state != CONN_UP || !s->ac)
        err = STORE_ERR_UNAVAILABLE;
    if (err) {
        s->st.rejected++;
        return err;
    }
    store_req_t *q = req_get(s);
    if (!q)
        return STORE_ERR_NOMEM;
    q->kind = REQ_EVAL;
    q->eval_cb = cb;
    q->ctx = ctx;
    return eval_send(s, q, script, keys, n_keys, args, n_args, (size_t)data_len,
                     timeout_ms ? timeout_ms : s->o.command_timeout_ms);
}

/* Sends q (kind, callback and ctx set) as script with keys and args (data_len bytes in all): EVALSHA,
 * or "SCRIPT LOAD + EVAL" on the first call of a connection; starts its deadline of timeout_ms. */
static int eval_send(store_t *s, store_req_t *q, store_script_t *script, const store_bytes_t *keys,
                     size_t n_keys, const store_bytes_t *args, size_t n_args, size_t data_len,
                     int64_t timeout_ms)
{
    int err;
    q->script = script;
    q->gen = s->conn_gen;
    if ((err = eval_build(q, keys, n_keys, args, n_args, data_len)) != STORE_OK) {
        req_put(s, q);
        return err;
    }
    if (script->loaded_gen != s->conn_gen) { /* not known to this connection yet: EVAL the body */
        q->eval_argv[0] = "EVAL";
        q->eval_argvlen[0] = 4;
        q->eval_argv[1] = script->body;
        q->eval_argvlen[1] = script->len;
        if (script->loading_gen != s->conn_gen) {
            const char *load[3] = {"SCRIPT", "LOAD", script->body};
            const size_t load_len[3] = {6, 4, script->len};
            if (!req_command(s, q, 3, load, load_len))
                return STORE_ERR_UNAVAILABLE;
            script->loading_gen = s->conn_gen;
            q->eval_load = true;
        }
    }
    if (!req_command(s, q, q->eval_argc, q->eval_argv, q->eval_argvlen))
        return STORE_ERR_UNAVAILABLE;
    return req_track(s, q, q->eval_load ? 2 : 1, timeout_ms);
}

const char *store_key_prefix(const store_t *s) { return s->prefix; }

/* ---- lifecycle ---------------------------------------------------------------------------- */

static void scripts_free(store_t *s)
{
    while (s->scripts) {
        store_script_t *sc = s->scripts;
        s->scripts = sc->next;
        free(sc->body);
        free(sc);
    }
}

/* Checks the numeric options; 0 or -1 with err filled. */
static int check_options(const store_options_t *o, char *err, size_t errlen)
{
    const char *bad = NULL;
    size_t plen = o->key_prefix ? strlen(o->key_prefix) : 0;
    if (plen == 0 || plen > STORE_MAX_PREFIX_BYTES)
        bad = "key_prefix must be 1..256 bytes";
    else if (o->idempotency_ttl_s < 0 || o->history_ttl_s < 0)
        bad = "TTLs must be >= 0";
    else if (o->history_max_messages < 0 || o->history_max_messages > STORE_MAX_MESSAGES)
        bad = "history max_messages must be 0..100000";
    else if (o->history_append && (o->history_max_len < 1 || o->history_max_len > INT_MAX))
        bad = "history max_len must be >= 1";
    else if (o->max_entry_bytes < 1)
        bad = "history max_entry_bytes must be >= 1";
    else if (o->connect_timeout_ms < 1 || o->command_timeout_ms < 1)
        bad = "connect and command timeouts must be >= 1 ms";
    else if (o->backoff_min_ms < 1 || o->backoff_max_ms < o->backoff_min_ms)
        bad = "backoff must satisfy 1 <= min <= max";
    else if (o->client_name && (strlen(o->client_name) > 64 || strpbrk(o->client_name, " \t\r\n")))
        bad = "client_name must be at most 64 bytes without spaces";
    if (bad)
        snprintf(err, errlen, "store: %s", bad);
    return bad ? -1 : 0;
}

store_t *store_new(uv_loop_t *loop, const store_options_t *opts, char *err, size_t errlen)
{
    store_t *s = NULL;
    if (!loop || !opts) {
        snprintf(err, errlen, "store: no loop or options");
        goto fail;
    }
    if (check_options(opts, err, errlen) < 0)
        goto fail;
    if (!(s = base_calloc(1, sizeof *s)))
        goto nomem;
    if (store_url_parse(opts->url, &s->url, err, errlen) < 0)
        goto fail;
    if (s->url.tls && !(s->tls = store_tls_ctx_new(opts->ca_file, err, errlen)))
        goto fail;
    s->loop = loop;
    s->o = *opts;
    s->o.url = NULL;
    s->o.ca_file = NULL;
    s->prefix_len = strlen(opts->key_prefix);
    s->entries_cap = (size_t)opts->history_max_messages;
    if (!(s->prefix = base_strdup(opts->key_prefix)) ||
        (opts->client_name && *opts->client_name && !(s->client_name = base_strdup(opts->client_name))) ||
        !(s->entries = base_calloc(s->entries_cap ? s->entries_cap : 1, sizeof *s->entries)))
        goto nomem;
    s->o.key_prefix = s->prefix; /* the copies are kept; the caller's strings are not */
    s->o.client_name = s->client_name;
    s->stall_ms = opts->stall_timeout_ms == 0 ? 3 * opts->command_timeout_ms : opts->stall_timeout_ms;
    snprintf(s->from_arg, sizeof s->from_arg, "-%lld", (long long)opts->history_max_messages);
    snprintf(s->trim_arg, sizeof s->trim_arg, "-%lld", (long long)opts->history_max_len);
    snprintf(s->hist_ttl_arg, sizeof s->hist_ttl_arg, "%lld", (long long)opts->history_ttl_s);
    snprintf(s->job_ttl_arg, sizeof s->job_ttl_arg, "%lld", (long long)opts->idempotency_ttl_s);
    if (!(s->begin_script = store_script_add(s, begin_lua)) ||
        !(s->commit_script = store_script_add(s, commit_lua)))
        goto nomem;
    if (s->url.is_unix)
        snprintf(s->endpoint, sizeof s->endpoint, "%s", s->url.host);
    else if (strchr(s->url.host, ':'))
        snprintf(s->endpoint, sizeof s->endpoint, "[%s]:%d", s->url.host, s->url.port);
    else
        snprintf(s->endpoint, sizeof s->endpoint, "%s:%d", s->url.host, s->url.port);
    s->rng = base_mono_ns() ^ (uint64_t)(uintptr_t)s ^ 0x9e3779b97f4a7c15ull;
    s->gai.data = s;
    uv_timer_init(loop, &s->conn_timer);
    uv_timer_init(loop, &s->req_timer);
    s->conn_timer.data = s->req_timer.data = s;
    s->open_handles = 2;
    s->state = CONN_WAITING;
    uv_timer_start(&s->conn_timer, backoff_cb, 0, 0);
    return s;
nomem:
    snprintf(err, errlen, "store: out of memory");
fail:
    if (s) {
        scripts_free(s);
        store_tls_ctx_free(s->tls);
        store_url_free(&s->url);
        free(s->prefix);
        free(s->client_name);
        free(s->entries);
        free(s);
    }
    return NULL;
}

static void timer_closed(uv_handle_t *h)
{
    store_t *s = h->data;
    s->open_handles--;
    maybe_finish_close(s);
}

/* Frees the store once its handles are closed and no name lookup is running. */
static void maybe_finish_close(store_t *s)
{
    if (!s->closing || s->open_handles > 0 || s->gai_active)
        return;
    void (*cb)(void *) = s->on_closed;
    void *ctx = s->closed_ctx;
    while (s->free_reqs) {
        store_req_t *r = s->free_reqs;
        s->free_reqs = r->next;
        req_drop_buf(r);
        free(r);
    }
    scripts_free(s);
    store_tls_ctx_free(s->tls);
    store_url_free(&s->url);
    free(s->prefix);
    free(s->client_name);
    free(s->entries);
    free(s);
    if (cb)
        cb(ctx);
}

void store_close(store_t *s, void (*on_closed)(void *ctx), void *ctx)
{
    if (!s || s->closing)
        return;
    redisAsyncContext *ac = s->ac;
    s->closing = true;
    s->on_closed = on_closed;
    s->closed_ctx = ctx;
    s->ac = NULL;
    s->state = CONN_WAITING;
    s->st.up = false;
    if (s->gai_active)
        uv_cancel((uv_req_t *)&s->gai);
    uv_close((uv_handle_t *)&s->conn_timer, timer_closed);
    uv_close((uv_handle_t *)&s->req_timer, timer_closed);
    bridge_drop(s);
    if (ac)
        redisAsyncFree(ac); /* owed requests complete with STORE_ERR_CLOSED */
}

bool store_is_up(const store_t *s) { return s->state == CONN_UP; }

const char *store_last_error(const store_t *s) { return s->last_error; }

void store_stats(const store_t *s, store_stats_t *out) { *out = s->st; }
