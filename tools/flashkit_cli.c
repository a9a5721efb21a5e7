/*
 * flashkit_cli.c — the `flashkit` command: info, memory, bench, demo. Uses only the public API (plus the naive
 * baseline in naive_attn.c). Exit status: 0 success, 1 a failed check or run, 2 bad usage.
 *
 * Memory figures of `bench` and `demo`, per path and pass:
 *   allocated  bytes this tool allocates for the pass beyond its inputs (flash: outputs + lse + the workspace
 *              the size query asks for; naive: outputs + its score matrices and panels)
 *   RSS growth peak resident memory during the pass minus resident memory before it, measured in a child
 *              process of its own per path (fork), so one path's pages never count for the other
 *              (Linux: /proc/self/clear_refs resets the peak, /proc/self/status gives VmHWM and VmRSS).
 * CUDA buffers come from the driver API, loaded at run time (libcuda.so.1), so this tool needs no CUDA header.
 */
#define _GNU_SOURCE
#include "flashkit.h"
#include "naive_attn.h"

#include <dlfcn.h>
#include <errno.h>
#include <malloc.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#ifdef _OPENMP
#include <omp.h>
#endif

// --- small helpers ---------------------------------------------------------------------------------------

static double now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec * 1e-6;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double median(double *x, int n) {
    if (n <= 0) return NAN;
    qsort(x, (size_t)n, sizeof *x, cmp_double);
    return n % 2 ? x[n / 2] : 0.5 * (x[n / 2 - 1] + x[n / 2]);
}

// "1.50 GiB", "512.0 MiB", "12.0 KiB", "100 B"
static const char *human(char *buf, size_t n, double bytes) {
    const char *unit[] = {"B", "KiB", "MiB", "GiB", "TiB", "PiB"};
    int         u      = 0;
    double      x      = bytes < 0 ? -bytes : bytes;
    while (x >= 1024.0 && u < 5) x /= 1024.0, u++;
    if (u == 0)
        snprintf(buf, n, "%s%.0f B", bytes < 0 ? "-" : "", x);
    else
        snprintf(buf, n, "%s%.2f %s", bytes < 0 ? "-" : "", x, unit[u]);
    return buf;
}
#define HUMAN(x) human((char[32]){0}, 32, (double)(x))

static int parse_i64(const char *opt, const char *s, int64_t lo, int64_t *out) {
    char     *end = NULL;
    long long v;
    errno = 0;
    v     = strtoll(s ? s : "", &end, 10);
    if (!s || !*s || *end || errno || v < lo) {
        fprintf(stderr, "flashkit: %s needs an integer >= %lld, got '%s'\n", opt, (long long)lo, s ? s : "");
        return 0;
    }
    *out = v;
    return 1;
}

static int parse_dtype(const char *s, fk_dtype *dt) {
    if (!s) return 0;
    if (!strcmp(s, "f32") || !strcmp(s, "fp32") || !strcmp(s, "float32")) *dt = FK_DTYPE_F32;
    else if (!strcmp(s, "f16") || !strcmp(s, "fp16") || !strcmp(s, "float16")) *dt = FK_DTYPE_F16;
    else if (!strcmp(s, "bf16") || !strcmp(s, "bfloat16")) *dt = FK_DTYPE_BF16;
    else {
        fprintf(stderr, "flashkit: --dtype must be f32, f16 or bf16, got '%s'\n", s);
        return 0;
    }
    return 1;
}

