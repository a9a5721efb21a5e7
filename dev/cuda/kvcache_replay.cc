// Host replay of src/cuda/attn_kvcache.cu: the file itself (selection, plan, params, launches, and the append,
// split and combine kernels) compiled by g++ and run on the CPU. Each launch runs its blocks one after another
// with one pthread per CUDA thread; __syncthreads / __syncwarp are barriers and __shfl_xor_sync goes through a
// per-thread exchange slot between two warp barriers. Dynamic shared memory is filled with NaN before every
// block, so a read of something no thread wrote shows up in the result. Problems are built the way
// src/core/attn_kvcache.c's resolve builds them, "device" memory is malloc'ed host memory (run it under
// AddressSanitizer: an index that escapes its bound is reported), and the results are checked against a float64
// reference of the header's semantics: o, lse, and the caches (the appended rows and nothing else), plus the
// rule for bad device-resident indices (o = 0, lse = -inf, nothing appended; keys in bad blocks skipped).
// What this cannot check: timing, the real warp scheduler (the emulated threads are more ordered than a GPU's),
// ptxas numbers, the 16-byte alignment faults of a real vector load.
// Run: g++ -O1 -g -std=c++17 -pthread -fsanitize=address,undefined -I/usr/local/cuda/include -Iinclude -Isrc \
//        -DFK_BUILD -DFK_WITH_CUDA -x c++ dev/cuda/kvcache_replay.cc -o /tmp/kvr && /tmp/kvr
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <vector>

// --- the CUDA execution model, on pthreads ---------------------------------------------------------------
#define __launch_bounds__(...)
thread_local uint3 threadIdx, blockIdx;
thread_local dim3  blockDim, gridDim;

namespace emu {
pthread_barrier_t block_bar, warp_bar[32];
float             xch[1024];
} // namespace emu

static void __syncthreads() { pthread_barrier_wait(&emu::block_bar); }
static void __syncwarp(unsigned = 0xffffffffu) { pthread_barrier_wait(&emu::warp_bar[threadIdx.x / 32]); }
template <typename T> static T __shfl_xor_sync(unsigned, T v, int lane_mask) {
    const int t = (int)threadIdx.x;
    emu::xch[t] = (float)v;
    __syncwarp();
    const T r = (T)emu::xch[(t & ~31) | ((t & 31) ^ lane_mask)];
    __syncwarp();
    return r;
}

// Declared for common.cuh's PTX helpers, which the file includes but the replayed kernels never call.
static size_t __cvta_generic_to_shared(const void *p) { return (size_t)p; }
static float  __uint_as_float(unsigned x) {
    float f;
    memcpy(&f, &x, 4);
    return f;
}

#include "../../src/cuda/attn_kvcache.cu"

namespace {
alignas(16) unsigned char smem[256 << 10]; // the kernels' `extern __shared__ smem[]`
}

static size_t g_smem_optin = 0; // what cudaFuncSetAttribute allowed (one kernel at a time is enough here)

extern "C" cudaError_t cudaFuncSetAttribute(const void *, enum cudaFuncAttribute attr, int value) {
    if (attr == cudaFuncAttributeMaxDynamicSharedMemorySize) g_smem_optin = (size_t)value;
    return cudaSuccess;
}
extern "C" cudaError_t cudaGetDevice(int *d) { return *d = 0, cudaSuccess; }
extern "C" cudaError_t cudaSetDevice(int) { return cudaSuccess; }
extern "C" cudaError_t cudaGetLastError(void) { return cudaSuccess; }
extern "C" const char *cudaGetErrorString(cudaError_t) { return "replay"; }

struct Launch {
    void (*kernel)(KvParams);
    KvParams p;
    dim3     grid, block;
    size_t   smem;
};
struct Worker {
    const Launch *l;
    unsigned      tid;
};

