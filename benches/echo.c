/* The "C echo responder": the ceiling for benches/load.py. It answers every DNS query on
 * 127.0.0.1:PORT (UDP) with its question and one fixed A record (TTL 30, 192.0.2.1), whatever
 * the name or type, through recvmmsg/sendmmsg in batches of 64: no lookup, no parsing beyond
 * the question, no allocation. A server cannot answer more cheaply on this kernel path.
 *
 *     cc -O2 -o echo benches/echo.c && ./echo PORT      (load.py builds it into a temp dir)
 */
#define _GNU_SOURCE
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#define BATCH 64
#define SIZE 512

static const unsigned char answer[] = {0xc0, 0x0c, 0, 1, 0, 1, 0, 0, 0, 30, 0, 4, 192, 0, 2, 1};

/* The reply's length, built in place over the query; 0: not a query to answer. */
static size_t reply(unsigned char *m, size_t len) {
    size_t at = 12;
    if (len < 12 || (m[2] & 0x80) || m[4] != 0 || m[5] != 1) return 0;
    while (at < len && m[at] != 0) {
        if (m[at] > 63) return 0;
        at += m[at] + 1;
    }
    at += 5; /* the root label, QTYPE, QCLASS */
    if (at > len || at + sizeof answer > SIZE) return 0;
    m[2] = 0x84 | (m[2] & 0x01); /* QR, AA, RD copied */
    m[3] = 0;
    m[6] = 0, m[7] = 1;                 /* ANCOUNT */
    m[8] = m[9] = m[10] = m[11] = 0;    /* NSCOUNT, ARCOUNT: EDNS dropped */
    memcpy(m + at, answer, sizeof answer);
    return at + sizeof answer;
}

int main(int argc, char **argv) {
    static unsigned char buf[BATCH][SIZE];
    static struct sockaddr_in from[BATCH];
    static struct iovec iov[BATCH];
    static struct mmsghdr in[BATCH], out[BATCH];
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    int fd = socket(AF_INET, SOCK_DGRAM, 0);
    if (argc != 2 || fd < 0) return 2;
    addr.sin_port = htons(atoi(argv[1]));
    if (bind(fd, (struct sockaddr *)&addr, sizeof addr) != 0) return 1;
    for (;;) {
        for (int i = 0; i < BATCH; i++) {
            iov[i] = (struct iovec){buf[i], SIZE};
            in[i].msg_hdr = (struct msghdr){.msg_name = &from[i], .msg_namelen = sizeof from[i], .msg_iov = &iov[i], .msg_iovlen = 1};
        }
        int n = recvmmsg(fd, in, BATCH, MSG_WAITFORONE, NULL), k = 0;
        for (int i = 0; i < n; i++) {
            size_t len = reply(buf[i], in[i].msg_len);
            if (len == 0) continue;
            iov[i].iov_len = len;
            out[k++].msg_hdr = (struct msghdr){.msg_name = &from[i], .msg_namelen = in[i].msg_hdr.msg_namelen, .msg_iov = &iov[i], .msg_iovlen = 1};
        }
        if (k > 0) sendmmsg(fd, out, k, 0);
    }
}
