/* test_store.c — the store against a real redis-server started per test on a free loopback port:
 * begin/commit/put-reply and the keys they leave, limits, AUTH/ACL/SELECT, unix socket, outage and
 * reconnect, command timeouts with late replies, stalls, connect timeouts, close with requests owed;
 * rediss:// against a TLS redis-server with a CA and certificates made per test with openssl(1).
 * A synchronous hiredis client checks what is in Redis (sync is fine here, never in the module). */
#include <dirent.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <fcntl.h>
#include <unistd.h>

#include <cmocka.h>
#include <hiredis/hiredis.h>
#include <uv.h>

#include "base/base.h"
#include "log/log.h"
#include "store/store.h"
#include "store/tls_bridge.h"

#define PASSWORD "s3cret-Pa55word"

typedef struct {
    char dir[64];
    char sock[128];
    int port;
    pid_t pid;
    const char *password;  /* requirepass of the server, for the test's own client */
    const char *extra[16]; /* extra redis-server arguments (NULL ends them) */
    int tls_port;          /* rediss:// tests: the server's --tls-port */
    char file[6][160]; /* rediss:// tests: ca.crt, server.crt, server.key, other-ca.crt, host.crt, host.key */
    uv_loop_t loop;
    uv_timer_t tick;
    store_t *store;
    int ups, downs;
    bool closed;
} fx_t;

/* One request's outcome, copied out of the callback. */
typedef struct {
    int calls;
    int err;
    char errmsg[256];
    bool has_reply;
    char reply[512];
    size_t reply_len;
    size_t n_entries, n_skipped;
    char entry[16][128];
    size_t entry_len[16];
} res_t;

/* ---- redis-server ------------------------------------------------------------------------- */

static int free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof a;
    assert_true(fd >= 0);
    assert_int_equal(bind(fd, (struct sockaddr *)&a, sizeof a), 0);
    assert_int_equal(getsockname(fd, (struct sockaddr *)&a, &len), 0);
    close(fd);
    return ntohs(a.sin_port);
}

static redisContext *sync_connect(const fx_t *f)
{
    struct timeval tv = {.tv_sec = 0, .tv_usec = 200000};
    redisContext *c = redisConnectWithTimeout("127.0.0.1", f->port, tv);
    if (!c || c->err) {
        if (c)
            redisFree(c);
        return NULL;
    }
    redisSetTimeout(c, (struct timeval){.tv_sec = 3});
    if (f->password) {
        redisReply *r = redisCommand(c, "AUTH %s", f->password);
        if (r)
            freeReplyObject(r);
    }
    return c;
}

/* Runs one command on a fresh synchronous connection; the caller frees the reply. */
static redisReply *sync_cmd(const fx_t *f, const char *fmt, ...)
{
    va_list ap;
    redisContext *c = sync_connect(f);
    assert_non_null(c);
    va_start(ap, fmt);
    redisReply *r = redisvCommand(c, fmt, ap);
    va_end(ap);
    redisFree(c);
    assert_non_null(r);
    return r;
}

static long long sync_int(const fx_t *f, const char *fmt, const char *key, size_t len)
{
    redisReply *r = sync_cmd(f, fmt, key, len);
    assert_int_equal(r->type, REDIS_REPLY_INTEGER);
    long long v = r->integer;
    freeReplyObject(r);
    return v;
}

static void redis_start(fx_t *f)
{
    char port[16];
    snprintf(port, sizeof port, "%d", f->port);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        char log[128];
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        snprintf(log, sizeof log, "%s/redis.log", f->dir);
        int fd = open(log, O_WRONLY | O_CREAT | O_APPEND, 0600);
        if (fd >= 0) {
            dup2(fd, 1);
            dup2(fd, 2);
        }
        const char *argv[40] = {"redis-server", "--port", port,    "--bind", "127.0.0.1", "--save", "",
                                "--appendonly", "no",     "--dir", f->dir};
        size_t n = 11;
        for (size_t i = 0; i < BASE_ARRAY_LEN(f->extra) && f->extra[i]; i++)
            argv[n++] = f->extra[i];
        execvp("redis-server", (char *const *)argv);
        _exit(127);
    }
    f->pid = pid;
    for (int i = 0; i < 300; i++) { /* any reply (even NOAUTH) means it is serving */
        redisContext *c = sync_connect(f);
        redisReply *r = c ? redisCommand(c, "PING") : NULL;
        if (c)
            redisFree(c);
        if (r) {
            freeReplyObject(r);
            return;
        }
        usleep(10000);
    }
    fail_msg("redis-server did not start on port %d", f->port);
}

static void redis_stop(fx_t *f)
{
    if (f->pid > 0) {
        kill(f->pid, SIGKILL);
        waitpid(f->pid, NULL, 0);
        f->pid = 0;
    }
}

/* ---- loop and store ----------------------------------------------------------------------- */

static void tick_cb(uv_timer_t *t) {}

static void on_state(void *ctx, bool up)
{
    fx_t *f = ctx;
    if (up)
        f->ups++;
    else
        f->downs++;
}

static void on_closed(void *ctx) { ((fx_t *)ctx)->closed = true; }

#define RUN_UNTIL(f, cond, ms)                                                                               \
    do {                                                                                                     \
        int64_t dl_ = base_mono_ms() + (ms);                                                                 \
        while (!(cond) && base_mono_ms() < dl_)                                                              \
            uv_run(&(f)->loop, UV_RUN_ONCE);                                                                 \
    } while (0)

static void test_options(const fx_t *f, store_options_t *o, char *url, size_t urllen)
{
    store_options_init(o);
    snprintf(url, urllen, "redis://127.0.0.1:%d", f->port);
    o->url = url;
    o->connect_timeout_ms = 1000;
    o->command_timeout_ms = 1000;
    o->backoff_min_ms = 20;
    o->backoff_max_ms = 200;
    o->on_state = on_state;
    o->ctx = (void *)f;
}

/* Creates the store and waits until it is up. */
static void store_up(fx_t *f, const store_options_t *o)
{
    char err[256];
    f->store = store_new(&f->loop, o, err, sizeof err);
    assert_non_null(f->store);
    RUN_UNTIL(f, f->ups > 0, 3000);
    assert_int_equal(f->ups, 1);
    assert_true(store_is_up(f->store));
}

static void default_store(fx_t *f)
{
    store_options_t o;
    char url[128];
    test_options(f, &o, url, sizeof url);
    store_up(f, &o);
}

static void store_down(fx_t *f)
{
    if (f->store && !f->closed) {
        store_close(f->store, on_closed, f);
        RUN_UNTIL(f, f->closed, 3000);
        assert_true(f->closed);
    }
    f->store = NULL;
}

static int setup_common(void **state, const char *extra0, const char *extra1, const char *extra2)
{
    fx_t *f = calloc(1, sizeof *f);
    snprintf(f->dir, sizeof f->dir, "/tmp/parley-store-XXXXXX");
    if (!mkdtemp(f->dir))
        return -1;
    snprintf(f->sock, sizeof f->sock, "%s/redis.sock", f->dir);
    f->port = free_port();
    f->extra[0] = extra0;
    f->extra[1] = extra1;
    f->extra[2] = extra2;
    if (extra0 && strcmp(extra0, "--requirepass") == 0)
        f->password = extra1;
    uv_loop_init(&f->loop);
    uv_timer_init(&f->loop, &f->tick);
    uv_timer_start(&f->tick, tick_cb, 5, 5);
    *state = f;
    redis_start(f);
    return 0;
}

static int setup(void **state) { return setup_common(state, NULL, NULL, NULL); }
static int setup_auth(void **state) { return setup_common(state, "--requirepass", PASSWORD, NULL); }

static int setup_unix(void **state)
{
    int rc = setup_common(state, NULL, NULL, NULL);
    fx_t *f = *state;
    redis_stop(f);
    f->extra[0] = "--unixsocket";
    f->extra[1] = f->sock;
    redis_start(f);
    return rc;
}