static void *worker(void *arg) {
    const Worker *w = (const Worker *)arg;
    const Launch *l = w->l;
    threadIdx = {w->tid, 0, 0}, blockDim = l->block, gridDim = l->grid;
    for (unsigned z = 0; z < l->grid.z; z++)
        for (unsigned y = 0; y < l->grid.y; y++)
            for (unsigned x = 0; x < l->grid.x; x++) {
                if (w->tid == 0) memset(smem, 0xff, l->smem); // NaN in every float of the block's shared memory
                pthread_barrier_wait(&emu::block_bar);
                blockIdx = {x, y, z};
                l->kernel(l->p);
                pthread_barrier_wait(&emu::block_bar);
            }
    return NULL;
}

static int g_launches = 0;

extern "C" cudaError_t cudaLaunchKernel(const void *func, dim3 grid, dim3 block, void **args, size_t smem_bytes,
                                        cudaStream_t) {
    if (block.x % 32 || block.x > 1024 || block.y != 1 || block.z != 1 || grid.y > 65535 || grid.z > 65535)
        return cudaErrorInvalidConfiguration;
    if (smem_bytes > sizeof smem || (smem_bytes > 48 * 1024 && smem_bytes > g_smem_optin))
        return cudaErrorInvalidValue; // a real launch fails the same way without the opt-in
    g_launches++;
    Launch l{(void (*)(KvParams))func, *(const KvParams *)args[0], grid, block, smem_bytes};
    pthread_barrier_init(&emu::block_bar, NULL, block.x);
    for (unsigned w = 0; w < block.x / 32; w++) pthread_barrier_init(&emu::warp_bar[w], NULL, 32);
    std::vector<pthread_t> th(block.x);
    std::vector<Worker>    ws(block.x);
    for (unsigned t = 0; t < block.x; t++) {
        ws[t] = {&l, t};
        pthread_create(&th[t], NULL, worker, &ws[t]);
    }
    for (unsigned t = 0; t < block.x; t++) pthread_join(th[t], NULL);
    pthread_barrier_destroy(&emu::block_bar);
    for (unsigned w = 0; w < block.x / 32; w++) pthread_barrier_destroy(&emu::warp_bar[w]);
    return cudaSuccess;
}

// --- the library functions the file uses -----------------------------------------------------------------
static char g_msg[512];
extern "C" fk_status fk_error(fk_status s, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(g_msg, sizeof g_msg, fmt, ap);
    va_end(ap);
    return s;
}
extern "C" bool fk_mul_i64(int64_t a, int64_t b, int64_t *out) {
    if (a < 0 || b < 0) return false;
    return !__builtin_mul_overflow(a, b, out);
}
extern "C" size_t fk_dtype_size(fk_dtype dt) { return dt == FK_DTYPE_F32 ? 4 : 2; }
extern "C" const char *fk_dtype_name(fk_dtype dt) { return dt == FK_DTYPE_F32 ? "f32" : dt == FK_DTYPE_F16 ? "f16" : "bf16"; }

// --- problems --------------------------------------------------------------------------------------------
struct Case {
    fk_dtype dt;
    int      B, sq, snew, hq, hkv, D, cap, page, bidx, causal, wl, wr;
    float    softcap;
    int      alibi, splits;
    int      bad; // 1: bad cache_seqlens / cache_batch_idx in some sequences; 2: bad block ids; 3: empty caches
};

static uint64_t g_rng = 88172645463325252ull;
static double   urand() {
    g_rng ^= g_rng << 13, g_rng ^= g_rng >> 7, g_rng ^= g_rng << 17;
    return (double)(g_rng >> 11) / 9007199254740992.0;
}
static double nrand() { return sqrt(-2 * log(urand() + 1e-300)) * cos(6.283185307179586 * urand()); }

