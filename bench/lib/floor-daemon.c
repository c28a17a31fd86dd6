/*
 * The floor of a peer join in a native process on this machine: the C twin of
 * bench/lib/floor-daemon.ts (bench/run.ts, the floor rows; issue #14).
 *
 * What any control plane written in C pays per join, and nothing more: the watch message read off
 * etcd's JSON gateway with one blocking read(), a string scan of it and of the lease, base64, the
 * neighbour + FDB entry + route encoded by hand and sent in one sendmsg on a NETLINK_ROUTE socket,
 * its one ACK read. No screening, no desired state, no reconciler, no monitor, no timers: only a
 * table subnet -> (MAC, public IP), so that a leave can delete the three again.
 *
 * Not a daemon anyone should run: it trusts its input (the bench writes the leases) beyond bounds
 * checks, and handles only the vxlan lease of the bench's joins.
 *
 *   floor-daemon-c <etcd http://host:port> <etcd prefix> <vxlan ifindex>
 *   (built with: cc -O2 -Wall -Wextra -std=gnu11 -o floor-daemon-c floor-daemon.c)
 *
 * Prints "ready" once etcd has created the watch, "error <text>" for a write the kernel refused or
 * an event it could not read. Exits 0 on SIGTERM, 1 when the etcd connection fails or ends, 2 on
 * bad usage.
 */
#define _GNU_SOURCE /* memmem, strcasestr */
#include <arpa/inet.h>
#include <errno.h>
#include <linux/neighbour.h>
#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define MAX_PEERS 4096
#define MAX_PREFIX 512

struct peer { uint32_t net, public_ip; uint8_t plen, used, mac[6]; };

static struct peer peers[MAX_PEERS];
static int nl_fd, ifindex;
static uint32_t nl_seq = 1;
static char subnets[MAX_PREFIX + 16];
static size_t subnets_len;

static void on_sigterm(int sig) { (void)sig; _exit(0); }

static void die(const char *what) { fprintf(stderr, "floor-daemon-c: %s\n", what); exit(1); }

/* ---- base64 (etcd's gateway carries keys and values as standard, padded base64) ---------- */

static const char B64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

static size_t b64_encode(const uint8_t *in, size_t n, char *out) {
  size_t o = 0;
  for (size_t i = 0; i < n; i += 3) {
    uint32_t w = (uint32_t)in[i] << 16 | (i + 1 < n ? (uint32_t)in[i + 1] << 8 : 0) | (i + 2 < n ? in[i + 2] : 0);
    out[o++] = B64[w >> 18];
    out[o++] = B64[(w >> 12) & 63];
    out[o++] = i + 1 < n ? B64[(w >> 6) & 63] : '=';
    out[o++] = i + 2 < n ? B64[w & 63] : '=';
  }
  out[o] = 0;
  return o;
}

static int b64_value(char c) {
  const char *p = c ? strchr(B64, c) : NULL;
  return p ? (int)(p - B64) : -1;
}

/* [in, in+n) decoded into out (at most cap bytes): its length, or -1 if not base64 or too long. */
static long b64_decode(const char *in, size_t n, uint8_t *out, size_t cap) {
  size_t o = 0;
  if (n % 4) return -1;
  for (size_t i = 0; i < n; i += 4) {
    int v[4], pad = 0;
    for (int j = 0; j < 4; j++) {
      if (in[i + j] == '=' && j >= 2 && i + 4 == n) { v[j] = 0; pad++; continue; }
      if (pad || (v[j] = b64_value(in[i + j])) < 0) return -1;
    }
    uint32_t w = (uint32_t)v[0] << 18 | (uint32_t)v[1] << 12 | (uint32_t)v[2] << 6 | (uint32_t)v[3];
    if (o + 3 - (size_t)pad > cap) return -1;
    out[o++] = (uint8_t)(w >> 16);
    if (pad < 2) out[o++] = (uint8_t)(w >> 8);
    if (pad < 1) out[o++] = (uint8_t)w;
  }
  return (long)o;
}

