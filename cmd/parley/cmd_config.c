/* cmd_config.c — `parley version` and `parley check-config`, and the config loading shared by
 * every subcommand that takes -c FILE, and the start-up after it. */
#include <getopt.h>
#include <stdio.h>
#include <string.h>

#include <curl/curl.h>
#include <librdkafka/rdkafka.h>
#include <uv.h>

#include "cmd_common.h"
#include "cmds.h"
#include "config/config.h"
#include "http/http.h"
#include "log/log.h"

config_t *cmd_load_config(const char *path)
{
    char err[1024];
    if (!path) {
        fprintf(stderr, "parley: missing -c FILE (the configuration file)\n");
        return NULL;
    }
    config_t *cfg = config_load_file(path, err, sizeof err);
    if (!cfg) {
        fprintf(stderr, "parley: config error: %s\n", err);
        return NULL;
    }
    config_register_secrets(cfg);
    return cfg;
}

config_t *cmd_start(const char *path, const char *cmd, bool http, int *exit_code)
{
    config_t *cfg = cmd_load_config(path);
    if (!cfg) {
        *exit_code = 2;
        return NULL;
    }
    log_setup(cfg->log.level, cfg->log.format, stderr);
    if (http && http_global_init() != 0) {
        fprintf(stderr, "parley %s: libcurl initialisation failed\n", cmd);
        config_free(cfg);
        *exit_code = 1;
        return NULL;
    }
    return cfg;
}

int cmd_wants_help(int argc, char **argv)
{
    for (int i = 1; i < argc; i++)
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0)
            return 1;
    return 0;
}

int cmd_version(int argc, char **argv)
{
    if (cmd_wants_help(argc, argv)) {
        printf("usage: parley version\n\nPrints parley's version and the versions of the libraries it runs "
               "on.\n");
        return 0;
    }
    printf("parley %s\n", PARLEY_VERSION);
    printf("librdkafka %s, libcurl %s, libuv %s\n", rd_kafka_version_str(),
           curl_version_info(CURLVERSION_NOW)->version, uv_version_string());
    return 0;
}

int cmd_check_config(int argc, char **argv)
{
    static const struct option opts[] = {{"config", required_argument, NULL, 'c'},
                                         {"quiet", no_argument, NULL, 'q'},
                                         {"help", no_argument, NULL, 'h'},
                                         {NULL, 0, NULL, 0}};
    const char *path = NULL;
    int quiet = 0, c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "c:qh", opts, NULL)) != -1) {
        switch (c) {
        case 'c':
            path = optarg;
            break;
        case 'q':
            quiet = 1;
            break;
        case 'h':
            printf(
                "usage: parley check-config -c FILE [--quiet]\n\n"
                "Validates FILE (YAML; ${VAR} and ${VAR:-default} expand from the environment) and prints\n"
                "the effective configuration, defaults filled in and every secret shown as ***.\n"
                "  -c, --config FILE   the configuration file\n"
                "  -q, --quiet         print nothing; only the exit status tells\n"
                "Exit status: 0 valid, 2 invalid (the error names file:line:column and the key).\n");
            return 0;
        default:
            return 2;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "parley check-config: unexpected argument '%s'\n", argv[optind]);
        return 2;
    }
    config_t *cfg = cmd_load_config(path);
    if (!cfg)
        return 2;
    int rc = 0;
    if (!quiet && config_dump(cfg, stdout) != 0)
        rc = 1;
    config_free(cfg);
    return rc;
}