static int setup_v6(void **state)
{
    int fd = socket(AF_INET6, SOCK_STREAM, 0);
    struct sockaddr_in6 a = {.sin6_family = AF_INET6, .sin6_addr = IN6ADDR_LOOPBACK_INIT};
    bool have_v6 = fd >= 0 && bind(fd, (struct sockaddr *)&a, sizeof a) == 0;
    if (fd >= 0)
        close(fd);
    return setup_common(state, have_v6 ? "--bind" : NULL, "127.0.0.1", have_v6 ? "::1" : NULL);
}

static int teardown(void **state)
{
    fx_t *f = *state;
    store_down(f);
    uv_close((uv_handle_t *)&f->tick, NULL);
    uv_run(&f->loop, UV_RUN_DEFAULT);
    int loop_rc = uv_loop_close(&f->loop);
    redis_stop(f);
    DIR *d = opendir(f->dir);
    struct dirent *e;
    char path[512];
    while (d && (e = readdir(d))) {
        if (e->d_name[0] == '.')
            continue;
        snprintf(path, sizeof path, "%s/%s", f->dir, e->d_name);
        unlink(path);
    }
    if (d)
        closedir(d);
    rmdir(f->dir);
    free(f);
    assert_int_equal(loop_rc, 0); /* every handle the store opened was closed */
    return 0;
}

/* ---- callbacks ---------------------------------------------------------------------------- */

static void begin_cb(void *ctx, const store_begin_result_t *r)
{
    res_t *o = ctx;
    o->calls++;
    o->err = r->err;
    snprintf(o->errmsg, sizeof o->errmsg, "%s", r->errmsg ? r->errmsg : "");
    o->has_reply = r->has_reply;
    if (r->has_reply) {
        o->reply_len = r->reply.len < sizeof o->reply ? r->reply.len : sizeof o->reply;
        memcpy(o->reply, r->reply.data, o->reply_len);
    }
    o->n_entries = r->n_entries;
    o->n_skipped = r->n_skipped;
    for (size_t i = 0; i < r->n_entries && i < 16; i++) {
        o->entry_len[i] = r->entries[i].len < 128 ? r->entries[i].len : 128;
        memcpy(o->entry[i], r->entries[i].data, o->entry_len[i]);
    }
}

static void done_cb(void *ctx, int err, const char *errmsg)
{
    res_t *o = ctx;
    o->calls++;
    o->err = err;
    snprintf(o->errmsg, sizeof o->errmsg, "%s", errmsg);
}

#define S(x) STORE_BYTES((x), strlen(x))

static res_t do_begin(fx_t *f, store_bytes_t conv, const char *job, unsigned flags)
{
    res_t r = {0};
    assert_int_equal(store_job_begin(f->store, conv, S(job), flags, begin_cb, &r), 0);
    assert_int_equal(r.calls, 0); /* never called from inside the call */
    RUN_UNTIL(f, r.calls > 0, 3000);
    assert_int_equal(r.calls, 1);
    return r;
}

static int do_commit(fx_t *f, store_bytes_t conv, const char *job, const char *user, const char *assistant,
                     const char *reply)
{
    res_t r = {0};
    assert_int_equal(store_job_commit(f->store, conv, S(job), S(user), S(assistant), S(reply), done_cb, &r),
                     0);
    RUN_UNTIL(f, r.calls > 0, 3000);
    assert_int_equal(r.calls, 1);
    return r.err;
}

/* ---- tests -------------------------------------------------------------------------------- */

static void url_parsing(void **state)
{
    store_url_t u;
    char err[256];
    assert_int_equal(store_url_parse("redis://localhost", &u, err, sizeof err), 0);
    assert_string_equal(u.host, "localhost");
    assert_int_equal(u.port, 6379);
    assert_int_equal(u.db, 0);
    assert_null(u.user);
    assert_null(u.password);
    store_url_free(&u);

    assert_int_equal(store_url_parse("redis://app:p%40ss@w:rd@[::1]:7000/3", &u, err, sizeof err), 0);
    assert_string_equal(u.user, "app");
    assert_string_equal(u.password, "p@ss@w:rd");
    assert_string_equal(u.host, "::1");
    assert_int_equal(u.port, 7000);
    assert_int_equal(u.db, 3);
    store_url_free(&u);

    assert_int_equal(store_url_parse("redis://:only@h:1/", &u, err, sizeof err), 0);
    assert_null(u.user);
    assert_string_equal(u.password, "only");
    store_url_free(&u);

    assert_int_equal(store_url_parse("unix://u:pw@/run/a@b.sock", &u, err, sizeof err), 0);
    assert_string_equal(u.host, "/run/a@b.sock");
    assert_string_equal(u.password, "pw");
    store_url_free(&u);

    assert_int_equal(store_url_parse("unix:///run/redis.sock?db=2", &u, err, sizeof err), 0);
    assert_true(u.is_unix);
    assert_string_equal(u.host, "/run/redis.sock");
    assert_int_equal(u.db, 2);
    store_url_free(&u);

    assert_int_equal(store_url_parse("rediss://app:" PASSWORD "@h:6380/2", &u, err, sizeof err), 0);
    assert_true(u.tls);
    assert_false(u.is_unix);
    assert_string_equal(u.host, "h");
    assert_int_equal(u.port, 6380);
    assert_string_equal(u.user, "app");
    assert_string_equal(u.password, PASSWORD);
    assert_int_equal(u.db, 2);
    store_url_free(&u);
    assert_int_equal(store_url_parse("redis://h", &u, err, sizeof err), 0);
    assert_false(u.tls);
    store_url_free(&u);
    const char *bad[] = {"",
                         "http://h",
                         "redis://",
                         "redis://h:0",
                         "redis://h:70000",
                         "redis://h/x",
                         "redis://h/99999999",
                         "redis://u@h",
                         "redis://h?foo=1",
                         "unix://relative",
                         "redis://[::1",
                         "redis://:" PASSWORD "%zz@h"};
    for (size_t i = 0; i < BASE_ARRAY_LEN(bad); i++) {
        err[0] = '\0';
        assert_int_equal(store_url_parse(bad[i], &u, err, sizeof err), -1);
        assert_true(err[0] != '\0');
        assert_null(strstr(err, PASSWORD));
        assert_null(u.host);
    }
}

static void bad_options_are_refused(void **state)
{
    fx_t *f = *state;
    store_options_t o;
    char url[128], err[256];
    test_options(f, &o, url, sizeof url);
    o.history_max_len = 0;
    assert_null(store_new(&f->loop, &o, err, sizeof err));
    assert_non_null(strstr(err, "max_len"));
    test_options(f, &o, url, sizeof url);
    o.url = "redis://:" PASSWORD "@127.0.0.1:notaport";
    assert_null(store_new(&f->loop, &o, err, sizeof err));
    assert_null(strstr(err, PASSWORD));
}

static void begin_on_empty_conversation(void **state)
{
    fx_t *f = *state;
    default_store(f);
    res_t r = do_begin(f, S("c-empty"), "j-1", 0);
    assert_int_equal(r.err, STORE_OK);
    assert_false(r.has_reply);
    assert_int_equal(r.n_entries, 0);
    assert_int_equal(r.n_skipped, 0);
    store_stats_t st;
    store_stats(f->store, &st);
    assert_int_equal(st.requests, 1);
    assert_int_equal(st.commands, 2); /* SCRIPT LOAD, EVAL: the script's first use on this connection */
    assert_true(st.up);
    r = do_begin(f, S("c-empty"), "j-2", 0);
    assert_int_equal(r.err, STORE_OK);
    store_stats(f->store, &st);
    assert_int_equal(st.commands, 3); /* then one EVALSHA per request */
    assert_int_equal(do_commit(f, S("c-empty"), "j-2", "u", "a", "r"), STORE_OK);
    assert_int_equal(do_commit(f, S("c-empty"), "j-3", "u", "a", "r"), STORE_OK);
    store_stats(f->store, &st);
    assert_int_equal(st.requests, 4);
    assert_int_equal(st.commands, 6);
}

