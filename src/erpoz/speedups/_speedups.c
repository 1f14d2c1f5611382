/* erpoz.speedups._speedups: the audit's per-event hashing in C (optional; erpoz.speedups falls back to
 * the pure-Python code, which stays the reference, when this is not built).
 *
 * What it computes is exactly what the Python code computes (tests/audit/test_speedups.py
 * checks both on random data and on the tamper suite):
 *
 *   chain hash   SHA-256 hex of "\x1f".join((prev, run, str(seq), repr(ts), kind, step or "",
 *                str(attempt), data, payload or "")), UTF-8 (erpoz.store._model.chain_hash)
 *   leaf         SHA-256(0x00 || UTF-8(run ␟ seq ␟ hash))      (erpoz.store._merkle.leaf_hash)
 *   node         SHA-256(0x01 || left || right)                 (RFC 9162)
 *
 * SHA-256 is self-contained (no link to libcrypto, so a build needs only a C compiler and
 * Python's headers): a portable implementation, and the x86 SHA extensions (SHA-NI) when the
 * CPU has them, chosen at import after checking both against a known answer. */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))
#define ERPOZ_SHANI 1
#include <cpuid.h>
#include <immintrin.h>
#endif

/* --- SHA-256 ------------------------------------------------------------------------------ */
static const uint32_t K256[64] = {
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4,
    0xab1c5ed5, 0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe,
    0x9bdc06a7, 0xc19bf174, 0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f,
    0x4a7484aa, 0x5cb0a9dc, 0x76f988da, 0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7,
    0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967, 0x27b70a85, 0x2e1b2138, 0x4d2c6dfc,
    0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85, 0xa2bfe8a1, 0xa81a664b,
    0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070, 0x19a4c116,
    0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
    0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7,
    0xc67178f2};

static const uint32_t H0[8] = {0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a,
                               0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19};

typedef void (*compress_fn)(uint32_t state[8], const uint8_t *data, size_t blocks);

#define ROR(x, n) (((x) >> (n)) | ((x) << (32 - (n))))

static void
compress_portable(uint32_t state[8], const uint8_t *p, size_t blocks)
{
    uint32_t w[64];
    while (blocks--) {
        for (int i = 0; i < 16; i++) {
            w[i] = ((uint32_t)p[4 * i] << 24) | ((uint32_t)p[4 * i + 1] << 16) |
                   ((uint32_t)p[4 * i + 2] << 8) | (uint32_t)p[4 * i + 3];
        }
        for (int i = 16; i < 64; i++) {
            uint32_t s0 = ROR(w[i - 15], 7) ^ ROR(w[i - 15], 18) ^ (w[i - 15] >> 3);
            uint32_t s1 = ROR(w[i - 2], 17) ^ ROR(w[i - 2], 19) ^ (w[i - 2] >> 10);
            w[i] = w[i - 16] + s0 + w[i - 7] + s1;
        }
        uint32_t a = state[0], b = state[1], c = state[2], d = state[3];
        uint32_t e = state[4], f = state[5], g = state[6], h = state[7];
        for (int i = 0; i < 64; i++) {
            uint32_t S1 = ROR(e, 6) ^ ROR(e, 11) ^ ROR(e, 25);
            uint32_t ch = (e & f) ^ (~e & g);
            uint32_t t1 = h + S1 + ch + K256[i] + w[i];
            uint32_t S0 = ROR(a, 2) ^ ROR(a, 13) ^ ROR(a, 22);
            uint32_t maj = (a & b) ^ (a & c) ^ (b & c);
            uint32_t t2 = S0 + maj;
            h = g;
            g = f;
            f = e;
            e = d + t1;
            d = c;
            c = b;
            b = a;
            a = t1 + t2;
        }
        state[0] += a;
        state[1] += b;
        state[2] += c;
        state[3] += d;
        state[4] += e;
        state[5] += f;
        state[6] += g;
        state[7] += h;
        p += 64;
    }
}