static void st(void *b, fk_dtype dt, int64_t i, double x) {
    if (dt == FK_DTYPE_F32) ((float *)b)[i] = (float)x;
    else if (dt == FK_DTYPE_F16) ((__half *)b)[i] = __float2half_rn((float)x);
    else ((__nv_bfloat16 *)b)[i] = __float2bfloat16_rn((float)x);
}
static double ld(const void *b, fk_dtype dt, int64_t i) {
    if (dt == FK_DTYPE_F32) return ((const float *)b)[i];
    if (dt == FK_DTYPE_F16) return __half2float(((const __half *)b)[i]);
    return __bfloat162float(((const __nv_bfloat16 *)b)[i]);
}

static int run(const Case &c) {
    const int64_t es = c.dt == FK_DTYPE_F32 ? 4 : 2, B = c.B, sq = c.sq, sn = c.snew, hq = c.hq, hkv = c.hkv, D = c.D;
    const int64_t maxb = c.page ? c.cap / c.page : 0, capacity = c.page ? maxb * c.page : c.cap;
    const int64_t entries = c.page ? B * maxb + 2 : (c.bidx ? B + 2 : B), rows = c.page ? c.page : c.cap;
    const int64_t row_el = hkv * D, ncache = entries * rows * row_el, nq = B * sq * hq * D;
    // Exact-size allocations: AddressSanitizer sees one element past any of them.
    std::vector<char *> heap;
    auto alloc = [&](int64_t bytes) { char *p = (char *)malloc(bytes > 0 ? bytes : 1); heap.push_back(p); return p; };
    char *q = alloc(nq * es), *o = alloc(nq * es), *kc = alloc(ncache * es), *vc = alloc(ncache * es);
    char *kn = alloc(B * sn * row_el * es), *vn = alloc(B * sn * row_el * es);
    float   *lse = (float *)alloc(B * hq * sq * 4), *slopes = (float *)alloc(B * hq * 4);
    int32_t *cs = (int32_t *)alloc(B * 4), *bidx = (int32_t *)alloc(B * 4), *bt = (int32_t *)alloc(B * (maxb ? maxb : 1) * 4);
    for (int64_t i = 0; i < nq; i++) st(q, c.dt, i, nrand());
    for (int64_t i = 0; i < ncache; i++) st(kc, c.dt, i, nrand()), st(vc, c.dt, i, nrand());
    for (int64_t i = 0; i < B * sn * row_el; i++) st(kn, c.dt, i, nrand()), st(vn, c.dt, i, nrand());
    for (int64_t i = 0; i < nq; i++) st(o, c.dt, i, NAN);
    for (int64_t i = 0; i < B * hq * sq; i++) lse[i] = NAN;
    for (int64_t i = 0; i < B * hq; i++) slopes[i] = (float)(0.05 + 0.3 * urand());
    std::vector<int> bad_seq(B, 0);
    for (int64_t b = 0; b < B; b++) {
        cs[b]   = (int32_t)(urand() * (double)(capacity - sn + 1));
        bidx[b] = (int32_t)(entries - 1 - b);
    }
    if (c.page) { // a shuffle of all blocks
        std::vector<int32_t> perm(entries);
        for (int64_t i = 0; i < entries; i++) perm[i] = (int32_t)i;
        for (int64_t i = entries - 1; i > 0; i--) std::swap(perm[i], perm[(int64_t)(urand() * (double)(i + 1))]);
        for (int64_t i = 0; i < B * maxb; i++) bt[i] = perm[i];
    }
    if (c.bad == 1) { // sequence 1: no room for the new rows; 2: negative; 3: entry past the cache
        if (B > 1) cs[1] = (int32_t)(capacity - sn + 1), bad_seq[1] = 1;
        if (B > 2) cs[2] = -5, bad_seq[2] = 1;
        if (B > 3) bidx[3] = 1 << 30, bad_seq[3] = 1;
    }
    if (c.bad == 3)
        for (int64_t b = 0; b < B; b++) cs[b] = 0;
    std::vector<char> badblk(B * (maxb ? maxb : 1), 0);
    if (c.bad == 2) // the last block of every sequence is bad; cache_seqlens reaches into it
        for (int64_t b = 0; b < B; b++) {
            bt[b * maxb + maxb - 1] = b % 2 ? -3 : (int32_t)(entries + 7 * b);
            badblk[b * maxb + maxb - 1] = 1;
            cs[b] = (int32_t)(capacity - sn);
        }
    std::vector<char> kc0(kc, kc + ncache * es), vc0(vc, vc + ncache * es);

    // The resolved problem, as src/core/attn_kvcache.c fills it.
    fk_attn_kv_problem kp;
    memset(&kp, 0, sizeof kp);
    fk_attn_problem *t = &kp.attn;
    t->dtype = c.dt, t->batch = B, t->seqlen_q = sq, t->seqlen_k = capacity, t->nheads_q = hq, t->nheads_kv = hkv;
    t->head_dim = D, t->total_q = B * sq, t->total_k = B * capacity;
    t->q = q, t->k = kc, t->v = vc, t->o = o, t->lse = lse;
    t->q_bs = sq * hq * D, t->q_rs = hq * D, t->q_hs = D;
    t->o_bs = sq * hq * D, t->o_rs = hq * D, t->o_hs = D;
    t->k_bs = t->v_bs = rows * row_el, t->k_rs = t->v_rs = row_el, t->k_hs = t->v_hs = D;
    t->lse_bs = hq * sq, t->lse_hs = sq, t->lse_rs = 1;
    t->alibi = c.alibi ? slopes : NULL, t->alibi_bs = c.alibi == 2 ? hq : 0;
    t->scale = (float)(1.0 / sqrt((double)D)), t->softcap = c.softcap;
    t->window_left = c.wl, t->window_right = c.causal ? 0 : c.wr, t->causal = c.causal;
    fk_attn_kv *kv = &kp.kv;
    kv->cache_seqlens = cs, kv->cache_batch_idx = c.bidx ? bidx : NULL, kv->block_table = c.page ? bt : NULL;
    kv->bt_bs = maxb, kv->page_size = c.page, kv->capacity = capacity, kv->entries = entries, kv->seqlen_new = sn;
    kv->k_cache = kc, kv->v_cache = vc, kv->k_new = sn ? kn : NULL, kv->v_new = sn ? vn : NULL;
    kv->kn_bs = kv->vn_bs = sn * row_el, kv->kn_rs = kv->vn_rs = row_el, kv->kn_hs = kv->vn_hs = D;
    kv->num_splits = c.splits;

    struct fk_context ctx;
    memset(&ctx, 0, sizeof ctx);
    ctx.device = {FK_DEVICE_CUDA, 0}, ctx.cc_major = 9, ctx.sm_count = 132, ctx.max_smem_optin = 227 * 1024;
    size_t need = 0;
    if (fk_cuda_attn_kvcache_select(&ctx, &kp, &need) != FK_STATUS_SUCCESS) {
        printf("FAIL select: %s\n", g_msg);
        return 1;
    }
    char *ws = alloc((int64_t)need + 3);
    Plan  pl;
    make_plan(&ctx, &kp, &pl);
    g_smem_optin = 0;
    fk_status s = fk_cuda_attn_fwd_kvcache(&ctx, &kp, need ? ws + 3 : NULL, need, NULL); // an odd address
    if (s != FK_STATUS_SUCCESS) {
        printf("FAIL run: %s\n", g_msg);
        return 1;
    }

    // Reference: each sequence's keys rebuilt from the original cache and the new rows, in float64.
    double max_err = 0, tol = c.dt == FK_DTYPE_F32 ? 2e-5 : c.dt == FK_DTYPE_F16 ? 2e-3 : 1.6e-2;
    int    fails = 0;
    std::vector<char> kexp(kc0), vexp(vc0);
    for (int64_t b = 0; b < B; b++) {
        const int64_t sk = bad_seq[b] ? 0 : cs[b] + sn, e = c.bidx ? bidx[b] : b;
        auto where = [&](int64_t j, bool *okp) -> int64_t {
            if (c.page) {
                *okp = !badblk[b * maxb + j / c.page];
                return (int64_t)bt[b * maxb + j / c.page] * rows * row_el + (j % c.page) * row_el;
            }
            *okp = true;
            return e * rows * row_el + j * row_el;
        };
        for (int64_t j = 0; j < sk; j++) {
            bool          ok;
            const int64_t off = where(j, &ok);
            if (j >= cs[b] && ok) {
                memcpy(&kexp[off * es], kn + ((b * sn + j - cs[b]) * row_el) * es, row_el * es);
                memcpy(&vexp[off * es], vn + ((b * sn + j - cs[b]) * row_el) * es, row_el * es);
            }
        }
        for (int64_t h = 0; h < hq; h++)
            for (int64_t i = 0; i < sq; i++) {
                const int64_t hk = h / (hq / hkv), diag = i + sk - sq;
                int64_t       lo = 0, hi = sk;
                if (c.wl >= 0 && diag - c.wl > lo) lo = diag - c.wl;
                const int64_t wr = c.causal ? 0 : c.wr;
                if (wr >= 0 && diag + wr + 1 < hi) hi = diag + wr + 1;
                std::vector<double> sc, vv;
                for (int64_t j = lo; j < hi; j++) {
                    bool          ok;
                    const int64_t off = where(j, &ok);
                    if (!ok) continue;
                    const char *krow = j < cs[b] ? &kc0[off * es] : kn + ((b * sn + j - cs[b]) * row_el) * es;
                    const char *vrow = j < cs[b] ? &vc0[off * es] : vn + ((b * sn + j - cs[b]) * row_el) * es;
                    double      x    = 0;
                    for (int64_t d = 0; d < D; d++)
                        x += ld(q, c.dt, ((b * sq + i) * hq + h) * D + d) * (double)t->scale * ld(krow, c.dt, hk * D + d);
                    if (c.softcap > 0) x = c.softcap * tanh(x / c.softcap);
                    if (c.alibi) x -= slopes[b * t->alibi_bs + h] * (double)llabs(diag - j);
                    sc.push_back(x);
                    for (int64_t d = 0; d < D; d++) vv.push_back(ld(vrow, c.dt, hk * D + d));
                }
                double m = -INFINITY, l = 0;
                for (double x : sc) m = fmax(m, x);
                for (double x : sc) l += exp(x - m);
                const double rl = sc.empty() ? -INFINITY : m + log(l), gl = lse[(b * hq + h) * sq + i];
                if (!(sc.empty() ? gl == -INFINITY : fabs(gl - rl) <= 1e-4)) fails++;
                for (int64_t d = 0; d < D; d++) {
                    double r = 0;
                    for (size_t k = 0; k < sc.size(); k++) r += exp(sc[k] - m) / l * vv[k * D + d];
                    const double g = ld(o, c.dt, ((b * sq + i) * hq + h) * D + d), err = fabs(g - r);
                    if (!(err <= tol)) fails++;
                    if (err > max_err || isnan(err)) max_err = isnan(err) ? INFINITY : err;
                }
            }
    }
    const bool cache_ok = memcmp(kc, kexp.data(), ncache * es) == 0 && memcmp(vc, vexp.data(), ncache * es) == 0;
    printf("%s %s d=%d B=%d sq=%d snew=%d hq=%d hkv=%d cap=%d page=%d bidx=%d causal=%d w=(%d,%d) softcap=%g "
           "alibi=%d splits=%d->%d bad=%d: max_err %.3g (tol %.1e), cache %s, ws %zu\n",
           fails || !cache_ok ? "FAIL" : "ok  ", fk_dtype_name(c.dt), c.D, c.B, c.sq, c.snew, c.hq, c.hkv, c.cap, c.page,
           c.bidx, c.causal, c.wl, c.wr, (double)c.softcap, c.alibi, c.splits, pl.ns, c.bad, max_err, tol,
           cache_ok ? "ok" : "DIFFERS", need);
    for (char *p : heap) free(p);
    return fails || !cache_ok;
}

