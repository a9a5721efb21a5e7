/*
 * rope.cu — CUDA rotary position embedding, forward and backward (the inverse rotation), on q and k in one
 * launch (semantics and precision: src/core/ops_internal.h, fk_rope_problem).
 *
 * Work split. A token's heads (q's, then k's) all use the same cos/sin, so each thread owns one "unit" of a
 * head — NP rotation pairs (half-split: features [i0, i0 + NP) and [half + i0, ...), one 16-byte vector each;
 * interleaved: one 16-byte vector of NP pairs) or one vector of the unrotated tail — and applies it to every
 * G-th head of the token: the angles are formed (or read from the tables) once per thread and token, not once
 * per head. A thread loads the vectors of up to HIF heads before it stores any, so several 16-byte
 * loads are in flight per thread even though outputs may alias inputs (in place): heads never overlap.
 * One pass: every input byte is read once and every output byte written once (the tables add [seqlen, half]
 * once per token, from L2 after the first head group).
 *
 * Per-token kernel (rope_tok_kernel, production where fk_rope_tok_covers() holds: half-split, 16-byte vectors
 * everywhere, fp32 or computed tables, half <= 256, 32-bit head offsets): the same units, but a thread's
 * heads are taken one at a time (1 head in flight), its token's base pointers are formed once per token with
 * 32-bit head offsets and a 32-bit token division, fp32 tables are read as float4, and a block holds ty tokens
 * in a grid-stride loop. Measured against rope_kernel on an H200 (bf16, q and k 32 heads x 128, 16K tokens,
 * tables): fwd 3818 vs 3171 GB/s, bwd 3847 vs 3155 (docs/PERF.md, "GPU: fused ops"). rope_kernel takes the rest
 * (interleaved, unaligned, tables in the storage dtype, half > 256).
 *
 * Angles computed from base: theta = p * inv_freq[i] in double (inv_freq from the host's pow, bit-identical
 * to the CPU backend's), reduced to [-pi, pi] with a two-constant Cody-Waite step (exact to ~1e-16 for any
 * p below 2^52 / 2pi), then sincosf in fp32: positions in the thousands lose nothing (fp32 theta would be
 * off by p * 6e-8 radians).
 *
 * Positions read from a tensor with cos/sin tables given must lie in [0, max_position). The CUDA backend has
 * no workspace for a device-side flag, and a kernel cannot fail a call after it was queued, so the positions
 * are copied to the host (in chunks of kPosChunk, on the caller's stream, then a stream synchronize) and
 * checked before any kernel is launched: an out-of-range position returns FK_STATUS_BAD_PARAM_VALUE naming
 * (b, s), with nothing written, exactly as on the CPU. The cost is one synchronization (and the copy) on that
 * path only; such a call cannot be captured in a CUDA graph. Positions with computed angles, and pos_offset
 * with tables (checked by the core), stay fully asynchronous.
 */
#include "../core/ops_select.h"
#include "ops_common.cuh"

#include <math.h>
#include <string.h>

using namespace fk_ops;

