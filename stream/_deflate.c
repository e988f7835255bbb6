/* Huffman-only deflate for PNG scanlines: imgstream._deflate.huffman().
 *
 * PNG output is the costliest stage of a gray pipeline, and for photographs
 * almost all of deflate's work is wasted: after the SUB filter, LZ77 finds few
 * matches in camera noise, and the size comes from entropy coding alone (a
 * Huffman-only stream is as small as ISA-L level 1 on photos). This encoder
 * skips match finding: each 64 KiB block gets its own dynamic Huffman code
 * (length-limited to 14 bits, so four codes fit one 64-bit store), and bytes
 * are packed four at a time. On a 1080p gray frame that is ~3x faster than
 * ISA-L level 1.
 *
 * Content where matches pay (masks, edges, flat graphics, gray stored as
 * colour) is handed back: when the Huffman code would spend fewer than
 * `min_bits` bits per byte, or half of the bytes repeat the byte before,
 * the function returns None and the caller deflates with LZ77 instead.
 *
 * The output is a raw deflate stream (RFC 1951); the caller adds the zlib
 * header and Adler-32. The GIL is released while coding, so the inputs are
 * never read twice from memory another thread can write: huffman() copies any
 * buffer but bytes, png_idat() filters the rows into its own buffer in one pass
 * (tests/unit/test_deflate.py runs both under ASan and UBSan).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#if !defined(__BYTE_ORDER__) || __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "the bit packer stores 64-bit words little-endian"
#endif

#define BLOCK (64 * 1024)
#define NLIT 257     /* literals 0-255 and end-of-block (256) */
#define EOB 256
#define LIT_BITS 14  /* 4 x 14 bits + 7 pending bits fit a 64-bit word */
#define CL_BITS 7    /* the code-length alphabet's limit (RFC 1951 3.2.7) */
#define NCL 19
/* Worst-case header: 3 + 5 + 5 + 4 bits, 19 x 3 bits, 258 codes of <= 7 bits. */
#define HEADER_BYTES 240

typedef struct {
    uint64_t acc;    /* bits not yet stored, lowest first */
    unsigned n;      /* how many (always < 8 after a flush) */
    uint8_t *out;
} Bits;

static inline void put(Bits *b, uint32_t code, unsigned len) {
    b->acc |= (uint64_t)code << b->n;
    b->n += len;
}

/* Store the whole bytes of the accumulator. Needs 8 writable bytes at out. */
static inline void flush(Bits *b) {
    memcpy(b->out, &b->acc, 8);
    b->out += b->n >> 3;
    b->acc >>= b->n & ~7u;
    b->n &= 7;
}

typedef struct {
    uint32_t freq;
    uint16_t sym;
} Leaf;

static int by_freq(const void *a, const void *b) {
    const Leaf *x = a, *y = b;
    if (x->freq != y->freq) return x->freq < y->freq ? -1 : 1;
    return (int)x->sym - (int)y->sym;
}

/* Optimal code lengths (in place, Moffat & Katajainen 1995) for weights sorted
 * ascending; on return w[i] is the length of leaf i. Needs n >= 2. */
static void minimum_redundancy(uint32_t *w, int n) {
    int root = 0, leaf = 2, next;
    w[0] += w[1];
    for (next = 1; next < n - 1; next++) {
        if (leaf >= n || w[root] < w[leaf]) {
            w[next] = w[root];
            w[root++] = (uint32_t)next;
        } else {
            w[next] = w[leaf++];
        }
        if (leaf >= n || (root < next && w[root] < w[leaf])) {
            w[next] += w[root];
            w[root++] = (uint32_t)next;
        } else {
            w[next] += w[leaf++];
        }
    }
    w[n - 2] = 0;
    for (next = n - 3; next >= 0; next--) w[next] = w[w[next]] + 1;
    int avail = 1, used = 0;
    uint32_t depth = 0;
    root = n - 2;
    next = n - 1;
    while (avail > 0) {
        while (root >= 0 && w[root] == depth) {
            used++;
            root--;
        }
        while (avail > used) {
            w[next--] = depth;
            avail--;
        }
        avail = 2 * used;
        depth++;
        used = 0;
    }
}