/* ---- a minimal JSON scan: enough for etcd's messages and the bench's leases ---------------- */

static const char *skip_ws(const char *p, const char *end) {
  while (p < end && (*p == ' ' || *p == '\t' || *p == '\r' || *p == '\n')) p++;
  return p;
}

/* Where the value of the member `quoted` (name with its quotes) starts in [p, end), or NULL. */
static const char *field(const char *p, const char *end, const char *quoted) {
  size_t n = strlen(quoted);
  while (p < end) {
    const char *q = memmem(p, (size_t)(end - p), quoted, n);
    if (q == NULL) return NULL;
    const char *v = skip_ws(q + n, end);
    if (v < end && *v == ':') return skip_ws(v + 1, end);
    p = q + 1; /* the name was a string value, not a member */
  }
  return NULL;
}

/* The string at p (no escapes: base64, addresses and MACs have none) as [*s, *s + *len); 0 if so. */
static int string_at(const char *p, const char *end, const char **s, size_t *len) {
  if (p == NULL || p >= end || *p != '"') return -1;
  const char *q = memchr(p + 1, '"', (size_t)(end - p - 1));
  if (q == NULL || memchr(p + 1, '\\', (size_t)(q - p - 1)) != NULL) return -1;
  *s = p + 1;
  *len = (size_t)(q - p - 1);
  return 0;
}

/* One past the '}' or ']' closing the object or array at p (strings skipped), or NULL. */
static const char *close_of(const char *p, const char *end) {
  int depth = 0;
  for (; p < end; p++) {
    if (*p == '"') {
      for (p++; p < end && *p != '"'; p++) if (*p == '\\') p++;
      if (p >= end) return NULL;
    } else if (*p == '{' || *p == '[') depth++;
    else if ((*p == '}' || *p == ']') && --depth == 0) return p + 1;
  }
  return NULL;
}

static int parse_ipv4(const char *s, size_t n, uint32_t *out) {
  char buf[16];
  if (n == 0 || n >= sizeof buf) return -1;
  memcpy(buf, s, n);
  buf[n] = 0;
  return inet_pton(AF_INET, buf, out) == 1 ? 0 : -1;
}

static int hex(char c) {
  return c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
}

static int parse_mac(const char *s, size_t n, uint8_t mac[6]) {
  if (n != 17) return -1;
  for (int i = 0; i < 6; i++) {
    int hi = hex(s[3 * i]), lo = hex(s[3 * i + 1]);
    if (hi < 0 || lo < 0 || (i < 5 && s[3 * i + 2] != ':')) return -1;
    mac[i] = (uint8_t)(hi << 4 | lo);
  }
  return 0;
}

/* ---- netlink: the three writes in one buffer, one sendmsg, one ACK --------------------------- */

struct batch { _Alignas(NLMSG_ALIGNTO) uint8_t b[1024]; size_t off, cur; };

static void *nl_begin(struct batch *m, uint16_t type, uint16_t flags, size_t body) {
  if (m->off + NLMSG_SPACE(body) > sizeof m->b) abort(); /* three small requests: cannot happen */
  struct nlmsghdr *h = (struct nlmsghdr *)(m->b + m->off);
  memset(h, 0, NLMSG_SPACE(body));
  h->nlmsg_len = (uint32_t)NLMSG_LENGTH(body);
  h->nlmsg_type = type;
  h->nlmsg_flags = (uint16_t)(NLM_F_REQUEST | flags);
  h->nlmsg_seq = nl_seq++; /* each request its own seq, so an error names the one refused */
  m->cur = m->off;
  m->off += NLMSG_SPACE(body);
  return NLMSG_DATA(h);
}

