/*
 * fk_test.c — the shared test harness (see fk_test.h).
 */
#include "fk_test.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifdef FK_TEST_CUDA
#include <cuda_runtime.h>
#endif

// --- random numbers: splitmix64, Box-Muller ---------------------------------------------------------------

void fk_rng_seed(fk_rng *r, uint64_t seed) { r->s = seed * 0x9E3779B97F4A7C15ull + 0x632BE59BD9B4E019ull; }

static uint64_t next_u64(fk_rng *r) {
    uint64_t z = (r->s += 0x9E3779B97F4A7C15ull);
    z          = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z          = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

double fk_rng_uniform(fk_rng *r) { return (double)(next_u64(r) >> 11) * (1.0 / 9007199254740992.0); }

double fk_rng_normal(fk_rng *r) {
    double u1 = fk_rng_uniform(r), u2 = fk_rng_uniform(r);
    if (u1 < 1e-300) u1 = 1e-300;
    return sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2);
}

// --- dtype helpers (independent of the library's own conversions, so a bug there is caught) ----------------

static double half_bits_to_double(uint16_t h) {
    int    s = h >> 15, e = (h >> 10) & 31, m = h & 1023;
    double v;
    if (e == 0) v = ldexp((double)m, -24);
    else if (e == 31) v = m ? NAN : INFINITY;
    else v = ldexp((double)(m | 1024), e - 25);
    return s ? -v : v;
}

double fk_round_to(fk_dtype dt, double x) {
    if (dt == FK_DTYPE_F64) return x;
    if (dt == FK_DTYPE_F32) return (double)(float)x;
    if (!isfinite(x)) return x;
    if (x == 0) return x;
    int    mant_bits = dt == FK_DTYPE_F16 ? 11 : 8;
    int    min_exp   = dt == FK_DTYPE_F16 ? -14 : -126;
    int    e;
    frexp(x, &e); // x = f * 2^e, f in [0.5, 1)
    int    ex    = e - 1 < min_exp ? min_exp : e - 1;
    double ulp   = ldexp(1.0, ex - (mant_bits - 1));
    double q     = x / ulp;
    double r     = nearbyint(q); // default rounding mode: to nearest even
    double out   = r * ulp;
    double maxv  = dt == FK_DTYPE_F16 ? 65504.0 : 3.3895313892515355e38;
    if (fabs(out) > maxv) return x > 0 ? INFINITY : -INFINITY;
    return out;
}

double fk_dtype_eps(fk_dtype dt) {
    return dt == FK_DTYPE_F16 ? ldexp(1.0, -10) : dt == FK_DTYPE_BF16 ? ldexp(1.0, -7)
         : dt == FK_DTYPE_F64 ? ldexp(1.0, -52) : ldexp(1.0, -23);
}

double fk_get(const void *buf, fk_dtype dt, int64_t i) {
    switch (dt) {
    case FK_DTYPE_F32: return ((const float *)buf)[i];
    case FK_DTYPE_F16: return half_bits_to_double(((const uint16_t *)buf)[i]);
    case FK_DTYPE_BF16: {
        uint32_t b = (uint32_t)((const uint16_t *)buf)[i] << 16;
        float    f;
        memcpy(&f, &b, 4);
        return f;
    }
    case FK_DTYPE_INT32: return ((const int32_t *)buf)[i];
    case FK_DTYPE_INT64: return (double)((const int64_t *)buf)[i];
    case FK_DTYPE_F64: return ((const double *)buf)[i];
    }
    return NAN;
}

void fk_set(void *buf, fk_dtype dt, int64_t i, double x) {
    switch (dt) {
    case FK_DTYPE_F32: ((float *)buf)[i] = (float)x; break;
    case FK_DTYPE_F16: {
        double   v = fk_round_to(dt, x);
        uint16_t h;
        if (isnan(v)) h = 0x7e00;
        else if (isinf(v)) h = v > 0 ? 0x7c00 : 0xfc00;
        else {
            uint16_t s = signbit(v) ? 0x8000 : 0;
            double   a = fabs(v);
            if (a < ldexp(1.0, -14)) h = (uint16_t)(s | (uint16_t)(a / ldexp(1.0, -24)));
            else {
                int e;
                double f = frexp(a, &e); // a = f 2^e, f in [0.5,1)
                int    m = (int)((f * 2.0 - 1.0) * 1024.0 + 0.5);
                h        = (uint16_t)(s | ((e - 1 + 15) << 10) | m);
            }
        }
        ((uint16_t *)buf)[i] = h;
        break;
    }
    case FK_DTYPE_BF16: {
        float    f = (float)fk_round_to(dt, x);
        uint32_t b;
        memcpy(&b, &f, 4);
        if (isnan(f)) b = 0x7fc00000u;
        ((uint16_t *)buf)[i] = (uint16_t)(b >> 16);
        break;
    }
    case FK_DTYPE_INT32: ((int32_t *)buf)[i] = (int32_t)x; break;
    case FK_DTYPE_INT64: ((int64_t *)buf)[i] = (int64_t)x; break;
    case FK_DTYPE_F64: ((double *)buf)[i] = x; break;
    }
}

void fk_fill_normal(void *buf, fk_dtype dt, int64_t n, double scale, fk_rng *r, double *ref) {
    for (int64_t i = 0; i < n; i++) {
        double x = fk_round_to(dt, scale * fk_rng_normal(r));
        fk_set(buf, dt, i, x);
        if (ref) ref[i] = fk_get(buf, dt, i);
    }
}