#ifdef ERPOZ_SHANI
__attribute__((target("sha,sse4.1,ssse3"))) static void
compress_shani(uint32_t state[8], const uint8_t *p, size_t blocks)
{
    const __m128i MASK = _mm_set_epi64x(0x0c0d0e0f08090a0bULL, 0x0405060700010203ULL);
    __m128i tmp = _mm_loadu_si128((const __m128i *)&state[0]);
    __m128i s1 = _mm_loadu_si128((const __m128i *)&state[4]);
    tmp = _mm_shuffle_epi32(tmp, 0xB1);       /* CDAB */
    s1 = _mm_shuffle_epi32(s1, 0x1B);         /* EFGH */
    __m128i s0 = _mm_alignr_epi8(tmp, s1, 8); /* ABEF */
    s1 = _mm_blend_epi16(s1, tmp, 0xF0);      /* CDGH */
    while (blocks--) {
        __m128i abef = s0, cdgh = s1, msg, w[4];
        for (int i = 0; i < 4; i++) {
            w[i] = _mm_shuffle_epi8(_mm_loadu_si128((const __m128i *)(p + 16 * i)), MASK);
        }
#pragma GCC unroll 16
        for (int j = 0; j < 16; j++) {
            if (j >= 4) {
                __m128i t = _mm_sha256msg1_epu32(w[j & 3], w[(j + 1) & 3]);
                t = _mm_add_epi32(t, _mm_alignr_epi8(w[(j + 3) & 3], w[(j + 2) & 3], 4));
                w[j & 3] = _mm_sha256msg2_epu32(t, w[(j + 3) & 3]);
            }
            msg = _mm_add_epi32(w[j & 3], _mm_loadu_si128((const __m128i *)&K256[4 * j]));
            s1 = _mm_sha256rnds2_epu32(s1, s0, msg);
            msg = _mm_shuffle_epi32(msg, 0x0E);
            s0 = _mm_sha256rnds2_epu32(s0, s1, msg);
        }
        s0 = _mm_add_epi32(s0, abef);
        s1 = _mm_add_epi32(s1, cdgh);
        p += 64;
    }
    tmp = _mm_shuffle_epi32(s0, 0x1B);    /* FEBA */
    s1 = _mm_shuffle_epi32(s1, 0xB1);     /* DCHG */
    s0 = _mm_blend_epi16(tmp, s1, 0xF0);  /* DCBA */
    s1 = _mm_alignr_epi8(s1, tmp, 8);     /* ABEF */
    _mm_storeu_si128((__m128i *)&state[0], s0);
    _mm_storeu_si128((__m128i *)&state[4], s1);
}

static int
cpu_has_shani(void)
{
    unsigned int a, b, c, d;
    if (!__get_cpuid(1, &a, &b, &c, &d) || !(c & bit_SSE4_1) || !(c & bit_SSSE3)) {
        return 0;
    }
    if (__get_cpuid_max(0, NULL) < 7) {
        return 0;
    }
    __cpuid_count(7, 0, a, b, c, d);
    return (b >> 29) & 1;
}
#endif

static compress_fn compress = compress_portable;

static void
sha256_with(compress_fn fn, const uint8_t *msg, size_t len, uint8_t out[32])
{
    uint32_t st[8];
    memcpy(st, H0, sizeof st);
    size_t full = len / 64;
    if (full) {
        fn(st, msg, full);
    }
    uint8_t tail[128];
    size_t rest = len - full * 64;
    memcpy(tail, msg + full * 64, rest);
    tail[rest] = 0x80;
    size_t tail_len = rest + 1 + 8 <= 64 ? 64 : 128;
    memset(tail + rest + 1, 0, tail_len - rest - 1);
    uint64_t bits = (uint64_t)len * 8;
    for (int i = 0; i < 8; i++) {
        tail[tail_len - 1 - i] = (uint8_t)(bits >> (8 * i));
    }
    fn(st, tail, tail_len / 64);
    for (int i = 0; i < 8; i++) {
        out[4 * i] = (uint8_t)(st[i] >> 24);
        out[4 * i + 1] = (uint8_t)(st[i] >> 16);
        out[4 * i + 2] = (uint8_t)(st[i] >> 8);
        out[4 * i + 3] = (uint8_t)st[i];
    }
}