static void nl_attr(struct batch *m, uint16_t type, const void *data, size_t len) {
  if (m->off + RTA_SPACE(len) > sizeof m->b) abort();
  struct rtattr *a = (struct rtattr *)(m->b + m->off);
  memset(a, 0, RTA_SPACE(len));
  a->rta_type = type;
  a->rta_len = (uint16_t)RTA_LENGTH(len);
  memcpy(RTA_DATA(a), data, len);
  m->off += RTA_SPACE(len);
  ((struct nlmsghdr *)(m->b + m->cur))->nlmsg_len = (uint32_t)(m->off - m->cur);
}

static void neigh(struct batch *m, uint16_t type, uint16_t flags, uint8_t family, uint16_t state, uint8_t ntf) {
  struct ndmsg *nd = nl_begin(m, type, flags, sizeof *nd);
  nd->ndm_family = family;
  nd->ndm_ifindex = ifindex;
  nd->ndm_state = state;
  nd->ndm_flags = ntf;
}

static void route(struct batch *m, uint16_t type, uint16_t flags, const struct peer *p) {
  struct rtmsg *rt = nl_begin(m, type, flags, sizeof *rt);
  uint32_t oif = (uint32_t)ifindex;
  rt->rtm_family = AF_INET;
  rt->rtm_dst_len = p->plen;
  rt->rtm_table = RT_TABLE_MAIN;
  rt->rtm_protocol = RTPROT_BOOT;
  rt->rtm_scope = RT_SCOPE_UNIVERSE;
  rt->rtm_type = RTN_UNICAST;
  rt->rtm_flags = RTNH_F_ONLINK; /* the gateway is the peer's subnet: only reachable on-link */
  nl_attr(m, RTA_DST, &p->net, 4);
  nl_attr(m, RTA_GATEWAY, &p->net, 4);
  nl_attr(m, RTA_OIF, &oif, 4);
}

/* Send the batch, then read answers until the last request's: errors for earlier ones come first. */
static void send_batch(struct batch *m) {
  static _Alignas(NLMSG_ALIGNTO) uint8_t buf[32768]; /* an error answer echoes its request */
  struct sockaddr_nl kernel = { .nl_family = AF_NETLINK };
  struct iovec iov = { m->b, m->off };
  struct msghdr msg = { .msg_name = &kernel, .msg_namelen = sizeof kernel, .msg_iov = &iov, .msg_iovlen = 1 };
  uint32_t last = nl_seq - 1;
  while (sendmsg(nl_fd, &msg, 0) < 0)
    if (errno != EINTR) { printf("error netlink send: %s\n", strerror(errno)); return; }
  for (;;) {
    ssize_t n = recv(nl_fd, buf, sizeof buf, 0);
    if (n < 0) {
      if (errno == EINTR) continue;
      printf("error netlink recv: %s\n", strerror(errno));
      return;
    }
    int len = (int)n;
    for (struct nlmsghdr *h = (struct nlmsghdr *)buf; NLMSG_OK(h, len); h = NLMSG_NEXT(h, len)) {
      if (h->nlmsg_type != NLMSG_ERROR || h->nlmsg_len < NLMSG_LENGTH(sizeof(struct nlmsgerr))) continue;
      const struct nlmsgerr *e = NLMSG_DATA(h);
      if (e->error != 0) printf("error errno %d seq %u\n", -e->error, h->nlmsg_seq);
      if (h->nlmsg_seq == last) return;
    }
  }
}

/* ---- the watch ---------------------------------------------------------------------------- */

