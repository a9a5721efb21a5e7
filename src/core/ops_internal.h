/*
 * ops_internal.h — the resolved problems of the fused element-wise ops (RMSNorm, RoPE, SwiGLU) that
 * src/core/{rmsnorm,rope,swiglu}.c hand to a backend after every argument check has passed, and the backend
 * entry points. Backends trust these structs and check nothing, with one exception: positions held in a
 * tensor are data, so the backend that reads them checks their range (see fk_rope_problem).
 *
 * Conventions for every struct below
 *   - Strides are in elements (of that operand's dtype), 64-bit. The innermost stride is always 1, so only
 *     outer strides appear. A stride may be 0 (broadcast) where the public header allows it, and any stride
 *     of an extent-1 dimension is meaningless (the core copies it as given).
 *   - Pointers are on the context's device. An optional operand that is absent is NULL.
 *   - Outputs may alias inputs exactly (same pointer and strides: in place); partial overlap is undefined.
 *   - dtype fields hold FK_DTYPE_F32/F16/BF16, or F64 on the CPU only (the CUDA dispatch rejects F64 with
 *     FK_STATUS_NOT_SUPPORTED_DTYPE before calling a CUDA entry point).
 *   - Math is fp32 for f32/f16/bf16 storage and fp64 for f64 storage ("compute type" below).
 */
#ifndef FK_OPS_INTERNAL_H
#define FK_OPS_INTERNAL_H

#include "fk_internal.h"

