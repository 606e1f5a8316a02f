/* stack.c — `parley dev` in the foreground: starts the mock broker and the mock providers on one
 * libuv loop, prints where they listen, writes the ready file (atomically, once everything
 * listens) and a worker config pointing at them, and stops everything on SIGINT/SIGTERM. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include "base/base.h"
#include "dev/dev.h"
#include "log/log.h"

typedef struct {
    uv_loop_t loop;
    uv_signal_t sigint, sigterm;
    dev_broker_t *broker;
    dev_broker_control_t *control;
    dev_mock_t **mocks;
    size_t n_mocks;
    const char *url_host;
} stack_state_t;

int dev_provider_parse(const char *spec, dev_provider_t *out, char *err, size_t errlen)
{
    memset(out, 0, sizeof *out);
    const char *c1 = strchr(spec, ':');
    const char *c2 = c1 ? strchr(c1 + 1, ':') : NULL;
    char type[32];
    size_t tlen = c1 ? (c2 ? (size_t)(c2 - c1 - 1) : strlen(c1 + 1)) : 0;
    buf_t knobs;
    buf_init(&knobs, 4096);
    int rc = -1;
    if (!c1 || c1 == spec || tlen == 0 || tlen >= sizeof type) {
        snprintf(err, errlen, "provider '%.80s': expected NAME:TYPE[:key=value,...]", spec);
        goto out;
    }
    memcpy(type, c1 + 1, tlen);
    type[tlen] = '\0';
    int t = dev_mock_type_parse(type);
    if (t < 0) {
        snprintf(err, errlen, "provider '%.80s': type must be openai or anthropic", spec);
        goto out;
    }
    out->type = (dev_mock_type_t)t;
    out->name = base_strndup(spec, (size_t)(c1 - spec));
    /* Split port=N from the knobs. */
    char *list = base_strdup(c2 ? c2 + 1 : "");
    if (!out->name || !list) {
        free(list);
        snprintf(err, errlen, "out of memory");
        goto out;
    }
    rc = 0;
    for (char *save = NULL, *kv = strtok_r(list, ",", &save); kv && rc == 0;
         kv = strtok_r(NULL, ",", &save)) {
        if (strncmp(kv, "port=", 5) == 0) {
            char *e;
            long p = strtol(kv + 5, &e, 10);
            if (*e || p < 0 || p > 65535) {
                snprintf(err, errlen, "provider %s: bad port '%s'", out->name, kv + 5);
                rc = -1;
            }
            out->port = (int)p;
        } else if (buf_printf(&knobs, "%s%s", knobs.len ? "," : "", kv) < 0) {
            snprintf(err, errlen, "provider %s: knob list too long", out->name);
            rc = -1;
        }
    }
    free(list);
    if (rc == 0 && knobs.len && !(out->knobs = buf_steal(&knobs, NULL)))
        rc = -1;
    /* Validate the name and the knobs now, so a typo is a usage error. */
    dev_mock_t *probe = rc == 0 ? dev_mock_new(NULL, out->name, out->type, out->knobs, err, errlen) : NULL;
    if (probe)
        dev_mock_close(probe);
    else
        rc = -1;
out:
    buf_free(&knobs);
    if (rc < 0)
        dev_provider_clear(out);
    return rc;
}

void dev_provider_clear(dev_provider_t *p)
{
    free(p->name);
    free(p->knobs);
    p->name = p->knobs = NULL;
}

/* Writes data to path through a temporary file and a rename, so readers never see half of it. */
static int write_atomic(const char *path, const buf_t *data, char *err, size_t errlen)
{
    char tmp[4096];
    if (snprintf(tmp, sizeof tmp, "%s.tmp.%d", path, (int)getpid()) >= (int)sizeof tmp) {
        snprintf(err, errlen, "path too long: %.200s", path);
        return -1;
    }
    FILE *f = fopen(tmp, "w");
    int rc = -1;
    if (f) {
        size_t n = fwrite(data->data, 1, data->len, f);
        rc = fclose(f) == 0 && n == data->len ? rename(tmp, path) : -1;
    }
    if (rc < 0) {
        snprintf(err, errlen, "cannot write %.200s", path);
        unlink(tmp);
    }
    return rc;
}

