/*
 * policy/mtasts.c - MTA-STS (RFC 8461) discovery, HTTPS fetch and policy
 * cache.  The contract and the decisions are in mtasts.h.
 *
 * Owns: the per-domain cache entries (in memory and one file per domain
 * under state_dir/mta-sts/), the jobs that discover and fetch policies (at
 * most one per domain at a time, each with a waiting list of requests), the
 * refresh timers, and the HTTPS client context.  Parsing is sts.c's, DNS is
 * resolver.c's, and certificate verification is OpenSSL's (SSL_VERIFY_PEER,
 * SSL_set1_host); this file only records OpenSSL's verdict.
 *
 * A job runs  TXT -> [ADDR -> HTTP (-> RETRY -> HTTP on the next address)]
 * -> DONE.  evhttp callbacks only record what happened and activate the
 * job's step event: the connection is freed, the cache updated and the
 * waiters called from that event or from the job's timer, never from inside
 * evhttp (freeing an evhttp_connection from its own callbacks is a
 * use-after-free).  evhttp connects to an IP literal through an evdns_base
 * without nameservers, which parses the literal and never reaches
 * the libc resolver (getaddrinfo, section 3) or the system resolver.
 *
 * File I/O (the cache) is the only synchronous I/O: one small file written
 * and fsync'd per successful fetch, all files read once in mtasts_new().
 */
#include "policy/mtasts.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/dns.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/util.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include "certs/tlsctx.h"
#include "policy/resolver.h"
#include "relay/evlog.h"
#include "relay/log.h"

#define MTASTS_BUCKETS      256
#define MTASTS_MAX_ADDRS    8
#define MTASTS_SESSION_MAX  64
#define MTASTS_HOST_MAX     (MTASTS_DOMAIN_MAX + 10)   /* "mta-sts." + domain */
#define MTASTS_HEADERS_MAX  16384
#define MTASTS_FILE_MAX     (MTASTS_BODY_MAX + 1024)
#define MTASTS_DAY          86400
#define MTASTS_TMP_STALE    600     /* seconds before a leftover temp file goes */
#define MTASTS_CACHE_MAGIC  "tlsrelay-mta-sts-cache"
#define MTASTS_URL_PATH     "/.well-known/mta-sts.txt"

#define RT_FETCH  "sts-policy-fetch-error"
#define RT_INVALID "sts-policy-invalid"
#define RT_WEBPKI "sts-webpki-invalid"

enum mtasts_txt { TXT_PENDING, TXT_OK, TXT_NONE, TXT_FAIL };
static const char *const mtasts_txt_names[] = { "pending", "ok", "none", "fail" };

enum mtasts_jstate { MJ_TXT, MJ_ADDR, MJ_HTTP, MJ_RETRY, MJ_DONE };

struct mtasts {
	struct event_base *base;
	struct resolver *res;
	struct evdns_base *dns;         /* no nameservers: IP literals only */
	SSL_CTX *ctx;
	int dirfd;                      /* state_dir/mta-sts, or -1 */
	int fetch_timeout, txt_fail, port, refresh_min;
	struct mtasts_entry *bucket[MTASTS_BUCKETS];
};

struct mtasts_req {
	struct mtasts_req *next, **pprev;  /* in a waiting list */
	mtasts_cb cb;
	void *arg;
	int delivering;                    /* inside its callback */
};

struct mtasts_entry {
	struct mtasts *m;
	struct mtasts_entry *next;         /* hash chain */
	char domain[MTASTS_DOMAIN_MAX + 1];
	struct sts_policy *policy;         /* the cached policy, or NULL */
	char id[STS_ID_MAX + 1];
	time_t fetched, expires, last_used;
	struct event *refresh_ev;
	char fail_id[STS_ID_MAX + 1];      /* the last failed fetch (rate limit) */
	time_t fail_at;
	const char *fail_type;
	char fail_detail[MTASTS_DETAIL_MAX];
	struct mtasts_job *job;
	struct mtasts_req *waiters;
};

struct mtasts_job {
	struct mtasts_entry *e;
	enum mtasts_jstate state;
	int refresh;                       /* started by the refresh timer */
	char session[MTASTS_SESSION_MAX];
	struct timespec t0;
	struct event *step_ev, *timer_ev;
	struct dns_query *txt_q, *a_q, *aaaa_q;
	enum mtasts_txt txt;
	char txt_id[STS_ID_MAX + 1];
	char host[MTASTS_HOST_MAX];        /* mta-sts.<domain> */
	char addr[MTASTS_MAX_ADDRS][INET6_ADDRSTRLEN];
	int naddr, next_addr;
	char a_why[32], aaaa_why[32];
	struct evhttp_connection *conn;
	long verify_err;
	int tls_done, got_response, retry;
	struct evbuffer *body;
	int body_ok, installed, rate_limited;
	const char *failure;               /* RFC 8460 result type */
	char detail[MTASTS_DETAIL_MAX];
};

static void mtasts_step_cb(evutil_socket_t, short, void *);
static void mtasts_timeout_cb(evutil_socket_t, short, void *);
static void mtasts_refresh_cb(evutil_socket_t, short, void *);
static void mtasts_http_start(struct mtasts_job *);

/* ------------------------------------------------------------------ */
/* Small helpers                                                        */
/* ------------------------------------------------------------------ */

static long
mtasts_ms_since(const struct timespec *t0)
{
	struct timespec now;

	clock_gettime(CLOCK_MONOTONIC, &now);
	return (long)(now.tv_sec - t0->tv_sec) * 1000 +
	    (now.tv_nsec - t0->tv_nsec) / 1000000;
}

/* A uniform-enough random number in [0, max) for jitter. */
static long
mtasts_random(long max)
{
	unsigned long r;

	if (max <= 1)
		return 0;
	evutil_secure_rng_get_bytes(&r, sizeof(r));
	return (long)(r % (unsigned long)max);
}

static void mtasts_job_fail(struct mtasts_job *j, const char *type,
    const char *fmt, ...) PRINTF_LIKE(3, 4);
static void mtasts_job_note(struct mtasts_job *j, const char *fmt, ...)
    PRINTF_LIKE(2, 3);

/* Sets the detail without a result type (DNS trouble before any fetch). */
static void
mtasts_job_note(struct mtasts_job *j, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(j->detail, sizeof(j->detail), fmt, ap);
	va_end(ap);
}

/* Records the first failure of a job; later ones are consequences. */
static void
mtasts_job_fail(struct mtasts_job *j, const char *type, const char *fmt, ...)
{
	va_list ap;

	if (j->failure != NULL)
		return;
	j->failure = type;
	va_start(ap, fmt);
	vsnprintf(j->detail, sizeof(j->detail), fmt, ap);
	va_end(ap);
}

const char *
mtasts_status_name(int status)
{
	switch (status) {
	case MTASTS_POLICY:
		return "policy";
	case MTASTS_TEMPFAIL:
		return "tempfail";
	default:
		return "none";
	}
}

/* sts-id = 1*32(ALPHA / DIGIT), RFC 8461 §3.1 */
static int
mtasts_id_valid(const char *s, size_t n)
{
	size_t i;

	if (n == 0 || n > STS_ID_MAX)
		return 0;
	for (i = 0; i < n; i++) {
		unsigned char c = (unsigned char)s[i];
		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
		    (c >= '0' && c <= '9')))
			return 0;
	}
	return 1;
}