/* A SCRIPT FLUSH between two jobs (or a Redis restart, which empties the script cache) is invisible:
 * NOSCRIPT is answered by sending the script again, once. */
static void noscript_is_recovered(void **state)
{
    fx_t *f = *state;
    default_store(f);
    assert_int_equal(do_commit(f, S("n"), "j1", "u1", "a1", "r1"), STORE_OK);
    res_t r = do_begin(f, S("n"), "j2", 0);
    assert_int_equal(r.n_entries, 2);
    store_stats_t st0, st;
    store_stats(f->store, &st0);
    freeReplyObject(sync_cmd(f, "SCRIPT FLUSH"));
    r = do_begin(f, S("n"), "j2", 0);
    assert_int_equal(r.err, STORE_OK);
    assert_int_equal(r.n_entries, 2);
    assert_int_equal(do_commit(f, S("n"), "j2", "u2", "a2", "r2"), STORE_OK);
    store_stats(f->store, &st);
    assert_int_equal(st.commands - st0.commands, 4); /* EVALSHA -> NOSCRIPT -> EVAL, for each script */
    assert_int_equal(st.errors, 0);
    r = do_begin(f, S("n"), "j2", 0);
    assert_true(r.has_reply);
    assert_memory_equal(r.reply, "r2", 2);
    assert_int_equal(r.n_entries, 4);
    assert_memory_equal(r.entry[3], "a2", 2);
    freeReplyObject(sync_cmd(f, "SCRIPT FLUSH")); /* two jobs in flight at once both recover */
    res_t a = {0}, b = {0};
    assert_int_equal(store_job_commit(f->store, S("n"), S("j3"), S("u3"), S("a3"), S("r3"), done_cb, &a), 0);
    assert_int_equal(store_job_commit(f->store, S("n"), S("j4"), S("u4"), S("a4"), S("r4"), done_cb, &b), 0);
    RUN_UNTIL(f, a.calls && b.calls, 3000);
    assert_int_equal(a.err, STORE_OK);
    assert_int_equal(b.err, STORE_OK);
    assert_int_equal(sync_int(f, "LLEN %b", "parley:{n}:history", 18), 8);
    store_stats(f->store, &st);
    assert_int_equal(st.in_flight, 0);
}

/* The TTLs and trims of a commit, to the millisecond, in each variant of the options. */
static void commit_ttls_and_trims(void **state)
{
    fx_t *f = *state;
    store_options_t o;
    char url[128];
    test_options(f, &o, url, sizeof url);
    o.history_max_len = 3;
    o.history_ttl_s = 100;
    o.idempotency_ttl_s = 50;
    store_up(f, &o);
    const char *hkey = "parley:{t}:history", *jkey = "parley:{t}:job:j2";
    assert_int_equal(do_commit(f, S("t"), "j1", "u1", "a1", "r1"), STORE_OK);
    assert_int_equal(do_commit(f, S("t"), "j2", "u2", "a2", "r2"), STORE_OK);
    long long pttl = sync_int(f, "PTTL %b", hkey, strlen(hkey));
    assert_true(pttl > 98000 && pttl <= 100000);
    pttl = sync_int(f, "PTTL %b", jkey, strlen(jkey));
    assert_true(pttl > 48000 && pttl <= 50000);
    redisReply *all = sync_cmd(f, "LRANGE %s 0 -1", hkey); /* 4 pushed, the newest 3 kept */
    assert_int_equal(all->elements, 3);
    assert_string_equal(all->element[0]->str, "a1");
    assert_string_equal(all->element[2]->str, "a2");
    freeReplyObject(all);
    redisReply *v = sync_cmd(f, "GET %s", jkey);
    assert_string_equal(v->str, "r2");
    freeReplyObject(v);
    store_down(f);

    /* TTLs of 0: no expiry on the job key, and the history's TTL is left as it is */
    f->ups = 0;
    f->closed = false;
    test_options(f, &o, url, sizeof url);
    o.history_max_len = 1;
    o.history_ttl_s = 0;
    o.idempotency_ttl_s = 0;
    store_up(f, &o);
    freeReplyObject(sync_cmd(f, "EXPIRE %s 777", hkey));
    assert_int_equal(do_commit(f, S("t"), "j3", "u3", "a3", "r3"), STORE_OK);
    long long ttl = sync_int(f, "TTL %b", hkey, strlen(hkey));
    assert_true(ttl > 770 && ttl <= 777);
    assert_int_equal(sync_int(f, "TTL %b", "parley:{t}:job:j3", 17), -1);
    assert_int_equal(sync_int(f, "LLEN %b", hkey, strlen(hkey)), 1);
    res_t r = do_begin(f, S("t"), "j3", 0);
    assert_true(r.has_reply);
    assert_int_equal(r.n_entries, 1);
    assert_memory_equal(r.entry[0], "a3", 2);
}

/* history_max_messages 0 (history off): begin is one GET; the commit still appends. */
static void history_off_begin_is_a_get(void **state)
{
    fx_t *f = *state;
    store_options_t o;
    char url[128];
    test_options(f, &o, url, sizeof url);
    o.history_max_messages = 0;
    store_up(f, &o);
    assert_int_equal(do_commit(f, S("h"), "j", "u", "a", "r"), STORE_OK);
    store_stats_t st0, st;
    store_stats(f->store, &st0);
    res_t r = do_begin(f, S("h"), "j", 0);
    assert_int_equal(r.err, STORE_OK);
    assert_true(r.has_reply);
    assert_int_equal(r.n_entries, 0);
    r = do_begin(f, S("h"), "j-new", 0);
    assert_int_equal(r.err, STORE_OK);
    assert_false(r.has_reply);
    store_stats(f->store, &st);
    assert_int_equal(st.commands - st0.commands, 2);
    assert_int_equal(sync_int(f, "LLEN %b", "parley:{h}:history", 18), 2);
}

static void commit_then_begin(void **state)
{
    fx_t *f = *state;
    store_options_t o;
    char url[128];
    test_options(f, &o, url, sizeof url);
    o.history_max_len = 5;
    o.history_max_messages = 3;
    o.history_ttl_s = 1000;
    o.idempotency_ttl_s = 500;
    o.key_prefix = "px";
    store_up(f, &o);

    assert_int_equal(do_commit(f, S("c1"), "j1", "{\"u\":1}", "{\"a\":1}", "{\"final\":1}"), STORE_OK);
    const char *hkey = "px:{c1}:history", *jkey = "px:{c1}:job:j1";
    assert_int_equal(sync_int(f, "LLEN %b", hkey, strlen(hkey)), 2);
    long long ttl = sync_int(f, "TTL %b", hkey, strlen(hkey));
    assert_true(ttl > 990 && ttl <= 1000);
    ttl = sync_int(f, "TTL %b", jkey, strlen(jkey));
    assert_true(ttl > 490 && ttl <= 500);

    res_t r = do_begin(f, S("c1"), "j1", 0);
    assert_int_equal(r.err, STORE_OK);
    assert_true(r.has_reply);
    assert_int_equal(r.reply_len, strlen("{\"final\":1}"));
    assert_memory_equal(r.reply, "{\"final\":1}", r.reply_len);
    assert_int_equal(r.n_entries, 2); /* an answered job comes with its history, as from one instant */
    assert_memory_equal(r.entry[1], "{\"a\":1}", r.entry_len[1]);

    r = do_begin(f, S("c1"), "j2", 0);
    assert_false(r.has_reply);
    assert_int_equal(r.n_entries, 2);
    assert_memory_equal(r.entry[0], "{\"u\":1}", r.entry_len[0]);
    assert_memory_equal(r.entry[1], "{\"a\":1}", r.entry_len[1]);

    assert_int_equal(do_commit(f, S("c1"), "j2", "u2", "a2", "f2"), STORE_OK);
    assert_int_equal(do_commit(f, S("c1"), "j3", "u3", "a3", "f3"), STORE_OK);
    assert_int_equal(sync_int(f, "LLEN %b", hkey, strlen(hkey)), 5); /* 6 pushed, trimmed to max_len */
    redisReply *all = sync_cmd(f, "LRANGE %s 0 -1", hkey);
    assert_int_equal(all->elements, 5);
    assert_string_equal(all->element[0]->str, "{\"a\":1}"); /* the oldest one went */
    assert_string_equal(all->element[4]->str, "a3");
    freeReplyObject(all);

    r = do_begin(f, S("c1"), "j4", 0); /* newest max_messages, oldest first */
    assert_int_equal(r.n_entries, 3);
    assert_memory_equal(r.entry[0], "a2", 2);
    assert_memory_equal(r.entry[1], "u3", 2);
    assert_memory_equal(r.entry[2], "a3", 2);
}