static void
sha256(const uint8_t *msg, size_t len, uint8_t out[32])
{
    sha256_with(compress, msg, len, out);
}

static void
to_hex(const uint8_t d[32], char out[64])
{
    static const char digits[] = "0123456789abcdef";
    for (int i = 0; i < 32; i++) {
        out[2 * i] = digits[d[i] >> 4];
        out[2 * i + 1] = digits[d[i] & 15];
    }
}

/* --- the message, built in a growable buffer --------------------------------------------- */
typedef struct {
    char *p;
    Py_ssize_t len, cap;
    char small[1024];
} Buf;

static void
buf_init(Buf *b)
{
    b->p = b->small;
    b->len = 0;
    b->cap = sizeof b->small;
}

static void
buf_free(Buf *b)
{
    if (b->p != b->small) {
        PyMem_Free(b->p);
    }
    buf_init(b);
}

static int
buf_put(Buf *b, const char *s, Py_ssize_t n)
{
    if (b->len + n > b->cap) {
        Py_ssize_t cap = b->cap;
        while (cap < b->len + n) {
            cap *= 2;
        }
        char *p = PyMem_Malloc((size_t)cap);
        if (p == NULL) {
            PyErr_NoMemory();
            return -1;
        }
        memcpy(p, b->p, (size_t)b->len);
        if (b->p != b->small) {
            PyMem_Free(b->p);
        }
        b->p = p;
        b->cap = cap;
    }
    memcpy(b->p + b->len, s, (size_t)n);
    b->len += n;
    return 0;
}

static int
buf_sep(Buf *b)
{
    return buf_put(b, "\x1f", 1);
}

/* A str's UTF-8 (``.encode()``: a lone surrogate raises UnicodeEncodeError). An ASCII str is
 * its own UTF-8; any other is encoded into a temporary bytes object, as ``.encode()`` does
 * (PyUnicode_AsUTF8AndSize would keep a UTF-8 copy inside the str for its lifetime). */
static int
put_str(Buf *b, PyObject *s)
{
    if (PyUnicode_IS_ASCII(s)) {
        return buf_put(b, (const char *)PyUnicode_DATA(s), PyUnicode_GET_LENGTH(s));
    }
    PyObject *u = PyUnicode_AsUTF8String(s);
    if (u == NULL) {
        return -1;
    }
    int rc = buf_put(b, PyBytes_AS_STRING(u), PyBytes_GET_SIZE(u));
    Py_DECREF(u);
    return rc;
}

/* f"{o}": format(o, "") (str(o) for the usual types). */
static PyObject *EMPTY; /* "" */

static int
put_formatted(Buf *b, PyObject *o)
{
    if (PyUnicode_CheckExact(o)) {
        return put_str(b, o);
    }
    if (PyLong_CheckExact(o)) {
        int overflow;
        long long v = PyLong_AsLongLongAndOverflow(o, &overflow);
        if (!overflow && !(v == -1 && PyErr_Occurred())) {
            char num[24];
            char *end = num + sizeof num, *q = end;
            unsigned long long u = v < 0 ? 0ULL - (unsigned long long)v : (unsigned long long)v;
            do {
                *--q = (char)('0' + u % 10);
                u /= 10;
            } while (u);
            if (v < 0) {
                *--q = '-';
            }
            return buf_put(b, q, end - q);
        }
        PyErr_Clear();
    }
    PyObject *s = PyObject_Format(o, EMPTY);
    if (s == NULL) {
        return -1;
    }
    int rc = put_str(b, s);
    Py_DECREF(s);
    return rc;
}