// Host conversions, round to nearest even (the tool converts its own inputs; the library's are internal).
static uint16_t to_bf16(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x40);
    return (uint16_t)((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
}
static float from_bf16(uint16_t h) {
    uint32_t u = (uint32_t)h << 16;
    float    f;
    memcpy(&f, &u, 4);
    return f;
}
static uint16_t to_f16(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    const uint32_t sign = (u >> 16) & 0x8000u;
    float          a    = fabsf(f);
    if (isnan(f)) return (uint16_t)(sign | 0x7e00u);
    if (a >= 65520.0f) return (uint16_t)(sign | 0x7c00u);
    if (a < 6.103515625e-05f) { // subnormal: multiples of 2^-24, nearbyintf rounds to even
        return (uint16_t)(sign | (uint32_t)nearbyintf(a * 16777216.0f));
    }
    uint32_t m = u & 0x7fffffu, e = ((u >> 23) & 0xffu) - 127 + 15;
    uint32_t h = (e << 10) | (m >> 13), rest = m & 0x1fffu;
    if (rest > 0x1000u || (rest == 0x1000u && (h & 1u))) h++;
    return (uint16_t)(sign | h);
}
static float from_f16(uint16_t h) {
    const uint32_t sign = (uint32_t)(h & 0x8000u) << 16, e = (h >> 10) & 0x1fu, m = h & 0x3ffu;
    float          f;
    if (e == 0) f = ldexpf((float)m, -24);
    else if (e == 31) f = m ? NAN : INFINITY;
    else f = ldexpf((float)(m | 0x400u), (int)e - 25);
    return sign ? -f : f;
}

// Stores fp32 values into a dtype buffer, and reads them back.
static void store_as(void *dst, fk_dtype dt, const float *src, int64_t n) {
    for (int64_t i = 0; i < n; i++) {
        if (dt == FK_DTYPE_F32) ((float *)dst)[i] = src[i];
        else if (dt == FK_DTYPE_BF16) ((uint16_t *)dst)[i] = to_bf16(src[i]);
        else ((uint16_t *)dst)[i] = to_f16(src[i]);
    }
}
static void load_as(float *dst, const void *src, fk_dtype dt, int64_t n) {
    for (int64_t i = 0; i < n; i++) {
        if (dt == FK_DTYPE_F32) dst[i] = ((const float *)src)[i];
        else if (dt == FK_DTYPE_BF16) dst[i] = from_bf16(((const uint16_t *)src)[i]);
        else dst[i] = from_f16(((const uint16_t *)src)[i]);
    }
}

// Normal(0, 1) values from a seeded xorshift, rounded through dtype so both paths see the same numbers.
static void fill_normal(float *x, int64_t n, uint64_t seed, fk_dtype dt) {
    uint64_t s = seed * 0x9E3779B97F4A7C15ull + 1;
    for (int64_t i = 0; i < n; i += 2) {
        double u[2];
        for (int j = 0; j < 2; j++) {
            s ^= s << 13, s ^= s >> 7, s ^= s << 17;
            u[j] = ((s >> 11) + 0.5) * (1.0 / 9007199254740992.0);
        }
        double r = sqrt(-2.0 * log(u[0])), t = 6.283185307179586 * u[1];
        x[i] = (float)(r * cos(t));
        if (i + 1 < n) x[i + 1] = (float)(r * sin(t));
    }
    for (int64_t i = 0; i < n; i++) {
        if (dt == FK_DTYPE_BF16) x[i] = from_bf16(to_bf16(x[i]));
        else if (dt == FK_DTYPE_F16) x[i] = from_f16(to_f16(x[i]));
    }
}

static void *xmalloc(size_t n) {
    void *p = NULL;
    if (posix_memalign(&p, 64, n ? (n + 63) / 64 * 64 : 64) != 0) return NULL;
    return p;
}

// --- resident memory (Linux /proc) ------------------------------------------------------------------------

static int64_t proc_status_kb(const char *key) {
    FILE *f = fopen("/proc/self/status", "r");
    if (!f) return -1;
    char    line[256];
    int64_t v   = -1;
    size_t  len = strlen(key);
    while (fgets(line, sizeof line, f))
        if (!strncmp(line, key, len) && line[len] == ':') {
            v = strtoll(line + len + 1, NULL, 10);
            break;
        }
    fclose(f);
    return v;
}

// Resets the peak (VmHWM) to the current resident size; 0 when the kernel refused.
static int reset_peak_rss(void) {
    FILE *f = fopen("/proc/self/clear_refs", "w");
    if (!f) return 0;
    int ok = fputs("5", f) >= 0;
    return fclose(f) == 0 && ok;
}

typedef struct rss_probe {
    int64_t base_kb;
    int     ok;
} rss_probe;

static rss_probe rss_begin(void) {
    rss_probe p;
    malloc_trim(0);
    p.ok      = reset_peak_rss();
    p.base_kb = proc_status_kb("VmRSS");
    if (p.base_kb < 0) p.ok = 0;
    return p;
}
static int64_t rss_end_bytes(rss_probe p) {
    if (!p.ok) return -1;
    int64_t hwm = proc_status_kb("VmHWM");
    return hwm < 0 ? -1 : (hwm - p.base_kb) * 1024;
}

// --- CUDA driver API, loaded at run time -----------------------------------------------------------------

typedef int (*cu_i_u)(unsigned);
typedef int (*cu_devget)(int *, int);
typedef int (*cu_retain)(void **, int);
typedef int (*cu_setcur)(void *);
typedef int (*cu_alloc)(unsigned long long *, size_t);
typedef int (*cu_free)(unsigned long long);
typedef int (*cu_htod)(unsigned long long, const void *, size_t);
typedef int (*cu_dtoh)(void *, unsigned long long, size_t);
typedef int (*cu_sync)(void);
typedef int (*cu_meminfo)(size_t *, size_t *);

static struct {
    int        loaded;
    cu_i_u     init;
    cu_devget  device_get;
    cu_retain  retain;
    cu_setcur  set_current;
    cu_alloc   alloc;
    cu_free    free_;
    cu_htod    htod;
    cu_dtoh    dtoh;
    cu_sync    sync;
    cu_meminfo meminfo;
} cu;

// Loads the driver and makes device `index`'s primary context (the one the CUDA runtime, and so flashkit,
// uses) current. Returns NULL on success, else why not.
static const char *cuda_open(int index) {
    static char why[160];
    if (!cu.loaded) {
        void *h = dlopen("libcuda.so.1", RTLD_NOW | RTLD_LOCAL);
        if (!h) return "the CUDA driver (libcuda.so.1) cannot be loaded";
#define LOAD(field, name)                                                                                     \
    if (!(*(void **)&cu.field = dlsym(h, name))) return "the CUDA driver lacks " name;
        LOAD(init, "cuInit");
        LOAD(device_get, "cuDeviceGet");
        LOAD(retain, "cuDevicePrimaryCtxRetain");
        LOAD(set_current, "cuCtxSetCurrent");
        LOAD(alloc, "cuMemAlloc_v2");
        LOAD(free_, "cuMemFree_v2");
        LOAD(htod, "cuMemcpyHtoD_v2");
        LOAD(dtoh, "cuMemcpyDtoH_v2");
        LOAD(sync, "cuCtxSynchronize");
        LOAD(meminfo, "cuMemGetInfo_v2");
#undef LOAD
        cu.loaded = 1;
    }
    int   dev = 0;
    void *ctx = NULL;
    int   rc;
    if ((rc = cu.init(0)) != 0 || (rc = cu.device_get(&dev, index)) != 0 || (rc = cu.retain(&ctx, dev)) != 0 ||
        (rc = cu.set_current(ctx)) != 0) {
        snprintf(why, sizeof why, "the CUDA driver failed to open device %d (CUresult %d)", index, rc);
        return why;
    }
    return NULL;
}

static void *dev_alloc(size_t n) {
    unsigned long long p = 0;
    if (cu.alloc(&p, n ? n : 1) != 0) return NULL;
    return (void *)(uintptr_t)p;
}
static void dev_free(void *p) {
    if (p) cu.free_((unsigned long long)(uintptr_t)p);
}
static size_t dev_free_bytes(void) {
    size_t f = 0, t = 0;
    cu.meminfo(&f, &t);
    return f;
}

// --- the attention comparison shared by `bench` and `demo` ------------------------------------------------

typedef struct cmp_cfg {
    fk_device device;
    int64_t   batch, heads, seqlen, dim;
    int       causal;
    fk_dtype  dtype;   // flash storage dtype (naive is fp32 on the same rounded values)
    int       threads; // CPU threads, both paths (0 = OpenMP default)
    int       reps, warmup;
    int       do_fwd, do_bwd, do_naive;
    uint64_t  seed;
} cmp_cfg;

typedef struct pass_result {
    int     ran;
    double  ms;        // median
    int64_t allocated; // bytes beyond inputs, counted by this tool
    int64_t rss;       // peak resident growth, bytes (-1 unknown)
    int64_t dev_used;  // CUDA: device memory growth seen by cuMemGetInfo (-1 unknown)
    double  ratio;     // flash's entry: median over run pairs of naive time / flash time (NAN unknown)
} pass_result;

typedef struct path_result {
    int         ok;
    char        err[512];
    pass_result fwd, bwd;
} path_result;

typedef struct cmp_out {
    path_result flash, naive;
    // outputs, fp32: o, dq, dk, dv per path (shared with the child processes)
    float  *f_o, *f_dq, *f_dk, *f_dv, *n_o, *n_dq, *n_dk, *n_dv;
    double  err_o, err_dq, err_dk, err_dv;  // max |flash - naive|
    double  ref_o, ref_dq, ref_dk, ref_dv;  // max |naive|
    size_t  shared_bytes;
    void   *shared;
    int     threads_used;
} cmp_out;

static int64_t q_elems(const cmp_cfg *c) { return c->batch * c->seqlen * c->heads * c->dim; }

// The four inputs q, k, v, do_ as fp32 (rounded through the dtype), seeds fixed per tensor.
static float *make_inputs(const cmp_cfg *c) {
    const int64_t n = q_elems(c);
    float        *x = (float *)xmalloc((size_t)(4 * n) * sizeof(float));
    if (!x) return NULL;
    for (int t = 0; t < 4; t++) fill_normal(x + t * n, n, c->seed * 4 + (uint64_t)t, c->dtype);
    return x;
}

static void set_err(path_result *r, const char *what, fk_status st) {
    snprintf(r->err, sizeof r->err, "%s: %s (%s)", what, fk_status_string(st), fk_last_error_message());
    r->ok = 0;
}

static fk_attn_args make_args(const cmp_cfg *c, void *q, void *k, void *v, void *o, float *lse, void *do_, void *dq,
                              void *dk, void *dv) {
    const int64_t shp[4] = {c->batch, c->seqlen, c->heads, c->dim}, lshp[3] = {c->batch, c->heads, c->seqlen};
    fk_attn_args  a;
    fk_attn_args_init(&a);
    a.q      = fk_tensor_make(q, c->dtype, c->device, 4, shp);
    a.k      = fk_tensor_make(k, c->dtype, c->device, 4, shp);
    a.v      = fk_tensor_make(v, c->dtype, c->device, 4, shp);
    a.o      = fk_tensor_make(o, c->dtype, c->device, 4, shp);
    a.lse    = fk_tensor_make(lse, FK_DTYPE_F32, c->device, 3, lshp);
    a.do_    = fk_tensor_make(do_, c->dtype, c->device, 4, shp);
    a.dq     = fk_tensor_make(dq, c->dtype, c->device, 4, shp);
    a.dk     = fk_tensor_make(dk, c->dtype, c->device, 4, shp);
    a.dv     = fk_tensor_make(dv, c->dtype, c->device, 4, shp);
    a.causal = c->causal;
    return a;
}

// Flash on the CPU, in this (child) process.
static void flash_cpu(const cmp_cfg *c, cmp_out *out, path_result *r) {
    const int64_t n = q_elems(c), nl = c->batch * c->heads * c->seqlen;
    const size_t  es = fk_dtype_size(c->dtype), tb = (size_t)n * es;
    r->ok = 1;
    fk_context_t       ctx = NULL;
    fk_context_options opt = {c->threads};
    fk_status          st  = fk_context_init(c->device, &opt, &ctx);
    if (st) return set_err(r, "fk_context_init", st);
    float *in = make_inputs(c);
    void  *q = xmalloc(tb), *k = xmalloc(tb), *v = xmalloc(tb), *dO = xmalloc(tb);
    if (!in || !q || !k || !v || !dO) {
        snprintf(r->err, sizeof r->err, "out of host memory for the inputs");
        r->ok = 0;
        goto done;
    }
    store_as(q, c->dtype, in, n);
    store_as(k, c->dtype, in + n, n);
    store_as(v, c->dtype, in + 2 * n, n);
    store_as(dO, c->dtype, in + 3 * n, n);
    free(in);
    in = NULL;
    double *t = (double *)calloc((size_t)c->reps, sizeof(double));

    // Forward: o, lse, workspace are allocated inside the measured window.
    rss_probe    pr  = rss_begin();
    void        *o   = xmalloc(tb);
    float       *lse = (float *)xmalloc((size_t)nl * sizeof(float));
    fk_attn_args a   = make_args(c, q, k, v, o, lse, dO, NULL, NULL, NULL);
    size_t       ws  = 0;
    if ((st = fk_attn_fwd_workspace_size(ctx, &a, &ws))) {
        set_err(r, "fk_attn_fwd_workspace_size", st);
        goto done;
    }
    void *w = xmalloc(ws);
    for (int i = 0; i < c->warmup + c->reps && r->ok; i++) {
        double t0 = now_ms();
        if ((st = fk_attn_fwd(ctx, &a, w, ws, NULL))) set_err(r, "fk_attn_fwd", st);
        if (i >= c->warmup) t[i - c->warmup] = now_ms() - t0;
    }
    r->fwd.rss       = rss_end_bytes(pr);
    r->fwd.ms        = median(t, c->reps);
    r->fwd.allocated = (int64_t)(tb + (size_t)nl * sizeof(float) + ws);
    r->fwd.ran       = r->ok && c->do_fwd;
    free(w);
    if (r->ok) load_as(out->f_o, o, c->dtype, n);

    if (r->ok && c->do_bwd) {
        pr      = rss_begin();
        void *dq = xmalloc(tb), *dk = xmalloc(tb), *dv = xmalloc(tb);
        a        = make_args(c, q, k, v, o, lse, dO, dq, dk, dv);
        if ((st = fk_attn_bwd_workspace_size(ctx, &a, &ws))) set_err(r, "fk_attn_bwd_workspace_size", st);
        w = r->ok ? xmalloc(ws) : NULL;
        for (int i = 0; i < c->warmup + c->reps && r->ok; i++) {
            double t0 = now_ms();
            if ((st = fk_attn_bwd(ctx, &a, w, ws, NULL))) set_err(r, "fk_attn_bwd", st);
            if (i >= c->warmup) t[i - c->warmup] = now_ms() - t0;
        }
        r->bwd.rss       = rss_end_bytes(pr);
        r->bwd.ms        = median(t, c->reps);
        r->bwd.allocated = (int64_t)(3 * tb + ws);
        r->bwd.ran       = r->ok;
        if (r->ok) {
            load_as(out->f_dq, dq, c->dtype, n);
            load_as(out->f_dk, dk, c->dtype, n);
            load_as(out->f_dv, dv, c->dtype, n);
        }
        free(w), free(dq), free(dk), free(dv);
    }
    free(o), free(lse), free(t);
done:
    free(in), free(q), free(k), free(v), free(dO);
    fk_context_free(ctx);
}

// Flash on CUDA, in the parent process (CUDA does not survive fork). Memory: allocated bytes and the device
// memory that cuMemGetInfo sees taken while the pass's buffers exist.
static void flash_cuda(const cmp_cfg *c, cmp_out *out, path_result *r) {
    const int64_t n = q_elems(c), nl = c->batch * c->heads * c->seqlen;
    const size_t  es = fk_dtype_size(c->dtype), tb = (size_t)n * es;
    r->ok = 1;
    const char *why = cuda_open(c->device.index);
    if (why) {
        snprintf(r->err, sizeof r->err, "%s", why);
        r->ok = 0;
        return;
    }
    fk_context_t ctx = NULL;
    fk_status    st  = fk_context_init(c->device, NULL, &ctx);
    if (st) return set_err(r, "fk_context_init", st);
    float  *in  = make_inputs(c);
    void   *hb  = xmalloc(tb);
    double *t   = (double *)calloc((size_t)c->reps, sizeof(double));
    void   *q = dev_alloc(tb), *k = dev_alloc(tb), *v = dev_alloc(tb), *dO = dev_alloc(tb);
    void   *o = NULL, *dq = NULL, *dk = NULL, *dv = NULL, *w = NULL;
    float  *lse = NULL;
    if (!in || !hb || !t || !q || !k || !v || !dO) {
        snprintf(r->err, sizeof r->err, "out of host or device memory for the inputs");
        r->ok = 0;
        goto done;
    }
    void *dst[4] = {q, k, v, dO};
    for (int i = 0; i < 4; i++) {
        store_as(hb, c->dtype, in + i * n, n);
        cu.htod((unsigned long long)(uintptr_t)dst[i], hb, tb);
    }
    cu.sync();
    size_t free0 = dev_free_bytes();
    o            = dev_alloc(tb);
    lse          = (float *)dev_alloc((size_t)nl * sizeof(float));
    fk_attn_args a  = make_args(c, q, k, v, o, lse, dO, NULL, NULL, NULL);
    size_t       ws = 0;
    if ((st = fk_attn_fwd_workspace_size(ctx, &a, &ws))) {
        set_err(r, "fk_attn_fwd_workspace_size", st);
        goto done;
    }
    w = ws ? dev_alloc(ws) : NULL;
    r->fwd.dev_used = (int64_t)(free0 - dev_free_bytes());
    for (int i = 0; i < c->warmup + c->reps && r->ok; i++) {
        double t0 = now_ms();
        if ((st = fk_attn_fwd(ctx, &a, w, ws, NULL))) set_err(r, "fk_attn_fwd", st);
        else if (cu.sync() != 0) snprintf(r->err, sizeof r->err, "fk_attn_fwd: the device failed"), r->ok = 0;
        if (i >= c->warmup) t[i - c->warmup] = now_ms() - t0;
    }
    r->fwd.ms        = median(t, c->reps);
    r->fwd.allocated = (int64_t)(tb + (size_t)nl * sizeof(float) + ws);
    r->fwd.rss       = -1;
    r->fwd.ran       = r->ok && c->do_fwd;
    dev_free(w), w = NULL;
    if (!r->ok) goto done;
    cu.dtoh(hb, (unsigned long long)(uintptr_t)o, tb);
    load_as(out->f_o, hb, c->dtype, n);
    if (c->do_bwd) {
        free0 = dev_free_bytes();
        dq = dev_alloc(tb), dk = dev_alloc(tb), dv = dev_alloc(tb);
        a  = make_args(c, q, k, v, o, lse, dO, dq, dk, dv);
        if ((st = fk_attn_bwd_workspace_size(ctx, &a, &ws))) {
            set_err(r, "fk_attn_bwd_workspace_size", st);
            goto done;
        }
        w               = ws ? dev_alloc(ws) : NULL;
        r->bwd.dev_used = (int64_t)(free0 - dev_free_bytes());
        for (int i = 0; i < c->warmup + c->reps && r->ok; i++) {
            double t0 = now_ms();
            if ((st = fk_attn_bwd(ctx, &a, w, ws, NULL))) set_err(r, "fk_attn_bwd", st);
            else if (cu.sync() != 0) snprintf(r->err, sizeof r->err, "fk_attn_bwd: the device failed"), r->ok = 0;
            if (i >= c->warmup) t[i - c->warmup] = now_ms() - t0;
        }
        r->bwd.ms        = median(t, c->reps);
        r->bwd.allocated = (int64_t)(3 * tb + ws);
        r->bwd.rss       = -1;
        r->bwd.ran       = r->ok;
        if (r->ok) {
            float *outs[3] = {out->f_dq, out->f_dk, out->f_dv};
            void  *src[3]  = {dq, dk, dv};
            for (int i = 0; i < 3; i++) {
                cu.dtoh(hb, (unsigned long long)(uintptr_t)src[i], tb);
                load_as(outs[i], hb, c->dtype, n);
            }
        }
    }
done:
    dev_free(q), dev_free(k), dev_free(v), dev_free(dO), dev_free(o), dev_free(lse);
    dev_free(dq), dev_free(dk), dev_free(dv), dev_free(w);
    free(in), free(hb), free(t);
    fk_context_free(ctx);
}

// The naive baseline on the CPU, fp32, in this (child) process.
static void naive_cpu(const cmp_cfg *c, cmp_out *out, path_result *r) {
    const int64_t    n  = q_elems(c);
    const size_t     tb = (size_t)n * sizeof(float);
    naive_attn_shape s  = {c->batch, c->seqlen, c->seqlen, c->heads, c->dim, c->causal, 0.0f};
    r->ok               = 1;
    float  *in          = make_inputs(c);
    double *t           = (double *)calloc((size_t)c->reps, sizeof(double));
    if (!in || !t) {
        snprintf(r->err, sizeof r->err, "out of host memory for the inputs");
        r->ok = 0;
        free(in), free(t);
        return;
    }
    const float *q = in, *k = in + n, *v = in + 2 * n, *dO = in + 3 * n;
    rss_probe    pr = rss_begin();
    size_t       ws = naive_attn_fwd_scratch_bytes(&s, c->threads);
    float       *o  = (float *)xmalloc(tb);
    void        *w  = xmalloc(ws);
    if (!o || !w) {
        snprintf(r->err, sizeof r->err, "naive forward: cannot allocate %s of score matrices", HUMAN(ws));
        r->ok = 0;
    }
    for (int i = 0; i < c->warmup + c->reps && r->ok; i++) {
        double t0 = now_ms();
        naive_attn_fwd(&s, c->threads, q, k, v, o, w);
        if (i >= c->warmup) t[i - c->warmup] = now_ms() - t0;
    }
    r->fwd.rss       = rss_end_bytes(pr);
    r->fwd.ms        = median(t, c->reps);
    r->fwd.allocated = (int64_t)(tb + ws);
    r->fwd.ran       = r->ok && c->do_fwd;
    free(w);
    if (r->ok) memcpy(out->n_o, o, tb);
    if (r->ok && c->do_bwd) {
        pr  = rss_begin();
        ws  = naive_attn_bwd_scratch_bytes(&s, c->threads);
        float *dq = (float *)xmalloc(tb), *dk = (float *)xmalloc(tb), *dv = (float *)xmalloc(tb);
        w         = xmalloc(ws);
        if (!dq || !dk || !dv || !w) {
            snprintf(r->err, sizeof r->err, "naive backward: cannot allocate %s of matrices", HUMAN(ws));
            r->ok = 0;
        }
        for (int i = 0; i < c->warmup + c->reps && r->ok; i++) {
            double t0 = now_ms();
            naive_attn_bwd(&s, c->threads, q, k, v, o, dO, dq, dk, dv, w);
            if (i >= c->warmup) t[i - c->warmup] = now_ms() - t0;
        }
        r->bwd.rss       = rss_end_bytes(pr);
        r->bwd.ms        = median(t, c->reps);
        r->bwd.allocated = (int64_t)(3 * tb + ws);
        r->bwd.ran       = r->ok;
        if (r->ok) {
            memcpy(out->n_dq, dq, tb);
            memcpy(out->n_dk, dk, tb);
            memcpy(out->n_dv, dv, tb);
        }
        free(dq), free(dk), free(dv), free(w);
    }
    free(o), free(in), free(t);
}

typedef void (*path_fn)(const cmp_cfg *, cmp_out *, path_result *);

// Runs fn in a child process (its results come back through shared memory); 0, or -1 with *err filled.
static int fork_call(void (*fn)(void *), void *arg, char *err, size_t n) {
    fflush(NULL);
    pid_t pid = fork();
    if (pid < 0) {
        snprintf(err, n, "fork failed: %s", strerror(errno));
        return -1;
    }
    if (pid == 0) {
        mallopt(M_MMAP_THRESHOLD, 64 * 1024); // big buffers are mapped and unmapped: RSS follows them
        fn(arg);
        fflush(NULL);
        _exit(0);
    }
    int status = 0;
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {}
    if (WIFEXITED(status) && WEXITSTATUS(status) == 0) return 0;
    if (WIFSIGNALED(status))
        snprintf(err, n, "the child process died of signal %d%s", WTERMSIG(status),
                 WTERMSIG(status) == 9 ? " (killed: out of memory?)" : "");
    else
        snprintf(err, n, "the child process exited with %d", WEXITSTATUS(status));
    return -1;
}

typedef struct path_call {
    path_fn        fn;
    const cmp_cfg *c;
    cmp_out       *out;
    path_result   *r;
} path_call;

static void path_call_run(void *arg) {
    path_call *pc = (path_call *)arg;
    pc->fn(pc->c, pc->out, pc->r);
}

// One path in a child process of its own, so its peak RSS is its own.
static void run_forked(path_fn fn, const cmp_cfg *c, cmp_out *out, path_result *r) {
    path_call pc = {fn, c, out, r};
    char      err[512];
    if (fork_call(path_call_run, &pc, err, sizeof err) != 0) {
        r->ok = 0;
        snprintf(r->err, sizeof r->err, "%s", err);
    }
}

// Timing of both CPU paths in one process, run in turn (flash, naive, flash, naive, ...): a drift of the
// machine's speed (shared cores, clock changes) touches both alike, and the ratio is the median of the
// per-pair ratios. Memory is not measured here (see the per-path children).
typedef struct timing {
    int    ok;
    char   err[512];
    double flash_ms[2], naive_ms[2], ratio[2]; // [fwd, bwd]
} timing;

typedef struct timing_call {
    const cmp_cfg *c;
    timing        *tm;
} timing_call;

static void timing_cpu(void *arg) {
    const cmp_cfg *c  = ((timing_call *)arg)->c;
    timing        *tm = ((timing_call *)arg)->tm;
    const int64_t  n = q_elems(c), nl = c->batch * c->heads * c->seqlen;
    const size_t   es = fk_dtype_size(c->dtype), tb = (size_t)n * es, fb = (size_t)n * sizeof(float);
    naive_attn_shape   s   = {c->batch, c->seqlen, c->seqlen, c->heads, c->dim, c->causal, 0.0f};
    fk_context_t       ctx = NULL;
    fk_context_options opt = {c->threads};
    fk_status          st  = fk_context_init(c->device, &opt, &ctx);
    tm->ok                 = 0;
    if (st) {
        snprintf(tm->err, sizeof tm->err, "fk_context_init: %s", fk_last_error_message());
        return;
    }
    float *in = make_inputs(c);
    char  *fx = (char *)xmalloc(8 * tb); // flash q k v do_ o dq dk dv in the dtype
    float *nx = (float *)xmalloc(4 * fb); // naive o dq dk dv
    float *lse = (float *)xmalloc((size_t)nl * sizeof(float));
    size_t nws = naive_attn_bwd_scratch_bytes(&s, c->threads); // the larger of the two passes'
    void  *nw  = xmalloc(nws);
    double *tf = (double *)calloc((size_t)c->reps, sizeof(double)), *tn = (double *)calloc((size_t)c->reps, sizeof(double));
    double *tr = (double *)calloc((size_t)c->reps, sizeof(double));
    if (!in || !fx || !nx || !lse || !nw || !tf || !tn || !tr) {
        snprintf(tm->err, sizeof tm->err, "timing: out of host memory (naive needs %s)", HUMAN(nws));
        return;
    }
    for (int i = 0; i < 4; i++) store_as(fx + i * tb, c->dtype, in + i * n, n);
    fk_attn_args a = make_args(c, fx, fx + tb, fx + 2 * tb, fx + 4 * tb, lse, fx + 3 * tb, fx + 5 * tb, fx + 6 * tb,
                               fx + 7 * tb);
    for (int bwd = 0; bwd < 1 + c->do_bwd; bwd++) {
        size_t ws = 0;
        st        = bwd ? fk_attn_bwd_workspace_size(ctx, &a, &ws) : fk_attn_fwd_workspace_size(ctx, &a, &ws);
        void *w   = st ? NULL : xmalloc(ws);
        if (st || !w) {
            snprintf(tm->err, sizeof tm->err, "timing: workspace: %s", fk_last_error_message());
            return;
        }
        for (int i = 0; i < c->warmup + c->reps; i++) {
            double t0 = now_ms();
            st        = bwd ? fk_attn_bwd(ctx, &a, w, ws, NULL) : fk_attn_fwd(ctx, &a, w, ws, NULL);
            double t1 = now_ms();
            if (st) {
                snprintf(tm->err, sizeof tm->err, "timing: %s", fk_last_error_message());
                return;
            }
            if (bwd)
                naive_attn_bwd(&s, c->threads, in, in + n, in + 2 * n, nx, in + 3 * n, nx + n, nx + 2 * n, nx + 3 * n,
                               nw);
            else
                naive_attn_fwd(&s, c->threads, in, in + n, in + 2 * n, nx, nw);
            double t2 = now_ms();
            if (i >= c->warmup) {
                tf[i - c->warmup] = t1 - t0;
                tn[i - c->warmup] = t2 - t1;
                tr[i - c->warmup] = (t2 - t1) / (t1 - t0);
            }
        }
        tm->flash_ms[bwd] = median(tf, c->reps);
        tm->naive_ms[bwd] = median(tn, c->reps);
        tm->ratio[bwd]    = median(tr, c->reps);
        free(w);
    }
    tm->ok = 1;
}

static double max_abs_diff(const float *a, const float *b, int64_t n, double *ref_max) {
    double m = 0.0, rm = 0.0;
    for (int64_t i = 0; i < n; i++) {
        double d = fabs((double)a[i] - (double)b[i]);
        if (!(d <= m)) m = d; // NaN propagates
        if (fabs((double)b[i]) > rm) rm = fabs((double)b[i]);
    }
    *ref_max = rm;
    return m;
}

// Returns 0, or -1 when the shared mapping cannot be made. out must be released with cmp_release.
static int cmp_run(const cmp_cfg *c, cmp_out *out) {
    memset(out, 0, sizeof *out);
    const int64_t n   = q_elems(c);
    const size_t  tb  = (size_t)n * sizeof(float);
    const size_t  hdr = (sizeof(path_result) * 2 + sizeof(timing) + 4095) / 4096 * 4096;
    out->shared_bytes = hdr + 8 * tb;
    out->shared = mmap(NULL, out->shared_bytes, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (out->shared == MAP_FAILED) {
        out->shared = NULL;
        return -1;
    }
    path_result *pf = (path_result *)out->shared, *pn = pf + 1; // then a timing record
    float       *b  = (float *)((char *)out->shared + hdr);
    out->f_o = b, out->f_dq = b + n, out->f_dk = b + 2 * n, out->f_dv = b + 3 * n;
    out->n_o = b + 4 * n, out->n_dq = b + 5 * n, out->n_dk = b + 6 * n, out->n_dv = b + 7 * n;
#ifdef _OPENMP
    out->threads_used = c->threads > 0 ? c->threads : omp_get_max_threads();
#else
    out->threads_used = 1;
#endif
    pf->fwd.ratio = pf->bwd.ratio = NAN;
    if (c->device.kind == FK_DEVICE_CUDA) {
        flash_cuda(c, out, pf);
        if (c->do_naive) { // the CPU naive gives the reference outputs only
            cmp_cfg one = *c;
            one.device  = (fk_device){FK_DEVICE_CPU, 0};
            one.reps = 1, one.warmup = 0;
            run_forked(naive_cpu, &one, out, pn);
        }
    } else if (!c->do_naive) {
        run_forked(flash_cpu, c, out, pf);
    } else {
        // Memory and outputs: one run per path, each in its own child. Times: both paths in turn, one child.
        cmp_cfg one = *c;
        one.reps = 1, one.warmup = 0;
        run_forked(flash_cpu, &one, out, pf);
        run_forked(naive_cpu, &one, out, pn);
        timing     *tm = (timing *)(pn + 1);
        timing_call tc = {c, tm};
        char        err[512];
        if (pf->ok && pn->ok) {
            if (fork_call(timing_cpu, &tc, err, sizeof err) != 0) snprintf(tm->err, sizeof tm->err, "%s", err);
            if (!tm->ok) {
                pf->ok = 0;
                snprintf(pf->err, sizeof pf->err, "%s", tm->err);
            } else {
                for (int p = 0; p < 2; p++) {
                    pass_result *f = p ? &pf->bwd : &pf->fwd, *nv = p ? &pn->bwd : &pn->fwd;
                    f->ms    = tm->flash_ms[p];
                    nv->ms   = tm->naive_ms[p];
                    f->ratio = tm->ratio[p];
                }
            }
        }
    }
    out->flash = *pf;
    out->naive = *pn;
    out->err_o = out->err_dq = out->err_dk = out->err_dv = NAN;
    if (pf->ok && pn->ok && c->do_naive) {
        out->err_o = max_abs_diff(out->f_o, out->n_o, n, &out->ref_o);
        if (pf->bwd.ran && pn->bwd.ran) {
            out->err_dq = max_abs_diff(out->f_dq, out->n_dq, n, &out->ref_dq);
            out->err_dk = max_abs_diff(out->f_dk, out->n_dk, n, &out->ref_dk);
            out->err_dv = max_abs_diff(out->f_dv, out->n_dv, n, &out->ref_dv);
        }
    }
    return 0;
}

static void cmp_release(cmp_out *out) {
    if (out->shared) munmap(out->shared, out->shared_bytes);
    out->shared = NULL;
}

// Error bound for flash against the fp32 naive result on the same rounded inputs: the output rounding of
// the storage dtype plus fp32 accumulation-order differences, relative to the largest reference value.
static double tolerance(fk_dtype dt, double ref_max) {
    double rel = dt == FK_DTYPE_F32 ? 2e-4 : dt == FK_DTYPE_F16 ? 4e-3 : 3e-2;
    return rel * (ref_max > 1.0 ? ref_max : 1.0);
}

// FLOPs (FlashAttention's convention, docs BENCHMARKS.md): forward 4*B*H*S*S*D, halved when causal; bwd 2.5x.
static double attn_flops(const cmp_cfg *c, int backward) {
    double f = 4.0 * (double)c->batch * (double)c->heads * (double)c->seqlen * (double)c->seqlen * (double)c->dim;
    if (c->causal) f *= 0.5;
    return backward ? 2.5 * f : f;
}

// --- info ------------------------------------------------------------------------------------------------

static int cmd_info(int argc, char **argv) {
    for (int i = 0; i < argc; i++)
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            printf("usage: flashkit info\n  version, build features, CPU SIMD and threads, CUDA devices\n");
            return 0;
        }
    fk_build_info bi;
    fk_get_build_info(&bi);
    printf("flashkit %s (library %s%s)\n", FK_VERSION_STRING, fk_version_string(),
           fk_version_number() == FK_VERSION_NUMBER ? "" : ", MISMATCH with this header");
    printf("build       CUDA backend %s, OpenMP %s\n", bi.cuda_compiled ? "yes" : "no", bi.openmp ? "yes" : "no");
    printf("cpu simd    %s\n", bi.cpu_simd == 512 ? "AVX-512F" : bi.cpu_simd == 256 ? "AVX2+FMA" : "portable");
    fk_device_props cp;
    fk_device       cpu = {FK_DEVICE_CPU, 0};
    if (fk_get_device_props(cpu, &cp) == FK_STATUS_SUCCESS)
        printf("cpu         %s, %d threads by default\n", cp.name, cp.multiprocessors);
    long online = sysconf(_SC_NPROCESSORS_ONLN);
    printf("processors  %ld online\n", online);
    printf("cuda        %d device(s)\n", bi.cuda_device_count);
    for (int d = 0; d < bi.cuda_device_count; d++) {
        fk_device_props p;
        fk_device       dev = {FK_DEVICE_CUDA, d};
        fk_status       st  = fk_get_device_props(dev, &p);
        if (st) {
            printf("  cuda:%d     %s (%s)\n", d, fk_status_string(st), fk_last_error_message());
            continue;
        }
        printf("  cuda:%d     %s, sm_%d%d, %d SMs, %s%s\n", d, p.name, p.cc_major, p.cc_minor, p.multiprocessors,
               HUMAN(p.memory_bytes), p.cc_major >= 8 ? "" : " (older than sm_80: the CUDA kernels will not run)");
    }
    return 0;
}

// --- memory ----------------------------------------------------------------------------------------------

typedef struct preset {
    const char *name;
    int64_t     vocab, hidden, intermediate, layers, heads, kv_heads, seqlen;
} preset;

static const preset presets[] = {
    {"llama3-8b", 128256, 4096, 14336, 32, 32, 8, 8192},
    {"llama2-7b", 32000, 4096, 11008, 32, 32, 32, 4096},
    {"llama3-70b", 128256, 8192, 28672, 80, 64, 8, 8192},
    {"tiny", 32000, 512, 1408, 4, 8, 4, 1024},
};

static void memory_usage(FILE *f) {
    fprintf(f,
            "usage: flashkit memory [--preset NAME | --hidden N --layers N --heads N --kv-heads N --intermediate N\n"
            "                        --vocab N] [--seqlen N] [--batch N] [--dtype bf16|f16|f32] [--no-flash]\n"
            "                        [--recompute] [--no-master] [--device cpu|cuda[:I]] [--threads N]\n"
            "  Estimated memory of one training step (Adam) of a Llama-style decoder, by component, and an\n"
            "  attention-only table, flash against naive, at the model's attention shape.\n"
            "  presets: llama3-8b (default), llama2-7b, llama3-70b, tiny; a given size overrides the preset's.\n"
            "  --no-master   no fp32 master weights (default: kept when the dtype is not f32)\n"
            "  --device      whose flash workspace rule the attention table uses (default cpu)\n");
}

static int parse_device(const char *s, fk_device *d) {
    if (s && !strcmp(s, "cpu")) {
        *d = (fk_device){FK_DEVICE_CPU, 0};
        return 1;
    }
    if (s && !strncmp(s, "cuda", 4)) {
        int idx = 0;
        if (s[4] == ':') idx = atoi(s + 5);
        else if (s[4]) goto bad;
        *d = (fk_device){FK_DEVICE_CUDA, idx};
        return 1;
    }
bad:
    fprintf(stderr, "flashkit: --device must be cpu or cuda[:INDEX], got '%s'\n", s ? s : "");
    return 0;
}

static void print_attn_table(const fk_attn_shape *sh, fk_device dev, int threads) {
    printf("\nattention alone, one layer: batch %lld, seqlen %lld, heads %lld (kv %lld), head dim %lld, %s, %s\n",
           (long long)sh->batch, (long long)sh->seqlen_q, (long long)sh->nheads_q, (long long)sh->nheads_kv,
           (long long)sh->head_dim, fk_dtype_name(sh->dtype), sh->causal ? "causal" : "not causal");
    printf("  %-14s %12s %12s %12s %12s %12s\n", "pass", "inputs", "outputs", "lse", "workspace", "extra");
    for (int bwd = 0; bwd < 2; bwd++)
        for (int naive = 0; naive < 2; naive++) {
            fk_attn_memory m;
            char           label[32];
            snprintf(label, sizeof label, "%s %s", bwd ? "bwd" : "fwd", naive ? "naive" : "flash");
            fk_status st = fk_estimate_attn_memory(sh, naive, bwd, dev, threads, &m);
            if (st) {
                printf("  %-14s %s\n", label, fk_last_error_message());
                continue;
            }
            printf("  %-14s %12s %12s %12s %12s %12s\n", label, HUMAN(m.inputs), HUMAN(m.outputs), HUMAN(m.lse),
                   HUMAN(m.workspace), HUMAN(m.extra));
        }
    fk_context_options opt = {threads};
    fk_context_t       cx  = NULL;
    int                nt  = 0;
    if (dev.kind == FK_DEVICE_CPU && fk_context_init(dev, &opt, &cx) == FK_STATUS_SUCCESS) nt = fk_context_num_threads(cx);
    fk_context_free(cx);
    printf("  (extra = everything beyond the inputs; flash workspace: what the size query of ");
    if (dev.kind == FK_DEVICE_CPU) printf("the CPU backend with %d thread(s)", nt);
    else printf("cuda:%d", dev.index);
    printf(" asks for;\n   naive = S and P matrices in the storage dtype, + an fp32 softmax matrix for 16-bit dtypes,"
           " + dP and dS in the backward)\n");
}

static int cmd_memory(int argc, char **argv) {
    const preset   *p    = &presets[0];
    int64_t         v[7] = {-1, -1, -1, -1, -1, -1, -1}; // vocab hidden inter layers heads kv seqlen
    int64_t         batch = 1, threads = 0;
    fk_dtype        dt = FK_DTYPE_BF16;
    int             flash = 1, recompute = 0, master = 1;
    fk_device       dev = {FK_DEVICE_CPU, 0};
    const char     *names[7] = {"--vocab", "--hidden", "--intermediate", "--layers", "--heads", "--kv-heads", "--seqlen"};
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i], *nx = i + 1 < argc ? argv[i + 1] : NULL;
        int         matched = 0;
        for (int j = 0; j < 7; j++)
            if (!strcmp(a, names[j])) {
                if (!parse_i64(a, nx, 1, &v[j])) return 2;
                i++, matched = 1;
            }
        if (matched) continue;
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) return memory_usage(stdout), 0;
        else if (!strcmp(a, "--preset")) {
            p = NULL;
            for (size_t j = 0; j < sizeof presets / sizeof presets[0]; j++)
                if (nx && !strcmp(nx, presets[j].name)) p = &presets[j];
            if (!p) {
                fprintf(stderr, "flashkit: unknown --preset '%s' (llama3-8b, llama2-7b, llama3-70b, tiny)\n",
                        nx ? nx : "");
                return 2;
            }
            i++;
        } else if (!strcmp(a, "--batch")) {
            if (!parse_i64(a, nx, 1, &batch)) return 2;
            i++;
        } else if (!strcmp(a, "--threads")) {
            if (!parse_i64(a, nx, 0, &threads)) return 2;
            i++;
        } else if (!strcmp(a, "--dtype")) {
            if (!parse_dtype(nx, &dt)) return 2;
            i++;
        } else if (!strcmp(a, "--device")) {
            if (!parse_device(nx, &dev)) return 2;
            i++;
        } else if (!strcmp(a, "--no-flash")) flash = 0;
        else if (!strcmp(a, "--recompute")) recompute = 1;
        else if (!strcmp(a, "--no-master")) master = 0;
        else {
            fprintf(stderr, "flashkit memory: unknown option '%s'\n", a);
            memory_usage(stderr);
            return 2;
        }
    }
    fk_model_config c;
    memset(&c, 0, sizeof c);
    c.vocab        = v[0] > 0 ? v[0] : p->vocab;
    c.hidden       = v[1] > 0 ? v[1] : p->hidden;
    c.intermediate = v[2] > 0 ? v[2] : p->intermediate;
    c.layers       = v[3] > 0 ? v[3] : p->layers;
    c.nheads       = v[4] > 0 ? v[4] : p->heads;
    c.nheads_kv    = v[5] > 0 ? v[5] : (v[4] > 0 ? v[4] : p->kv_heads);
    c.seqlen       = v[6] > 0 ? v[6] : p->seqlen;
    c.batch        = batch;
    c.param_dtype  = dt;
    c.master_fp32  = master && dt != FK_DTYPE_F32;
    c.flash        = flash;
    c.recompute    = recompute;
    int custom     = v[0] > 0 || v[1] > 0 || v[2] > 0 || v[3] > 0 || v[4] > 0 || v[5] > 0;

    fk_train_memory m, other;
    fk_status       st = fk_estimate_train_step_memory(&c, &m);
    if (st) {
        fprintf(stderr, "flashkit memory: %s: %s\n", fk_status_string(st), fk_last_error_message());
        return 1;
    }
    fk_model_config oc = c;
    oc.flash           = !c.flash;
    int have_other     = fk_estimate_train_step_memory(&oc, &other) == FK_STATUS_SUCCESS;

    const int64_t d = c.hidden / c.nheads;
    // parameter count = parameters bytes / element size
    const double nparams = (double)m.parameters / (double)fk_dtype_size(dt);
    printf("model       %s%s: %lld layers, hidden %lld, heads %lld (kv %lld), head dim %lld, intermediate %lld, "
           "vocab %lld, %.2f %s parameters\n",
           p->name, custom ? " (with overrides)" : "", (long long)c.layers, (long long)c.hidden, (long long)c.nheads,
           (long long)c.nheads_kv, (long long)d, (long long)c.intermediate, (long long)c.vocab,
           nparams >= 1e9 ? nparams / 1e9 : nparams / 1e6, nparams >= 1e9 ? "B" : "M");
    printf("step        batch %lld x seqlen %lld, %s weights and activations%s, Adam, %s attention%s\n",
           (long long)c.batch, (long long)c.seqlen, fk_dtype_name(dt), c.master_fp32 ? " + fp32 master" : "",
           c.flash ? "flash" : "naive", c.recompute ? ", activation recompute per layer" : "");
    printf("\n  %-34s %12s", "component", c.flash ? "flash" : "naive");
    if (have_other) printf(" %12s", c.flash ? "(naive)" : "(flash)");
    printf("\n");