static void odd_conversation_ids(void **state)
{
    fx_t *f = *state;
    default_store(f);
    static const char conv[] = "a {b} c \xc3\xbc\xe2\x82\xac\0tail";
    store_bytes_t c = STORE_BYTES(conv, sizeof conv - 1);
    assert_int_equal(do_commit(f, c, "j\0x", "u", "a", "r"), STORE_OK);
    char key[128];
    size_t n = (size_t)snprintf(key, sizeof key, "parley:{");
    memcpy(key + n, conv, sizeof conv - 1);
    n += sizeof conv - 1;
    memcpy(key + n, "}:history", 9);
    n += 9;
    assert_int_equal(sync_int(f, "LLEN %b", key, n), 2);

    res_t r = do_begin(f, c, "other", 0);
    assert_int_equal(r.n_entries, 2);
    r = do_begin(f, STORE_BYTES(conv, 7), "other", 0); /* "a {b} c" alone is another conversation */
    assert_int_equal(r.n_entries, 0);
    r = do_begin(f, c, "j", 0); /* the job id stops at its NUL: "j" */
    assert_true(r.has_reply);

    res_t none = {0};
    assert_int_equal(store_job_begin(f->store, STORE_BYTES("", 0), S("j"), 0, begin_cb, &none),
                     STORE_ERR_INVALID);
    char big[STORE_MAX_ID_BYTES + 1];
    memset(big, 'x', sizeof big);
    assert_int_equal(store_job_begin(f->store, STORE_BYTES(big, sizeof big), S("j"), 0, begin_cb, &none),
                     STORE_ERR_INVALID);
    assert_int_equal(none.calls, 0);
}

/* Entries reach the caller byte for byte through the begin script's LEN:BYTES framing: empty ones,
 * ones that look like framing, binary bytes. */
static void history_entries_survive_the_framing(void **state)
{
    fx_t *f = *state;
    default_store(f);
    static const char bin[] = {'a', '\0', ':', '\n', (char)0xff, '9'};
    freeReplyObject(sync_cmd(f, "RPUSH %s %b %s %b %s", "parley:{fr}:history", "", (size_t)0, "12:ab:", bin,
                             sizeof bin, "last"));
    res_t r = do_begin(f, S("fr"), "j", 0);
    assert_int_equal(r.err, STORE_OK);
    assert_int_equal(r.n_entries, 4);
    assert_int_equal(r.n_skipped, 0);
    assert_int_equal(r.entry_len[0], 0);
    assert_int_equal(r.entry_len[1], 6);
    assert_memory_equal(r.entry[1], "12:ab:", 6);
    assert_int_equal(r.entry_len[2], sizeof bin);
    assert_memory_equal(r.entry[2], bin, sizeof bin);
    assert_memory_equal(r.entry[3], "last", 4);
}

static void limits_flags_and_put_reply(void **state)
{
    fx_t *f = *state;
    store_options_t o;
    char url[128];
    test_options(f, &o, url, sizeof url);
    o.max_entry_bytes = 10;
    store_up(f, &o);
    redisReply *rr = sync_cmd(f, "RPUSH parley:{c}:history short this-entry-is-too-long tiny");
    freeReplyObject(rr);
    res_t r = do_begin(f, S("c"), "j", 0);
    assert_int_equal(r.n_entries, 2);
    assert_int_equal(r.n_skipped, 1);
    assert_memory_equal(r.entry[1], "tiny", 4);

    r = do_begin(f, S("c"), "j", STORE_BEGIN_NO_HISTORY);
    assert_int_equal(r.err, STORE_OK);
    assert_int_equal(r.n_entries, 0);

    res_t d = {0};
    assert_int_equal(
        store_job_put_reply(f->store, S("c"), S("jerr"), S("{\"status\":\"error\"}"), done_cb, &d), 0);
    RUN_UNTIL(f, d.calls, 3000);
    assert_int_equal(d.err, STORE_OK);
    r = do_begin(f, S("c"), "jerr", STORE_BEGIN_NO_HISTORY);
    assert_true(r.has_reply);
    assert_memory_equal(r.reply, "{\"status\":\"error\"}", r.reply_len);
    assert_int_equal(sync_int(f, "LLEN %b", "parley:{c}:history", 18), 3); /* put_reply leaves history */
}

static void no_append_only_stores_the_reply(void **state)
{
    fx_t *f = *state;
    store_options_t o;
    char url[128];
    test_options(f, &o, url, sizeof url);
    o.history_append = false;
    o.idempotency_ttl_s = 0;
    store_up(f, &o);
    assert_int_equal(do_commit(f, S("c"), "j", "u", "a", "r"), STORE_OK);
    assert_int_equal(sync_int(f, "EXISTS %b", "parley:{c}:history", 18), 0);
    assert_int_equal(sync_int(f, "TTL %b", "parley:{c}:job:j", 16), -1); /* no expiry asked */
}

static void failed_exec_is_an_error(void **state)
{
    fx_t *f = *state;
    default_store(f);
    freeReplyObject(sync_cmd(f, "SET parley:{w}:history not-a-list"));
    res_t d = {0};
    assert_int_equal(store_job_commit(f->store, S("w"), S("j"), S("u"), S("a"), S("r"), done_cb, &d), 0);
    RUN_UNTIL(f, d.calls, 3000);
    assert_int_equal(d.err, STORE_ERR_REDIS);
    assert_true(strncmp(d.errmsg, "WRONGTYPE", 9) == 0);
    /* as with MULTI/EXEC, a run-time error does not stop the rest: the reply was stored */
    assert_int_equal(sync_int(f, "EXISTS %b", "parley:{w}:job:j", 16), 1);
    res_t r = do_begin(f, S("w"), "j2", 0);
    assert_int_equal(r.err, STORE_ERR_REDIS);
    assert_true(strncmp(r.errmsg, "WRONGTYPE", 9) == 0);
    freeReplyObject(sync_cmd(f, "RPUSH parley:{l}:job:j x")); /* the job key of the wrong type */
    r = do_begin(f, S("l"), "j", 0);
    assert_int_equal(r.err, STORE_ERR_REDIS);
    assert_true(strncmp(r.errmsg, "WRONGTYPE", 9) == 0);
    r = do_begin(f, S("l"), "j", STORE_BEGIN_NO_HISTORY);
    assert_int_equal(r.err, STORE_ERR_REDIS);
    store_stats_t st;
    store_stats(f->store, &st);
    assert_int_equal(st.errors, 4);
    assert_true(store_is_up(f->store));

    /* a command refused while queueing: EXEC only says EXECABORT, the error names the cause */
    freeReplyObject(sync_cmd(f, "CONFIG SET maxmemory-policy noeviction"));
    freeReplyObject(sync_cmd(f, "CONFIG SET maxmemory 1"));
    freeReplyObject(sync_cmd(f, "EXPIRE parley:{w}:job:j 1000"));
    d = (res_t){0};
    assert_int_equal(store_job_commit(f->store, S("w"), S("j"), S("u"), S("a"), S("r2"), done_cb, &d), 0);
    RUN_UNTIL(f, d.calls, 3000);
    assert_int_equal(d.err, STORE_ERR_REDIS);
    assert_true(strncmp(d.errmsg, "OOM", 3) == 0);
    assert_true(store_is_up(f->store));
    freeReplyObject(sync_cmd(f, "CONFIG SET maxmemory 0"));
    redisReply *v = sync_cmd(f, "GET parley:{w}:job:j"); /* nothing of the refused commit ran */
    assert_string_equal(v->str, "r");
    freeReplyObject(v);
    long long ttl = sync_int(f, "TTL %b", "parley:{w}:job:j", 16);
    assert_true(ttl > 990 && ttl <= 1000);
}

