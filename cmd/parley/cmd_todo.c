/* cmd_todo.c — `parley produce` and `parley replay`: announced by the CLI, built in a later issue. */
#include <stdio.h>

#include "cmds.h"

static int not_yet(const char *name)
{
    fprintf(stderr, "parley %s: not available in this version yet\n", name);
    return 1;
}

int cmd_produce(int argc, char **argv) { return not_yet("produce"); }

int cmd_replay(int argc, char **argv) { return not_yet("replay"); }