/* Code lengths, at most max_bits, for symbols 0..n-1 (n <= NLIT). Unused
 * symbols get 0. At least two symbols always get a code, so the code is
 * complete, as zlib's inflate requires. */
static void code_lengths(const uint32_t *freq, int n, int max_bits, uint8_t *len) {
    Leaf leaves[NLIT];
    uint32_t w[NLIT];
    int m = 0, i;
    for (i = 0; i < n; i++) {
        len[i] = 0;
        if (freq[i]) leaves[m++] = (Leaf){freq[i], (uint16_t)i};
    }
    for (i = 0; m < 2; i++) /* pad with unused symbols (freq 0 sorts first) */
        if (!freq[i]) leaves[m++] = (Leaf){0, (uint16_t)i};
    qsort(leaves, (size_t)m, sizeof(Leaf), by_freq);
    for (i = 0; i < m; i++) w[i] = leaves[i].freq;
    minimum_redundancy(w, m);

    /* Limit the lengths: count codes per length, fold the too-long ones into
     * max_bits, then lengthen shorter codes until the Kraft sum is exact. */
    int count[32] = {0};
    for (i = 0; i < m; i++) count[w[i] > (uint32_t)max_bits ? (uint32_t)max_bits : w[i]]++;
    uint32_t kraft = 0;
    for (i = 1; i <= max_bits; i++) kraft += (uint32_t)count[i] << (max_bits - i);
    while (kraft > (1u << max_bits)) {
        count[max_bits]--;
        for (i = max_bits - 1; i > 0; i--) {
            if (count[i]) {
                count[i]--;
                count[i + 1] += 2;
                break;
            }
        }
        kraft--;
    }
    /* The least frequent symbols (first in leaves) take the longest codes. */
    int k = 0;
    for (int bits = max_bits; bits > 0; bits--)
        for (int c = count[bits]; c > 0; c--) len[leaves[k++].sym] = (uint8_t)bits;
}

/* Canonical codes (RFC 1951 3.2.2), bit-reversed for an LSB-first stream. */
static void canonical(const uint8_t *len, int n, uint32_t *code) {
    uint32_t count[16] = {0}, next[16] = {0};
    int i;
    for (i = 0; i < n; i++) count[len[i]]++;
    count[0] = 0;
    uint32_t c = 0;
    for (i = 1; i < 16; i++) {
        c = (c + count[i - 1]) << 1;
        next[i] = c;
    }
    for (i = 0; i < n; i++) {
        code[i] = 0;
        if (!len[i]) continue;
        uint32_t v = next[len[i]]++, r = 0;
        for (int b = 0; b < len[i]; b++) r |= ((v >> b) & 1u) << (len[i] - 1 - b);
        code[i] = r;
    }
}

/* Bits the block's data takes with these lengths (end-of-block included). */
static uint64_t data_bits(const uint32_t *freq, const uint8_t *len) {
    uint64_t bits = 0;
    for (int i = 0; i < NLIT; i++) bits += (uint64_t)freq[i] * len[i];
    return bits;
}

static void histogram(const uint8_t *p, size_t n, uint32_t *freq) {
    uint32_t h[4][256];
    memset(h, 0, sizeof h);
    size_t i = 0;
    for (; i + 4 <= n; i += 4) {
        h[0][p[i]]++;
        h[1][p[i + 1]]++;
        h[2][p[i + 2]]++;
        h[3][p[i + 3]]++;
    }
    for (; i < n; i++) h[0][p[i]]++;
    for (int s = 0; s < 256; s++) freq[s] = h[0][s] + h[1][s] + h[2][s] + h[3][s];
    freq[EOB] = 1;
}

