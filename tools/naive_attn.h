/*
 * naive_attn.h — the baseline that `flashkit bench` and `flashkit demo` compare flash attention with: the eager
 * matmul / softmax / matmul of a framework, fp32, materializing the [B, H, Sq, Sk] score matrices, threaded
 * with OpenMP on SIMD micro-kernels (so the comparison is about the algorithm, not about a slow loop).
 *
 * Layouts as the library's: q, o, do_, dq [B, Sq, H, D]; k, v, dk, dv [B, Sk, H, D], contiguous fp32
 * (one head count: no GQA). Causal is bottom-right aligned like fk_attn_fwd; a row that sees no key gives 0.
 * Forward  allocates S = scale * Q K^T and P = softmax(S)            (2 matrices of B*H*Sq*Sk floats).
 * Backward allocates P (recomputed), dP = dO V^T, dS = P * (dP - D)  (3 matrices), D = rowsum(dO * O).
 * Both also use one packed panel of the right-hand matrix per thread (K x 32 floats). The caller allocates
 * all of it once as `scratch` (its size from the *_scratch_bytes functions), so timed runs do not fault pages.
 */
#ifndef FK_NAIVE_ATTN_H
#define FK_NAIVE_ATTN_H

#include <stddef.h>
#include <stdint.h>

typedef struct naive_attn_shape {
    int64_t batch, seqlen_q, seqlen_k, nheads, head_dim;
    int     causal;
    float   scale; // 0 = 1/sqrt(head_dim)
} naive_attn_shape;

// Bytes of scratch each pass needs beyond its inputs and outputs (the matrices and the per-thread panels), for
// `threads` threads (the same value must be passed to the run).
size_t naive_attn_fwd_scratch_bytes(const naive_attn_shape *s, int threads);
size_t naive_attn_bwd_scratch_bytes(const naive_attn_shape *s, int threads);

// threads <= 0: OpenMP's default. scratch: 64-byte aligned, *_scratch_bytes(s, threads) long.
void naive_attn_fwd(const naive_attn_shape *s, int threads, const float *q, const float *k, const float *v, float *o,
                    void *scratch);
void naive_attn_bwd(const naive_attn_shape *s, int threads, const float *q, const float *k, const float *v,
                    const float *o, const float *do_, float *dq, float *dk, float *dv, void *scratch);

// Which micro-kernel runs here ("avx512", "avx2", "portable").
const char *naive_attn_isa(void);

#endif // FK_NAIVE_ATTN_H