#define ROW(label, field)                                                                                     \
    do {                                                                                                      \
        printf("  %-34s %12s", label, HUMAN(m.field));                                                        \
        if (have_other) printf(" %12s", HUMAN(other.field));                                                  \
        printf("\n");                                                                                         \
    } while (0)
    ROW("parameters", parameters);
    ROW("gradients", gradients);
    ROW(c.master_fp32 ? "optimizer (Adam moments + master)" : "optimizer (Adam moments)", optimizer);
    ROW("activations saved for backward", activations);
    ROW("  of which attention scores", attention_scores);
    ROW("peak transient (logits / layer bwd)", peak_transient);
    ROW("total", total);
#undef ROW
    printf("  (a column in parentheses: the same step with the other attention, for comparison)\n");

    fk_attn_shape sh = {c.batch, c.seqlen, c.seqlen, c.nheads, c.nheads_kv, d, dt, 1};
    print_attn_table(&sh, dev, (int)threads);
    return 0;
}

// --- bench -----------------------------------------------------------------------------------------------

static void bench_usage(FILE *f) {
    fprintf(f,
            "usage: flashkit bench [--device cpu|cuda[:I]] [--batch N] [--heads N] [--seqlen N] [--dim N] [--causal]\n"
            "                      [--dtype f32|f16|bf16] [--threads N] [--reps N] [--warmup N] [--fwd-only]\n"
            "                      [--no-naive] [--seed N] [--csv]\n"
            "  Times attention forward and backward, flash (fk_attn_fwd/bwd) against a naive matmul-softmax-matmul\n"
            "  (fp32, OpenMP, materializing the score matrices; CPU only), on the same inputs. Prints the median of\n"
            "  --reps runs after --warmup, the ratio, the memory each path takes beyond its inputs (allocated, and\n"
            "  peak RSS growth measured in a child process per path) and the largest difference of the outputs.\n"
            "  defaults: cpu, batch 1, heads 8, seqlen 2048, dim 64, not causal, f32, threads = OpenMP default,\n"
            "  reps 5, warmup 1. --csv prints one line per pass for tables.\n");
}