static const char *default_model(dev_mock_type_t t)
{
    return t == DEV_MOCK_OPENAI ? "gpt-4o-mini" : "claude-3-5-haiku-latest";
}

/* The worker config (CONTRACT §4) pointing at this stack. */
static int config_yaml(const stack_state_t *s, const dev_options_t *opt, buf_t *out)
{
    int rc = buf_printf(
        out,
        "# parley worker config for the `parley dev` stack (written by parley dev --write-config).\n"
        "kafka:\n  brokers: \"%s\"\n  group_id: parley\n  jobs_topic: %s\n  reply_topic: %s\n"
        "  dlq_topic: %s\nredis:\n  url: \"${REDIS_URL:-redis://127.0.0.1:6379/0}\"\n"
        "llm:\n  strategy: race\n  providers:%s\n",
        s->broker ? dev_broker_bootstraps(s->broker) : "127.0.0.1:9092",
        opt->jobs_topic ? opt->jobs_topic : "chat.jobs", opt->reply_topic ? opt->reply_topic : "chat.replies",
        opt->dlq_topic ? opt->dlq_topic : "chat.jobs.dlq", s->n_mocks ? "" : " []");
    for (size_t i = 0; i < s->n_mocks && rc == 0; i++) {
        const dev_mock_t *m = s->mocks[i];
        rc = buf_printf(out,
                        "    - name: %s\n      type: %s\n      base_url: \"http://%s:%d/v1\"\n"
                        "      api_key: \"dev-key\"\n      model: %s\n",
                        dev_mock_name(m), dev_mock_type_name(dev_mock_type(m)), s->url_host, dev_mock_port(m),
                        default_model(dev_mock_type(m)));
    }
    return rc;
}

/* The ready file's JSON. */
static int ready_json(const stack_state_t *s, buf_t *out)
{
    int rc = buf_printf(out, "{\"brokers\":\"%s\",\"providers\":{",
                        s->broker ? dev_broker_bootstraps(s->broker) : "");
    for (size_t i = 0; i < s->n_mocks && rc == 0; i++) {
        const dev_mock_t *m = s->mocks[i];
        const char *h = s->url_host;
        int p = dev_mock_port(m);
        rc = buf_printf(
            out,
            "%s\"%s\":{\"type\":\"%s\",\"base_url\":\"http://%s:%d/v1\",\"stats\":\"http://%s:%d/stats\","
            "\"control\":\"http://%s:%d/control\"}",
            i ? "," : "", dev_mock_name(m), dev_mock_type_name(dev_mock_type(m)), h, p, h, p, h, p);
    }
    if (rc == 0 && s->control)
        rc = buf_printf(out, "},\"broker_control\":\"http://127.0.0.1:%d\"",
                        dev_broker_control_port(s->control));
    else if (rc == 0)
        rc = buf_printf(out, "}");
    return rc ? rc : buf_printf(out, ",\"pid\":%d}\n", (int)getpid());
}

static void stack_stop(stack_state_t *s)
{
    for (size_t i = 0; i < s->n_mocks; i++)
        dev_mock_close(s->mocks[i]);
    s->n_mocks = 0;
    if (!uv_is_closing((uv_handle_t *)&s->sigint)) {
        uv_close((uv_handle_t *)&s->sigint, NULL);
        uv_close((uv_handle_t *)&s->sigterm, NULL);
    }
}

static void on_signal(uv_signal_t *h, int signum)
{
    stack_state_t *s = h->data;
    log_info("parley dev: stopping", LOG_S("signal", signum == SIGINT ? "SIGINT" : "SIGTERM"));
    stack_stop(s);
}

/* Lets the mocks hold many connections: the soft open-files limit up to the hard one. */
static void raise_nofile(void)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
}