static void replica_is_unavailable_not_an_error(void **state)
{
    fx_t *f = *state;
    default_store(f);
    freeReplyObject(sync_cmd(f, "REPLICAOF 127.0.0.1 1")); /* a read-only replica of nobody */
    res_t d = {0};
    assert_int_equal(store_job_commit(f->store, S("c"), S("j"), S("u"), S("a"), S("r"), done_cb, &d), 0);
    RUN_UNTIL(f, d.calls, 3000);
    assert_int_equal(d.err, STORE_ERR_UNAVAILABLE);
    assert_true(strncmp(d.errmsg, "READONLY", 8) == 0);
    assert_int_equal(f->downs, 1); /* dropped, to find the new primary on reconnect */
    RUN_UNTIL(f, f->ups > 1, 3000);
    freeReplyObject(sync_cmd(f, "REPLICAOF NO ONE"));
    assert_int_equal(do_commit(f, S("c"), "j", "u", "a", "r"), STORE_OK);
}

static void close_in_begin_cb(void *ctx, const store_begin_result_t *r)
{
    fx_t *f = ctx;
    assert_int_equal(r->err, STORE_OK);
    store_close(f->store, on_closed, f);
}

static void close_on_down(void *ctx, bool up)
{
    fx_t *f = ctx;
    on_state(ctx, up);
    if (!up)
        store_close(f->store, on_closed, f);
}

static void close_from_callbacks(void **state)
{
    fx_t *f = *state;
    default_store(f);
    assert_int_equal(store_job_begin(f->store, S("c"), S("j"), 0, close_in_begin_cb, f), 0);
    RUN_UNTIL(f, f->closed, 2000);
    assert_true(f->closed);

    store_options_t o;
    char url[128];
    test_options(f, &o, url, sizeof url);
    o.on_state = close_on_down;
    f->closed = false;
    f->ups = 0;
    store_up(f, &o);
    res_t r = {0};
    freeReplyObject(sync_cmd(f, "CLIENT PAUSE 3000"));
    assert_int_equal(store_job_begin(f->store, S("c"), S("j"), 0, begin_cb, &r), 0);
    redis_stop(f);
    RUN_UNTIL(f, f->closed, 2000);
    assert_true(f->closed);
    assert_int_equal(r.calls, 1);
    assert_int_equal(r.err, STORE_ERR_CLOSED); /* closed from on_state(false), before it was failed */
}

static void auth_with_password(void **state)
{
    fx_t *f = *state;
    store_options_t o;
    char url[128];
    test_options(f, &o, url, sizeof url);
    snprintf(url, sizeof url, "redis://:%s@127.0.0.1:%d", PASSWORD, f->port);
    store_up(f, &o);
    assert_int_equal(do_commit(f, S("c"), "j", "u", "a", "r"), STORE_OK);
    store_down(f);

    char *text = NULL;
    size_t len = 0;
    FILE *logs = open_memstream(&text, &len);
    log_setup(LOG_DEBUG, LOG_FORMAT_JSON, logs);
    char err[256];
    f->closed = false;
    snprintf(url, sizeof url, "redis://:wrong-%s@127.0.0.1:%d", PASSWORD, f->port);
    f->store = store_new(&f->loop, &o, err, sizeof err);
    assert_non_null(f->store);
    RUN_UNTIL(f, store_last_error(f->store)[0] != '\0', 2000);
    const char *e = store_last_error(f->store);
    assert_non_null(strstr(e, "AUTH failed"));
    assert_null(strstr(e, PASSWORD));
    assert_false(store_is_up(f->store));
    res_t r = {0};
    assert_int_equal(store_job_begin(f->store, S("c"), S("j"), 0, begin_cb, &r), STORE_ERR_UNAVAILABLE);
    RUN_UNTIL(f, false, 100); /* a few more failed attempts */
    store_stats_t st;
    store_stats(f->store, &st);
    assert_true(st.connect_failures >= 2);
    assert_int_equal(st.connects, 0);
    store_down(f);
    log_setup(LOG_ERROR, LOG_FORMAT_TEXT, stderr);
    fclose(logs);
    assert_non_null(strstr(text, "AUTH failed"));
    assert_null(strstr(text, PASSWORD));
    free(text);
}

static void acl_user_and_db(void **state)
{
    fx_t *f = *state;
    freeReplyObject(sync_cmd(f, "ACL SETUSER app on >app-pw ~parley:* +@all"));
    store_options_t o;
    char url[128];
    test_options(f, &o, url, sizeof url);
    snprintf(url, sizeof url, "redis://app:app-pw@127.0.0.1:%d/3", f->port);
    store_up(f, &o);
    assert_int_equal(do_commit(f, S("c"), "j", "u", "a", "r"), STORE_OK);
    assert_int_equal(sync_int(f, "EXISTS %b", "parley:{c}:job:j", 16), 0); /* not in db 0 */
    redisContext *c = sync_connect(f);
    freeReplyObject(redisCommand(c, "SELECT 3"));
    redisReply *r = redisCommand(c, "GET parley:{c}:job:j");
    assert_int_equal(r->type, REDIS_REPLY_STRING);
    assert_string_equal(r->str, "r");
    freeReplyObject(r);
    r = redisCommand(c, "CLIENT LIST");
    assert_non_null(strstr(r->str, "name=parley"));
    assert_non_null(strstr(r->str, "user=app"));
    freeReplyObject(r);
    redisFree(c);
}

static void outage_and_reconnect(void **state)
{
    fx_t *f = *state;
    default_store(f);
    freeReplyObject(sync_cmd(f, "CLIENT PAUSE 5000"));
    res_t pending = {0};
    assert_int_equal(store_job_begin(f->store, S("c"), S("j"), 0, begin_cb, &pending), 0);
    RUN_UNTIL(f, false, 50);
    assert_int_equal(pending.calls, 0);
    redis_stop(f);
    RUN_UNTIL(f, f->downs > 0 && pending.calls > 0, 3000);
    assert_int_equal(f->downs, 1);
    assert_int_equal(pending.err, STORE_ERR_UNAVAILABLE);
    assert_false(store_is_up(f->store));
    res_t r = {0};
    assert_int_equal(store_job_begin(f->store, S("c"), S("j"), 0, begin_cb, &r), STORE_ERR_UNAVAILABLE);
    assert_int_equal(store_job_commit(f->store, S("c"), S("j"), S("u"), S("a"), S("r"), done_cb, &r),
                     STORE_ERR_UNAVAILABLE);
    RUN_UNTIL(f, false, 300); /* it keeps trying while down */
    redis_start(f);
    RUN_UNTIL(f, f->ups > 1, 3000);
    assert_int_equal(f->ups, 2);
    assert_int_equal(do_commit(f, S("c"), "j", "u", "a", "r"), STORE_OK);
    store_stats_t st;
    store_stats(f->store, &st);
    assert_int_equal(st.reconnects, 1);
    assert_int_equal(st.disconnects, 1);
    assert_true(st.connect_failures >= 1);
    assert_int_equal(st.in_flight, 0);
}