/*
 * RFC 8461 §3.1 and ANCHORS STS-17: the policy domain is the exact
 * recipient domain in A-label form; IP literals have no policy.  Host names
 * are LDH labels (RFC 952, RFC 1123 §2.1) of 1..63 octets that neither start
 * nor end with a hyphen.
 */
int
mtasts_domain_norm(const char *in, char out[MTASTS_DOMAIN_MAX + 1])
{
	size_t n = strlen(in), i, label = 0;
	int digits = 1;

	if (n > 0 && in[n - 1] == '.')
		n--;
	if (n == 0 || n > MTASTS_DOMAIN_MAX)
		return -1;
	for (i = 0; i < n; i++) {
		unsigned char c = (unsigned char)in[i];

		if (c == '.') {
			if (label == 0 || out[i - 1] == '-')
				return -1;
			label = 0;
			digits = 1;
			out[i] = '.';
			continue;
		}
		if (c >= 'A' && c <= 'Z')
			c = (unsigned char)(c - 'A' + 'a');
		if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-'))
			return -1;
		if (c < '0' || c > '9')
			digits = 0;
		if ((label == 0 && c == '-') || ++label > 63)
			return -1;
		out[i] = (char)c;
	}
	out[n] = '\0';
	return label == 0 || digits || out[n - 1] == '-' ? -1 : 0;
}

/* ------------------------------------------------------------------ */
/* Cache file format (see mtasts.h); fuzzed by fuzz_mtasts_cache.c      */
/* ------------------------------------------------------------------ */

/* Reads the header line "key: value\n" at buf[*pos]; 0 or -1. */
static int
mtasts_cache_line(const char *buf, size_t len, size_t *pos, const char *key,
    const char **val, size_t *vlen)
{
	size_t klen = strlen(key), at = *pos;
	const char *lf;

	if (len - at < klen + 2 || memcmp(buf + at, key, klen) != 0 ||
	    buf[at + klen] != ':' || buf[at + klen + 1] != ' ')
		return -1;
	at += klen + 2;
	if ((lf = memchr(buf + at, '\n', len - at)) == NULL)
		return -1;
	*val = buf + at;
	*vlen = (size_t)(lf - *val);
	*pos = (size_t)(lf - buf) + 1;
	return 0;
}

/* 1..18 decimal digits, no sign, no leading zero (one spelling per
 * value); 0 with *out set, or -1. */
static int
mtasts_cache_num(const char *v, size_t n, long long *out)
{
	long long x = 0;
	size_t i;

	if (n == 0 || n > 18 || (n > 1 && v[0] == '0'))
		return -1;
	for (i = 0; i < n; i++) {
		if (v[i] < '0' || v[i] > '9')
			return -1;
		x = x * 10 + (v[i] - '0');
	}
	*out = x;
	return 0;
}

/* The domain field must already be in mtasts_domain_norm() form. */
static int
mtasts_cache_domain(const char *v, size_t n, char out[MTASTS_DOMAIN_MAX + 1])
{
	char tmp[MTASTS_DOMAIN_MAX + 1];

	if (n == 0 || n > MTASTS_DOMAIN_MAX || memchr(v, '\0', n) != NULL)
		return -1;
	memcpy(tmp, v, n);
	tmp[n] = '\0';
	if (mtasts_domain_norm(tmp, out) != 0 || strcmp(tmp, out) != 0)
		return -1;
	return 0;
}

static int
mtasts_cache_why(const char **why, const char *what)
{
	*why = what;
	return -1;
}

/* The four fields after the magic line: domain, id, fetched, expires. */
static int
mtasts_cache_fields(const char *buf, size_t len, size_t *pos,
    struct mtasts_cache_rec *rec, const char **why)
{
	const char *v;
	size_t n;

	if (mtasts_cache_line(buf, len, pos, "domain", &v, &n) != 0 ||
	    mtasts_cache_domain(v, n, rec->domain) != 0)
		return mtasts_cache_why(why, "bad domain line");
	if (mtasts_cache_line(buf, len, pos, "id", &v, &n) != 0 ||
	    !mtasts_id_valid(v, n))
		return mtasts_cache_why(why, "bad id line");
	memcpy(rec->id, v, n);
	rec->id[n] = '\0';
	if (mtasts_cache_line(buf, len, pos, "fetched", &v, &n) != 0 ||
	    mtasts_cache_num(v, n, &rec->fetched) != 0)
		return mtasts_cache_why(why, "bad fetched line");
	if (mtasts_cache_line(buf, len, pos, "expires", &v, &n) != 0 ||
	    mtasts_cache_num(v, n, &rec->expires) != 0 ||
	    rec->expires < rec->fetched)
		return mtasts_cache_why(why, "bad expires line");
	return 0;
}

int
mtasts_cache_parse(const char *buf, size_t len, struct mtasts_cache_rec *rec,
    const char **why)
{
	const char *v;
	size_t n, pos = 0;
	long long blen;

	memset(rec, 0, sizeof(*rec));
	if (mtasts_cache_line(buf, len, &pos, MTASTS_CACHE_MAGIC, &v, &n) != 0 ||
	    n != 1 || v[0] != '1')
		return mtasts_cache_why(why, "not a version 1 cache file");
	if (mtasts_cache_fields(buf, len, &pos, rec, why) != 0)
		return -1;
	if (mtasts_cache_line(buf, len, &pos, "length", &v, &n) != 0 ||
	    mtasts_cache_num(v, n, &blen) != 0 || blen > MTASTS_BODY_MAX)
		return mtasts_cache_why(why, "bad length line");
	if (pos >= len || buf[pos] != '\n')
		return mtasts_cache_why(why, "no empty line after the header");
	pos++;
	if ((long long)(len - pos) != blen)
		return mtasts_cache_why(why, "body length differs from the header");
	rec->body = buf + pos;
	rec->body_len = (size_t)blen;
	return 0;
}

int
mtasts_cache_format(const struct mtasts_cache_rec *rec, struct evbuffer *out)
{
	char dom[MTASTS_DOMAIN_MAX + 1];

	if (mtasts_cache_domain(rec->domain, strlen(rec->domain), dom) != 0 ||
	    !mtasts_id_valid(rec->id, strlen(rec->id)) || rec->fetched < 0 ||
	    rec->expires < rec->fetched || rec->expires > 999999999999999999LL ||
	    rec->body_len > MTASTS_BODY_MAX)
		return -1;
	if (evbuffer_add_printf(out, "%s: 1\ndomain: %s\nid: %s\nfetched: %lld\n"
	    "expires: %lld\nlength: %zu\n\n", MTASTS_CACHE_MAGIC, rec->domain,
	    rec->id, rec->fetched, rec->expires, rec->body_len) < 0 ||
	    evbuffer_add(out, rec->body, rec->body_len) != 0)
		return -1;
	return 0;
}

/* ------------------------------------------------------------------ */
/* Cache entries in memory                                              */
/* ------------------------------------------------------------------ */

static unsigned
mtasts_hash(const char *s)
{
	unsigned h = 2166136261u;       /* FNV-1a */

	for (; *s != '\0'; s++)
		h = (h ^ (unsigned char)*s) * 16777619u;
	return h % MTASTS_BUCKETS;
}

static struct mtasts_entry *
mtasts_entry_find(struct mtasts *m, const char *domain)
{
	struct mtasts_entry *e;

	for (e = m->bucket[mtasts_hash(domain)]; e != NULL; e = e->next)
		if (strcmp(e->domain, domain) == 0)
			return e;
	return NULL;
}