static void on_event(const char *ev, const char *end) {
  const char *s, *kv = field(ev, end, "\"kv\""), *kv_end = kv && kv < end && *kv == '{' ? close_of(kv, end) : NULL;
  size_t n;
  uint8_t key[MAX_PREFIX + 64];
  if (kv_end == NULL || string_at(field(kv, kv_end, "\"key\""), kv_end, &s, &n) != 0) { printf("error event without kv.key\n"); return; }
  long klen = b64_decode(s, n, key, sizeof key);
  if (klen < 0) { printf("error key not base64 or too long\n"); return; }
  if ((size_t)klen <= subnets_len || memcmp(key, subnets, subnets_len) != 0) return; /* not a lease */

  /* "10.5.3.0-24": the subnet; its network address is the neighbour and the route's gateway. */
  const char *sub = (const char *)key + subnets_len, *sub_end = (const char *)key + klen, *dash = memchr(sub, '-', (size_t)(sub_end - sub));
  struct peer p = { .used = 1 };
  int plen = dash != NULL && sub_end - dash >= 2 && sub_end - dash <= 3 ? 0 : -1;
  for (const char *d = dash ? dash + 1 : sub_end; plen >= 0 && d < sub_end; d++) plen = *d >= '0' && *d <= '9' ? plen * 10 + (*d - '0') : -1;
  if (plen < 0 || plen > 32 || parse_ipv4(sub, (size_t)(dash - sub), &p.net) != 0) {
    printf("error bad subnet key %.*s\n", (int)klen, (const char *)key);
    return;
  }
  p.plen = (uint8_t)plen;
  struct peer *slot = NULL, *free_slot = NULL;
  for (struct peer *q = peers; q < peers + MAX_PEERS; q++) {
    if (q->used && q->net == p.net && q->plen == p.plen) { slot = q; break; }
    if (!q->used && free_slot == NULL) free_slot = q;
  }
  struct batch m = { .off = 0 };
  const char *t = field(ev, end, "\"type\"");
  if (t != NULL && string_at(t, end, &s, &n) == 0 && n == 6 && memcmp(s, "DELETE", 6) == 0) {
    if (slot == NULL) return; /* a peer this process never programmed */
    route(&m, RTM_DELROUTE, 0, slot);
    neigh(&m, RTM_DELNEIGH, 0, AF_BRIDGE, 0, NTF_SELF);
    nl_attr(&m, NDA_LLADDR, slot->mac, 6);
    nl_attr(&m, NDA_DST, &slot->public_ip, 4);
    neigh(&m, RTM_DELNEIGH, NLM_F_ACK, AF_INET, 0, 0);
    nl_attr(&m, NDA_DST, &slot->net, 4);
    slot->used = 0;
    send_batch(&m);
    return;
  }

  /* The lease: {"PublicIP":"10.251.0.1",...,"BackendData":{"VNI":1,"VtepMAC":"82:1f:0c:00:00:01"}} */
  uint8_t lease[4096];
  const char *ip, *mac;
  size_t ip_len, mac_len;
  long vlen;
  if (string_at(field(kv, kv_end, "\"value\""), kv_end, &s, &n) != 0 || (vlen = b64_decode(s, n, lease, sizeof lease)) < 0) {
    printf("error lease value missing, not base64 or too long\n");
    return;
  }
  const char *l = (const char *)lease, *l_end = l + vlen;
  if (string_at(field(l, l_end, "\"PublicIP\""), l_end, &ip, &ip_len) != 0 || parse_ipv4(ip, ip_len, &p.public_ip) != 0
      || string_at(field(l, l_end, "\"VtepMAC\""), l_end, &mac, &mac_len) != 0 || parse_mac(mac, mac_len, p.mac) != 0) {
    printf("error malformed lease %.*s\n", (int)klen, (const char *)key);
    return;
  }
  if (slot == NULL && (slot = free_slot) == NULL) { printf("error more than %d peers\n", MAX_PEERS); return; }
  *slot = p;
  neigh(&m, RTM_NEWNEIGH, NLM_F_CREATE | NLM_F_REPLACE, AF_INET, NUD_PERMANENT, 0);
  nl_attr(&m, NDA_DST, &p.net, 4);
  nl_attr(&m, NDA_LLADDR, p.mac, 6);
  neigh(&m, RTM_NEWNEIGH, NLM_F_CREATE | NLM_F_REPLACE, AF_BRIDGE, NUD_PERMANENT, NTF_SELF);
  nl_attr(&m, NDA_LLADDR, p.mac, 6);
  nl_attr(&m, NDA_DST, &p.public_ip, 4);
  route(&m, RTM_NEWROUTE, NLM_F_CREATE | NLM_F_REPLACE | NLM_F_ACK, &p); /* one ACK, on the last */
  send_batch(&m);
}