static int parse_cmp_opts(int argc, char **argv, cmp_cfg *c, int *csv, void (*usage)(FILE *)) {
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i], *nx = i + 1 < argc ? argv[i + 1] : NULL;
        int64_t     x;
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) return usage(stdout), 0;
        else if (!strcmp(a, "--device")) {
            if (!parse_device(nx, &c->device)) return -1;
            i++;
        }
#define INTOPT(name, lo, dst)                                                                                 \
    else if (!strcmp(a, name)) {                                                                              \
        if (!parse_i64(a, nx, lo, &x)) return -1;                                                             \
        dst = x;                                                                                              \
        i++;                                                                                                  \
    }
        INTOPT("--batch", 1, c->batch)
        INTOPT("--heads", 1, c->heads)
        INTOPT("--seqlen", 1, c->seqlen)
        INTOPT("--dim", 1, c->dim)
        INTOPT("--threads", 0, c->threads)
        INTOPT("--reps", 1, c->reps)
        INTOPT("--warmup", 0, c->warmup)
        INTOPT("--seed", 0, c->seed)
#undef INTOPT
        else if (!strcmp(a, "--dtype")) {
            if (!parse_dtype(nx, &c->dtype)) return -1;
            i++;
        } else if (!strcmp(a, "--causal")) c->causal = 1;
        else if (!strcmp(a, "--fwd-only")) c->do_bwd = 0;
        else if (!strcmp(a, "--no-naive")) c->do_naive = 0;
        else if (csv && !strcmp(a, "--csv")) *csv = 1;
        else {
            fprintf(stderr, "flashkit: unknown option '%s'\n", a);
            usage(stderr);
            return -1;
        }
    }
    if (c->reps > 1000 || c->warmup > 1000) {
        fprintf(stderr, "flashkit: --reps and --warmup are at most 1000\n");
        return -1;
    }
    return 1;
}