static const uint8_t CL_ORDER[NCL] = {16, 17, 18, 0, 8, 7, 9, 6, 10, 5, 11, 4, 12, 3, 13, 2, 14, 1, 15};

/* BMI2's shifts by a register are one instruction; x86-64's baseline shift by
 * CL is three (flags), and the coder is mostly shifts: ~1.5-2x faster with
 * BMI2. The loader picks the clone the CPU can run (GNU ifunc). */
#if defined(__x86_64__) && defined(__GNUC__) && defined(__ELF__)
#define BMI2_CLONES __attribute__((target_clones("bmi2", "default")))
#else
#define BMI2_CLONES
#endif

/* One dynamic block: header (257 literal/length codes, one distance code that
 * is never used), then the bytes, then end-of-block. */
BMI2_CLONES static void write_block(Bits *b, const uint8_t *p, size_t n, const uint8_t *len, int last) {
    uint32_t code[NLIT], cl_freq[NCL] = {0}, cl_code[NCL];
    uint8_t cl_len[NCL], seq[NLIT + 1];
    int i;
    memcpy(seq, len, NLIT);
    seq[NLIT] = 1; /* the distance code: one code of one bit (RFC 1951 3.2.7) */
    for (i = 0; i <= NLIT; i++) cl_freq[seq[i]]++;
    code_lengths(cl_freq, NCL, CL_BITS, cl_len);
    canonical(cl_len, NCL, cl_code);
    int hclen = NCL;
    while (hclen > 4 && !cl_len[CL_ORDER[hclen - 1]]) hclen--;

    put(b, (uint32_t)(last ? 1 : 0) | (2u << 1), 3); /* BFINAL, BTYPE = dynamic */
    put(b, 0, 5);                                     /* HLIT: 257 codes */
    put(b, 0, 5);                                     /* HDIST: 1 code */
    put(b, (uint32_t)(hclen - 4), 4);
    flush(b);
    for (i = 0; i < hclen; i++) {
        put(b, cl_len[CL_ORDER[i]], 3);
        flush(b);
    }
    for (i = 0; i <= NLIT; i++) {
        put(b, cl_code[seq[i]], cl_len[seq[i]]);
        flush(b);
    }

    canonical(len, NLIT, code);
    uint64_t codes[256];
    uint8_t lens[256];
    for (i = 0; i < 256; i++) {
        codes[i] = code[i];
        lens[i] = len[i];
    }
    /* Four codes are joined off the critical path (at most 4 x 14 bits), then
     * added to the accumulator at once. The hot loop keeps the accumulator in
     * locals: stores through out could alias *b, which would make the
     * compiler reload it after every store. */
    uint64_t acc = b->acc;
    unsigned used = b->n;
    uint8_t *out = b->out;
    const uint8_t *end = p + n;
    while (end - p >= 4) {
        unsigned l0 = lens[p[0]], l1 = lens[p[1]], l2 = lens[p[2]], l3 = lens[p[3]];
        uint64_t low = codes[p[0]] | codes[p[1]] << l0, high = codes[p[2]] | codes[p[3]] << l2;
        acc |= (low | high << (l0 + l1)) << used;
        used += l0 + l1 + l2 + l3;
        memcpy(out, &acc, 8);
        out += used >> 3;
        acc >>= used & ~7u;
        used &= 7;
        p += 4;
    }
    b->acc = acc;
    b->n = used;
    b->out = out;
    while (p < end) {
        put(b, code[*p], len[*p]);
        p++;
        flush(b);
    }
    put(b, code[EOB], len[EOB]);
    flush(b);
}

/* Adler-32 (RFC 1950), in chunks small enough that the sums cannot overflow
 * (zlib's NMAX rounded down to whole 16-byte steps). With SSE2 (every x86-64)
 * sixteen bytes are summed at a time: for a step x[0..15] starting at a,
 * a += sum(x) and b += 16 * a + sum((16 - i) * x[i]). */