/* One newline-delimited message of the watch: {"result":{"header":{...},"created":true,"events":[...]}} */
static void on_line(const char *p, const char *end) {
  p = skip_ws(p, end);
  if (p >= end || *p != '{') return;
  const char *v = field(p, end, "\"created\"");
  if (v != NULL && end - v >= 4 && memcmp(v, "true", 4) == 0) printf("ready\n");
  if ((v = field(p, end, "\"canceled\"")) != NULL && end - v >= 4 && memcmp(v, "true", 4) == 0) die("etcd canceled the watch");
  if ((v = field(p, end, "\"events\"")) == NULL || v >= end || *v != '[') return;
  for (v = skip_ws(v + 1, end); v < end && *v == '{'; v = skip_ws(v, end)) {
    const char *ev_end = close_of(v, end);
    if (ev_end == NULL) { printf("error unclosed event\n"); return; }
    on_event(v, ev_end);
    v = skip_ws(ev_end, end);
    if (v < end && *v == ',') v++;
  }
}

/* The response: its header, then a chunked body whose data is joined into lines. A message may
 * span reads and chunks, so chunk framing is taken off before the lines are cut. */
static enum { HEADER, CHUNK_SIZE, CHUNK_DATA, CHUNK_END, RAW } state = HEADER;
static char header[8192], line[1 << 20];
static size_t header_len, line_len;
static uint64_t chunk_left;
static int size_done, line_overflow;

static void body(const char *p, size_t n) {
  while (n > 0) {
    const char *nl = memchr(p, '\n', n);
    size_t take = nl ? (size_t)(nl - p) : n;
    if (nl != NULL && line_len == 0 && !line_overflow) on_line(p, nl); /* whole in this read: no copy */
    else if (line_overflow || line_len + take > sizeof line) line_overflow = 1;
    else memcpy(line + line_len, p, take), line_len += take;
    if (nl == NULL) return;
    if (line_overflow) printf("error message over %zu bytes\n", sizeof line);
    else if (line_len > 0) on_line(line, line + line_len);
    line_len = 0, line_overflow = 0;
    p = nl + 1, n -= take + 1;
  }
}

static void feed(const char *p, size_t n) {
  while (n > 0) {
    switch (state) {
    case HEADER:
      if (header_len == sizeof header - 1) die("etcd's response header is too long");
      header[header_len++] = *p++, n--;
      if (header_len >= 4 && memcmp(header + header_len - 4, "\r\n\r\n", 4) == 0) {
        header[header_len] = 0;
        if (strncmp(header, "HTTP/1.", 7) != 0 || strncmp(header + 8, " 200", 4) != 0) die("etcd did not answer the watch with 200");
        state = strcasestr(header, "chunked") != NULL ? CHUNK_SIZE : RAW;
      }
      break;
    case CHUNK_SIZE: { /* "<hex>[;extension]\r\n" */
      char c = *p++;
      n--;
      int d = hex(c);
      if (c == '\n') {
        if (chunk_left == 0) die("etcd ended the watch"); /* the last chunk */
        state = CHUNK_DATA, size_done = 0;
      } else if (d < 0) size_done = 1;
      else if (!size_done && (chunk_left = chunk_left * 16 + (uint64_t)d) > (1u << 30)) die("bad chunk size");
      break;
    }
    case CHUNK_DATA: {
      size_t take = n < chunk_left ? n : (size_t)chunk_left;
      body(p, take);
      p += take, n -= take, chunk_left -= take;
      if (chunk_left == 0) state = CHUNK_END;
      break;
    }
    case CHUNK_END: /* the "\r\n" after a chunk's data */
      if (*p++ == '\n') state = CHUNK_SIZE;
      n--;
      break;
    case RAW:
      body(p, n);
      return;
    }
  }
}