static const char *rss_str(char *buf, size_t n, int64_t b) {
    if (b < 0) return "n/a";
    return human(buf, n, (double)b);
}

static void print_pass(const cmp_cfg *c, const cmp_out *o, int bwd, int csv) {
    const pass_result *f = bwd ? &o->flash.bwd : &o->flash.fwd, *nv = bwd ? &o->naive.bwd : &o->naive.fwd;
    const double       flops = attn_flops(c, bwd);
    double err = bwd ? fmax(fmax(o->err_dq, o->err_dk), o->err_dv) : o->err_o;
    if (bwd && (isnan(o->err_dq) || isnan(o->err_dk) || isnan(o->err_dv))) err = NAN;
    double ref = bwd ? fmax(fmax(o->ref_dq, o->ref_dk), o->ref_dv) : o->ref_o;
    char   b1[32], b2[32], b3[32], b4[32];
    if (csv) {
        // pass,device,dtype,batch,heads,seqlen,dim,causal,threads,flash_ms,naive_ms,naive_over_flash,
        // flash_alloc,naive_alloc,flash_rss,naive_rss,max_err,max_ref
        printf("%s,%s,%s,%lld,%lld,%lld,%lld,%d,%d,%.3f,%.3f,%.3f,%lld,%lld,%lld,%lld,%.3g,%.3g\n", bwd ? "bwd" : "fwd",
               c->device.kind == FK_DEVICE_CUDA ? "cuda" : "cpu", fk_dtype_name(c->dtype), (long long)c->batch,
               (long long)c->heads, (long long)c->seqlen, (long long)c->dim, c->causal, o->threads_used, f->ms,
               nv->ran ? nv->ms : NAN, nv->ran ? f->ratio : NAN, (long long)f->allocated,
               (long long)(nv->ran ? nv->allocated : -1), (long long)f->rss, (long long)(nv->ran ? nv->rss : -1), err,
               ref);
        return;
    }
    printf("%s\n", bwd ? "backward" : "forward");
    printf("  %-8s %10s %10s %14s %14s\n", "path", "median ms", "GFLOP/s", "allocated",
           c->device.kind == FK_DEVICE_CUDA ? "device mem +" : "peak RSS +");
    printf("  %-8s %10.2f %10.1f %14s %14s\n", "flash", f->ms, flops / (f->ms * 1e6), human(b1, 32, f->allocated),
           c->device.kind == FK_DEVICE_CUDA ? (f->dev_used >= 0 ? human(b2, 32, f->dev_used) : "n/a")
                                            : rss_str(b2, 32, f->rss));
    if (nv->ran) {
        printf("  %-8s %10.2f %10.1f %14s %14s\n", "naive", nv->ms, flops / (nv->ms * 1e6), human(b3, 32, nv->allocated),
               rss_str(b4, 32, nv->rss));
        printf("  naive / flash time %.2fx (median of per-pair ratios), memory (allocated) %.1fx;\n"
               "  max |flash - naive| = %.3g (max |naive| %.3g)\n",
               f->ratio, (double)nv->allocated / (double)f->allocated, err, ref);
    }
}