void fk_poison(void *buf, fk_dtype dt, int64_t n) {
    for (int64_t i = 0; i < n; i++) fk_set(buf, dt, i, NAN);
}

static fk_err compare_impl(const void *got, fk_dtype dt, const double *gotd, const double *ref, int64_t n) {
    fk_err e   = {0, 0, 0, 0, -1};
    double num = 0, den = 0;
    for (int64_t i = 0; i < n; i++) {
        double g = gotd ? gotd[i] : fk_get(got, dt, i);
        if (!isfinite(g) && isfinite(ref[i])) {
            if (e.first_bad < 0) e.first_bad = i;
            e.nonfinite++;
            continue;
        }
        double d = fabs(g - ref[i]);
        if (!(isinf(g) && isinf(ref[i]) && (g > 0) == (ref[i] > 0))) {
            if (d > e.max_abs) e.max_abs = d;
            num += d * d;
        }
        if (isfinite(ref[i])) {
            if (fabs(ref[i]) > e.max_ref) e.max_ref = fabs(ref[i]);
            den += ref[i] * ref[i];
        }
    }
    e.rel = den > 0 ? sqrt(num / den) : sqrt(num);
    return e;
}

fk_err fk_compare(const void *got, fk_dtype dt, const double *ref, int64_t n) {
    return compare_impl(got, dt, NULL, ref, n);
}
fk_err fk_compare_d(const double *got, const double *ref, int64_t n) { return compare_impl(NULL, FK_DTYPE_F32, got, ref, n); }

// --- driver bookkeeping ----------------------------------------------------------------------------------

static struct {
    const char *name;
    const char *pattern;
    int         backend; // 0 = all
    int         verbose;
    int         passed, failed, skipped;
} T;

void fk_test_init(int argc, char **argv, const char *driver_name) {
    T.name = driver_name;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "-p") && i + 1 < argc) T.pattern = argv[++i];
        else if (!strcmp(argv[i], "-b") && i + 1 < argc) {
            i++;
            T.backend = !strcmp(argv[i], "cuda") ? FK_DEVICE_CUDA : FK_DEVICE_CPU;
        } else if (!strcmp(argv[i], "-v")) T.verbose = 1;
    }
    if (getenv("FK_TEST_VERBOSE")) T.verbose = 1;
    printf("%s: flashkit %s\n", driver_name, fk_version_string());
}

bool fk_test_selected(const char *signature, fk_device_kind backend) {
    if (T.backend && (int)backend != T.backend) return false;
    if (T.pattern && !strstr(signature, T.pattern)) return false;
    return true;
}

void fk_test_pass(const char *sig, const char *detail) {
    T.passed++;
    if (T.verbose) printf("  ok      %s  %s\n", sig, detail ? detail : "");
}
void fk_test_fail(const char *sig, const char *detail) {
    T.failed++;
    printf("  FAIL    %s  %s\n", sig, detail ? detail : "");
    fflush(stdout);
}
void fk_test_skip(const char *sig, const char *reason) {
    T.skipped++;
    printf("  skipped %s: %s\n", sig, reason ? reason : "");
}
bool fk_test_check(bool cond, const char *sig, const char *detail) {
    if (cond) fk_test_pass(sig, detail);
    else fk_test_fail(sig, detail);
    return cond;
}

bool fk_test_expect_status(const char *sig, fk_status want, fk_status query, bool query_msg, fk_status call,
                           bool call_msg) {
    char detail[800];
    snprintf(detail, sizeof detail, "want %s; size query %s, call %s: %s", fk_status_string(want),
             fk_status_string(query), fk_status_string(call), fk_last_error_message());
    return fk_test_check(query == want && call == want && query_msg && call_msg, sig, detail);
}

int fk_test_finish(void) {
    printf("%s: %d passed, %d failed, %d skipped\n", T.name, T.passed, T.failed, T.skipped);
    if (T.failed) return 1;
    if (T.passed == 0 && T.skipped == 0) {
        printf("%s: no case ran\n", T.name);
        return 1;
    }
    return 0;
}

bool fk_test_have_cuda(const char **why) {
    fk_build_info bi;
    fk_get_build_info(&bi);
    if (!bi.cuda_compiled) {
        if (why) *why = "built without CUDA";
        return false;
    }
    if (bi.cuda_device_count < 1) {
        if (why) *why = "no CUDA device present";
        return false;
    }
    return true;
}

#ifdef FK_TEST_CUDA
void *fk_test_dev_alloc(size_t bytes) {
    void *p = NULL;
    if (cudaMalloc(&p, bytes ? bytes : 1) != cudaSuccess) return NULL;
    return p;
}
void fk_test_dev_free(void *p) { if (p) cudaFree(p); }
bool fk_test_h2d(void *d, const void *s, size_t n) { return cudaMemcpy(d, s, n, cudaMemcpyHostToDevice) == cudaSuccess; }
bool fk_test_d2h(void *d, const void *s, size_t n) { return cudaMemcpy(d, s, n, cudaMemcpyDeviceToHost) == cudaSuccess; }
bool fk_test_dev_sync(void) { return cudaDeviceSynchronize() == cudaSuccess; }
#else
void *fk_test_dev_alloc(size_t bytes) { (void)bytes; return NULL; }
void  fk_test_dev_free(void *p) { (void)p; }
bool  fk_test_h2d(void *d, const void *s, size_t n) { (void)d; (void)s; (void)n; return false; }
bool  fk_test_d2h(void *d, const void *s, size_t n) { (void)d; (void)s; (void)n; return false; }
bool  fk_test_dev_sync(void) { return false; }
#endif