int main(int argc, char **argv) {
  char *e;
  long idx = argc == 4 ? strtol(argv[3], &e, 10) : 0;
  unsigned a, b, c, d, port;
  char tail = 0;
  if (argc != 4 || *argv[3] == 0 || *e != 0 || idx <= 0 || idx > 0x7fffffff || strlen(argv[2]) > MAX_PREFIX
      || sscanf(argv[1], "http://%u.%u.%u.%u:%u%c", &a, &b, &c, &d, &port, &tail) < 5 || (tail != '/' && tail != 0)
      || a > 255 || b > 255 || c > 255 || d > 255 || port == 0 || port > 65535) {
    fprintf(stderr, "usage: floor-daemon-c <etcd http://host:port> <etcd prefix> <vxlan ifindex>\n");
    return 2;
  }
  ifindex = (int)idx;
  setvbuf(stdout, NULL, _IOLBF, 0); /* the bench reads "ready" and "error" lines as they come */
  struct sigaction term = { .sa_handler = on_sigterm }, ignore = { .sa_handler = SIG_IGN };
  sigaction(SIGTERM, &term, NULL);
  sigaction(SIGPIPE, &ignore, NULL); /* a closed etcd socket is an EPIPE, then exit 1 */

  nl_fd = socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_ROUTE);
  int rcvbuf = 1 << 20;
  struct sockaddr_nl local = { .nl_family = AF_NETLINK };
  if (nl_fd < 0 || setsockopt(nl_fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof rcvbuf) != 0
      || bind(nl_fd, (struct sockaddr *)&local, sizeof local) != 0) {
    perror("floor-daemon-c: netlink");
    return 1;
  }

  /* The watch of [prefix/subnets/, prefixEnd): the same bytes with the last one below 0xff
   * incremented (etcd's prefix end), e.g. "/coreos.com/network/subnets0". */
  uint8_t end[MAX_PREFIX + 16];
  size_t end_len = (size_t)snprintf(subnets, sizeof subnets, "%s/subnets/", argv[2]);
  subnets_len = end_len;
  memcpy(end, subnets, end_len);
  while (end_len > 0 && end[end_len - 1] == 0xff) end_len--;
  end[end_len - 1]++; /* the prefix ends with '/': end_len > 0 */
  char key64[sizeof subnets * 4 / 3 + 8], end64[sizeof end * 4 / 3 + 8], req[4096], chunk[2048];
  b64_encode((const uint8_t *)subnets, subnets_len, key64);
  b64_encode(end, end_len, end64);
  int body_len = snprintf(chunk, sizeof chunk, "{\"create_request\":{\"key\":\"%s\",\"range_end\":\"%s\"}}", key64, end64);
  int req_len = snprintf(req, sizeof req, "POST /v3/watch HTTP/1.1\r\nHost: %u.%u.%u.%u:%u\r\nContent-Type: application/json\r\n"
      "Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n%x\r\n%s\r\n", a, b, c, d, port, (unsigned)body_len, chunk);
  if (body_len < 0 || (size_t)body_len >= sizeof chunk || req_len < 0 || (size_t)req_len >= sizeof req) die("request too long");

  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0), one = 1;
  struct sockaddr_in etcd = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port), .sin_addr.s_addr = htonl(a << 24 | b << 16 | c << 8 | d) };
  if (fd < 0 || setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one) != 0 || connect(fd, (struct sockaddr *)&etcd, sizeof etcd) != 0) {
    perror("floor-daemon-c: etcd");
    return 1;
  }
  for (int off = 0; off < req_len;) { /* no terminating 0-chunk: the request stream stays open */
    ssize_t w = write(fd, req + off, (size_t)(req_len - off));
    if (w < 0 && errno != EINTR) { perror("floor-daemon-c: etcd"); return 1; }
    if (w > 0) off += (int)w;
  }
  static char buf[65536];
  for (;;) {
    ssize_t r = read(fd, buf, sizeof buf);
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) { perror("floor-daemon-c: etcd"); return 1; }
    if (r == 0) die("etcd closed the watch");
    feed(buf, (size_t)r);
  }
}