static int cmd_bench(int argc, char **argv) {
    cmp_cfg c = {{FK_DEVICE_CPU, 0}, 1, 8, 2048, 64, 0, FK_DTYPE_F32, 0, 5, 1, 1, 1, 1, 1};
    int     csv = 0, rc = parse_cmp_opts(argc, argv, &c, &csv, bench_usage);
    if (rc <= 0) return rc < 0 ? 2 : 0;
    if (c.device.kind == FK_DEVICE_CUDA && c.do_naive) {
        if (!csv) printf("naive on CUDA: not available in this tool; the naive column is the CPU baseline's error only\n");
    }
    cmp_out o;
    if (cmp_run(&c, &o) != 0) {
        fprintf(stderr, "flashkit bench: cannot map %s of shared memory for the results\n", HUMAN(o.shared_bytes));
        return 1;
    }
    int ok = o.flash.ok && (!c.do_naive || o.naive.ok);
    if (c.device.kind == FK_DEVICE_CUDA) o.naive.fwd.ran = o.naive.bwd.ran = 0; // CPU naive timings: not comparable
    if (!csv) {
        printf("attention bench: %s, batch %lld, heads %lld, seqlen %lld, head dim %lld, %s, %s, %d thread(s), "
               "median of %d (after %d warm-up), naive kernel %s\n",
               c.device.kind == FK_DEVICE_CUDA ? "cuda" : "cpu", (long long)c.batch, (long long)c.heads,
               (long long)c.seqlen, (long long)c.dim, fk_dtype_name(c.dtype), c.causal ? "causal" : "not causal",
               o.threads_used, c.reps, c.warmup, naive_attn_isa());
    }
    if (!o.flash.ok) fprintf(stderr, "flash: %s\n", o.flash.err);
    if (c.do_naive && !o.naive.ok) fprintf(stderr, "naive: %s\n", o.naive.err);
    if (o.flash.ok) {
        if (o.flash.fwd.ran) print_pass(&c, &o, 0, csv);
        if (o.flash.bwd.ran) print_pass(&c, &o, 1, csv);
    }
    // The outputs must agree: a fast wrong answer is a failure.
    if (ok && c.do_naive) {
        double tol_o = tolerance(c.dtype, o.ref_o);
        int    bad   = !(o.err_o <= tol_o);
        if (c.do_bwd)
            bad |= !(o.err_dq <= tolerance(c.dtype, o.ref_dq)) || !(o.err_dk <= tolerance(c.dtype, o.ref_dk)) ||
                   !(o.err_dv <= tolerance(c.dtype, o.ref_dv));
        if (bad) {
            fprintf(stderr, "flashkit bench: flash and naive disagree beyond the tolerance (o %.3g, dq %.3g, dk %.3g, "
                            "dv %.3g)\n", o.err_o, o.err_dq, o.err_dk, o.err_dv);
            ok = 0;
        }
    }
    cmp_release(&o);
    return ok ? 0 : 1;
}

