/* cmd_worker.c — `parley worker -c FILE`. */
#include <getopt.h>
#include <stdio.h>

#include "cmd_common.h"
#include "cmds.h"
#include "engine/engine.h"

int cmd_worker(int argc, char **argv)
{
    static const struct option opts[] = {
        {"config", required_argument, NULL, 'c'}, {"help", no_argument, NULL, 'h'}, {NULL, 0, NULL, 0}};
    const char *path = NULL;
    int c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "c:h", opts, NULL)) != -1) {
        switch (c) {
        case 'c':
            path = optarg;
            break;
        case 'h':
            printf("usage: parley worker -c FILE\n\n"
                   "Consumes jobs from kafka.jobs_topic in group kafka.group_id, answers each through Redis\n"
                   "and the route's LLM providers, and publishes the replies. SIGTERM/SIGINT drain the jobs\n"
                   "in flight (up to worker.drain_timeout_ms), commit and exit 0; a second signal exits at\n"
                   "once with 1.\n"
                   "  -c, --config FILE   the configuration file (see configs/parley.yaml)\n");
            return 0;
        default:
            return 2;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "parley worker: unexpected argument '%s'\n", argv[optind]);
        return 2;
    }
    int exit_code;
    config_t *cfg = cmd_start(path, "worker", true, &exit_code);
    if (!cfg)
        return exit_code;
    int rc = engine_worker_run(cfg);
    if (rc == 0)
        config_free(cfg);
    return rc;
}