#if defined(__SSE2__)
#include <emmintrin.h>
#endif
static uint32_t adler32(uint32_t adler, const uint8_t *p, size_t n) {
    uint32_t a = adler & 0xffff, b = adler >> 16;
    while (n) {
        size_t chunk = n < 5536 ? n : 5536, j = 0;
#if defined(__SSE2__)
        size_t steps = chunk / 16;
        if (steps) {
            const __m128i zero = _mm_setzero_si128();
            const __m128i w_lo = _mm_setr_epi16(16, 15, 14, 13, 12, 11, 10, 9);
            const __m128i w_hi = _mm_setr_epi16(8, 7, 6, 5, 4, 3, 2, 1);
            __m128i sums = zero, prefix = zero, weighted = zero;
            for (size_t k = 0; k < steps; k++) {
                __m128i x = _mm_loadu_si128((const __m128i *)(p + 16 * k));
                prefix = _mm_add_epi64(prefix, sums); /* the sums before this step */
                sums = _mm_add_epi64(sums, _mm_sad_epu8(x, zero));
                weighted = _mm_add_epi32(weighted,
                                         _mm_madd_epi16(_mm_unpacklo_epi8(x, zero), w_lo));
                weighted = _mm_add_epi32(weighted,
                                         _mm_madd_epi16(_mm_unpackhi_epi8(x, zero), w_hi));
            }
            uint64_t lanes[2];
            uint32_t w4[4];
            _mm_storeu_si128((__m128i *)lanes, sums);
            uint64_t sum = lanes[0] + lanes[1];
            _mm_storeu_si128((__m128i *)lanes, prefix);
            uint64_t pre = lanes[0] + lanes[1];
            _mm_storeu_si128((__m128i *)w4, weighted);
            uint64_t wsum = (uint64_t)w4[0] + w4[1] + w4[2] + w4[3];
            b = (uint32_t)((b + 16 * (uint64_t)a * steps + 16 * pre + wsum) % 65521);
            a = (uint32_t)((a + sum) % 65521);
            j = steps * 16;
        }
#endif
        for (; j < chunk; j++) {
            a += p[j];
            b += a;
        }
        a %= 65521;
        b %= 65521;
        p += chunk;
        n -= chunk;
    }
    return b << 16 | a;
}

/* Each block's histogram and code lengths, and the bits the data will take. */
typedef struct {
    size_t n, blocks;
    uint32_t *freq;
    uint8_t *lens;
    uint64_t bits;
    size_t repeats; /* bytes equal to the byte before: what a distance-1 match takes */
} Plan;

static int plan_alloc(Plan *plan, size_t n) {
    plan->n = n;
    plan->blocks = n ? (n + BLOCK - 1) / BLOCK : 1;
    plan->freq = malloc(plan->blocks * NLIT * sizeof(uint32_t));
    plan->lens = malloc(plan->blocks * NLIT);
    plan->bits = 0;
    plan->repeats = 0;
    return plan->freq && plan->lens;
}

static void plan_free(Plan *plan) {
    free(plan->freq);
    free(plan->lens);
}

static size_t block_size(const Plan *plan, size_t k) {
    size_t begin = k * BLOCK;
    return plan->n - begin < BLOCK ? plan->n - begin : BLOCK;
}

static size_t repeats(const uint8_t *p, size_t n) {
    size_t count = 0, i = 1;
    for (; i + 128 <= n; i += 128) { /* a byte counter per step: the compiler vectorises */
        uint8_t step = 0;
        for (int j = 0; j < 128; j++) step += p[i + j] == p[i + j - 1];
        count += step;
    }
    for (; i < n; i++) count += p[i] == p[i - 1];
    return count;
}