namespace {

constexpr int kInvFreqMax     = FK_ROPE_TOK_HALF_MAX; // inv_freq in the kernel parameters (2 KiB); beyond, exp2
// rope_kernel: threads a block aims at (at most 128: __launch_bounds__) and heads in flight per thread.
// Measured (dev/cuda/ops_tune.cu: q and k 32 heads x 128, 16K tokens, bf16, tables fp32, H100): 64 threads x 4
// heads 2524 GB/s, 128 x 4 2471, 256 x 4 2164; 1-2 heads within 1%, 8 heads 25-50% slower (registers).
constexpr int kThreadsTarget  = 64;
constexpr int kHeadsInFlight  = 4; // heads a thread loads before it stores (x 2 x 16 B in flight)
// rope_tok_kernel: g head groups per token and threads a block. H200, run of 2026-11-30, bench/next_ops.sh,
// commit d3c1cfc (bf16, q and k 32 heads x 128, 16K tokens, fp32 tables; GB/s): g 8 with 1 head in flight won
// both passes (g 1 / 2: 3157-3611; 2 or 4 heads in flight: 3141-3288); fwd 256 threads 3818 (64: 3781,
// 128: 3785), bwd 64 threads 3847 (128: 3820, 256: 3809).
constexpr int kTokGroups = 8, kTokThreadsFwd = 256, kTokThreadsBwd = 64;
constexpr int64_t kPosChunk   = 2048; // positions copied to the host per round for the range check

struct RopeArgs {
    const void *q, *k;
    void       *qo, *ko;
    int64_t     q_bs, q_ss, q_hs, qo_bs, qo_ss, qo_hs;
    int64_t     k_bs, k_ss, k_hs, ko_bs, ko_ss, ko_hs;
    int64_t     tokens, seqlen;
    int         nheads_q, nheads_total;
    int         rd, half;
    int         units_rot, units_tail, tail_vec; // rotation units per head, tail units, tail unit = 16 B?
    int         ux, g, ty;                        // threads per token: ux units x g head groups; tokens a block
    const void *pos;
    int         pos64;
    int64_t     pos_bs, pos_ss, pos_offset;
    const void *cos_tab, *sin_tab;
    int         cs_f32;
    int         tab_vec; // fp32 tables 16-byte aligned with row strides a multiple of 4 (rope_tok_kernel: float4)
    int64_t     cos_rs, sin_rs;
    float       sign; // +1 forward, -1 backward
    double      log2_base, inv_rd2; // inv_freq = 2^(-2 i / rd * log2(base)) for i >= kInvFreqMax
    double      inv_freq[kInvFreqMax];
};

__device__ __forceinline__ int64_t token_position(const RopeArgs &a, int64_t b, int64_t s) {
    if (!a.pos) return a.pos_offset + s;
    const int64_t off = b * a.pos_bs + s * a.pos_ss;
    return a.pos64 ? static_cast<const int64_t *>(a.pos)[off] : (int64_t) static_cast<const int32_t *>(a.pos)[off];
}

// cos/sin of pairs [i0, i0 + NP) at position p (sin times the direction's sign). VT (rope_tok_kernel): fp32
// tables as float4 when a.tab_vec; computed angles only for half <= kInvFreqMax (no exp2 path).
template <typename T, int NP, bool VT = false>
__device__ __forceinline__ void angles(const RopeArgs &a, int64_t p, int i0, float (&c)[NP], float (&s)[NP]) {
    if (a.cos_tab) {
        if (VT && NP % 4 == 0 && a.tab_vec) {
            const float *cp = static_cast<const float *>(a.cos_tab) + p * a.cos_rs + i0;
            const float *sp = static_cast<const float *>(a.sin_tab) + p * a.sin_rs + i0;
#pragma unroll
            for (int k = 0; k < NP; k += 4) {
                const float4 cq = *reinterpret_cast<const float4 *>(cp + k), sq = *reinterpret_cast<const float4 *>(sp + k);
                c[k] = cq.x, c[k + 1] = cq.y, c[k + 2] = cq.z, c[k + 3] = cq.w;
                s[k] = sq.x, s[k + 1] = sq.y, s[k + 2] = sq.z, s[k + 3] = sq.w;
            }
        } else if (a.cs_f32) {
            const float *cp = static_cast<const float *>(a.cos_tab) + p * a.cos_rs + i0;
            const float *sp = static_cast<const float *>(a.sin_tab) + p * a.sin_rs + i0;
#pragma unroll
            for (int k = 0; k < NP; k++) c[k] = cp[k], s[k] = sp[k];
        } else {
            const T *cp = static_cast<const T *>(a.cos_tab) + p * a.cos_rs + i0;
            const T *sp = static_cast<const T *>(a.sin_tab) + p * a.sin_rs + i0;
#pragma unroll
            for (int k = 0; k < NP; k++) c[k] = Dt<T>::to_f(cp[k]), s[k] = Dt<T>::to_f(sp[k]);
        }
    } else {
        const double two_pi_hi = 6.283185307179586232, two_pi_lo = 2.4492935982947064e-16;
        const double inv_two_pi = 0.15915494309189533577;
#pragma unroll
        for (int k = 0; k < NP; k++) {
            const int    i  = i0 + k;
            const double f  = VT || i < kInvFreqMax ? a.inv_freq[i] : exp2(-2.0 * (double)i * a.inv_rd2 * a.log2_base);
            const double th = (double)p * f;
            const double m  = rint(th * inv_two_pi);
            const double r  = fma(-m, two_pi_lo, fma(-m, two_pi_hi, th));
            sincosf((float)r, &s[k], &c[k]);
        }
    }
#pragma unroll
    for (int k = 0; k < NP; k++) s[k] *= a.sign;
}

// Element offsets of head hh (q's heads first, then k's) of token (b, s), input and output.
struct HeadPtr {
    const char *in;
    char       *out;
};
template <typename T> __device__ __forceinline__ HeadPtr head_ptr(const RopeArgs &a, int64_t b, int64_t s, int hh) {
    HeadPtr p;
    if (hh < a.nheads_q) {
        p.in  = (const char *)(static_cast<const T *>(a.q) + b * a.q_bs + s * a.q_ss + hh * a.q_hs);
        p.out = (char *)(static_cast<T *>(a.qo) + b * a.qo_bs + s * a.qo_ss + hh * a.qo_hs);
    } else {
        const int h = hh - a.nheads_q;
        p.in        = (const char *)(static_cast<const T *>(a.k) + b * a.k_bs + s * a.k_ss + h * a.k_hs);
        p.out       = (char *)(static_cast<T *>(a.ko) + b * a.ko_bs + s * a.ko_ss + h * a.ko_hs);
    }
    return p;
}

// NP pairs per rotation unit; IL interleaved. Half-split units are two packs of NP elements (i0 and half + i0),
// interleaved units one pack of 2 NP elements at 2 i0. Scalar fallback: NP = 1.
template <typename T, int NP, bool IL, int HIF> __global__ void __launch_bounds__(128) rope_kernel(const RopeArgs a) {
    constexpr int PN = IL ? 2 * NP : NP; // elements per pack
    using P          = Pack<T, PN>;
    const int64_t t  = (int64_t)blockIdx.x * a.ty + threadIdx.y;
    if (t >= a.tokens) return;
    const int64_t b = t / a.seqlen, s = t - b * a.seqlen;
    const int     ux = threadIdx.x % a.ux, g = threadIdx.x / a.ux;
    const int     units = a.units_rot + a.units_tail;
    int64_t       p     = -1;
    for (int u = ux; u < units; u += a.ux) {
        if (u < a.units_rot) {
            if (p < 0) p = token_position(a, b, s);
            const int i0 = u * NP;
            float     c[NP], sn[NP];
            angles<T, NP>(a, p, i0, c, sn);
            const int o1 = IL ? 2 * i0 : i0, o2 = a.half + i0; // element offsets of the packs
            for (int h0 = g; h0 < a.nheads_total; h0 += HIF * a.g) {
                P x1[HIF], x2[HIF];
#pragma unroll
                for (int j = 0; j < HIF; j++) {
                    const int hh = h0 + j * a.g;
                    if (hh < a.nheads_total) {
                        const HeadPtr hp = head_ptr<T>(a, b, s, hh);
                        x1[j]            = load_pack<T, PN>(reinterpret_cast<const T *>(hp.in) + o1);
                        if (!IL) x2[j] = load_pack<T, PN>(reinterpret_cast<const T *>(hp.in) + o2);
                    }
                }
#pragma unroll
                for (int j = 0; j < HIF; j++) {
                    const int hh = h0 + j * a.g;
                    if (hh < a.nheads_total) {
                        const HeadPtr hp = head_ptr<T>(a, b, s, hh);
                        if (IL) {
                            float f[PN];
                            unpack<T, PN>(x1[j], f);
#pragma unroll
                            for (int k = 0; k < NP; k++) {
                                const float e1 = f[2 * k], e2 = f[2 * k + 1];
                                f[2 * k]       = e1 * c[k] - e2 * sn[k];
                                f[2 * k + 1]   = e1 * sn[k] + e2 * c[k];
                            }
                            store_pack<T, PN>(reinterpret_cast<T *>(hp.out) + o1, pack<T, PN>(f));
                        } else {
                            float f1[PN], f2[PN];
                            unpack<T, PN>(x1[j], f1);
                            unpack<T, PN>(x2[j], f2);
#pragma unroll
                            for (int k = 0; k < NP; k++) {
                                const float e1 = f1[k], e2 = f2[k];
                                f1[k]          = e1 * c[k] - e2 * sn[k];
                                f2[k]          = e1 * sn[k] + e2 * c[k];
                            }
                            store_pack<T, PN>(reinterpret_cast<T *>(hp.out) + o1, pack<T, PN>(f1));
                            store_pack<T, PN>(reinterpret_cast<T *>(hp.out) + o2, pack<T, PN>(f2));
                        }
                    }
                }
            }
        } else {
            // Unrotated tail: copied (nothing to do where the output is the input).
            const int tu = u - a.units_rot;
            for (int hh = g; hh < a.nheads_total; hh += a.g) {
                const HeadPtr hp = head_ptr<T>(a, b, s, hh);
                if (hp.in == hp.out) continue;
                if (a.tail_vec) {
                    constexpr int V = kVec<T>;
                    const int     o = a.rd + tu * V;
                    store_pack<T, V>(reinterpret_cast<T *>(hp.out) + o,
                                     load_pack<T, V>(reinterpret_cast<const T *>(hp.in) + o));
                } else {
                    const int o                         = a.rd + tu;
                    reinterpret_cast<T *>(hp.out)[o] = reinterpret_cast<const T *>(hp.in)[o];
                }
            }
        }
    }
}

// Per-token kernel: half-split, NP = kVec<T> pairs a unit, every view 16-byte aligned (fk_rope_tok_covers).
// Thread (x, y): unit x % ux and head group x / ux of token blockIdx.x * ty + y, then every gridDim.x * ty
// tokens; its heads g apart, one at a time. Min 4 blocks of 256 a SM caps it at 64 registers, what it was
// measured with: without the cap ptxas took 72 (sm_80/sm_90), or spilled 4 bytes around sincosf's slow-path
// call where the exp2 path of angles() was compiled in.
template <typename T> __global__ void __launch_bounds__(256, 4) rope_tok_kernel(const RopeArgs a) {
    constexpr int  NP = kVec<T>;
    using P           = Pack<T, NP>;
    const int      u0 = threadIdx.x % a.ux, g0 = threadIdx.x / a.ux;
    const int      units = a.units_rot + a.units_tail;
    // 32-bit head offsets and token arithmetic (fk_rope_tok_covers bounds both below 2^31).
    const int      q_hs = (int)a.q_hs, qo_hs = (int)a.qo_hs, k_hs = (int)a.k_hs, ko_hs = (int)a.ko_hs;
    const uint32_t tokens = (uint32_t)a.tokens, seqlen = (uint32_t)a.seqlen;
    for (uint32_t t = blockIdx.x * a.ty + threadIdx.y; t < tokens; t += gridDim.x * a.ty) {
        const uint32_t b = t / seqlen, s = t - b * seqlen;
        const T       *qi = static_cast<const T *>(a.q) + b * a.q_bs + s * a.q_ss;
        T             *qo = static_cast<T *>(a.qo) + b * a.qo_bs + s * a.qo_ss;
        const T       *ki = a.k ? static_cast<const T *>(a.k) + b * a.k_bs + s * a.k_ss : nullptr;
        T             *ko = a.k ? static_cast<T *>(a.ko) + b * a.ko_bs + s * a.ko_ss : nullptr;
        const int64_t  p  = token_position(a, b, s);
        for (int u = u0; u < units; u += a.ux) {
            if (u < a.units_rot) {
                const int i0 = u * NP, o2 = a.half + i0;
                float     c[NP], sn[NP];
                angles<T, NP, true>(a, p, i0, c, sn);
                for (int hh = g0; hh < a.nheads_total; hh += a.g) {
                    const T *in  = hh < a.nheads_q ? qi + hh * q_hs : ki + (hh - a.nheads_q) * k_hs;
                    T       *out = hh < a.nheads_q ? qo + hh * qo_hs : ko + (hh - a.nheads_q) * ko_hs;
                    float    f1[NP], f2[NP];
                    unpack<T, NP>(load_pack<T, NP>(in + i0), f1);
                    unpack<T, NP>(load_pack<T, NP>(in + o2), f2);
#pragma unroll
                    for (int k = 0; k < NP; k++) {
                        const float e1 = f1[k], e2 = f2[k];
                        f1[k]          = e1 * c[k] - e2 * sn[k];
                        f2[k]          = e1 * sn[k] + e2 * c[k];
                    }
                    store_pack<T, NP>(out + i0, pack<T, NP>(f1));
                    store_pack<T, NP>(out + o2, pack<T, NP>(f2));
                }
            } else {
                const int o = a.rd + (u - a.units_rot) * NP; // unrotated tail: copied where out is not in
                for (int hh = g0; hh < a.nheads_total; hh += a.g) {
                    const T *in  = hh < a.nheads_q ? qi + hh * q_hs : ki + (hh - a.nheads_q) * k_hs;
                    T       *out = hh < a.nheads_q ? qo + hh * qo_hs : ko + (hh - a.nheads_q) * ko_hs;
                    if (in != out) store_pack<T, NP>(out + o, load_pack<T, NP>(in + o));
                }
            }
        }
    }
}

// --- host ------------------------------------------------------------------------------------------------

// Range check of positions read from a tensor against the tables (see the file comment).
fk_status check_positions(const char *op, const fk_rope_problem *p, cudaStream_t st) {
    const size_t es = p->pos_dtype == FK_DTYPE_INT64 ? 8 : 4;
    int64_t      buf[kPosChunk]; // int32 positions use the first half as int32
    const int64_t rows = (p->pos_bs == 0 || p->batch == 1) ? 1 : p->batch;
    for (int64_t b = 0; b < rows; b++)
        for (int64_t s0 = 0; s0 < p->seqlen; s0 += kPosChunk) {
            const int64_t n   = p->seqlen - s0 < kPosChunk ? p->seqlen - s0 : kPosChunk;
            const char   *src = (const char *)p->positions + (b * p->pos_bs + s0 * p->pos_ss) * (int64_t)es;
            cudaError_t   e   = p->seqlen == 1 || p->pos_ss == 1
                                    ? cudaMemcpyAsync(buf, src, (size_t)n * es, cudaMemcpyDeviceToHost, st)
                                    : cudaMemcpy2DAsync(buf, es, src, (size_t)p->pos_ss * es, es, (size_t)n,
                                                        cudaMemcpyDeviceToHost, st);
            if (e == cudaSuccess) e = cudaStreamSynchronize(st);
            if (e != cudaSuccess)
                return fk_error(FK_STATUS_CUDA_ERROR, "%s: copying positions to the host for the range check: %s", op,
                                cudaGetErrorString(e));
            for (int64_t i = 0; i < n; i++) {
                const int64_t pos = es == 8 ? buf[i] : (int64_t)((const int32_t *)buf)[i];
                if (pos < 0 || pos >= p->max_position)
                    return fk_error(FK_STATUS_BAD_PARAM_VALUE,
                                    "%s: positions[%lld][%lld] = %lld is outside cos/sin's [0, %lld)", op,
                                    (long long)b, (long long)(s0 + i), (long long)pos, (long long)p->max_position);
            }
        }
    return FK_STATUS_SUCCESS;
}

// Is every q/k/out view 16-byte aligned (pointer and the strides of extents > 1)?
bool views_aligned(const fk_rope_problem *p, size_t es) {
    auto st = [&](int64_t stride, int64_t extent) { return extent > 1 ? stride : 0; };
    bool ok = aligned16(p->q, es, st(p->q_bs, p->batch), st(p->q_ss, p->seqlen), st(p->q_hs, p->nheads_q)) &&
              aligned16(p->q_out, es, st(p->q_out_bs, p->batch), st(p->q_out_ss, p->seqlen),
                        st(p->q_out_hs, p->nheads_q));
    if (p->k)
        ok = ok && aligned16(p->k, es, st(p->k_bs, p->batch), st(p->k_ss, p->seqlen), st(p->k_hs, p->nheads_k)) &&
             aligned16(p->k_out, es, st(p->k_out_bs, p->batch), st(p->k_out_ss, p->seqlen),
                       st(p->k_out_hs, p->nheads_k));
    return ok;
}

template <typename T> const void *pick(bool vec, bool il) {
    constexpr int V = kVec<T>, H = kHeadsInFlight;
    if (vec) return il ? (const void *)rope_kernel<T, V / 2, true, H> : (const void *)rope_kernel<T, V, false, H>;
    return il ? (const void *)rope_kernel<T, 1, true, H> : (const void *)rope_kernel<T, 1, false, H>;
}

// allow_tok = false forces rope_kernel (dev/cuda/ops_tune.cu times the two).
fk_status run(const struct fk_context *ctx, const fk_rope_problem *p, void *stream, bool bwd, bool allow_tok = true) {
    const char *op = bwd ? "rope_bwd" : "rope_fwd";
    if (p->dtype != FK_DTYPE_F32 && p->dtype != FK_DTYPE_F16 && p->dtype != FK_DTYPE_BF16)
        return fk_error(FK_STATUS_NOT_SUPPORTED_DTYPE, "%s: dtype %s is not supported on CUDA", op,
                        fk_dtype_name(p->dtype));
    const int64_t htot = p->nheads_q + (p->k ? p->nheads_k : 0);
    if (htot > 0x7fffffff || p->head_dim > 0x7fffffff)
        return fk_error(FK_STATUS_NOT_SUPPORTED_FEATURE, "%s: more than 2^31 heads or head_dim on CUDA", op);
    DeviceScope scope(ctx->device.index);
    FK_TRY(scope_status(op, scope, ctx->device.index));
    cudaStream_t st = (cudaStream_t)stream;
    if (p->positions && p->cos_tab) FK_TRY(check_positions(op, p, st));

    RopeArgs r;
    memset(&r, 0, sizeof r);
    const size_t es   = fk_dtype_size(p->dtype);
    const int    V    = (int)(16 / es);
    const int    half = (int)(p->rotary_dim / 2);
    const bool   il   = p->interleaved != 0;
    const bool   alg  = views_aligned(p, es);
    const bool   vec  = alg && (il ? p->rotary_dim % V == 0 : half % V == 0);
    const int    np   = vec ? (il ? V / 2 : V) : 1;
    r.q = p->q, r.qo = p->q_out, r.k = p->k, r.ko = p->k_out;
    r.q_bs = p->q_bs, r.q_ss = p->q_ss, r.q_hs = p->q_hs;
    r.qo_bs = p->q_out_bs, r.qo_ss = p->q_out_ss, r.qo_hs = p->q_out_hs;
    r.k_bs = p->k_bs, r.k_ss = p->k_ss, r.k_hs = p->k_hs;
    r.ko_bs = p->k_out_bs, r.ko_ss = p->k_out_ss, r.ko_hs = p->k_out_hs;
    r.tokens = p->batch * p->seqlen, r.seqlen = p->seqlen;
    r.nheads_q = (int)p->nheads_q, r.nheads_total = (int)htot;
    r.rd = (int)p->rotary_dim, r.half = half;
    r.units_rot = half / np;
    // The tail is copied only where some output is not its input.
    const bool need_tail = p->rotary_dim < p->head_dim && (p->q_out != p->q || (p->k && p->k_out != p->k));
    r.tail_vec   = alg && p->rotary_dim % V == 0 && p->head_dim % V == 0;
    r.units_tail = need_tail ? (int)((p->head_dim - p->rotary_dim) / (r.tail_vec ? V : 1)) : 0;
    r.pos = p->positions, r.pos64 = p->pos_dtype == FK_DTYPE_INT64, r.pos_bs = p->pos_bs, r.pos_ss = p->pos_ss;
    r.pos_offset = p->pos_offset;
    r.cos_tab = p->cos_tab, r.sin_tab = p->sin_tab, r.cs_f32 = p->cs_dtype == FK_DTYPE_F32;
    r.cos_rs = p->cos_rs, r.sin_rs = p->sin_rs;
    r.sign = bwd ? -1.0f : 1.0f;
    r.log2_base = log2((double)p->base), r.inv_rd2 = 1.0 / (double)p->rotary_dim;
    if (!p->cos_tab)
        for (int i = 0; i < half && i < kInvFreqMax; i++)
            r.inv_freq[i] = pow((double)p->base, -2.0 * (double)i / (double)p->rotary_dim); // the CPU's expression

    const int  units = r.units_rot + r.units_tail;
    const bool tok   = allow_tok && fk_rope_tok_covers(p, (int64_t)es);
    // Threads: ux units x g head groups per token, ty tokens per block (rope_kernel: ~kThreadsTarget in all, g
    // as large as that allows; rope_tok_kernel: g = kTokGroups, at most 256 threads a token).
    const int target = tok ? (bwd ? kTokThreadsBwd : kTokThreadsFwd) : kThreadsTarget;
    r.ux             = units < target ? units : target;
    const int gmax   = tok ? 256 / r.ux : target / r.ux;
    const int gwant  = tok ? kTokGroups : gmax;
    r.g              = (int)(htot < gwant ? htot : gwant);
    if (r.g > gmax) r.g = gmax;
    if (r.g < 1) r.g = 1;
    const int tx = r.ux * r.g;
    r.ty         = target / tx;
    if (r.ty < 1) r.ty = 1;
    if (r.ty > r.tokens) r.ty = (int)r.tokens;
    const int64_t blocks = ceil_div(r.tokens, r.ty);
    if (blocks > 0x7fffffff)
        return fk_error(FK_STATUS_NOT_SUPPORTED_FEATURE, "%s: batch x seqlen = %lld is beyond the CUDA grid", op,
                        (long long)r.tokens);
    r.tab_vec = tok && p->cos_tab && (uintptr_t)p->cos_tab % 16 == 0 && (uintptr_t)p->sin_tab % 16 == 0 &&
                p->cos_rs % 4 == 0 && p->sin_rs % 4 == 0;

    const void *k;
    if (tok)
        k = p->dtype == FK_DTYPE_F32   ? (const void *)rope_tok_kernel<float>
            : p->dtype == FK_DTYPE_F16 ? (const void *)rope_tok_kernel<__half>
                                       : (const void *)rope_tok_kernel<__nv_bfloat16>;
    else
        k = p->dtype == FK_DTYPE_F32   ? pick<float>(vec, il)
            : p->dtype == FK_DTYPE_F16 ? pick<__half>(vec, il)
                                       : pick<__nv_bfloat16>(vec, il);
    void *params[] = {&r};
    return launch_result(op, tok ? "rope_tok_kernel" : "rope_kernel",
                         cudaLaunchKernel(k, dim3((unsigned)blocks), dim3((unsigned)tx, (unsigned)r.ty), params, 0, st));
}

} // namespace

extern "C" fk_status fk_cuda_rope_fwd(const struct fk_context *ctx, const fk_rope_problem *p, void *stream) {
    return run(ctx, p, stream, false);
}

extern "C" fk_status fk_cuda_rope_bwd(const struct fk_context *ctx, const fk_rope_problem *p, void *stream) {
    return run(ctx, p, stream, true);
}