#if defined(__SIZEOF_INT128__)
/* repr of a float in [1, 2**53) (event times are), exactly as Python's: the fewest digits
 * after the point (k) for which the integer nearest to x * 10**k, divided by 10**k, reads back
 * as x, i.e. lies strictly inside x's rounding interval (x - ulp/2, x + ulp/2). With
 * x = f * 2**e (f of 53 bits, -52 <= e <= 0) all of it is exact in 128-bit integers. Returns
 * the length written, or 0 where this does not decide (a power of two, whose interval is
 * lopsided; a candidate on the interval's edge or halfway between two: rounding rules); the
 * caller then asks Python's own dtoa. Checked against repr on random floats by the tests. */
static int
short_repr(double x, char out[32])
{
    int neg = x < 0;
    double a = neg ? -x : x;
    if (!(a >= 1.0 && a < 9007199254740992.0)) { /* also NaN */
        return 0;
    }
    int exp2;
    double m = frexp(a, &exp2); /* a = m * 2**exp2, 0.5 <= m < 1 */
    uint64_t f = (uint64_t)ldexp(m, 53);
    int e = exp2 - 53; /* a = f * 2**e, -52 <= e <= 0 */
    if (f == (1ULL << 52)) {
        return 0;
    }
    int s = 1 - e; /* x * 10**k = X / 2**s with X = 2f * 10**k; the interval 2f -/+ 1 */
    unsigned __int128 ten = 1, half = (unsigned __int128)1 << (s - 1);
    unsigned __int128 mask = ((unsigned __int128)1 << s) - 1;
    for (int k = 0; k <= 17; k++, ten *= 10) {
        unsigned __int128 X = (unsigned __int128)(2 * f) * ten;
        unsigned __int128 q = X >> s, r = X & mask;
        if (r == half) {
            return 0;
        }
        if (r > half) {
            q += 1;
        }
        unsigned __int128 at = q << s, lo = (unsigned __int128)(2 * f - 1) * ten;
        unsigned __int128 hi = (unsigned __int128)(2 * f + 1) * ten;
        if (at == lo || at == hi) {
            return 0;
        }
        if (at < lo || at > hi) {
            continue;
        }
        char digits[40];
        int n = 0;
        unsigned __int128 v = q;
        do {
            digits[n++] = (char)('0' + v % 10);
            v /= 10;
        } while (v);
        int len = 0;
        if (neg) {
            out[len++] = '-';
        }
        for (int i = n - 1; i >= 0; i--) {
            out[len++] = digits[i];
            if (i == k && k > 0) {
                out[len++] = '.';
            }
        }
        if (k == 0) {
            out[len++] = '.';
            out[len++] = '0';
        }
        return len;
    }
    return 0;
}
#endif

/* repr(x): for a float exactly what float.__repr__ does. */
static int
put_repr(Buf *b, PyObject *o)
{
    if (PyFloat_CheckExact(o)) {
#if defined(__SIZEOF_INT128__)
        char fast[32];
        int n = short_repr(PyFloat_AS_DOUBLE(o), fast);
        if (n > 0) {
            return buf_put(b, fast, n);
        }
#endif
        char *r = PyOS_double_to_string(PyFloat_AS_DOUBLE(o), 'r', 0, Py_DTSF_ADD_DOT_0, NULL);
        if (r == NULL) {
            return -1;
        }
        int rc = buf_put(b, r, (Py_ssize_t)strlen(r));
        PyMem_Free(r);
        return rc;
    }
    PyObject *s = PyObject_Repr(o);
    if (s == NULL) {
        return -1;
    }
    int rc = put_str(b, s);
    Py_DECREF(s);
    return rc;
}