// --- demo ------------------------------------------------------------------------------------------------

static void demo_usage(FILE *f) {
    fprintf(f, "usage: flashkit demo [--device cpu|cuda[:I]] [--seqlen N] [--threads N] [...bench's options]\n"
               "  A representative attention forward and backward (batch 2, 8 heads, seqlen 1024, head dim 64,\n"
               "  causal; bf16 on a GPU, f32 on the CPU) on the best backend present, checked against the naive\n"
               "  path. Exit status 0 on PASS.\n");
}

// Can the CUDA attention run here? NULL when yes, else why not.
static const char *cuda_usable(char *why, size_t n) {
    fk_build_info bi;
    fk_get_build_info(&bi);
    if (!bi.cuda_compiled) return "this flashkit was built without the CUDA backend";
    if (bi.cuda_device_count < 1) return "no CUDA device is visible";
    const char *e = cuda_open(0);
    if (e) return e;
    // A tiny forward proves the kernels run on this device (architecture, build subset).
    fk_context_t ctx = NULL;
    fk_device    dev = {FK_DEVICE_CUDA, 0};
    fk_status    st  = fk_context_init(dev, NULL, &ctx);
    if (st) {
        snprintf(why, n, "fk_context_init(cuda:0): %s", fk_last_error_message());
        return why;
    }
    const int64_t shp[4] = {1, 128, 2, 64};
    const size_t  tb     = 128 * 2 * 64 * 2;
    void         *buf    = dev_alloc(4 * tb);
    if (!buf) {
        fk_context_free(ctx);
        return "cannot allocate CUDA memory";
    }
    fk_attn_args a;
    fk_attn_args_init(&a);
    a.q    = fk_tensor_make(buf, FK_DTYPE_BF16, dev, 4, shp);
    a.k    = fk_tensor_make((char *)buf + tb, FK_DTYPE_BF16, dev, 4, shp);
    a.v    = fk_tensor_make((char *)buf + 2 * tb, FK_DTYPE_BF16, dev, 4, shp);
    a.o    = fk_tensor_make((char *)buf + 3 * tb, FK_DTYPE_BF16, dev, 4, shp);
    st     = fk_attn_fwd(ctx, &a, NULL, 0, NULL);
    if (st == FK_STATUS_SUCCESS && cu.sync() != 0) {
        snprintf(why, n, "the CUDA attention forward failed on the device");
        st = FK_STATUS_CUDA_ERROR;
    } else if (st) {
        snprintf(why, n, "the CUDA attention forward returned %s: %s", fk_status_string(st), fk_last_error_message());
    }
    dev_free(buf);
    fk_context_free(ctx);
    return st ? why : NULL;
}

