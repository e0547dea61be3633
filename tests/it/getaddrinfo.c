/* getaddrinfo(3) as a program: prints every IPv4 address of argv[1], then "count N".
 * Built with musl-gcc by tests/it/truncation.rs: musl before 1.2.4 (Alpine <= 3.17) never
 * retries a truncated UDP answer over TCP, so it sees exactly what fits 512 bytes. */
#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>

int main(int argc, char **argv) {
    struct addrinfo hints, *res, *ai;
    char text[INET_ADDRSTRLEN];
    int n = 0, err;

    if (argc != 2) {
        fprintf(stderr, "usage: %s NAME\n", argv[0]);
        return 2;
    }
    memset(&hints, 0, sizeof hints);
    hints.ai_family = AF_INET;
    hints.ai_socktype = SOCK_STREAM; /* one result per address, not one per socket type */
    err = getaddrinfo(argv[1], NULL, &hints, &res);
    if (err != 0) {
        printf("error %s\n", gai_strerror(err));
        return 1;
    }
    for (ai = res; ai != NULL; ai = ai->ai_next) {
        struct sockaddr_in *sin = (struct sockaddr_in *)ai->ai_addr;
        inet_ntop(AF_INET, &sin->sin_addr, text, sizeof text);
        printf("%s\n", text);
        n++;
    }
    printf("count %d\n", n);
    freeaddrinfo(res);
    return 0;
}