static void command_timeout_and_late_reply(void **state)
{
    fx_t *f = *state;
    store_options_t o;
    char url[128];
    test_options(f, &o, url, sizeof url);
    o.command_timeout_ms = 200;
    o.stall_timeout_ms = -1;
    store_up(f, &o);
    freeReplyObject(sync_cmd(f, "CLIENT PAUSE 700"));
    res_t r = {0};
    int64_t t0 = base_mono_ms();
    assert_int_equal(store_job_begin(f->store, S("c"), S("j"), 0, begin_cb, &r), 0);
    RUN_UNTIL(f, r.calls > 0, 3000);
    int64_t took = base_mono_ms() - t0;
    assert_int_equal(r.err, STORE_ERR_TIMEOUT);
    assert_true(took >= 190 && took < 600);
    store_stats_t st;
    RUN_UNTIL(f, (store_stats(f->store, &st), st.late_replies > 0), 3000);
    assert_int_equal(st.late_replies, 1);
    assert_int_equal(st.timeouts, 1);
    assert_int_equal(st.in_flight, 0);
    assert_int_equal(r.calls, 1); /* the late reply did not call back again */
    assert_true(store_is_up(f->store));
    assert_int_equal(do_commit(f, S("c"), "j", "u", "a", "r"), STORE_OK);
}

static void stall_drops_and_reconnects(void **state)
{
    fx_t *f = *state;
    store_options_t o;
    char url[128];
    test_options(f, &o, url, sizeof url);
    o.command_timeout_ms = 100;
    o.stall_timeout_ms = 300;
    o.connect_timeout_ms = 2000;
    store_up(f, &o);
    freeReplyObject(sync_cmd(f, "CLIENT PAUSE 900"));
    res_t r = {0};
    assert_int_equal(store_job_begin(f->store, S("c"), S("j"), 0, begin_cb, &r), 0);
    RUN_UNTIL(f, f->downs > 0, 2000);
    assert_int_equal(r.err, STORE_ERR_TIMEOUT);
    assert_int_equal(f->downs, 1);
    assert_non_null(strstr(store_last_error(f->store), "no reply for 300 ms"));
    RUN_UNTIL(f, f->ups > 1, 3000);
    assert_int_equal(f->ups, 2);
    store_stats_t st;
    store_stats(f->store, &st);
    assert_int_equal(st.late_replies, 0);
    assert_int_equal(st.in_flight, 0);
    assert_int_equal(r.calls, 1);
    assert_int_equal(do_commit(f, S("c"), "j", "u", "a", "r"), STORE_OK);
}

static void unix_socket(void **state)
{
    fx_t *f = *state;
    store_options_t o;
    char url[200];
    test_options(f, &o, url, sizeof url);
    snprintf(url, sizeof url, "unix://%s?db=1", f->sock);
    store_up(f, &o);
    assert_int_equal(do_commit(f, S("u"), "j", "u", "a", "r"), STORE_OK);
    redisContext *c = sync_connect(f);
    freeReplyObject(redisCommand(c, "SELECT 1"));
    redisReply *r = redisCommand(c, "LLEN parley:{u}:history");
    assert_int_equal(r->integer, 2);
    freeReplyObject(r);
    redisFree(c);
}

static void ipv6_literal(void **state)
{
    fx_t *f = *state;
    if (!f->extra[0])
        skip(); /* no IPv6 loopback here */
    store_options_t o;
    char url[128];
    test_options(f, &o, url, sizeof url);
    snprintf(url, sizeof url, "redis://[::1]:%d/0", f->port);
    store_up(f, &o);
    assert_int_equal(do_commit(f, S("v6"), "j", "u", "a", "r"), STORE_OK);
    assert_int_equal(sync_int(f, "LLEN %b", "parley:{v6}:history", 19), 2);
}

static void close_with_requests_owed(void **state)
{
    fx_t *f = *state;
    default_store(f);
    freeReplyObject(sync_cmd(f, "CLIENT PAUSE 400"));
    res_t a = {0}, b = {0};
    assert_int_equal(store_job_begin(f->store, S("c"), S("j"), 0, begin_cb, &a), 0);
    assert_int_equal(store_job_commit(f->store, S("c"), S("j"), S("u"), S("a"), S("r"), done_cb, &b), 0);
    store_close(f->store, on_closed, f);
    assert_int_equal(a.err, STORE_ERR_CLOSED);
    assert_int_equal(b.err, STORE_ERR_CLOSED);
    RUN_UNTIL(f, f->closed, 2000);
    assert_true(f->closed);
    assert_int_equal(f->downs, 0); /* closing is not an outage */
}

static void connect_timeout(void **state)
{
    fx_t *f = *state;
    int fd = socket(AF_INET, SOCK_STREAM, 0); /* accepts TCP (backlog) but never answers */
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof a;
    assert_int_equal(bind(fd, (struct sockaddr *)&a, sizeof a), 0);
    assert_int_equal(listen(fd, 8), 0);
    getsockname(fd, (struct sockaddr *)&a, &len);
    store_options_t o;
    char url[128], err[256];
    test_options(f, &o, url, sizeof url);
    snprintf(url, sizeof url, "redis://127.0.0.1:%d", ntohs(a.sin_port));
    o.connect_timeout_ms = 150;
    f->store = store_new(&f->loop, &o, err, sizeof err);
    assert_non_null(f->store);
    RUN_UNTIL(f, strstr(store_last_error(f->store), "timed out"), 2000);
    assert_non_null(strstr(store_last_error(f->store), "connect timed out after 150 ms"));
    assert_false(store_is_up(f->store));
    store_down(f);
    close(fd);

    test_options(f, &o, url, sizeof url); /* a name, resolved off the loop, nobody listening */
    snprintf(url, sizeof url, "redis://localhost:%d", free_port());
    f->closed = false;
    int64_t t0 = base_mono_ms();
    f->store = store_new(&f->loop, &o, err, sizeof err);
    RUN_UNTIL(f, store_last_error(f->store)[0], 2000);
    assert_non_null(strstr(store_last_error(f->store), "refused"));
    assert_true(base_mono_ms() - t0 < o.connect_timeout_ms / 2); /* seen at once, not by the deadline */
}

/* ---- rediss:// ---------------------------------------------------------------------------- */

enum { F_CA, F_CRT, F_KEY, F_OTHER_CA, F_HOST_CRT, F_HOST_KEY };

/* Makes, in f->dir: a CA, a server certificate it signed for 127.0.0.1 and localhost, a second
 * (unrelated) CA, and a certificate of the first CA for another host name only. */
static void make_certs(fx_t *f)
{
    static const char *const names[] = {"ca.crt",       "server.crt", "server.key",
                                        "other-ca.crt", "host.crt",   "host.key"};
    char cmd[2048];
    for (size_t i = 0; i < BASE_ARRAY_LEN(names); i++)
        snprintf(f->file[i], sizeof f->file[i], "%s/%s", f->dir, names[i]);
    snprintf(cmd, sizeof cmd,
             "cd %s && exec >>openssl.log 2>&1 && set -e && "
             "openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.crt -days 2 -subj "
             "/CN=parley-test-ca && "
             "openssl req -x509 -newkey rsa:2048 -nodes -keyout o.key -out other-ca.crt -days 2 -subj "
             "/CN=other-ca && "
             "printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\\n' >san.ext && "
             "printf 'subjectAltName=DNS:other.example\\n' >host.ext && "
             "for c in server:san host:host; do n=${c%%:*}; "
             "openssl req -newkey rsa:2048 -nodes -keyout $n.key -out $n.csr -subj /CN=127.0.0.1 && "
             "openssl x509 -req -in $n.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 2 "
             "-extfile ${c##*:}.ext -out $n.crt; done && chmod 644 *.key",
             f->dir);
    assert_int_equal(system(cmd), 0);
}