/* ``x or ""`` then formatted (join: ``strict``, the value must then be a str). */
static int
put_or_empty(Buf *b, PyObject *o, int strict, int index)
{
    int truth = PyObject_IsTrue(o);
    if (truth < 0) {
        return -1;
    }
    if (!truth) {
        return 0;
    }
    if (strict && !PyUnicode_Check(o)) {
        PyErr_Format(PyExc_TypeError, "sequence item %d: expected str instance, %.80s found",
                     index, Py_TYPE(o)->tp_name);
        return -1;
    }
    return strict ? put_str(b, o) : put_formatted(b, o);
}

static int
put_join_str(Buf *b, PyObject *o, int index)
{
    if (!PyUnicode_Check(o)) {
        PyErr_Format(PyExc_TypeError, "sequence item %d: expected str instance, %.80s found",
                     index, Py_TYPE(o)->tp_name);
        return -1;
    }
    return put_str(b, o);
}

/* str(x) (join's str(seq)): an int's digits, else str(). */
static int
put_str_of(Buf *b, PyObject *o)
{
    if (PyLong_CheckExact(o)) {
        return put_formatted(b, o);
    }
    PyObject *s = PyObject_Str(o);
    if (s == NULL) {
        return -1;
    }
    int rc = put_str(b, s);
    Py_DECREF(s);
    return rc;
}

/* The chain hash's message: f-string semantics (``strict`` = 0, the audit's _recompute) or
 * "\x1f".join semantics (``strict`` = 1, chain_hash). f: prev, run, seq, ts, kind, step,
 * attempt, data, payload. */
static int
chain_message(Buf *b, PyObject *const *f, int strict)
{
    b->len = 0;
    if (strict) {
        if (put_join_str(b, f[0], 0) || buf_sep(b) || put_join_str(b, f[1], 1) || buf_sep(b) ||
            put_str_of(b, f[2]) || buf_sep(b) || put_repr(b, f[3]) || buf_sep(b) ||
            put_join_str(b, f[4], 4) || buf_sep(b) || put_or_empty(b, f[5], 1, 5) ||
            buf_sep(b) || put_str_of(b, f[6]) || buf_sep(b) || put_join_str(b, f[7], 7) ||
            buf_sep(b) || put_or_empty(b, f[8], 1, 8)) {
            return -1;
        }
        return 0;
    }
    if (put_formatted(b, f[0]) || buf_sep(b) || put_formatted(b, f[1]) || buf_sep(b) ||
        put_formatted(b, f[2]) || buf_sep(b) || put_repr(b, f[3]) || buf_sep(b) ||
        put_formatted(b, f[4]) || buf_sep(b) || put_or_empty(b, f[5], 0, 5) || buf_sep(b) ||
        put_formatted(b, f[6]) || buf_sep(b) || put_formatted(b, f[7]) || buf_sep(b) ||
        put_or_empty(b, f[8], 0, 8)) {
        return -1;
    }
    return 0;
}

/* The leaf's message: f"\x00{run}\x1f{seq}\x1f{hash}". */
static int
leaf_message(Buf *b, PyObject *run, PyObject *seq, PyObject *hash)
{
    b->len = 0;
    return buf_put(b, "\x00", 1) || put_formatted(b, run) || buf_sep(b) ||
                   put_formatted(b, seq) || buf_sep(b) || put_formatted(b, hash)
               ? -1
               : 0;
}

/* --- chain_hash(prev, run_id, seq, ts, kind, step, attempt, data, payload) -> str ---------- */
static PyObject *
py_chain_hash(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 9) {
        PyErr_Format(PyExc_TypeError, "chain_hash() takes 9 arguments (%zd given)", nargs);
        return NULL;
    }
    Buf b;
    buf_init(&b);
    if (chain_message(&b, args, 1) < 0) {
        buf_free(&b);
        return NULL;
    }
    uint8_t d[32];
    char hex[64];
    sha256((const uint8_t *)b.p, (size_t)b.len, d);
    buf_free(&b);
    to_hex(d, hex);
    return PyUnicode_FromStringAndSize(hex, 64);
}