static int cmd_demo(int argc, char **argv) {
    cmp_cfg c = {{FK_DEVICE_CPU, 0}, 2, 8, 1024, 64, 1, FK_DTYPE_F32, 0, 3, 1, 1, 1, 1, 7};
    int     explicit_device = 0, explicit_dtype = 0;
    for (int i = 0; i < argc; i++) {
        if (!strcmp(argv[i], "--device")) explicit_device = 1;
        if (!strcmp(argv[i], "--dtype")) explicit_dtype = 1;
    }
    int rc = parse_cmp_opts(argc, argv, &c, NULL, demo_usage);
    if (rc <= 0) return rc < 0 ? 2 : 0;
    char        whybuf[600];
    const char *why = NULL;
    if (!explicit_device) {
        why = cuda_usable(whybuf, sizeof whybuf);
        if (!why) c.device = (fk_device){FK_DEVICE_CUDA, 0};
    }
    if (c.device.kind == FK_DEVICE_CUDA && !explicit_dtype) c.dtype = FK_DTYPE_BF16;

    fk_build_info bi;
    fk_get_build_info(&bi);
    printf("flashkit %s demo: attention forward + backward, checked against naive matmul-softmax-matmul\n",
           fk_version_string());
    if (c.device.kind == FK_DEVICE_CUDA) {
        fk_device_props p;
        if (fk_get_device_props(c.device, &p) == FK_STATUS_SUCCESS)
            printf("backend   cuda:%d %s (sm_%d%d); the naive reference runs on the CPU in fp32\n", c.device.index,
                   p.name, p.cc_major, p.cc_minor);
    } else {
        printf("backend   CPU (%s, %s)%s%s\n", bi.cpu_simd == 512 ? "AVX-512" : bi.cpu_simd == 256 ? "AVX2" : "portable",
               bi.openmp ? "OpenMP" : "no OpenMP", why ? "; not CUDA because " : "", why ? why : "");
    }
    printf("shape     q, k, v, o [batch %lld, seqlen %lld, heads %lld, head dim %lld], %s, %s\n", (long long)c.batch,
           (long long)c.seqlen, (long long)c.heads, (long long)c.dim, fk_dtype_name(c.dtype),
           c.causal ? "causal" : "not causal");

    cmp_out o;
    if (cmp_run(&c, &o) != 0) {
        printf("result    FAIL: cannot map shared memory for the results\n");
        return 1;
    }
    int pass = 1;
    if (!o.flash.ok) {
        printf("flash     FAILED: %s\n", o.flash.err);
        pass = 0;
    }
    if (!o.naive.ok) {
        printf("naive     FAILED: %s\n", o.naive.err);
        pass = 0;
    }
    if (pass) {
        const int cuda = c.device.kind == FK_DEVICE_CUDA;
        char      b1[32], b2[32], b3[32], b4[32];
        printf("threads   %d (CPU paths)\n", o.threads_used);
        for (int bwd = 0; bwd < 2; bwd++) {
            const pass_result *f = bwd ? &o.flash.bwd : &o.flash.fwd, *nv = bwd ? &o.naive.bwd : &o.naive.fwd;
            printf("%-9s flash %8.2f ms", bwd ? "backward" : "forward", f->ms);
            if (!cuda) printf("   naive %8.2f ms   (naive/flash %.2fx)", nv->ms, f->ratio);
            else printf("   (naive timed on the CPU: not compared)");
            printf("\n");
            printf("  memory  flash %s beyond inputs (%s %s)   naive %s (RSS +%s)\n", human(b1, 32, f->allocated),
                   cuda ? "device" : "RSS +",
                   cuda ? (f->dev_used >= 0 ? human(b2, 32, f->dev_used) : "n/a") : rss_str(b2, 32, f->rss),
                   human(b3, 32, nv->allocated), rss_str(b4, 32, nv->rss));
        }
        struct {
            const char *name;
            double      err, ref;
        } e[4] = {{"o", o.err_o, o.ref_o}, {"dq", o.err_dq, o.ref_dq}, {"dk", o.err_dk, o.ref_dk}, {"dv", o.err_dv, o.ref_dv}};
        printf("error     max |flash - naive|:");
        for (int i = 0; i < 4; i++) {
            double tol = tolerance(c.dtype, e[i].ref);
            int    ok  = e[i].err <= tol;
            pass &= ok;
            printf(" %s %.2g%s", e[i].name, e[i].err, ok ? "" : " (over tolerance)");
        }
        printf("  (tolerance %.0e x max(1, max|ref|))\n", tolerance(c.dtype, 0));
    }
    printf("result    %s\n", pass ? "PASS" : "FAIL");
    cmp_release(&o);
    return pass ? 0 : 1;
}

// --- main ------------------------------------------------------------------------------------------------

static void usage(FILE *f) {
    fprintf(f, "flashkit %s — fused transformer kernels (FlashAttention first)\n"
               "usage: flashkit <command> [options]\n"
               "  info     version, build features, CPU SIMD and threads, CUDA devices\n"
               "  memory   training-step memory of a Llama-style model by component; attention flash vs naive\n"
               "  bench    time attention forward/backward, flash vs naive, with memory and error\n"
               "  demo     a representative attention forward + backward on the best backend, checked (PASS/FAIL)\n"
               "  help     this text; `flashkit <command> --help` lists a command's options\n",
            FK_VERSION_STRING);
}

int main(int argc, char **argv) {
    if (argc < 2) {
        usage(stderr);
        return 2;
    }
    const char *cmd = argv[1];
    if (!strcmp(cmd, "--help") || !strcmp(cmd, "-h") || !strcmp(cmd, "help")) return usage(stdout), 0;
    if (!strcmp(cmd, "--version")) return printf("flashkit %s\n", fk_version_string()), 0;
    if (!strcmp(cmd, "info")) return cmd_info(argc - 2, argv + 2);
    if (!strcmp(cmd, "memory")) return cmd_memory(argc - 2, argv + 2);
    if (!strcmp(cmd, "bench")) return cmd_bench(argc - 2, argv + 2);
    if (!strcmp(cmd, "demo")) return cmd_demo(argc - 2, argv + 2);
    fprintf(stderr, "flashkit: unknown command '%s'\n", cmd);
    usage(stderr);
    return 2;
}