int main() {
    const fk_dtype F32 = FK_DTYPE_F32, F16 = FK_DTYPE_F16, BF16 = FK_DTYPE_BF16;
    const Case cases[] = {
        // dt    B  sq snew hq hkv  D  cap page bidx causal wl  wr softcap alibi splits bad
        {F32, 3, 1, 1, 8, 2, 64, 100, 0, 0, 1, -1, -1, 0, 0, 0, 0},     // decode, GQA 4, auto splits
        {F32, 3, 1, 1, 8, 2, 64, 100, 0, 0, 1, -1, -1, 0, 0, 1, 0},     // one split: no combine
        {F32, 3, 1, 1, 8, 2, 64, 300, 0, 0, 1, -1, -1, 0, 0, 3, 0},     // combine
        {F16, 2, 4, 4, 8, 1, 64, 200, 0, 0, 1, -1, -1, 0, 0, 7, 0},     // MQA, sq 4
        {BF16, 2, 3, 2, 4, 2, 128, 256, 16, 0, 1, -1, -1, 0, 0, 3, 0},  // paged
        {F32, 3, 2, 2, 4, 2, 37, 120, 0, 1, 0, -1, -1, 0, 0, 2, 0},     // scalar loads, cache_batch_idx
        {F16, 2, 3, 3, 4, 2, 40, 150, 16, 0, 0, 20, 5, 0, 0, 3, 0},     // window both sides, paged
        {F32, 2, 1, 1, 4, 2, 64, 100, 0, 0, 1, -1, -1, 30, 1, 1, 0},    // softcap + ALiBi [hq]
        {F32, 2, 2, 1, 4, 1, 64, 96, 16, 0, 1, -1, -1, 0, 2, 2, 0},     // ALiBi [B, hq], paged MQA
        {F32, 1, 40, 40, 4, 2, 64, 100, 0, 0, 1, -1, -1, 0, 0, 2, 0},   // 5 row blocks
        {BF16, 2, 2, 1, 8, 2, 256, 90, 0, 0, 1, -1, -1, 0, 0, 2, 0},    // d 256 (KD 2, opt-in shared memory)
        {F16, 2, 1, 1, 4, 2, 200, 64, 16, 0, 1, -1, -1, 10, 1, 0, 0},   // d 200, scalar tail
        {F32, 3, 3, 1, 2, 1, 1, 30, 0, 1, 0, 4, 2, 0, 0, 0, 0},         // d 1
        {F32, 2, 1, 0, 4, 2, 64, 50, 0, 0, 0, -1, -1, 0, 0, 3, 0},      // no new keys
        {F32, 1, 1, 1, 8, 1, 64, 1100, 0, 0, 1, 100, -1, 0, 0, 7, 0},   // sliding window: empty chunks
        {F32, 4, 2, 1, 4, 2, 32, 100, 0, 1, 1, -1, -1, 0, 0, 3, 1},     // bad cache_seqlens / batch_idx
        {F32, 4, 2, 1, 4, 2, 32, 100, 0, 1, 1, -1, -1, 0, 0, 1, 1},     // the same, one split
        {F16, 3, 1, 1, 4, 2, 64, 64, 16, 0, 0, -1, -1, 0, 0, 3, 2},     // bad block ids
        {F32, 2, 1, 0, 4, 2, 64, 50, 0, 0, 1, -1, -1, 0, 0, 3, 3},      // empty caches, no new keys: o 0, lse -inf
    };
    int bad = 0;
    for (const Case &c : cases) bad += run(c);
    printf("%d launches; %s\n", g_launches, bad ? "FAILURES" : "all ok");
    return bad != 0;
}