/* The entry for a normalised domain, created when missing; NULL: no memory. */
static struct mtasts_entry *
mtasts_entry_get(struct mtasts *m, const char *domain)
{
	struct mtasts_entry *e = mtasts_entry_find(m, domain);
	unsigned h;

	if (e != NULL)
		return e;
	if ((e = calloc(1, sizeof(*e))) == NULL)
		return NULL;
	e->m = m;
	snprintf(e->domain, sizeof(e->domain), "%s", domain);
	h = mtasts_hash(domain);
	e->next = m->bucket[h];
	m->bucket[h] = e;
	return e;
}

/* RFC 8461 §3.3/§5.1: a cached policy is usable until fetched + max_age. */
static int
mtasts_entry_valid(const struct mtasts_entry *e, time_t now)
{
	return e->policy != NULL && now < e->expires;
}

/* Replaces the cached policy; takes ownership of p. */
static void
mtasts_entry_install(struct mtasts_entry *e, struct sts_policy *p,
    const char *id, time_t fetched, time_t expires)
{
	free(e->policy);
	e->policy = p;
	snprintf(e->id, sizeof(e->id), "%s", id);
	e->fetched = fetched;
	e->expires = expires;
}

/* ------------------------------------------------------------------ */
/* Cache on disk: state_dir/mta-sts/<domain>                            */
/* ------------------------------------------------------------------ */

static int
mtasts_disk_open(const char *state_dir, char *err, size_t errlen)
{
	char path[PATH_MAX];
	int fd;

	if (snprintf(path, sizeof(path), "%s/mta-sts", state_dir) >= (int)sizeof(path)) {
		snprintf(err, errlen, "state_dir %s: path too long", state_dir);
		return -1;
	}
	if ((mkdir(state_dir, 0700) != 0 && errno != EEXIST) ||
	    (mkdir(path, 0700) != 0 && errno != EEXIST) ||
	    (fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC)) < 0) {
		snprintf(err, errlen, "MTA-STS cache %s: %s", path, strerror(errno));
		return -1;
	}
	return fd;
}

/* Writes all of b to fd; 0, or an errno value. */
static int
mtasts_disk_write(int fd, struct evbuffer *b)
{
	while (evbuffer_get_length(b) > 0) {
		int n = evbuffer_write(b, fd);

		if (n < 0 && errno != EINTR)
			return errno;
		if (n == 0)
			return EIO;
	}
	return 0;
}

/*
 * Atomic replacement: write a temp file, fsync it, rename it over the old
 * file, fsync the directory, so a crash leaves the old or the new file,
 * never a torn one.  Worker processes share the directory, hence the pid.
 */
static int
mtasts_disk_replace(int dirfd, const char *name, struct evbuffer *b)
{
	char tmp[MTASTS_DOMAIN_MAX + 32];
	int fd, rc = 0;

	snprintf(tmp, sizeof(tmp), ".%s.%ld.tmp", name, (long)getpid());
	fd = openat(dirfd, tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0600);
	if (fd < 0)
		return errno;
	rc = mtasts_disk_write(fd, b);
	if (rc == 0 && fsync(fd) != 0)
		rc = errno;
	if (close(fd) != 0 && rc == 0)
		rc = errno;
	if (rc == 0 && renameat(dirfd, tmp, dirfd, name) != 0)
		rc = errno;
	if (rc == 0 && fsync(dirfd) != 0)
		rc = errno;
	if (rc != 0)
		unlinkat(dirfd, tmp, 0);
	return rc;
}

/* Stores e's policy with its raw body; a policy with max_age 0 is removed. */
static void
mtasts_disk_save(struct mtasts_entry *e, const char *body, size_t len)
{
	struct mtasts_cache_rec rec;
	struct evbuffer *b;
	int rc = ENOMEM;

	if (e->m->dirfd < 0)
		return;
	if (e->expires <= e->fetched) {
		unlinkat(e->m->dirfd, e->domain, 0);
		return;
	}
	memset(&rec, 0, sizeof(rec));
	snprintf(rec.domain, sizeof(rec.domain), "%s", e->domain);
	snprintf(rec.id, sizeof(rec.id), "%s", e->id);
	rec.fetched = e->fetched;
	rec.expires = e->expires;
	rec.body = body;
	rec.body_len = len;
	if ((b = evbuffer_new()) != NULL && mtasts_cache_format(&rec, b) == 0)
		rc = mtasts_disk_replace(e->m->dirfd, e->domain, b);
	if (b != NULL)
		evbuffer_free(b);
	if (rc != 0)
		log_msg(LOG_WARN, "MTA-STS cache: cannot write %s: %s", e->domain,
		    strerror(rc));
}

/* Reads a regular file of at most cap bytes; 0 or -1. */
static int
mtasts_disk_read(int dirfd, const char *name, char *buf, size_t cap, size_t *len)
{
	struct stat st;
	ssize_t n = 0;
	size_t got = 0;
	int fd = openat(dirfd, name, O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK);

	if (fd < 0)
		return -1;
	if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode) || st.st_size > (off_t)cap) {
		close(fd);
		return -1;
	}
	while (got < cap && ((n = read(fd, buf + got, cap - got)) > 0 ||
	    (n < 0 && errno == EINTR)))
		got += n > 0 ? (size_t)n : 0;
	close(fd);
	*len = got;
	return n < 0 ? -1 : 0;
}

/* Temp files left by a crash (".<domain>.<pid>.tmp") go after a while. */
static void
mtasts_disk_gc(int dirfd, const char *name, time_t now)
{
	struct stat st;
	size_t n = strlen(name);

	if (n > 5 && strcmp(name + n - 4, ".tmp") == 0 &&
	    fstatat(dirfd, name, &st, AT_SYMLINK_NOFOLLOW) == 0 &&
	    S_ISREG(st.st_mode) && now - st.st_mtime > MTASTS_TMP_STALE)
		unlinkat(dirfd, name, 0);
}

/* Checks one parsed file; installs it, or says why not (NULL: expired). */
static const char *
mtasts_disk_use(struct mtasts *m, const char *name,
    const struct mtasts_cache_rec *rec, time_t now)
{
	struct mtasts_entry *e;
	struct sts_policy *p;
	const char *why = NULL;
	time_t expires;

	if (strcmp(rec->domain, name) != 0)
		return "domain differs from the file name";
	if ((p = malloc(sizeof(*p))) == NULL)
		return "out of memory";
	if (sts_policy_parse(rec->body, rec->body_len, p, &why) != 0) {
		free(p);
		return why;
	}
	/* Never beyond fetched + max_age, nor max_age from now (a clock
	 * that went backwards, or an edited file). */
	expires = (time_t)rec->expires;
	if (expires > (time_t)rec->fetched + p->max_age)
		expires = (time_t)rec->fetched + p->max_age;
	if (expires > now + p->max_age)
		expires = now + p->max_age;
	if (expires <= now) {
		free(p);
		unlinkat(m->dirfd, name, 0);     /* expired entries are not used */
		return NULL;
	}
	if ((e = mtasts_entry_get(m, name)) == NULL) {
		free(p);
		return "out of memory";
	}
	mtasts_entry_install(e, p, rec->id, (time_t)rec->fetched, expires);
	return NULL;
}

