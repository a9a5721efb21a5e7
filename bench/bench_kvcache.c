/*
 * bench_kvcache.c — CPU decode timing of fk_attn_fwd_kvcache: one new token per sequence appended to a full
 * cache and attended to (cache_seqlens = len - 1, seqlen_new 1), median of reps. Prints tokens/s (sequences
 * decoded per second, one layer) and GB/s of K/V read (2 x batch x len x nheads_kv x head_dim x dtype size).
 * Build (not part of CMake; links the static library of any build folder):
 *   cc -O2 -fopenmp -Iinclude bench/bench_kvcache.c build-kv/libflashkit.a -lm -o build-kv/bench_kvcache
 * Run: build-kv/bench_kvcache [batch hq hkv d len sq threads page reps splits]
 *      (defaults 8 32 8 128 4096 1 2 0 20 0; splits is num_splits, 0 = the backend's choice)
 */
#define _POSIX_C_SOURCE 200112L
#include "flashkit.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}
static int cmp(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

int main(int argc, char **argv) {
    int64_t v[10] = {8, 32, 8, 128, 4096, 1, 2, 0, 20, 0};
    for (int i = 1; i < argc && i <= 10; i++) v[i - 1] = atoll(argv[i]);
    const int64_t B = v[0], hq = v[1], hkv = v[2], d = v[3], len = v[4], sq = v[5], page = v[7];
    const int     threads = (int)v[6], reps = (int)v[8];
    const fk_device cpu = {FK_DEVICE_CPU, 0};
    const int64_t   entries = page ? B * (len / page) : B, rows = page ? page : len;
    const size_t    ncache = (size_t)(entries * rows * hkv * d);
    float *kc = malloc(ncache * 4), *vc = malloc(ncache * 4), *q = malloc((size_t)(B * sq * hq * d) * 4);
    float *o = malloc((size_t)(B * sq * hq * d) * 4), *kn = malloc((size_t)(B * hkv * d) * 4), *vn = malloc((size_t)(B * hkv * d) * 4);
    int32_t *cs = malloc((size_t)B * 4), *bt = malloc((size_t)(B * (page ? len / page : 1)) * 4);
    for (size_t i = 0; i < ncache; i++) kc[i] = vc[i] = (float)((i * 2654435761u) % 1000) * 1e-3f - 0.5f;
    for (int64_t i = 0; i < B * sq * hq * d; i++) q[i] = (float)(i % 7) * 0.1f;
    for (int64_t i = 0; i < B * hkv * d; i++) kn[i] = vn[i] = 0.25f;
    for (int64_t b = 0; b < B; b++) cs[b] = (int32_t)(len - 1);
    for (int64_t i = 0; page && i < B * (len / page); i++) bt[i] = (int32_t)((i * 7919) % entries); // scattered

    fk_context_t ctx;
    if (fk_context_init(cpu, &(fk_context_options){threads}, &ctx)) return 1;
    fk_attn_kvcache_args a;
    fk_attn_kvcache_args_init(&a);
    a.q       = fk_tensor_make(q, FK_DTYPE_F32, cpu, 4, (int64_t[]){B, sq, hq, d});
    a.o       = fk_tensor_make(o, FK_DTYPE_F32, cpu, 4, (int64_t[]){B, sq, hq, d});
    a.k_cache = fk_tensor_make(kc, FK_DTYPE_F32, cpu, 4, (int64_t[]){entries, rows, hkv, d});
    a.v_cache = fk_tensor_make(vc, FK_DTYPE_F32, cpu, 4, (int64_t[]){entries, rows, hkv, d});
    a.k       = fk_tensor_make(kn, FK_DTYPE_F32, cpu, 4, (int64_t[]){B, 1, hkv, d});
    a.v       = fk_tensor_make(vn, FK_DTYPE_F32, cpu, 4, (int64_t[]){B, 1, hkv, d});
    a.cache_seqlens = fk_tensor_make(cs, FK_DTYPE_INT32, cpu, 1, (int64_t[]){B});
    if (page) a.block_table = fk_tensor_make(bt, FK_DTYPE_INT32, cpu, 2, (int64_t[]){B, len / page});
    a.causal     = 1;
    a.num_splits = (int)v[9];
    size_t ws = 0;
    if (fk_attn_kvcache_workspace_size(ctx, &a, &ws)) {
        fprintf(stderr, "%s\n", fk_last_error_message());
        return 1;
    }
    void   *w = malloc(ws);
    double *t = malloc(sizeof(double) * (size_t)reps);
    for (int r = -2; r < reps; r++) {
        double t0 = now();
        if (fk_attn_fwd_kvcache(ctx, &a, w, ws, NULL)) {
            fprintf(stderr, "%s\n", fk_last_error_message());
            return 1;
        }
        if (r >= 0) t[r] = now() - t0;
    }
    qsort(t, (size_t)reps, sizeof *t, cmp);
    const double med = t[reps / 2], bytes = 2.0 * (double)(B * len * hkv * d) * 4.0;
    printf("kvcache decode: batch %lld, hq %lld, hkv %lld, d %lld, len %lld, sq %lld, page %lld, splits %lld, f32, %d threads: "
           "median %.3f ms, %.0f tokens/s, %.2f GB/s K/V read\n", (long long)B, (long long)hq, (long long)hkv,
           (long long)d, (long long)len, (long long)sq, (long long)page, (long long)v[9], threads, med * 1e3, (double)B / med,
           bytes / med * 1e-9);
    fk_context_free(ctx);
    return 0;
}