/* --- leaf_hash(run_id, seq, event_hash) -> bytes --------------------------------------------- */
static PyObject *
py_leaf_hash(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 3) {
        PyErr_Format(PyExc_TypeError, "leaf_hash() takes 3 arguments (%zd given)", nargs);
        return NULL;
    }
    Buf b;
    buf_init(&b);
    if (leaf_message(&b, args[0], args[1], args[2]) < 0) {
        buf_free(&b);
        return NULL;
    }
    uint8_t d[32];
    sha256((const uint8_t *)b.p, (size_t)b.len, d);
    buf_free(&b);
    return PyBytes_FromStringAndSize((const char *)d, 32);
}

/* Whether ``stored`` (an event's recorded hash) is the hex digest ``hex``. */
static int
hex_equal(PyObject *stored, const char hex[64])
{
    if (PyUnicode_CheckExact(stored) && PyUnicode_IS_ASCII(stored)) {
        return PyUnicode_GET_LENGTH(stored) == 64 && memcmp(PyUnicode_DATA(stored), hex, 64) == 0;
    }
    PyObject *mine = PyUnicode_FromStringAndSize(hex, 64);
    if (mine == NULL) {
        return -1;
    }
    int eq = PyObject_RichCompareBool(stored, mine, Py_EQ);
    Py_DECREF(mine);
    return eq;
}

/* Whether ``o`` == the int ``want``. */
static int
seq_equal(PyObject *o, long long want)
{
    if (PyLong_CheckExact(o)) {
        int overflow;
        long long v = PyLong_AsLongLongAndOverflow(o, &overflow);
        if (v == -1 && PyErr_Occurred()) {
            return -1;
        }
        return !overflow && v == want;
    }
    PyObject *w = PyLong_FromLongLong(want);
    if (w == NULL) {
        return -1;
    }
    int eq = PyObject_RichCompareBool(o, w, Py_EQ);
    Py_DECREF(w);
    return eq;
}

/* --- scan(rows, genesis, leaves) -> (first_bad, leaves | None, runs) ------------------------
 * rows: ChainRow tuples (run, seq, ts, kind, step, attempt, data, payload, prev_hash, hash),
 * ordered by run and sequence number. For every row: its chain hash recomputed and compared
 * with its stored one, its sequence number (1, 2, … within its run) and its link (the run's
 * first names ``genesis``, every other the stored hash of the one before it); ``first_bad``
 * is the first row where one differs (-1: none). ``leaves``: every row's leaf (of its stored
 * hash), when asked for. ``runs``: (run_id, start, end) of each run's slice. */