static void
mtasts_disk_load_one(struct mtasts *m, const char *name, char *buf, time_t now)
{
	struct mtasts_cache_rec rec;
	char dom[MTASTS_DOMAIN_MAX + 1];
	const char *why = NULL;
	size_t len = 0;

	if (name[0] == '.') {
		mtasts_disk_gc(m->dirfd, name, now);
		return;
	}
	if (mtasts_domain_norm(name, dom) != 0 || strcmp(dom, name) != 0)
		why = "not a domain name";
	else if (mtasts_disk_read(m->dirfd, name, buf, MTASTS_FILE_MAX, &len) != 0)
		why = "unreadable, not a file, or too large";
	else if (mtasts_cache_parse(buf, len, &rec, &why) == 0)
		why = mtasts_disk_use(m, name, &rec, now);
	if (why != NULL)
		log_msg(LOG_WARN, "MTA-STS cache: ignoring %s: %s", name, why);
}

static void
mtasts_disk_load(struct mtasts *m)
{
	struct dirent *de;
	DIR *d;
	char *buf;
	int fd = openat(m->dirfd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	time_t now = time(NULL);

	if (fd < 0 || (d = fdopendir(fd)) == NULL) {
		if (fd >= 0)
			close(fd);
		log_msg(LOG_WARN, "MTA-STS cache: cannot list: %s", strerror(errno));
		return;
	}
	if ((buf = malloc(MTASTS_FILE_MAX)) != NULL)
		while ((de = readdir(d)) != NULL)
			if (strcmp(de->d_name, ".") != 0 && strcmp(de->d_name, "..") != 0)
				mtasts_disk_load_one(m, de->d_name, buf, now);
	free(buf);
	closedir(d);
}

/* ------------------------------------------------------------------ */
/* TLS for the policy fetch                                             */
/* ------------------------------------------------------------------ */

/* CA certificates in the store that are unexpired and may sign. */
static int
mtasts_ca_count(SSL_CTX *ctx)
{
	STACK_OF(X509_OBJECT) *objs = X509_STORE_get0_objects(SSL_CTX_get_cert_store(ctx));
	int i, n = 0;

	for (i = 0; i < sk_X509_OBJECT_num(objs); i++) {
		X509 *x = X509_OBJECT_get0_X509(sk_X509_OBJECT_value(objs, i));

		if (x != NULL && X509_check_ca(x) != 0 &&
		    X509_cmp_current_time(X509_get0_notAfter(x)) > 0)
			n++;
	}
	return n;
}

/* Records OpenSSL's first verification error; never changes its verdict. */
static int
mtasts_verify_cb(int ok, X509_STORE_CTX *xs)
{
	SSL *ssl = X509_STORE_CTX_get_ex_data(xs, SSL_get_ex_data_X509_STORE_CTX_idx());
	struct mtasts_job *j = ssl != NULL ? SSL_get_app_data(ssl) : NULL;

	if (!ok && j != NULL && j->verify_err == X509_V_OK)
		j->verify_err = X509_STORE_CTX_get_error(xs);
	return ok;
}

static void
mtasts_info_cb(const SSL *ssl, int where, int ret)
{
	struct mtasts_job *j = SSL_get_app_data(ssl);

	(void)ret;
	if ((where & SSL_CB_HANDSHAKE_DONE) != 0 && j != NULL)
		j->tls_done = 1;
}

/*
 * RFC 8461 §3.3: the policy host's certificate must be valid for
 * mta-sts.<domain> under PKIX (RFC 6125), and senders MUST NOT skip
 * validation; §7.2: TLS 1.2 or later.  The handshake aborts on failure.
 */
static SSL_CTX *
mtasts_tls_new(const char *ca_file, char *err, size_t errlen)
{
	const char *ca = ca_file;
	SSL_CTX *ctx;

	if (ca == NULL || *ca == '\0')
		ca = getenv(X509_get_default_cert_file_env());
	if (ca == NULL || *ca == '\0')
		ca = X509_get_default_cert_file();
	if ((ctx = tlsctx_client_new(ca, err, errlen)) == NULL)
		return NULL;
	if (mtasts_ca_count(ctx) == 0) {
		snprintf(err, errlen, "MTA-STS: CA file %s holds no usable CA "
		    "certificate", ca);
		SSL_CTX_free(ctx);
		return NULL;
	}
	SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
	SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, mtasts_verify_cb);
	return ctx;
}