static void plan_code(Plan *plan, const uint8_t *data) {
    plan->repeats = repeats(data, plan->n);
    for (size_t k = 0; k < plan->blocks; k++) {
        uint32_t *freq = plan->freq + k * NLIT;
        histogram(data + k * BLOCK, block_size(plan, k), freq);
        code_lengths(freq, NLIT, LIT_BITS, plan->lens + k * NLIT);
        plan->bits += data_bits(freq, plan->lens + k * NLIT);
    }
}

/* Bytes the deflate stream may take: exact data bits, a bounded header per
 * block, and room for the last 8-byte store. */
static size_t plan_capacity(const Plan *plan) {
    return (size_t)(plan->bits / 8) + plan->blocks * HEADER_BYTES + 16;
}

/* Writes the deflate stream at out; returns its length. */
static size_t plan_write(const Plan *plan, const uint8_t *data, uint8_t *out) {
    Bits b = {0, 0, out};
    for (size_t k = 0; k < plan->blocks; k++)
        write_block(&b, data + k * BLOCK, block_size(plan, k), plan->lens + k * NLIT,
                    k + 1 == plan->blocks);
    if (b.n) {
        put(&b, 0, 8 - b.n); /* pad the last byte */
        flush(&b);
    }
    return (size_t)(b.out - out);
}

/* LZ77 would do better: the code spends under min_bits per byte, or a
 * half of the bytes repeat the one before (gray pixels stored as colour,
 * flat areas), which matches take for a few bits per run. Colour photos
 * repeat 30-50% of their filtered bytes, gray stored as colour over 70%. */
static int hand_back(const Plan *plan, double min_bits) {
    if (!plan->n || min_bits <= 0) return 0;
    return (double)plan->bits < min_bits * (double)plan->n || plan->repeats > plan->n / 2;
}

static PyObject *huffman(PyObject *self, PyObject *args, PyObject *kwargs) {
    static char *keywords[] = {"data", "min_bits", NULL};
    Py_buffer view;
    double min_bits = 2.0;
    Plan plan = {0};
    PyObject *result = NULL;
    uint8_t *copy = NULL;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "y*|d:huffman", keywords, &view, &min_bits))
        return NULL;
    /* The output is sized from the first pass and filled by the second, both
     * without the GIL: a buffer another thread can write to (bytearray, numpy,
     * even a read-only view of a writable one) is copied first, or a change
     * between the passes writes past the end. Only bytes cannot change. */
    int immutable = view.obj != NULL && PyBytes_CheckExact(view.obj);
    size_t n = (size_t)view.len;
    if (!immutable && !(copy = malloc(n ? n : 1))) {
        PyErr_NoMemory();
        goto done;
    }
    const uint8_t *data = immutable ? view.buf : copy;
    if (!plan_alloc(&plan, n)) {
        PyErr_NoMemory();
        goto done;
    }
    Py_BEGIN_ALLOW_THREADS
    if (copy) memcpy(copy, view.buf, n);
    plan_code(&plan, data);
    Py_END_ALLOW_THREADS
    if (hand_back(&plan, min_bits)) {
        result = Py_NewRef(Py_None);
        goto done;
    }
    result = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)plan_capacity(&plan));
    if (!result) goto done;
    size_t size;
    Py_BEGIN_ALLOW_THREADS
    size = plan_write(&plan, data, (uint8_t *)PyBytes_AS_STRING(result));
    Py_END_ALLOW_THREADS
    _PyBytes_Resize(&result, (Py_ssize_t)size);
done:
    plan_free(&plan);
    free(copy);
    PyBuffer_Release(&view);
    return result;
}

/* PNG's SUB filter (type 1) of each row, with the filter byte in front. */
static void sub_filter(const uint8_t *pixels, size_t height, size_t row_bytes, Py_ssize_t stride,
                       size_t bpp, uint8_t *out) {
    for (size_t y = 0; y < height; y++) {
        const uint8_t *row = pixels + (Py_ssize_t)y * stride;
        *out++ = 1;
        size_t lead = bpp < row_bytes ? bpp : row_bytes;
        memcpy(out, row, lead);
        for (size_t i = lead; i < row_bytes; i++) out[i] = (uint8_t)(row[i] - row[i - bpp]);
        out += row_bytes;
    }
}