/* Restarts the server with TLS on a second port, the given certificate, and requirepass PASSWORD. */
static void tls_restart(fx_t *f, int crt, int key)
{
    static char tls_port[16];
    redis_stop(f);
    f->tls_port = free_port();
    snprintf(tls_port, sizeof tls_port, "%d", f->tls_port);
    const char *extra[] = {"--tls-port",         tls_port,     "--tls-cert-file",    f->file[crt],
                           "--tls-key-file",     f->file[key], "--tls-ca-cert-file", f->file[F_CA],
                           "--tls-auth-clients", "no",         "--requirepass",      PASSWORD};
    memcpy(f->extra, extra, sizeof extra);
    f->password = PASSWORD;
    redis_start(f);
}

static int setup_tls(void **state)
{
    int rc = setup_common(state, NULL, NULL, NULL);
    fx_t *f = *state;
    make_certs(f);
    tls_restart(f, F_CRT, F_KEY);
    return rc;
}

/* Options for rediss://USERINFO@HOST:tls_port/DB with ca_file (the url buffer is the caller's). */
static void tls_options(fx_t *f, store_options_t *o, char *url, size_t urllen, const char *userinfo,
                        const char *host, int db, const char *ca_file)
{
    test_options(f, o, url, urllen);
    snprintf(url, urllen, "rediss://%s@%s:%d/%d", userinfo, host, f->tls_port, db);
    o->ca_file = ca_file;
}

/* Waits until the store has failed to connect `attempts` times; its last error. */
static const char *tls_failure(fx_t *f, const store_options_t *o, unsigned attempts)
{
    char err[256];
    store_stats_t st = {0};
    f->store = store_new(&f->loop, o, err, sizeof err);
    assert_non_null(f->store);
    RUN_UNTIL(f, (store_stats(f->store, &st), st.connect_failures >= attempts), 5000);
    assert_true(st.connect_failures >= attempts); /* it keeps trying, as with any failed connect */
    assert_int_equal(f->ups, 0);
    assert_false(store_is_up(f->store));
    assert_null(strstr(store_last_error(f->store), PASSWORD));
    return store_last_error(f->store);
}

static void tls_round_trip_and_reconnect(void **state)
{
    fx_t *f = *state;
    store_options_t o;
    char url[256];
    tls_options(f, &o, url, sizeof url, ":" PASSWORD, "127.0.0.1", 0, f->file[F_CA]);
    store_up(f, &o);
    assert_int_equal(do_commit(f, S("c"), "j", "u", "a", "final"), STORE_OK);
    res_t r = do_begin(f, S("c"), "j", 0);
    assert_int_equal(r.err, STORE_OK);
    assert_true(r.has_reply);
    assert_memory_equal(r.reply, "final", 5);
    assert_int_equal(r.n_entries, 2);
    redisReply *info = sync_cmd(f, "INFO clients");
    assert_non_null(strstr(info->str, "connected_clients:2")); /* the store's (TLS) one, and this one */
    freeReplyObject(info);

    redis_stop(f); /* an outage: the store goes down and comes back through a new bridge */
    RUN_UNTIL(f, f->downs > 0, 3000);
    assert_int_equal(f->downs, 1);
    redis_start(f);
    RUN_UNTIL(f, f->ups > 1, 5000);
    assert_int_equal(f->ups, 2);
    assert_int_equal(do_commit(f, S("c"), "j2", "u", "a", "again"), STORE_OK);
}

/* A reply larger than every bridge buffer and queue bound comes back whole. */
typedef struct {
    int calls, err;
    size_t len;
    bool same;
    const char *want;
} big_t;

static void big_begin_cb(void *ctx, const store_begin_result_t *r)
{
    big_t *b = ctx;
    b->calls++;
    b->err = r->err;
    b->len = r->has_reply ? r->reply.len : 0;
    b->same = r->has_reply && memcmp(r->reply.data, b->want, r->reply.len) == 0;
}

static void tls_large_values(void **state)
{
    fx_t *f = *state;
    store_options_t o;
    char url[256];
    size_t n = 3 * 1024 * 1024 + 7;
    char *big = malloc(n);
    for (size_t i = 0; i < n; i++)
        big[i] = (char)('a' + (i * 7919) % 26);
    tls_options(f, &o, url, sizeof url, ":" PASSWORD, "localhost", 0, f->file[F_CA]); /* by name: SNI */
    store_up(f, &o);
    res_t w = {0};
    assert_int_equal(store_job_put_reply(f->store, S("c"), S("big"), STORE_BYTES(big, n), done_cb, &w), 0);
    RUN_UNTIL(f, w.calls > 0, 5000);
    assert_int_equal(w.err, STORE_OK);
    big_t b = {.want = big};
    assert_int_equal(store_job_begin(f->store, S("c"), S("big"), STORE_BEGIN_NO_HISTORY, big_begin_cb, &b),
                     0);
    RUN_UNTIL(f, b.calls > 0, 5000);
    assert_int_equal(b.err, STORE_OK);
    assert_int_equal(b.len, n);
    assert_true(b.same);
    free(big);
}

static void tls_acl_user_and_db(void **state)
{
    fx_t *f = *state;
    freeReplyObject(sync_cmd(f, "ACL SETUSER app on >app-pw ~parley:* +@all"));
    store_options_t o;
    char url[256];
    tls_options(f, &o, url, sizeof url, "app:app-pw", "127.0.0.1", 2, f->file[F_CA]);
    store_up(f, &o);
    assert_int_equal(do_commit(f, S("c"), "j", "u", "a", "r"), STORE_OK);
    redisContext *c = sync_connect(f);
    freeReplyObject(redisCommand(c, "SELECT 2"));
    redisReply *r = redisCommand(c, "GET parley:{c}:job:j");
    assert_int_equal(r->type, REDIS_REPLY_STRING);
    assert_string_equal(r->str, "r");
    freeReplyObject(r);
    r = redisCommand(c, "CLIENT LIST");
    assert_non_null(strstr(r->str, "user=app"));
    freeReplyObject(r);
    redisFree(c);
    store_down(f);
    f->ups = 0;
    f->closed = false;
    tls_options(f, &o, url, sizeof url, "app:wrong-pw", "127.0.0.1", 2, f->file[F_CA]);
    const char *why = tls_failure(f, &o, 1);
    assert_non_null(strstr(why, "AUTH failed"));
    assert_null(strstr(why, "wrong-pw"));
}

static void tls_wrong_ca_fails(void **state)
{
    fx_t *f = *state;
    store_options_t o;
    char url[256];
    tls_options(f, &o, url, sizeof url, ":" PASSWORD, "127.0.0.1", 0, f->file[F_OTHER_CA]);
    const char *why = tls_failure(f, &o, 2);
    assert_non_null(strstr(why, "tls handshake failed: certificate verify failed"));
    assert_non_null(strstr(why, "self-signed certificate in certificate chain")); /* not our CA */
}

static void tls_system_store_fails(void **state)
{
    fx_t *f = *state;
    store_options_t o;
    char url[256];
    tls_options(f, &o, url, sizeof url, ":" PASSWORD, "127.0.0.1", 0, ""); /* our CA is in no system store */
    assert_non_null(strstr(tls_failure(f, &o, 1), "certificate verify failed"));
}

static void tls_host_name_mismatch_fails(void **state)
{
    fx_t *f = *state;
    tls_restart(f, F_HOST_CRT, F_HOST_KEY); /* the right CA, but a certificate for other.example */
    store_options_t o;
    char url[256];
    tls_options(f, &o, url, sizeof url, ":" PASSWORD, "127.0.0.1", 0, f->file[F_CA]);
    const char *why = tls_failure(f, &o, 1);
    assert_non_null(strstr(why, "certificate verify failed"));
    assert_non_null(strstr(why, "mismatch"));
}