#ifdef __cplusplus
extern "C" {
#endif

// --- RMSNorm ---------------------------------------------------------------------------------------------
// Forward, row r (0 <= r < rows), column j (0 <= j < hidden):
//   h[j]   = x[j]                                     (residual == NULL)
//   h[j]   = round_to_dtype(x[j] + residual[j])       (residual != NULL; h is stored to residual_out, and the
//                                                      rounded value is what is normalized, exactly as the
//                                                      unfused "h = x + r; y = rmsnorm(h)" would do)
//   rstd   = 1 / sqrt(sum_j h[j]^2 / hidden + eps)    (in the compute type)
//   y[j]   = h[j] * rstd * (weight_offset + weight[j])
//   rstd is stored when rstd != NULL.
// Backward, with h = x (the caller passes residual_out there when the add was fused) and rstd from forward:
//   g[j]      = dy[j] * (weight_offset + weight[j])
//   dx[j]     = rstd * (g[j] - h[j] * rstd^2 * (sum_k g[k] h[k]) / hidden) + dresidual_out[j] (when given)
//   dweight[j]= sum over rows of dy[j] * h[j] * rstd, accumulated in the compute type (fp32, f64 for f64)
//               in a deterministic order: fixed row partition, partial sums reduced in a fixed order.
typedef struct fk_rmsnorm_problem {
    int64_t  rows, hidden;
    fk_dtype dtype;         // x, residual, residual_out, y, dy, dresidual_out, dx
    fk_dtype weight_dtype;  // any float dtype
    fk_dtype dweight_dtype; // any float dtype (backward)
    fk_dtype rstd_dtype;    // F32, or F64 when dtype is F64

    // forward ([rows, hidden] row strides; weight and rstd are contiguous)
    const void *x;            int64_t x_rs;            // backward: this is h
    const void *residual;     int64_t residual_rs;     // NULL = no fused add
    void       *residual_out; int64_t residual_out_rs; // non-NULL exactly when residual != NULL (forward)
    const void *weight;                                // [hidden]
    void       *y;            int64_t y_rs;
    void       *rstd;                                  // [rows]; optional in forward, required (read) in backward

    // backward
    const void *dy;            int64_t dy_rs;
    const void *dresidual_out; int64_t dresidual_out_rs; // NULL = none
    void       *dx;            int64_t dx_rs;
    void       *dweight;                                 // [hidden]

    float eps;           // >= 0, finite
    float weight_offset; // 0 or 1
    int   deterministic; // backward: dweight bit-identical from run to run (else rows may be handed out at run time)
} fk_rmsnorm_problem;

// --- RoPE ------------------------------------------------------------------------------------------------
// For token (b, s), position p = positions[b * pos_bs + s * pos_ss] (positions != NULL) or pos_offset + s.
// For pair i in [0, rotary_dim / 2): features (i, i + rotary_dim / 2) when !interleaved, (2i, 2i + 1) when
// interleaved, of every head of q (and of k when k != NULL):
//   c, s = cos_tab[p * cos_rs + i], sin_tab[p * sin_rs + i]    (cos_tab != NULL)
//   c, s = cos(theta), sin(theta), theta = p * base^(-2i / rotary_dim)   (cos_tab == NULL)
//   forward:  (x1, x2) -> (x1 c - x2 s, x1 s + x2 c)
//   backward: (x1, x2) -> (x1 c + x2 s, -x1 s + x2 c)               (the inverse rotation)
// Features [rotary_dim, head_dim) are copied unchanged (nothing to do in place).
// Precision when computing the tables: the CPU forms theta in double and reduces it to [-pi, pi] before
// taking cos/sin in fp32 (in double for f64), so large positions lose no accuracy; a GPU kernel should do
// the same (theta in double or an equivalent exact reduction), else tests with p in the thousands fail.
// Range: when cos_tab != NULL every position must lie in [0, max_position). The core has checked this for
// pos_offset; positions from a tensor are checked by the backend before anything is written (CPU:
// FK_STATUS_BAD_PARAM_VALUE, naming the first bad (b, s)).
typedef struct fk_rope_problem {
    fk_dtype dtype; // q, q_out, k, k_out
    int64_t  batch, seqlen, nheads_q, nheads_k, head_dim;
    int64_t  rotary_dim; // resolved: even, 2 <= rotary_dim <= head_dim
    int      interleaved;

    // [batch, seqlen, nheads, head_dim]: batch, seq and head strides
    const void *q;     int64_t q_bs, q_ss, q_hs;
    void       *q_out; int64_t q_out_bs, q_out_ss, q_out_hs;
    const void *k;     int64_t k_bs, k_ss, k_hs;             // NULL = only q (nheads_k is then 0)
    void       *k_out; int64_t k_out_bs, k_out_ss, k_out_hs; // non-NULL exactly when k != NULL

    const void *positions; // [batch, seqlen] int32/int64, NULL = pos_offset + s
    fk_dtype    pos_dtype; // FK_DTYPE_INT32 or FK_DTYPE_INT64
    int64_t     pos_bs, pos_ss; // pos_bs may be 0 (one position row for the whole batch)
    int64_t     pos_offset;

    const void *cos_tab, *sin_tab; // [max_position, rotary_dim / 2], NULL = computed from base
    fk_dtype    cs_dtype;          // F32 or dtype
    int64_t     cos_rs, sin_rs;
    int64_t     max_position;      // 0 when computed
    float       base;              // > 0; used when cos_tab == NULL
} fk_rope_problem;

// --- SwiGLU ----------------------------------------------------------------------------------------------
// silu(g) = g / (1 + exp(-g)), sig(g) = 1 / (1 + exp(-g)).
// forward:  out   = silu(gate) * up
// backward: dgate = dout * up * sig(gate) * (1 + gate * (1 - sig(gate))),  dup = dout * silu(gate)
// gate and up (dgate and dup) are often column views of one [rows, 2 * width] tensor: row stride 2 * width,
// pointers width elements apart.
typedef struct fk_swiglu_problem {
    fk_dtype dtype; // every operand
    int64_t  rows, width;
    const void *gate;  int64_t gate_rs;
    const void *up;    int64_t up_rs;
    void       *out;   int64_t out_rs;  // forward
    const void *dout;  int64_t dout_rs; // backward
    void       *dgate; int64_t dgate_rs;
    void       *dup;   int64_t dup_rs;
} fk_swiglu_problem;

// --- CPU backend (src/cpu/rmsnorm.c, rope.c, swiglu.c) ---------------------------------------------------
fk_status fk_cpu_rmsnorm_fwd(const struct fk_context *ctx, const fk_rmsnorm_problem *p);
// Bytes of workspace fk_cpu_rmsnorm_bwd needs: one compute-type partial dweight row per row block
// (min(num_threads, rows) blocks), plus 64 bytes so any caller pointer can be aligned.
size_t    fk_cpu_rmsnorm_bwd_workspace(const struct fk_context *ctx, const fk_rmsnorm_problem *p);
fk_status fk_cpu_rmsnorm_bwd(const struct fk_context *ctx, const fk_rmsnorm_problem *p, void *ws, size_t ws_bytes);
fk_status fk_cpu_rope_fwd(const struct fk_context *ctx, const fk_rope_problem *p);
fk_status fk_cpu_rope_bwd(const struct fk_context *ctx, const fk_rope_problem *p);
fk_status fk_cpu_swiglu_fwd(const struct fk_context *ctx, const fk_swiglu_problem *p);
fk_status fk_cpu_swiglu_bwd(const struct fk_context *ctx, const fk_swiglu_problem *p);

// --- CUDA backend (src/cuda/rmsnorm.cu, rope.cu, swiglu.cu) ----------------------------------------------
// All run asynchronously on `stream` (a cudaStream_t; NULL = default stream). The core does not touch the
// current device: each entry point selects ctx->device.index for its own duration and restores the caller's.
#ifdef FK_WITH_CUDA
fk_status fk_cuda_rmsnorm_fwd(const struct fk_context *ctx, const fk_rmsnorm_problem *p, void *stream);
// The one selection function of the backward: supported? (status) and workspace bytes for exactly the
// kernel fk_cuda_rmsnorm_bwd will launch.
fk_status fk_cuda_rmsnorm_bwd_select(const struct fk_context *ctx, const fk_rmsnorm_problem *p, size_t *ws_bytes);
fk_status fk_cuda_rmsnorm_bwd(const struct fk_context *ctx, const fk_rmsnorm_problem *p, void *ws,
                              size_t ws_bytes, void *stream);
fk_status fk_cuda_rope_fwd(const struct fk_context *ctx, const fk_rope_problem *p, void *stream);
fk_status fk_cuda_rope_bwd(const struct fk_context *ctx, const fk_rope_problem *p, void *stream);
fk_status fk_cuda_swiglu_fwd(const struct fk_context *ctx, const fk_swiglu_problem *p, void *stream);
fk_status fk_cuda_swiglu_bwd(const struct fk_context *ctx, const fk_swiglu_problem *p, void *stream);
#endif // FK_WITH_CUDA

#ifdef __cplusplus
}
#endif

#endif // FK_OPS_INTERNAL_H