static PyObject *png_idat(PyObject *self, PyObject *args, PyObject *kwargs) {
    static char *keywords[] = {"rows", "bpp", "min_bits", NULL};
    PyObject *rows;
    Py_ssize_t bpp;
    double min_bits = 2.0;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "On|d:png_idat", keywords, &rows, &bpp,
                                     &min_bits))
        return NULL;
    Py_buffer view;
    if (PyObject_GetBuffer(rows, &view, PyBUF_STRIDES) < 0) return NULL;
    PyObject *result = NULL;
    uint8_t *filtered = NULL;
    Plan plan = {0};
    if (view.ndim != 2 || view.itemsize != 1 || view.strides[1] != 1 || bpp < 1 ||
        (view.shape[1] && view.shape[1] % bpp)) {
        PyErr_SetString(PyExc_ValueError,
                        "rows must be 2-D bytes (height, width * bpp), each row contiguous");
        goto done;
    }
    size_t height = (size_t)view.shape[0], row_bytes = (size_t)view.shape[1];
    size_t n = height * (row_bytes + 1);
    filtered = malloc(n ? n : 1);
    if (!filtered || !plan_alloc(&plan, n)) {
        PyErr_NoMemory();
        goto done;
    }
    uint32_t adler;
    Py_BEGIN_ALLOW_THREADS
    sub_filter(view.buf, height, row_bytes, view.strides[0], (size_t)bpp, filtered);
    plan_code(&plan, filtered);
    adler = adler32(1, filtered, n);
    Py_END_ALLOW_THREADS
    if (hand_back(&plan, min_bits)) {
        result = Py_NewRef(Py_None);
        goto done;
    }
    result = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)(plan_capacity(&plan) + 6));
    if (!result) goto done;
    uint8_t *out = (uint8_t *)PyBytes_AS_STRING(result);
    size_t size;
    Py_BEGIN_ALLOW_THREADS
    out[0] = 0x78; /* CMF: deflate, 32 KiB window */
    out[1] = 0x01; /* FLG: fastest; (CMF * 256 + FLG) % 31 == 0 */
    size = 2 + plan_write(&plan, filtered, out + 2);
    for (int i = 0; i < 4; i++) out[size + i] = (uint8_t)(adler >> (24 - 8 * i));
    Py_END_ALLOW_THREADS
    _PyBytes_Resize(&result, (Py_ssize_t)(size + 4));
done:
    free(filtered);
    plan_free(&plan);
    PyBuffer_Release(&view);
    return result;
}

static PyMethodDef methods[] = {
    {"huffman", (PyCFunction)(void (*)(void))huffman, METH_VARARGS | METH_KEYWORDS,
     "huffman(data, min_bits=2.0) -> bytes | None\n\n"
     "A raw deflate stream of data, Huffman-coded only (a dynamic code per 64 KiB\n"
     "block, no matches), or None where LZ77 pays: the code would spend fewer\n"
     "than min_bits bits per byte, or half of the bytes repeat the byte\n"
     "before. min_bits=0 always codes. Any buffer but bytes is copied first\n"
     "(another thread may change it while the GIL is released)."},
    {"png_idat", (PyCFunction)(void (*)(void))png_idat, METH_VARARGS | METH_KEYWORDS,
     "png_idat(rows, bpp, min_bits=2.0) -> bytes | None\n\n"
     "The zlib stream of a PNG's IDAT: rows (2-D, height x width * bpp bytes, each\n"
     "row contiguous) SUB-filtered, Huffman-coded as huffman() does, with the\n"
     "Adler-32. None when LZ77 would do better (see huffman)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_deflate", "Huffman-only deflate for PNG scanlines.", -1, methods,
};

PyMODINIT_FUNC PyInit__deflate(void) { return PyModule_Create(&module); }
