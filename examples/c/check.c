/*
 * check.c: may SERVICE run? The C counterpart of `licd check`, using liblicd.
 *
 *     cc -std=c99 -I include examples/c/check.c path/to/liblicd.a -lpthread -ldl -lm -o check
 *     ./check wifi-ap [/run/licd/licd.sock]
 *
 * Prints one line "SERVICE STATE until=UNIX reason=REASON source=daemon" and exits like
 * `licd check`: 0 licensed or in grace, 1 unlicensed, 4 error (message on stderr).
 */
#include <stdio.h>

#include "licd.h"

int main(int argc, char **argv) {
    if (argc < 2 || argc > 3) {
        fprintf(stderr, "usage: %s SERVICE [SOCKET]\n", argv[0]);
        return 4;
    }
    if (argc == 3 && licd_set_socket_path(argv[2]) != LICD_OK) {
        fprintf(stderr, "check: bad socket path\n");
        return 4;
    }

    licd_state st;
    licd_error rc = licd_check(argv[1], &st);
    if (rc != LICD_OK) {
        char message[512];
        licd_last_error_message(message, sizeof message);
        fprintf(stderr, "check: %s (%s)\n", message, licd_strerror(rc));
        return 4;
    }
    printf("%s %s until=%llu reason=%s source=%s\n", argv[1], licd_state_name(st.state),
           (unsigned long long)st.until, licd_reason_name(st.reason),
           st.source == LICD_SOURCE_CACHE ? "cache" : "daemon");
    return st.may_run ? 0 : 1;
}