/* Starts broker, topics and providers; prints where they are. */
static int stack_start(stack_state_t *s, const dev_options_t *opt, char *err, size_t errlen)
{
    if (!opt->no_broker) {
        if (!(s->broker = dev_broker_new(opt->n_brokers ? opt->n_brokers : 1, err, errlen)))
            return -1;
        for (size_t i = 0; i < opt->n_topics; i++)
            if (dev_broker_topic_create(s->broker, opt->topics[i].name, opt->topics[i].partitions, err,
                                        errlen) < 0)
                return -1;
        if (!(s->control = dev_broker_control_new(s->broker, err, errlen)))
            return -1;
        printf("parley dev: brokers %s (fault control http://127.0.0.1:%d)\n",
               dev_broker_bootstraps(s->broker), dev_broker_control_port(s->control));
        for (size_t i = 0; i < opt->n_topics; i++)
            printf("parley dev: topic %s (%d partitions)\n", opt->topics[i].name, opt->topics[i].partitions);
    }
    s->mocks = base_calloc(opt->n_providers ? opt->n_providers : 1, sizeof *s->mocks);
    if (!s->mocks) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    const char *host = opt->host ? opt->host : "127.0.0.1";
    for (size_t i = 0; i < opt->n_providers; i++) {
        const dev_provider_t *p = &opt->providers[i];
        dev_mock_t *m = dev_mock_new(&s->loop, p->name, p->type, p->knobs, err, errlen);
        if (!m)
            return -1;
        s->mocks[s->n_mocks++] = m;
        if (dev_mock_listen(m, host, p->port, err, errlen) < 0)
            return -1;
        printf("parley dev: provider %s (%s) base_url http://%s:%d/v1 stats http://%s:%d/stats\n", p->name,
               dev_mock_type_name(p->type), s->url_host, dev_mock_port(m), s->url_host, dev_mock_port(m));
    }
    return 0;
}

/* Writes --write-config and --ready-file. */
static int stack_write_files(const stack_state_t *s, const dev_options_t *opt, char *err, size_t errlen)
{
    buf_t b;
    buf_init(&b, 0);
    int rc = 0;
    if (opt->write_config) {
        rc = config_yaml(s, opt, &b) < 0 ? -1 : write_atomic(opt->write_config, &b, err, errlen);
        if (rc == 0)
            printf("parley dev: wrote worker config %s\n", opt->write_config);
    }
    buf_reset(&b);
    if (rc == 0 && opt->ready_file)
        rc = ready_json(s, &b) < 0 ? -1 : write_atomic(opt->ready_file, &b, err, errlen);
    buf_free(&b);
    return rc;
}

int dev_run(const dev_options_t *opt, char *err, size_t errlen)
{
    stack_state_t s;
    memset(&s, 0, sizeof s);
    signal(SIGPIPE, SIG_IGN);
    raise_nofile();
    const char *host = opt->host ? opt->host : "127.0.0.1";
    s.url_host = strcmp(host, "0.0.0.0") == 0 ? "127.0.0.1" : host;
    int rc = uv_loop_init(&s.loop);
    if (rc < 0) {
        snprintf(err, errlen, "uv_loop_init: %s", uv_strerror(rc));
        return -1;
    }
    uv_signal_init(&s.loop, &s.sigint);
    uv_signal_init(&s.loop, &s.sigterm);
    s.sigint.data = s.sigterm.data = &s;
    uv_signal_start(&s.sigint, on_signal, SIGINT);
    uv_signal_start(&s.sigterm, on_signal, SIGTERM);
    rc = stack_start(&s, opt, err, errlen);
    rc = rc ? rc : stack_write_files(&s, opt, err, errlen);
    if (rc == 0)
        printf("parley dev: ready; stop with Ctrl-C or SIGTERM\n");
    else
        stack_stop(&s);
    fflush(stdout);
    uv_run(&s.loop, UV_RUN_DEFAULT);
    uv_loop_close(&s.loop);
    free(s.mocks);
    dev_broker_control_free(s.control);
    dev_broker_free(s.broker);
    return rc;
}