static PyObject *
py_scan(PyObject *self, PyObject *args)
{
    PyObject *rows, *genesis;
    int want_leaves;
    if (!PyArg_ParseTuple(args, "OUp:scan", &rows, &genesis, &want_leaves)) {
        return NULL;
    }
    /* tuples, not PySequence_Fast: the comparisons and formatting below may run Python code
     * (a str subclass's __eq__, an object's __format__) that could change a list under the
     * borrowed pointers kept to its items */
    PyObject *fast = PySequence_Tuple(rows);
    if (fast == NULL) {
        return NULL;
    }
    Py_ssize_t n = PySequence_Fast_GET_SIZE(fast);
    PyObject **items = PySequence_Fast_ITEMS(fast);
    PyObject *leaves = want_leaves ? PyList_New(n) : NULL;
    PyObject *runs = PyList_New(0);
    Buf b;
    buf_init(&b);
    Py_ssize_t bad = -1, start = 0;
    long long expected = 0;
    PyObject *prev_run = NULL, *prev_hash = NULL; /* of the row before (owned by prev_row) */
    PyObject *row = NULL, *prev_row = NULL;
    if ((want_leaves && leaves == NULL) || runs == NULL) {
        goto error;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        Py_XSETREF(row, PySequence_Tuple(items[i]));
        if (row == NULL) {
            goto error;
        }
        if (PySequence_Fast_GET_SIZE(row) != 10) {
            PyErr_Format(PyExc_ValueError,
                         "scan(): row %zd has %zd values, not 10 (run_id, seq, ts, kind, step, "
                         "attempt, data, payload, prev_hash, hash)",
                         i, PySequence_Fast_GET_SIZE(row));
            goto error;
        }
        PyObject *const *f = PySequence_Fast_ITEMS(row);
        int same = 0;
        if (prev_run != NULL) {
            same = f[0] == prev_run ? 1 : PyObject_RichCompareBool(f[0], prev_run, Py_EQ);
            if (same < 0) {
                goto error;
            }
        }
        if (!same) {
            if (prev_run != NULL) {
                PyObject *r = Py_BuildValue("(Onn)", prev_run, start, i);
                if (r == NULL || PyList_Append(runs, r) < 0) {
                    Py_XDECREF(r);
                    goto error;
                }
                Py_DECREF(r);
            }
            start = i;
            expected = 1;
        }
        else {
            expected += 1;
        }
        /* the chain hash of every row (as the Python code does, so that the same rows raise) */
        PyObject *msg_fields[9] = {f[8], f[0], f[1], f[2], f[3], f[4], f[5], f[6], f[7]};
        if (chain_message(&b, msg_fields, 0) < 0) {
            goto error;
        }
        uint8_t d[32];
        char hex[64];
        sha256((const uint8_t *)b.p, (size_t)b.len, d);
        to_hex(d, hex);
        if (bad < 0) {
            int ok = hex_equal(f[9], hex);
            if (ok > 0) {
                ok = seq_equal(f[1], expected);
            }
            if (ok > 0) {
                PyObject *link = same ? prev_hash : genesis;
                ok = f[8] == link ? 1 : PyObject_RichCompareBool(f[8], link, Py_EQ);
            }
            if (ok < 0) {
                goto error;
            }
            if (!ok) {
                bad = i;
            }
        }
        if (want_leaves) {
            if (leaf_message(&b, f[0], f[1], f[9]) < 0) {
                goto error;
            }
            sha256((const uint8_t *)b.p, (size_t)b.len, d);
            PyObject *leaf = PyBytes_FromStringAndSize((const char *)d, 32);
            if (leaf == NULL) {
                goto error;
            }
            PyList_SET_ITEM(leaves, i, leaf);
        }
        prev_run = f[0];
        prev_hash = f[9];
        Py_XSETREF(prev_row, row);
        row = NULL;
    }
    if (prev_run != NULL) {
        PyObject *r = Py_BuildValue("(Onn)", prev_run, start, n);
        if (r == NULL || PyList_Append(runs, r) < 0) {
            Py_XDECREF(r);
            goto error;
        }
        Py_DECREF(r);
    }
    buf_free(&b);
    Py_XDECREF(prev_row);
    Py_DECREF(fast);
    PyObject *out = Py_BuildValue("(nOO)", bad, leaves ? leaves : Py_None, runs);
    Py_XDECREF(leaves);
    Py_DECREF(runs);
    return out;
error:
    buf_free(&b);
    Py_XDECREF(row);
    Py_XDECREF(prev_row);
    Py_DECREF(fast);
    Py_XDECREF(leaves);
    Py_XDECREF(runs);
    return NULL;
}

