/*
 * bench_ring.c — ring attention on 2 GPUs (fk_ring_attn_fwd/bwd over NCCL) against single-GPU fk_attn_fwd/bwd
 * at the same total sequence length: time, tokens per second, and how much of the communication is hidden
 * behind compute.
 *
 *   t_single   one GPU, the whole sequence (fk_attn_fwd, or fwd then bwd)
 *   t_ring     2 GPUs, each its zigzag (causal) or contiguous (non-causal) half, the slowest rank's time
 *   t_compute  the same ring calls with FK_RING_SKIP_COMM=1: every kernel of the ring (K/V copies, attention
 *              steps, merges, gradient adds, conversions) and its stream/event traffic, but no transfer
 *   t_comm     the same NCCL send/recv pairs alone, same sizes and order (fwd: N-1 K/V hops; bwd: N-1 K/V hops
 *              plus N fp32 dK/dV hops)
 *   hidden     1 - (t_ring - t_compute) / t_comm, the fraction of communication time the ring did not pay
 *              (clipped to [0, 1] in the table; the raw value is printed beside it)
 * Every figure is the median of `reps` runs timed with CUDA events on the compute stream, ranks aligned by a
 * barrier before each run. Inputs are a constant bf16 pattern: attention time does not depend on the data.
 *
 * Usage: bench_ring [--quick] [--seqlens 16384,32768,...] [--heads 16] [--dim 128]
 * NVLink multicast stays off (NCCL_NVLS_ENABLE=0 and friends are set before NCCL is touched).
 */
#define _GNU_SOURCE
#include "flashkit.h"

#include <cuda_runtime.h>
#include <dlfcn.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define NR 2

typedef void *nccl_comm_t;
static struct {
    int (*init_all)(nccl_comm_t *, int, const int *);
    int (*destroy)(nccl_comm_t);
    int (*group_start)(void);
    int (*group_end)(void);
    int (*send)(const void *, size_t, int, int, nccl_comm_t, cudaStream_t);
    int (*recv)(void *, size_t, int, int, nccl_comm_t, cudaStream_t);
    const char *(*error_string)(int);
} nc;
enum { NCCL_UINT8 = 1 }; // ncclUint8 in nccl.h