static void tls_to_a_plain_port_fails(void **state)
{
    fx_t *f = *state;
    store_options_t o;
    char url[256];
    tls_options(f, &o, url, sizeof url, ":" PASSWORD, "127.0.0.1", 0, f->file[F_CA]);
    snprintf(url, sizeof url, "rediss://:" PASSWORD "@127.0.0.1:%d", f->port); /* the plain-text port */
    const char *why = tls_failure(f, &o, 1); /* Redis waits for the end of a "command" that never comes */
    assert_true(strstr(why, "tls handshake failed") || strstr(why, "connection closed by redis") ||
                strstr(why, "connect timed out"));
}

static void tls_bad_ca_file_is_refused(void **state)
{
    fx_t *f = *state;
    store_options_t o;
    char url[256], err[256];
    tls_options(f, &o, url, sizeof url, ":" PASSWORD, "127.0.0.1", 0, "/nonexistent/ca.pem");
    assert_null(store_new(&f->loop, &o, err, sizeof err));
    assert_non_null(strstr(err, "redis.ca_file /nonexistent/ca.pem"));
    assert_null(strstr(err, PASSWORD));
}

/* The relay itself: a connection from another socket than the one named is closed at once; the
 * named one is relayed to Redis over TLS. */
typedef struct {
    int errors;
    char why[256];
    bool freed;
} bridge_obs_t;

static void bridge_err_cb(void *ctx, const char *why)
{
    bridge_obs_t *o = ctx;
    o->errors++;
    snprintf(o->why, sizeof o->why, "%s", why);
}

static void bridge_freed_cb(void *ctx) { ((bridge_obs_t *)ctx)->freed = true; }

/* A blocking loopback client of port, then made non-blocking. */
static int loopback_client(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {
        .sin_family = AF_INET, .sin_port = htons((uint16_t)port), .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    assert_int_equal(connect(fd, (struct sockaddr *)&a, sizeof a), 0);
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
    return fd;
}

/* Appends what fd has to buf; the byte count, 0 on EOF, -1 when nothing yet. */
static ssize_t read_some(int fd, char *buf, size_t *len, size_t cap)
{
    ssize_t n = read(fd, buf + *len, cap - 1 - *len);
    if (n > 0)
        *len += (size_t)n;
    buf[*len] = '\0';
    return n;
}

static void tls_bridge_admits_only_the_named_socket(void **state)
{
    fx_t *f = *state;
    char err[256], got[256] = "";
    size_t got_len = 0;
    bridge_obs_t o = {0};
    store_tls_ctx_t *c = store_tls_ctx_new(f->file[F_CA], err, sizeof err);
    assert_non_null(c);
    store_tls_bridge_t *b = store_tls_bridge_new(&f->loop, c, "127.0.0.1", f->tls_port, "127.0.0.1",
                                                 bridge_err_cb, &o, err, sizeof err);
    assert_non_null(b);
    int port = store_tls_bridge_port(b);
    assert_true(port > 0);

    int stranger = loopback_client(port);
    store_tls_bridge_expect(b, free_port()); /* someone else's port */
    ssize_t n = -1;
    RUN_UNTIL(f, (n = read_some(stranger, got, &got_len, sizeof got)) == 0, 2000);
    assert_int_equal(n, 0); /* closed by the bridge */
    close(stranger);
    assert_int_equal(o.errors, 0); /* a stranger is no failure of the bridge */

    int client = loopback_client(port);
    struct sockaddr_in self;
    socklen_t slen = sizeof self;
    assert_int_equal(getsockname(client, (struct sockaddr *)&self, &slen), 0);
    store_tls_bridge_expect(b, ntohs(self.sin_port));
    const char cmd[] = "AUTH " PASSWORD "\r\nPING\r\n";
    assert_int_equal(write(client, cmd, sizeof cmd - 1), (ssize_t)(sizeof cmd - 1));
    RUN_UNTIL(f, (read_some(client, got, &got_len, sizeof got), strstr(got, "+PONG\r\n")), 3000);
    assert_string_equal(got, "+OK\r\n+PONG\r\n");
    assert_int_equal(o.errors, 0);

    close(client); /* hiredis gone: the bridge reports it */
    RUN_UNTIL(f, o.errors > 0, 2000);
    assert_int_equal(o.errors, 1);
    assert_string_equal(o.why, "connection closed by the redis client");
    store_tls_bridge_free(b, bridge_freed_cb, &o);
    RUN_UNTIL(f, o.freed, 2000);
    assert_true(o.freed);
    store_tls_ctx_free(c);
}

int main(void)
{
    signal(SIGPIPE, SIG_IGN);
    log_setup(LOG_ERROR, LOG_FORMAT_TEXT, stderr);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(url_parsing),
        cmocka_unit_test_setup_teardown(bad_options_are_refused, setup, teardown),
        cmocka_unit_test_setup_teardown(begin_on_empty_conversation, setup, teardown),
        cmocka_unit_test_setup_teardown(noscript_is_recovered, setup, teardown),
        cmocka_unit_test_setup_teardown(commit_ttls_and_trims, setup, teardown),
        cmocka_unit_test_setup_teardown(history_off_begin_is_a_get, setup, teardown),
        cmocka_unit_test_setup_teardown(commit_then_begin, setup, teardown),
        cmocka_unit_test_setup_teardown(odd_conversation_ids, setup, teardown),
        cmocka_unit_test_setup_teardown(history_entries_survive_the_framing, setup, teardown),
        cmocka_unit_test_setup_teardown(limits_flags_and_put_reply, setup, teardown),
        cmocka_unit_test_setup_teardown(no_append_only_stores_the_reply, setup, teardown),
        cmocka_unit_test_setup_teardown(failed_exec_is_an_error, setup, teardown),
        cmocka_unit_test_setup_teardown(replica_is_unavailable_not_an_error, setup, teardown),
        cmocka_unit_test_setup_teardown(close_from_callbacks, setup, teardown),
        cmocka_unit_test_setup_teardown(auth_with_password, setup_auth, teardown),
        cmocka_unit_test_setup_teardown(acl_user_and_db, setup, teardown),
        cmocka_unit_test_setup_teardown(outage_and_reconnect, setup, teardown),
        cmocka_unit_test_setup_teardown(command_timeout_and_late_reply, setup, teardown),
        cmocka_unit_test_setup_teardown(stall_drops_and_reconnects, setup, teardown),
        cmocka_unit_test_setup_teardown(unix_socket, setup_unix, teardown),
        cmocka_unit_test_setup_teardown(ipv6_literal, setup_v6, teardown),
        cmocka_unit_test_setup_teardown(close_with_requests_owed, setup, teardown),
        cmocka_unit_test_setup_teardown(connect_timeout, setup, teardown),
        cmocka_unit_test_setup_teardown(tls_round_trip_and_reconnect, setup_tls, teardown),
        cmocka_unit_test_setup_teardown(tls_large_values, setup_tls, teardown),
        cmocka_unit_test_setup_teardown(tls_acl_user_and_db, setup_tls, teardown),
        cmocka_unit_test_setup_teardown(tls_wrong_ca_fails, setup_tls, teardown),
        cmocka_unit_test_setup_teardown(tls_system_store_fails, setup_tls, teardown),
        cmocka_unit_test_setup_teardown(tls_host_name_mismatch_fails, setup_tls, teardown),
        cmocka_unit_test_setup_teardown(tls_to_a_plain_port_fails, setup_tls, teardown),
        cmocka_unit_test_setup_teardown(tls_bad_ca_file_is_refused, setup_tls, teardown),
        cmocka_unit_test_setup_teardown(tls_bridge_admits_only_the_named_socket, setup_tls, teardown),
    };
    return cmocka_run_group_tests_name("store", tests, NULL, NULL);
}