/* SNI and the checked name are mta-sts.<domain>; no partial wildcards. */
static SSL *
mtasts_ssl_new(struct mtasts *m, struct mtasts_job *j)
{
	SSL *ssl = SSL_new(m->ctx);

	if (ssl == NULL)
		return NULL;
	if (SSL_set_tlsext_host_name(ssl, j->host) != 1 ||
	    SSL_set1_host(ssl, j->host) != 1) {
		SSL_free(ssl);
		return NULL;
	}
	SSL_set_hostflags(ssl, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
	SSL_set_app_data(ssl, j);
	SSL_set_info_callback(ssl, mtasts_info_cb);
	return ssl;
}

/* ------------------------------------------------------------------ */
/* The HTTPS fetch (RFC 8461 §3.3)                                      */
/* ------------------------------------------------------------------ */

/* RFC 8461 §3.3: "Senders SHOULD validate that the media type is
 * 'text/plain'"; parameters (charset) are allowed (RFC 9110 §8.3.1). */
static int
mtasts_ctype_ok(const char *ct)
{
	static const char want[] = "text/plain";

	if (ct == NULL)
		return 0;
	ct += strspn(ct, " \t");
	if (strncasecmp(ct, want, sizeof(want) - 1) != 0)
		return 0;
	ct += sizeof(want) - 1;
	ct += strspn(ct, " \t");
	return *ct == '\0' || *ct == ';';
}

static void
mtasts_http_end(struct mtasts_job *j)
{
	j->state = j->retry ? MJ_RETRY : MJ_DONE;
	event_active(j->step_ev, EV_TIMEOUT, 1);
}

static const char *
mtasts_peer(const struct mtasts_job *j)
{
	return j->next_addr > 0 ? j->addr[j->next_addr - 1] : "?";
}

/*
 * RFC 8461 §3.3: "HTTP 3xx redirects MUST NOT be followed"; only a 200
 * carries a policy.  Runs when the headers are in; -1 aborts the request.
 */
static int
mtasts_http_header_cb(struct evhttp_request *req, void *arg)
{
	struct mtasts_job *j = arg;
	struct evkeyvalq *h = evhttp_request_get_input_headers(req);
	int code = evhttp_request_get_response_code(req);
	const char *ct = evhttp_find_header(h, "Content-Type");
	const char *cl = evhttp_find_header(h, "Content-Length");

	j->got_response = 1;
	if (code != 200)
		mtasts_job_fail(j, RT_FETCH, "%s (%s): HTTP status %d%s", j->host,
		    mtasts_peer(j), code, code >= 300 && code < 400 ?
		    " (redirects are not followed)" : "");
	else if (!mtasts_ctype_ok(ct))
		mtasts_job_fail(j, RT_FETCH, "%s (%s): Content-Type \"%.64s\" is "
		    "not text/plain", j->host, mtasts_peer(j), ct ? ct : "");
	else if (cl != NULL && strtoull(cl, NULL, 10) > MTASTS_BODY_MAX)
		mtasts_job_fail(j, RT_FETCH, "%s (%s): Content-Length %.20s "
		    "exceeds %d bytes", j->host, mtasts_peer(j), cl, MTASTS_BODY_MAX);
	return j->failure != NULL ? -1 : 0;
}

/* OpenSSL's errors for this connection, "" when none. */
static void
mtasts_http_ossl(struct mtasts_job *j, char *buf, size_t len)
{
	struct bufferevent *bev = evhttp_connection_get_bufferevent(j->conn);
	unsigned long e;
	size_t used;

	buf[0] = '\0';
	while (bev != NULL && (e = bufferevent_get_openssl_error(bev)) != 0) {
		used = strlen(buf);
		if (ERR_GET_LIB(e) != 0 && used + 4 < len) {
			snprintf(buf + used, len - used, "; ");
			ERR_error_string_n(e, buf + used + 2, len - used - 2);
		}
	}
}

static const char *
mtasts_evreq_name(enum evhttp_request_error err)
{
	switch (err) {
	case EVREQ_HTTP_TIMEOUT:
		return "timeout";
	case EVREQ_HTTP_EOF:
		return "connection closed";
	case EVREQ_HTTP_INVALID_HEADER:
		return "invalid HTTP response";
	case EVREQ_HTTP_BUFFER_ERROR:
		return "connection error";
	case EVREQ_HTTP_DATA_TOO_LONG:
		return "body too long";
	default:
		return "request cancelled";
	}
}

/*
 * A failed request.  A certificate that does not verify is
 * sts-webpki-invalid (RFC 8460 §4.3.2.2); a body over the limit, a broken
 * TLS handshake or connection is sts-policy-fetch-error.  A connection that
 * failed before TLS completed is retried on the host's next address.
 * libevent 2.1 reports most failures through the error callback, but a
 * refused connection only through the completion callback with status 0.
 */
static void
mtasts_http_failed(struct mtasts_job *j, const char *what, int too_long,
    int saved_errno)
{
	char ossl[200];
	size_t n;

	mtasts_http_ossl(j, ossl, sizeof(ossl));
	if (j->verify_err != X509_V_OK)
		mtasts_job_fail(j, RT_WEBPKI, "%s (%s): certificate: %s", j->host,
		    mtasts_peer(j), X509_verify_cert_error_string(j->verify_err));
	else if (too_long)
		mtasts_job_fail(j, RT_FETCH, "%s (%s): body exceeds %d bytes",
		    j->host, mtasts_peer(j), MTASTS_BODY_MAX);
	else if (j->failure == NULL && !j->tls_done && !j->got_response &&
	    j->next_addr < j->naddr)
		j->retry = 1;
	else
		mtasts_job_fail(j, RT_FETCH, "%s (%s): %s%s%s%s", j->host,
		    mtasts_peer(j), j->tls_done ? "" : "before TLS completed: ",
		    what, saved_errno != 0 ? ": " : "",
		    saved_errno != 0 ? strerror(saved_errno) : "");
	n = strlen(j->detail);
	if (ossl[0] != '\0' && j->failure != NULL && strcmp(j->failure, RT_FETCH) == 0)
		snprintf(j->detail + n, sizeof(j->detail) - n, "%s", ossl);
}

static void
mtasts_http_error_cb(enum evhttp_request_error err, void *arg)
{
	struct mtasts_job *j = arg;
	int saved = errno;

	mtasts_http_failed(j, mtasts_evreq_name(err), err == EVREQ_HTTP_DATA_TOO_LONG,
	    err == EVREQ_HTTP_EOF || err == EVREQ_HTTP_BUFFER_ERROR ? saved : 0);
	mtasts_http_end(j);
}

/* Completion: req NULL after an error (the error callback ran first), or
 * status 0 when the connection failed. */
static void
mtasts_http_done_cb(struct evhttp_request *req, void *arg)
{
	struct mtasts_job *j = arg;
	struct evbuffer *in;
	int code = req != NULL ? evhttp_request_get_response_code(req) : 0;

	if (req != NULL && code == 0 && j->failure == NULL && !j->retry)
		mtasts_http_failed(j, "connection refused or failed", 0, 0);
	else if (j->failure == NULL && !j->retry && code == 200) {
		in = evhttp_request_get_input_buffer(req);
		if (evbuffer_get_length(in) > MTASTS_BODY_MAX)
			mtasts_job_fail(j, RT_FETCH, "%s (%s): body exceeds %d bytes",
			    j->host, mtasts_peer(j), MTASTS_BODY_MAX);
		else if (evbuffer_add_buffer(j->body, in) == 0)
			j->body_ok = 1;
	}
	if (!j->body_ok && !j->retry)
		mtasts_job_fail(j, RT_FETCH, "%s (%s): no response", j->host,
		    mtasts_peer(j));
	mtasts_http_end(j);
}

static struct evhttp_request *
mtasts_http_request(struct mtasts_job *j)
{
	struct evhttp_request *req = evhttp_request_new(mtasts_http_done_cb, j);
	struct evkeyvalq *h;
	char host[MTASTS_HOST_MAX + 8];

	if (req == NULL)
		return NULL;
	evhttp_request_set_header_cb(req, mtasts_http_header_cb);
	evhttp_request_set_error_cb(req, mtasts_http_error_cb);
	if (j->e->m->port == 443)
		snprintf(host, sizeof(host), "%s", j->host);
	else
		snprintf(host, sizeof(host), "%s:%d", j->host, j->e->m->port);
	h = evhttp_request_get_output_headers(req);
	if (evhttp_add_header(h, "Host", host) != 0 ||
	    evhttp_add_header(h, "Connection", "close") != 0 ||
	    evhttp_add_header(h, "Accept", "text/plain") != 0 ||
	    evhttp_add_header(h, "User-Agent", "tlsrelay MTA-STS") != 0) {
		evhttp_request_free(req);
		return NULL;
	}
	return req;
}

/*
 * One HTTPS GET to the IP literal ip: evhttp over bufferevent_openssl.
 * 0 when the request is under way (its callbacks will run), -1 when it
 * could not start.  j->conn, once set, is freed by mtasts_http_close().
 */
static int
mtasts_http_connect(struct mtasts_job *j, const char *ip)
{
	struct mtasts *m = j->e->m;
	struct bufferevent *bev;
	struct evhttp_request *req;
	SSL *ssl;

	if ((ssl = mtasts_ssl_new(m, j)) == NULL)
		return -1;
	bev = bufferevent_openssl_socket_new(m->base, -1, ssl,
	    BUFFEREVENT_SSL_CONNECTING, BEV_OPT_CLOSE_ON_FREE | BEV_OPT_DEFER_CALLBACKS);
	if (bev == NULL) {
		SSL_free(ssl);
		return -1;
	}
	j->conn = evhttp_connection_base_bufferevent_new(m->base, m->dns, bev, ip,
	    (ev_uint16_t)m->port);
	if (j->conn == NULL) {
		bufferevent_free(bev);
		return -1;
	}
	evhttp_connection_set_timeout(j->conn, m->fetch_timeout);
	evhttp_connection_set_max_body_size(j->conn, MTASTS_BODY_MAX);
	evhttp_connection_set_max_headers_size(j->conn, MTASTS_HEADERS_MAX);
	evhttp_connection_set_retries(j->conn, 0);
	if ((req = mtasts_http_request(j)) == NULL)
		return -1;
	/* On failure evhttp may already have run the error callback. */
	return evhttp_make_request(j->conn, req, EVHTTP_REQ_GET, MTASTS_URL_PATH);
}

static void
mtasts_http_close(struct mtasts_job *j)
{
	if (j->conn != NULL)
		evhttp_connection_free(j->conn);
	j->conn = NULL;
}

static void
mtasts_http_start(struct mtasts_job *j)
{
	const char *ip = j->addr[j->next_addr++];

	j->state = MJ_HTTP;
	j->tls_done = j->got_response = j->retry = 0;
	j->verify_err = X509_V_OK;
	if (mtasts_http_connect(j, ip) != 0) {
		mtasts_job_fail(j, RT_FETCH, "%s (%s): cannot start the HTTPS "
		    "request", j->host, ip);
		mtasts_http_end(j);
	}
}

static void
mtasts_addr_cb(void *arg, const struct dns_answer *a)
{
	struct mtasts_job *j = arg;
	char *why = a->qtype == DNS_T_A ? j->a_why : j->aaaa_why;
	size_t i;

	if (a->qtype == DNS_T_A)
		j->a_q = NULL;
	else
		j->aaaa_q = NULL;
	snprintf(why, sizeof(j->a_why), "%s", dns_status_name(a->status));
	for (i = 0; a->status == DNS_OK && i < a->n; i++)
		if ((a->rr[i].type == DNS_T_A || a->rr[i].type == DNS_T_AAAA) &&
		    j->naddr < MTASTS_MAX_ADDRS)
			snprintf(j->addr[j->naddr++], INET6_ADDRSTRLEN, "%s",
			    a->rr[i].u.addr.text);
	if (j->a_q != NULL || j->aaaa_q != NULL)
		return;
	if (j->naddr == 0) {
		mtasts_job_fail(j, RT_FETCH, "%s: no address (A: %s, AAAA: %s)",
		    j->host, j->a_why, j->aaaa_why);
		mtasts_http_end(j);
		return;
	}
	dns_addrs_v4_first(j->addr, (size_t)j->naddr);   /* no racing; see mtasts.h */
	mtasts_http_start(j);
}

/* Resolves mta-sts.<domain> through libunbound, then fetches; the total
 * time is bounded by fetch_timeout (RFC 8461 §3.3 suggests one minute). */
static void
mtasts_fetch_start(struct mtasts_job *j)
{
	struct mtasts *m = j->e->m;
	struct timeval tv = { m->fetch_timeout, 0 };

	j->state = MJ_ADDR;
	evtimer_add(j->timer_ev, &tv);
	snprintf(j->a_why, sizeof(j->a_why), "query failed");
	snprintf(j->aaaa_why, sizeof(j->aaaa_why), "query failed");
	j->a_q = resolver_query(m->res, j->host, DNS_T_A, mtasts_addr_cb, j);
	j->aaaa_q = resolver_query(m->res, j->host, DNS_T_AAAA, mtasts_addr_cb, j);
	if (j->a_q == NULL && j->aaaa_q == NULL) {
		mtasts_job_fail(j, RT_FETCH, "%s: cannot resolve", j->host);
		mtasts_http_end(j);
	}
}

/* ------------------------------------------------------------------ */
/* Jobs: discovery, decision, completion                                */
/* ------------------------------------------------------------------ */

static void
mtasts_job_stop(struct mtasts_job *j)
{
	resolver_cancel(&j->txt_q);
	resolver_cancel(&j->a_q);
	resolver_cancel(&j->aaaa_q);
	mtasts_http_close(j);
	if (j->timer_ev != NULL)
		evtimer_del(j->timer_ev);
}

static void
mtasts_job_free(struct mtasts_job *j)
{
	mtasts_job_stop(j);
	if (j->step_ev != NULL)
		event_free(j->step_ev);
	if (j->timer_ev != NULL)
		event_free(j->timer_ev);
	if (j->body != NULL)
		evbuffer_free(j->body);
	free(j);
}

static void
mtasts_job_done(struct mtasts_job *j)
{
	j->state = MJ_DONE;
	event_active(j->step_ev, EV_TIMEOUT, 1);
}

/* Time before expiry at which a used policy is fetched again. */
static time_t
mtasts_lead(long max_age)
{
	long half = max_age / 2 < MTASTS_DAY ? max_age / 2 : MTASTS_DAY;

	return max_age / 4 > half ? max_age / 4 : half;
}

static int
mtasts_entry_due(const struct mtasts_entry *e, time_t now)
{
	return now >= e->expires - mtasts_lead(e->policy->max_age);
}

/*
 * RFC 8461 §3.3: "senders SHOULD limit further attempts to a period of
 * five minutes or longer per version ID" after a failed fetch (STS-13).
 */
static int
mtasts_rate_limited(struct mtasts_job *j, time_t now)
{
	struct mtasts_entry *e = j->e;

	if (e->fail_id[0] == '\0' || strcmp(e->fail_id, j->txt_id) != 0 ||
	    now - e->fail_at >= MTASTS_RETRY_INTERVAL || now < e->fail_at)
		return 0;
	j->rate_limited = 1;
	mtasts_job_fail(j, e->fail_type, "not fetched again within %d s of a "
	    "failure (%ld s ago): %s", MTASTS_RETRY_INTERVAL,
	    (long)(now - e->fail_at), e->fail_detail);
	return 1;
}

/*
 * RFC 8461 §5.1 (control flow) after the TXT answer: no record, a failed
 * lookup, or the cached id with an unexpired policy end the job; a new id
 * (or a due refresh) fetches the policy, unless rate-limited.
 */
static void
mtasts_job_after_txt(struct mtasts_job *j)
{
	struct mtasts_entry *e = j->e;
	time_t now = time(NULL);

	if (j->txt != TXT_OK ||
	    (mtasts_entry_valid(e, now) && strcmp(e->id, j->txt_id) == 0 &&
	    !(j->refresh && mtasts_entry_due(e, now))))
		mtasts_job_done(j);
	else if (mtasts_rate_limited(j, now))
		mtasts_job_done(j);
	else
		mtasts_fetch_start(j);
}

/* STS-01: all TXT strings of each record concatenated (resolver.h), then
 * exactly one valid v=STSv1 record (sts_txt_select). */
static void
mtasts_txt_cb(void *arg, const struct dns_answer *a)
{
	struct mtasts_job *j = arg;
	const char *txts[DNS_MAX_RECORDS];
	size_t lens[DNS_MAX_RECORDS], i, n = 0;

	j->txt_q = NULL;
	if (a->status == DNS_FAIL) {
		j->txt = TXT_FAIL;
		mtasts_job_note(j, "TXT _mta-sts.%s: lookup failed (rcode %d%s%s)",
		    j->e->domain, a->rcode,
		    a->why_bogus[0] ? ", " : "", a->why_bogus);
		mtasts_job_after_txt(j);
		return;
	}
	for (i = 0; a->status == DNS_OK && i < a->n && n < DNS_MAX_RECORDS; i++)
		if (a->rr[i].type == DNS_T_TXT) {
			txts[n] = a->rr[i].u.txt.text;
			lens[n++] = a->rr[i].u.txt.len;
		}
	j->txt = n > 0 && sts_txt_select(txts, lens, n, j->txt_id) == 1 ?
	    TXT_OK : TXT_NONE;
	if (j->txt == TXT_NONE)
		j->txt_id[0] = '\0';
	mtasts_job_after_txt(j);
}

/* A fetched body: parsed and installed, or sts-policy-invalid (STS-07:
 * an invalid policy is no policy, never "match nothing"). */
static void
mtasts_job_install(struct mtasts_job *j, time_t now)
{
	struct mtasts_entry *e = j->e;
	size_t len = evbuffer_get_length(j->body);
	const char *body = len > 0 ? (const char *)evbuffer_pullup(j->body, -1) : "";
	const char *why = "empty body";
	struct sts_policy *p = malloc(sizeof(*p));

	if (p == NULL) {
		mtasts_job_fail(j, RT_FETCH, "%s: out of memory", j->host);
		return;
	}
	if (len == 0 || sts_policy_parse(body, len, p, &why) != 0) {
		free(p);
		mtasts_job_fail(j, RT_INVALID, "%s: %s", j->host, why);
		return;
	}
	mtasts_entry_install(e, p, j->txt_id, now, now + p->max_age);
	mtasts_disk_save(e, body, len);
	e->fail_id[0] = '\0';
	j->installed = 1;
}

/* Remembers a failed fetch for the rate limit. */
static void
mtasts_fail_record(struct mtasts_job *j, time_t now)
{
	struct mtasts_entry *e = j->e;

	snprintf(e->fail_id, sizeof(e->fail_id), "%s", j->txt_id);
	e->fail_at = now;
	e->fail_type = j->failure;
	snprintf(e->fail_detail, sizeof(e->fail_detail), "%s", j->detail);
}

/*
 * RFC 8461 §3.3/§5.1: an unexpired cached policy is used when there is no
 * TXT record, when the lookup or the fetch failed (STS-11), and when the id
 * is unchanged; a freshly fetched policy is used even with max_age 0.
 */
static void
mtasts_result_fill(const struct mtasts_job *j, time_t now, struct mtasts_result *r)
{
	const struct mtasts_entry *e = j->e;

	memset(r, 0, sizeof(*r));
	r->failure = j->failure;
	snprintf(r->detail, sizeof(r->detail), "%s", j->detail);
	if (j->installed || mtasts_entry_valid(e, now)) {
		r->status = MTASTS_POLICY;
		r->policy = e->policy;
		snprintf(r->id, sizeof(r->id), "%s", e->id);
		r->expires = e->expires;
		r->from_cache = !j->installed;
	} else if (j->txt == TXT_FAIL) {
		r->txt_failed = 1;
		r->status = e->m->txt_fail == MTASTS_TXT_FAIL_NOPOLICY ?
		    MTASTS_NONE : MTASTS_TEMPFAIL;
	} else {
		r->status = MTASTS_NONE;
		snprintf(r->id, sizeof(r->id), "%s", j->txt_id);
	}
}

static const char *
mtasts_outcome(const struct mtasts_job *j, const struct mtasts_result *r)
{
	if (j->installed)
		return "success";
	if (j->failure != NULL || (j->txt == TXT_FAIL && r->policy == NULL))
		return "failure";
	return r->policy != NULL ? "cache" : "none";
}

/* The "policy_fetch" event: one per finished job. */
static void
mtasts_event(const struct mtasts_job *j, const struct mtasts_result *r)
{
	struct evline *ev = evlog_begin("policy_fetch", j->session);

	evlog_str(ev, "policy_type", "sts");
	evlog_str(ev, "policy_domain", j->e->domain);
	evlog_str(ev, "result", r->failure != NULL ||
	    strcmp(mtasts_outcome(j, r), "failure") == 0 ? "failure" : "success");
	evlog_str(ev, "domain", j->e->domain);
	evlog_str(ev, "id", j->txt_id[0] ? j->txt_id : r->id);
	evlog_str(ev, "outcome", mtasts_outcome(j, r));
	evlog_str(ev, "status", mtasts_status_name(r->status));
	evlog_str(ev, "txt", mtasts_txt_names[j->txt]);
	if (r->failure != NULL)
		evlog_str(ev, "result_type", r->failure);
	if (r->detail[0] != '\0')
		evlog_str(ev, "detail", r->detail);
	evlog_bool(ev, "from_cache", r->from_cache);
	evlog_bool(ev, "refresh", j->refresh);
	evlog_bool(ev, "rate_limited", j->rate_limited);
	if (r->policy != NULL) {
		evlog_str(ev, "policy_id", r->id);
		evlog_str(ev, "mode", sts_mode_name(r->policy->mode));
		evlog_int(ev, "max_age", r->policy->max_age);
		evlog_int(ev, "expires", (long long)r->expires);
	}
	if (j->next_addr > 0)
		evlog_int(ev, "connections", j->next_addr);
	evlog_int(ev, "duration_ms", mtasts_ms_since(&j->t0));
	evlog_end(ev);
}

static void
mtasts_req_link(struct mtasts_req **head, struct mtasts_req *q)
{
	q->next = *head;
	if (q->next != NULL)
		q->next->pprev = &q->next;
	q->pprev = head;
	*head = q;
}

static void
mtasts_req_unlink(struct mtasts_req *q)
{
	if (q->pprev == NULL)
		return;
	*q->pprev = q->next;
	if (q->next != NULL)
		q->next->pprev = q->pprev;
	q->next = NULL;
	q->pprev = NULL;
}

/* Calls every waiter; a callback may cancel other waiters or look up
 * again (which starts a new job: e->job is already cleared). */
static void
mtasts_deliver(struct mtasts_entry *e, const struct mtasts_result *r)
{
	struct mtasts_req *list = e->waiters, *q;

	e->waiters = NULL;
	if (list != NULL)
		list->pprev = &list;
	while ((q = list) != NULL) {
		mtasts_req_unlink(q);
		q->delivering = 1;
		q->cb(q->arg, r);
		free(q);
	}
}

/*
 * Proactive refresh (RFC 8461 §10.2, STS-13): a policy used within its
 * max_age is checked at least daily and fetched again when less than
 * mtasts_lead() of its lifetime is left, at a random time (kumomta#7).
 */
static void
mtasts_refresh_schedule(struct mtasts_entry *e, time_t now)
{
	struct mtasts *m = e->m;
	struct timeval tv;
	time_t delay, left;

	if (!mtasts_entry_valid(e, now) || e->job != NULL || e->last_used == 0 ||
	    now - e->last_used >= e->policy->max_age)
		return;
	if (e->refresh_ev == NULL &&
	    (e->refresh_ev = evtimer_new(m->base, mtasts_refresh_cb, e)) == NULL)
		return;
	if (evtimer_pending(e->refresh_ev, NULL))
		return;
	left = e->expires - now;
	delay = e->expires - mtasts_lead(e->policy->max_age) - now;
	if (delay < m->refresh_min)
		delay = m->refresh_min < left / 2 ? m->refresh_min : left / 2;
	if (delay > MTASTS_DAY)
		delay = MTASTS_DAY;
	delay -= mtasts_random(delay / 10 + 1);
	tv.tv_sec = delay > 0 ? delay : 0;
	tv.tv_usec = mtasts_random(1000000);
	evtimer_add(e->refresh_ev, &tv);
}

/* Ends a job: the result, the event, the waiters, the next refresh. */
static void
mtasts_job_finish(struct mtasts_job *j)
{
	struct mtasts_entry *e = j->e;
	struct mtasts_result r;
	time_t now = time(NULL);

	mtasts_job_stop(j);
	if (j->body_ok && j->failure == NULL)
		mtasts_job_install(j, now);
	if (j->failure != NULL && !j->rate_limited && j->txt == TXT_OK)
		mtasts_fail_record(j, now);
	if (j->failure != NULL && j->refresh)
		log_msg(LOG_WARN, "MTA-STS refresh of %s failed: %s", e->domain,
		    j->detail);
	mtasts_result_fill(j, now, &r);
	mtasts_event(j, &r);
	if (j->installed && e->refresh_ev != NULL)
		evtimer_del(e->refresh_ev);
	if (r.status == MTASTS_POLICY && e->waiters != NULL)
		e->last_used = now;
	e->job = NULL;
	mtasts_job_free(j);
	mtasts_deliver(e, &r);
	mtasts_refresh_schedule(e, time(NULL));
}

static void
mtasts_step_cb(evutil_socket_t fd, short what, void *arg)
{
	struct mtasts_job *j = arg;

	(void)fd;
	(void)what;
	mtasts_http_close(j);
	if (j->state == MJ_RETRY)
		mtasts_http_start(j);
	else if (j->state == MJ_DONE)
		mtasts_job_finish(j);
}

static void
mtasts_timeout_cb(evutil_socket_t fd, short what, void *arg)
{
	struct mtasts_job *j = arg;

	(void)fd;
	(void)what;
	if (j->state != MJ_DONE) {       /* else the step event is due anyway */
		mtasts_job_fail(j, RT_FETCH, "%s: no policy within %d s%s%s",
		    j->host, j->e->m->fetch_timeout, j->next_addr > 0 ? " from " : "",
		    j->next_addr > 0 ? mtasts_peer(j) : "");
		j->body_ok = 0;
	}
	mtasts_job_finish(j);
}

/* Starts the TXT lookup of a new job for e; NULL on allocation failure. */
static struct mtasts_job *
mtasts_job_start(struct mtasts_entry *e, const char *session, int refresh)
{
	struct mtasts *m = e->m;
	struct mtasts_job *j = calloc(1, sizeof(*j));
	char name[MTASTS_HOST_MAX + 2];

	if (j == NULL)
		return NULL;
	j->e = e;
	j->refresh = refresh;
	snprintf(j->session, sizeof(j->session), "%s", session ? session : "");
	snprintf(j->host, sizeof(j->host), "mta-sts.%s", e->domain);
	clock_gettime(CLOCK_MONOTONIC, &j->t0);
	j->step_ev = event_new(m->base, -1, 0, mtasts_step_cb, j);
	j->timer_ev = evtimer_new(m->base, mtasts_timeout_cb, j);
	j->body = evbuffer_new();
	if (j->step_ev == NULL || j->timer_ev == NULL || j->body == NULL) {
		mtasts_job_free(j);
		return NULL;
	}
	e->job = j;
	j->state = MJ_TXT;
	snprintf(name, sizeof(name), "_mta-sts.%s", e->domain);
	j->txt_q = resolver_query(m->res, name, DNS_T_TXT, mtasts_txt_cb, j);
	if (j->txt_q == NULL) {
		j->txt = TXT_FAIL;
		mtasts_job_note(j, "TXT %s: cannot query", name);
		mtasts_job_done(j);
	}
	return j;
}

static void
mtasts_refresh_cb(evutil_socket_t fd, short what, void *arg)
{
	struct mtasts_entry *e = arg;

	(void)fd;
	(void)what;
	if (e->job == NULL && mtasts_job_start(e, NULL, 1) == NULL)
		log_msg(LOG_WARN, "MTA-STS refresh of %s: out of memory", e->domain);
}

/* ------------------------------------------------------------------ */
/* Public API                                                           */
/* ------------------------------------------------------------------ */

struct mtasts *
mtasts_new(struct event_base *base, struct resolver *res,
    const struct mtasts_config *cfg, char *err, size_t errlen)
{
	struct mtasts *m = calloc(1, sizeof(*m));

	if (m == NULL) {
		snprintf(err, errlen, "MTA-STS: out of memory");
		return NULL;
	}
	m->base = base;
	m->res = res;
	m->dirfd = -1;
	m->fetch_timeout = cfg->fetch_timeout > 0 ? cfg->fetch_timeout : MTASTS_FETCH_TIMEOUT;
	m->txt_fail = cfg->txt_fail == MTASTS_TXT_FAIL_NOPOLICY ?
	    MTASTS_TXT_FAIL_NOPOLICY : MTASTS_TXT_FAIL_DEFER;
	m->port = cfg->https_port > 0 && cfg->https_port < 65536 ? cfg->https_port : 443;
	m->refresh_min = cfg->refresh_min > 0 ? cfg->refresh_min : MTASTS_RETRY_INTERVAL;
	if ((m->ctx = mtasts_tls_new(cfg->ca_file, err, errlen)) == NULL)
		goto fail;
	if ((m->dns = evdns_base_new(base, 0)) == NULL) {
		snprintf(err, errlen, "MTA-STS: evdns_base_new failed");
		goto fail;
	}
	if (cfg->state_dir != NULL &&
	    (m->dirfd = mtasts_disk_open(cfg->state_dir, err, errlen)) < 0)
		goto fail;
	if (m->dirfd >= 0)
		mtasts_disk_load(m);
	return m;
fail:
	mtasts_free(&m);
	return NULL;
}

static void
mtasts_entry_free(struct mtasts_entry *e)
{
	struct mtasts_req *q;

	if (e->job != NULL)
		mtasts_job_free(e->job);
	while ((q = e->waiters) != NULL) {
		mtasts_req_unlink(q);
		free(q);
	}
	if (e->refresh_ev != NULL)
		event_free(e->refresh_ev);
	free(e->policy);
	free(e);
}

void
mtasts_free(struct mtasts **mp)
{
	struct mtasts *m = mp != NULL ? *mp : NULL;
	struct mtasts_entry *e;
	size_t i;

	if (m == NULL)
		return;
	*mp = NULL;
	for (i = 0; i < MTASTS_BUCKETS; i++)
		while ((e = m->bucket[i]) != NULL) {
			m->bucket[i] = e->next;
			mtasts_entry_free(e);
		}
	if (m->dns != NULL)
		evdns_base_free(m->dns, 0);
	if (m->ctx != NULL)
		SSL_CTX_free(m->ctx);
	if (m->dirfd >= 0)
		close(m->dirfd);
	free(m);
}

struct mtasts_req *
mtasts_lookup(struct mtasts *m, const char *domain, const char *session,
    mtasts_cb cb, void *arg)
{
	char dom[MTASTS_DOMAIN_MAX + 1];
	struct mtasts_entry *e;
	struct mtasts_req *q;

	if (domain == NULL || mtasts_domain_norm(domain, dom) != 0)
		return NULL;
	if ((e = mtasts_entry_get(m, dom)) == NULL ||
	    (q = calloc(1, sizeof(*q))) == NULL)
		return NULL;
	if (e->job == NULL && mtasts_job_start(e, session, 0) == NULL) {
		free(q);
		return NULL;
	}
	q->cb = cb;
	q->arg = arg;
	mtasts_req_link(&e->waiters, q);
	return q;
}

void
mtasts_cancel(struct mtasts_req **rp)
{
	struct mtasts_req *q = rp != NULL ? *rp : NULL;

	if (q == NULL)
		return;
	*rp = NULL;
	if (q->delivering)
		return;         /* inside its own callback: freed after it */
	mtasts_req_unlink(q);
	free(q);
}