/* --- parents(level) -> list[bytes]: SHA-256(0x01 || a || b) of each pair --------------------- */
static PyObject *
py_parents(PyObject *self, PyObject *level)
{
    PyObject *fast = PySequence_Fast(level, "parents(): the level must be a sequence");
    if (fast == NULL) {
        return NULL;
    }
    Py_ssize_t n = PySequence_Fast_GET_SIZE(fast) / 2;
    PyObject **items = PySequence_Fast_ITEMS(fast);
    PyObject *out = PyList_New(n);
    if (out == NULL) {
        Py_DECREF(fast);
        return NULL;
    }
    Buf b;
    buf_init(&b);
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *l = items[2 * i], *r = items[2 * i + 1];
        if (!PyBytes_Check(l) || !PyBytes_Check(r)) {
            PyErr_Format(PyExc_TypeError, "parents(): hash %zd is not bytes",
                         PyBytes_Check(l) ? 2 * i + 1 : 2 * i);
            goto error;
        }
        b.len = 0;
        if (buf_put(&b, "\x01", 1) ||
            buf_put(&b, PyBytes_AS_STRING(l), PyBytes_GET_SIZE(l)) ||
            buf_put(&b, PyBytes_AS_STRING(r), PyBytes_GET_SIZE(r))) {
            goto error;
        }
        uint8_t d[32];
        sha256((const uint8_t *)b.p, (size_t)b.len, d);
        PyObject *h = PyBytes_FromStringAndSize((const char *)d, 32);
        if (h == NULL) {
            goto error;
        }
        PyList_SET_ITEM(out, i, h);
    }
    buf_free(&b);
    Py_DECREF(fast);
    return out;
error:
    buf_free(&b);
    Py_DECREF(fast);
    Py_DECREF(out);
    return NULL;
}

/* --- sha256(data, portable=False) -> bytes: for the tests (both implementations) ---------- */
static PyObject *
py_sha256(PyObject *self, PyObject *args)
{
    Py_buffer view;
    int portable = 0;
    if (!PyArg_ParseTuple(args, "y*|p:sha256", &view, &portable)) {
        return NULL;
    }
    uint8_t d[32];
    sha256_with(portable ? compress_portable : compress, view.buf, (size_t)view.len, d);
    PyBuffer_Release(&view);
    return PyBytes_FromStringAndSize((const char *)d, 32);
}

static PyMethodDef methods[] = {
    {"chain_hash", (PyCFunction)(void (*)(void))py_chain_hash, METH_FASTCALL,
     "An event's chain hash (erpoz.store.chain_hash)."},
    {"leaf_hash", (PyCFunction)(void (*)(void))py_leaf_hash, METH_FASTCALL,
     "An event's leaf in the Merkle tree (erpoz.store.leaf_hash)."},
    {"scan", py_scan, METH_VARARGS, "Chains, links and leaves of rows ordered by run."},
    {"parents", py_parents, METH_O, "The next level of the tree: a node per pair."},
    {"sha256", py_sha256, METH_VARARGS, "SHA-256 (portable=True: without the SHA extensions)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "erpoz.speedups._speedups",
    "The audit's per-event hashing in C (see erpoz.speedups).", -1, methods,
};

PyMODINIT_FUNC
PyInit__speedups(void)
{
    EMPTY = PyUnicode_FromString("");
    if (EMPTY == NULL) {
        return NULL;
    }
    const char *impl = "portable";
#ifdef ERPOZ_SHANI
    if (cpu_has_shani()) {
        /* known answers, both implementations, 0 to 200 bytes: use SHA-NI only if they agree */
        uint8_t msg[200], a[32], c[32];
        int same = 1;
        for (int i = 0; i < 200; i++) {
            msg[i] = (uint8_t)(i * 131 + 7);
        }
        for (size_t len = 0; len <= sizeof msg && same; len++) {
            sha256_with(compress_portable, msg, len, a);
            sha256_with(compress_shani, msg, len, c);
            same = memcmp(a, c, 32) == 0;
        }
        if (same) {
            compress = compress_shani;
            impl = "sha-ni";
        }
    }
#endif
    PyObject *m = PyModule_Create(&module);
    if (m == NULL) {
        return NULL;
    }
    if (PyModule_AddStringConstant(m, "SHA256", impl) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