#define CU(call)                                                                                              \
    do {                                                                                                      \
        cudaError_t e_ = (call);                                                                              \
        if (e_ != cudaSuccess) {                                                                              \
            fprintf(stderr, "bench_ring: %s:%d: %s: %s\n", __FILE__, __LINE__, #call, cudaGetErrorString(e_)); \
            exit(1);                                                                                          \
        }                                                                                                     \
    } while (0)
#define FK(call)                                                                                              \
    do {                                                                                                      \
        fk_status s_ = (call);                                                                                \
        if (s_ != FK_STATUS_SUCCESS) {                                                                        \
            fprintf(stderr, "bench_ring: %s:%d: %s: %s: %s\n", __FILE__, __LINE__, #call, fk_status_string(s_), \
                    fk_last_error_message());                                                                 \
            exit(1);                                                                                          \
        }                                                                                                     \
    } while (0)
#define NC(call)                                                                                              \
    do {                                                                                                      \
        int r_ = (call);                                                                                      \
        if (r_ != 0) {                                                                                        \
            fprintf(stderr, "bench_ring: %s:%d: %s: %s\n", __FILE__, __LINE__, #call, nc.error_string(r_));   \
            exit(1);                                                                                          \
        }                                                                                                     \
    } while (0)

typedef struct config {
    int64_t t, h, d;
    int     causal, bwd, reps;
} config;

typedef struct shared {
    pthread_barrier_t bar;
    const config     *cfg;
    fk_context_t      ctx[NR];
    nccl_comm_t       comm[NR];
    double            ms[NR][5]; // single, ring, compute, comm (per rank; single on rank 0 only)
} shared;

typedef struct rank_arg {
    shared *sh;
    int     rank;
} rank_arg;

static int cmp_d(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}
static double median(double *v, int n) {
    qsort(v, (size_t)n, sizeof *v, cmp_d);
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

static void *dev_alloc(size_t bytes) {
    void *p = NULL;
    CU(cudaMalloc(&p, bytes ? bytes : 1));
    CU(cudaMemset(p, 0x3c, bytes)); // bf16 0x3c3c ~ 0.0115 everywhere
    return p;
}

// An attention call on rows [q0, q0 + nq) of q and [k0, k0 + nk) of k/v (views of [1, S, H, D] buffers).
typedef struct tensors {
    void *q, *k, *v, *o, *dO, *dq, *dk, *dv, *lse;
    int64_t s, h, d;
} tensors;

static fk_attn_args view_args(const tensors *t, int64_t q0, int64_t nq, int64_t k0, int64_t nk, int causal,
                              fk_device dev) {
    const int64_t row = t->h * t->d;
    fk_attn_args  a;
    fk_attn_args_init(&a);
    fk_tensor q = fk_tensor_make((char *)t->q + q0 * row * 2, FK_DTYPE_BF16, dev, 4, (int64_t[]){1, nq, t->h, t->d});
    fk_tensor k = fk_tensor_make((char *)t->k + k0 * row * 2, FK_DTYPE_BF16, dev, 4, (int64_t[]){1, nk, t->h, t->d});
    q.stride[0] = k.stride[0] = t->s * row;
    a.q = q, a.k = k, a.v = k, a.v.data = (char *)t->v + k0 * row * 2;
    a.o = q, a.o.data = (char *)t->o + q0 * row * 2;
    a.do_ = q, a.do_.data = (char *)t->dO + q0 * row * 2;
    a.dq = q, a.dq.data = (char *)t->dq + q0 * row * 2;
    a.dk = k, a.dk.data = (char *)t->dk + k0 * row * 2;
    a.dv = k, a.dv.data = (char *)t->dv + k0 * row * 2;
    a.lse = fk_tensor_make((float *)t->lse + q0, FK_DTYPE_F32, dev, 3, (int64_t[]){1, t->h, nq});
    a.lse.stride[0] = t->h * t->s, a.lse.stride[1] = t->s;
    a.causal = causal;
    return a;
}

static void *rank_main(void *p) {
    rank_arg     *ra = p;
    shared       *sh = ra->sh;
    const config *c  = sh->cfg;
    const int     r  = ra->rank;
    const int64_t T = c->t, S = T / NR, H = c->h, D = c->d;
    fk_device     dev = {FK_DEVICE_CUDA, r};
    fk_context_t  ctx = sh->ctx[r];
    CU(cudaSetDevice(r));
    cudaStream_t s;
    CU(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
    cudaEvent_t e0, e1;
    CU(cudaEventCreate(&e0));
    CU(cudaEventCreate(&e1));
    const size_t nloc = (size_t)(S * H * D) * 2, lloc = (size_t)(H * S) * 4;
    tensors      L = {dev_alloc(nloc), dev_alloc(nloc), dev_alloc(nloc), dev_alloc(nloc), dev_alloc(nloc),
                      dev_alloc(nloc), dev_alloc(nloc), dev_alloc(nloc), dev_alloc(lloc), S, H, D};
    // Ring arguments.
    fk_ring_attn_args ring;
    fk_ring_attn_args_init(&ring);
    ring.attn        = view_args(&L, 0, S, 0, S, c->causal, dev);
    ring.nccl_comm   = sh->comm[r];
    ring.layout      = c->causal ? FK_RING_LAYOUT_ZIGZAG : FK_RING_LAYOUT_CONTIGUOUS;
    size_t w1 = 0, w2 = 0;
    FK(fk_ring_attn_fwd_workspace_size(ctx, &ring, &w1));
    FK(fk_ring_attn_bwd_workspace_size(ctx, &ring, &w2));
    void *ws = dev_alloc(w1 > w2 ? w1 : w2);
    // Comm-only buffers: a K/V slice (bf16) and a dK/dV slice (fp32), twice (send, receive).
    const size_t kvb = 2 * nloc, dkvb = 2 * (size_t)(S * H * D) * 4;
    void        *cb[2] = {dev_alloc(dkvb), dev_alloc(dkvb)};
    // Single GPU (rank 0): the whole sequence.
    tensors G;
    memset(&G, 0, sizeof G);
    void *wss = NULL;
    size_t ws1 = 0, ws2 = 0;
    if (r == 0) {
        const size_t ng = (size_t)(T * H * D) * 2, lg = (size_t)(H * T) * 4;
        G = (tensors){dev_alloc(ng), dev_alloc(ng), dev_alloc(ng), dev_alloc(ng), dev_alloc(ng), dev_alloc(ng),
                      dev_alloc(ng), dev_alloc(ng), dev_alloc(lg), T, H, D};
        fk_attn_args a = view_args(&G, 0, T, 0, T, c->causal, dev);
        FK(fk_attn_fwd_workspace_size(ctx, &a, &ws1));
        FK(fk_attn_bwd_workspace_size(ctx, &a, &ws2));
        wss = dev_alloc(ws1 > ws2 ? ws1 : ws2);
    }
    CU(cudaDeviceSynchronize());

    double *t = malloc(sizeof(double) * (size_t)(c->reps + 1));
    for (int what = 0; what < 4; what++) {
        if (what == 2 || what == 3) { // the environment changes only while every rank waits at the barrier
            pthread_barrier_wait(&sh->bar);
            if (r == 0) {
                if (what == 2) setenv("FK_RING_SKIP_COMM", "1", 1);
                else unsetenv("FK_RING_SKIP_COMM");
            }
            pthread_barrier_wait(&sh->bar);
        }
        for (int rep = 0; rep <= c->reps; rep++) { // rep 0 warms up
            pthread_barrier_wait(&sh->bar);
            if (what == 0 && r != 0) continue; // single GPU: rank 0 only
            CU(cudaEventRecord(e0, s));
            if (what == 0) {
                fk_attn_args a = view_args(&G, 0, T, 0, T, c->causal, dev);
                FK(fk_attn_fwd(ctx, &a, wss, ws1, s));
                if (c->bwd) FK(fk_attn_bwd(ctx, &a, wss, ws2, s));
            } else if (what == 1) {
                FK(fk_ring_attn_fwd(ctx, &ring, ws, w1, s));
                if (c->bwd) FK(fk_ring_attn_bwd(ctx, &ring, ws, w2, s));
            } else if (what == 2) { // the ring without its transfers (FK_RING_SKIP_COMM=1)
                FK(fk_ring_attn_fwd(ctx, &ring, ws, w1, s));
                if (c->bwd) FK(fk_ring_attn_bwd(ctx, &ring, ws, w2, s));
            } else {
                const int peer = 1 - r;
                for (int hop = 0; hop < NR - 1 + (c->bwd ? 2 * NR - 1 : 0); hop++) {
                    const size_t bytes = hop < NR - 1 || (c->bwd && hop < 2 * (NR - 1)) ? kvb : dkvb;
                    NC(nc.group_start());
                    NC(nc.send(cb[hop & 1], bytes, NCCL_UINT8, peer, sh->comm[r], s));
                    NC(nc.recv(cb[(hop & 1) ^ 1], bytes, NCCL_UINT8, peer, sh->comm[r], s));
                    NC(nc.group_end());
                }
            }
            CU(cudaEventRecord(e1, s));
            CU(cudaEventSynchronize(e1));
            float ms = 0;
            CU(cudaEventElapsedTime(&ms, e0, e1));
            if (rep > 0) t[rep - 1] = ms;
        }
        if (what != 0 || r == 0) sh->ms[r][what] = median(t, c->reps);
    }
    free(t);
    CU(cudaDeviceSynchronize());
    void *all[] = {L.q, L.k, L.v, L.o, L.dO, L.dq, L.dk, L.dv, L.lse, ws, cb[0], cb[1],
                   G.q, G.k, G.v, G.o, G.dO, G.dq, G.dk, G.dv, G.lse, wss};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
        if (all[i]) CU(cudaFree(all[i]));
    CU(cudaEventDestroy(e0));
    CU(cudaEventDestroy(e1));
    CU(cudaStreamDestroy(s));
    return NULL;
}

int main(int argc, char **argv) {
    // NVLink multicast off, before anything touches NCCL.
    setenv("NCCL_NVLS_ENABLE", "0", 1);
    setenv("TORCH_SYMM_MEM_DISABLE_MULTICAST", "1", 1);
    setenv("NVSHMEM_DISABLE_NVLS", "1", 1);
    int64_t seqlens[8] = {16384, 32768, 65536, 131072}, nseq = 4, heads = 16, dim = 128;
    int     quick = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--quick")) quick = 1;
        else if (!strcmp(argv[i], "--heads") && i + 1 < argc) heads = atoll(argv[++i]);
        else if (!strcmp(argv[i], "--dim") && i + 1 < argc) dim = atoll(argv[++i]);
        else if (!strcmp(argv[i], "--seqlens") && i + 1 < argc) {
            nseq = 0;
            for (char *tok = strtok(argv[++i], ","); tok && nseq < 8; tok = strtok(NULL, ",")) seqlens[nseq++] = atoll(tok);
        } else {
            fprintf(stderr, "usage: bench_ring [--quick] [--seqlens a,b,...] [--heads H] [--dim D]\n");
            return 2;
        }
    }
    if (quick) seqlens[0] = 4096, seqlens[1] = 16384, nseq = 2;
    int ndev = 0;
    if (cudaGetDeviceCount(&ndev) != cudaSuccess || ndev < NR) {
        fprintf(stderr, "bench_ring: needs %d GPUs, %d visible\n", NR, ndev);
        return 1;
    }
    const char *env = getenv("FK_NCCL_LIBRARY"), *path = env && env[0] ? env : "libnccl.so.2";
    void       *h   = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    if (!h) {
        fprintf(stderr, "bench_ring: cannot load NCCL (%s): %s\n", path, dlerror());
        return 1;
    }
    *(void **)&nc.init_all     = dlsym(h, "ncclCommInitAll");
    *(void **)&nc.destroy      = dlsym(h, "ncclCommDestroy");
    *(void **)&nc.group_start  = dlsym(h, "ncclGroupStart");
    *(void **)&nc.group_end    = dlsym(h, "ncclGroupEnd");
    *(void **)&nc.send         = dlsym(h, "ncclSend");
    *(void **)&nc.recv         = dlsym(h, "ncclRecv");
    *(void **)&nc.error_string = dlsym(h, "ncclGetErrorString");
    if (!nc.init_all || !nc.destroy || !nc.group_start || !nc.group_end || !nc.send || !nc.recv || !nc.error_string) {
        fprintf(stderr, "bench_ring: NCCL lacks a needed symbol\n");
        return 1;
    }
    Dl_info info;
    if (dladdr(*(void **)&nc.send, &info) && info.dli_fname) printf("# NCCL: %s\n", info.dli_fname);
    shared sh;
    memset(&sh, 0, sizeof sh);
    const int devs[NR] = {0, 1};
    for (int r = 0; r < NR; r++) FK(fk_context_init((fk_device){FK_DEVICE_CUDA, r}, NULL, &sh.ctx[r]));
    NC(nc.init_all(sh.comm, NR, devs));
    pthread_barrier_init(&sh.bar, NULL, NR);
    fk_device_props props;
    FK(fk_get_device_props((fk_device){FK_DEVICE_CUDA, 0}, &props));
    printf("# bench_ring: 2 x %s, bf16, batch 1, heads %lld (q and kv), head_dim %lld; median of reps, CUDA events\n",
           props.name, (long long)heads, (long long)dim);
    printf("# hidden = 1 - (t_ring - t_compute) / t_comm; tok/s = total tokens / time\n");
    printf("%-7s %-6s %-7s %4s %10s %10s %7s %12s %12s %10s %10s %7s %8s\n", "seqlen", "causal", "pass", "reps",
           "single_ms", "ring_ms", "speedup", "single_tok/s", "ring_tok/s", "compute_ms", "comm_ms", "hidden",
           "raw");
    for (int si = 0; si < nseq; si++)
        for (int causal = 1; causal >= 0; causal--)
            for (int bwd = 0; bwd <= 1; bwd++) {
                const int64_t T = seqlens[si];
                config        c = {T, heads, dim, causal, bwd, T <= 32768 ? 10 : T <= 65536 ? 5 : 3};
                if (T % (2 * NR) != 0) {
                    fprintf(stderr, "bench_ring: seqlen %lld is not a multiple of %d\n", (long long)T, 2 * NR);
                    return 1;
                }
                sh.cfg = &c;
                pthread_t th[NR];
                rank_arg  ra[NR];
                for (int r = 0; r < NR; r++) {
                    ra[r] = (rank_arg){&sh, r};
                    pthread_create(&th[r], NULL, rank_main, &ra[r]);
                }
                for (int r = 0; r < NR; r++) pthread_join(th[r], NULL);
                double single = sh.ms[0][0], ringt = 0, comp = 0, comm = 0;
                for (int r = 0; r < NR; r++) {
                    ringt = sh.ms[r][1] > ringt ? sh.ms[r][1] : ringt;
                    comp  = sh.ms[r][2] > comp ? sh.ms[r][2] : comp;
                    comm  = sh.ms[r][3] > comm ? sh.ms[r][3] : comm;
                }
                const double raw = comm > 0 ? 1.0 - (ringt - comp) / comm : 0.0;
                const double hid = raw < 0 ? 0 : raw > 1 ? 1 : raw;
                printf("%-7lld %-6d %-7s %4d %10.3f %10.3f %7.2f %12.4g %12.4g %10.3f %10.3f %7.2f %8.2f\n",
                       (long long)T, causal, bwd ? "fwd+bwd" : "fwd", c.reps, single, ringt, single / ringt,
                       (double)T / (single * 1e-3), (double)T / (ringt * 1e-3), comp, comm, hid, raw);
                fflush(stdout);
            }
    pthread_barrier_destroy(&sh.bar);
    for (int r = 0; r < NR; r++) {
        nc.destroy(sh.comm[r]);
        fk_context_free(sh.ctx[r]);
    }
    return 0;
}
