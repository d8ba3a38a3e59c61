/* cmd_generate.c — placeholder until the subcommand lands (work in progress, not committed). */
#include "commands.h"
#include <stdio.h>
int moec_cmd_generate(int argc, char **argv) {
    (void)argc; (void)argv;
    fprintf(stderr, "moec generate: not implemented yet\n");
    return 1;
}
