/* cmd_common.h — what the subcommands share: loading -c FILE with a printed error, the start-up that
 * follows it, --help detection. */
#ifndef PARLEY_CMD_COMMON_H
#define PARLEY_CMD_COMMON_H

#include <stdbool.h>

#include "config/config.h"

/* Loads and validates the config; prints the error and returns NULL on failure (exit 2). */
config_t *cmd_load_config(const char *path);
/* cmd_load_config, then logging as the config says and, with http, the process-wide libcurl set-up.
 * NULL on failure, with the error printed (naming cmd) and *exit_code set (2 bad config, 1 set-up). */
config_t *cmd_start(const char *path, const char *cmd, bool http, int *exit_code);
/* 1 when argv holds --help or -h. */
int cmd_wants_help(int argc, char **argv);

#endif
