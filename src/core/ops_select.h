/*
 * ops_select.h — the launch-shape rules of the CUDA fused ops that do not need a device to evaluate: which
 * RMSNorm row-group shape a row width takes (src/cuda/rmsnorm.cu), whether the RoPE per-token kernel covers a
 * problem (src/cuda/rope.cu), whether SwiGLU runs as one flat array (src/cuda/swiglu.cu). Plain C, static
 * inline, so tests/test_ops_select.c checks the rules on any machine; the .cu files call these and nothing
 * else to decide, so the test and the dispatch cannot disagree. Occupancy (grid size, hence the RMSNorm
 * backward's workspace) needs the device and stays in rmsnorm.cu.
 */
#ifndef FK_OPS_SELECT_H
#define FK_OPS_SELECT_H

#include "ops_internal.h"

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

// --- RMSNorm: row groups ---------------------------------------------------------------------------------
// rms_{fwd,bwd}_rows_kernel<W, VPL>: a group of W warps per row, threads / (32 W) groups a block, each thread
// VPL 16-byte vectors of the row, so a row of up to VPL x 32 W vectors stays in registers.
typedef struct fk_rms_rows_shape {
    int w;       // warps a row
    int vpl;     // vectors a thread
    int threads; // block size, a multiple of 32 w
    int stages;  // backward only: 0 = rms_bwd_rows_kernel (the next row prefetched in registers), >= 2 =
                 // rms_bwd_ring_kernel (that many rows a group in a cp.async ring in shared memory)
} fk_rms_rows_shape;

// Vectors a row of the shape holds.
static inline int64_t fk_rms_rows_cap(fk_rms_rows_shape s) { return (int64_t)s.vpl * 32 * s.w; }

// The kernels' preconditions for a row of nvec vectors (exact: the row fills the shape's vectors, no tail).
// Named barriers 1..15 hold one group each (W > 1); 512 threads is __launch_bounds__; the forward's
// tail instances at VPL >= 8 spilled (ptxas, 128-register cap), so there VPL >= 8 needs an exact row.
static inline int fk_rms_rows_valid(fk_rms_rows_shape s, int64_t nvec, int exact, int bwd) {
    if (s.w < 1 || s.vpl < 1 || s.threads < 32 * s.w || s.threads > 512 || s.threads % (32 * s.w) != 0) return 0;
    if (s.w > 1 && s.threads / (32 * s.w) > 15) return 0;
    if (nvec < 1 || nvec > fk_rms_rows_cap(s)) return 0;
    if (!bwd && s.vpl >= 8 && !exact) return 0;
    if (s.stages != 0 && (!bwd || s.stages < 2 || s.stages > 8)) return 0; // the ring: backward, 2..8 rows
    return 1;
}

// The measured rules, by row width in 16-byte vectors (bf16: hidden / 8). Measured on an H200, run of
// 2026-11-30, bench/next_ops.sh, commit d3c1cfc (bf16, 16,384 rows; the fastest shape of each row of
// next_ops.log, GB/s in docs/PERF.md "GPU: fused ops"). The forward with the residual add has its own
// winners at 2048/4096/5120; the backward's are the same with and without dresidual_out.
typedef struct fk_rms_rows_rule {
    int64_t           nvec; // measured row width
    fk_rms_rows_shape s;
} fk_rms_rows_rule;
static const fk_rms_rows_rule fk_rms_rows_fwd[] = {
    {256, {4, 2, 512, 0}},   // 3226 GB/s (production block-per-row 2692)
    {512, {8, 2, 512, 0}},   // 3262 (2878)
    {640, {4, 5, 512, 0}},   // 3473 (2808)
    {1024, {16, 2, 512, 0}}, // 3603 (2898)
};
static const fk_rms_rows_rule fk_rms_rows_fwd_res[] = {
    {256, {4, 2, 256, 0}},   // 3492 (3238)
    {512, {5, 4, 480, 0}},   // 3683 (3348); a tail instance (its rows hold 640 vectors)
    {640, {10, 2, 320, 0}},  // 3736 (3296)
    {1024, {16, 2, 512, 0}}, // 3739 (3413)
};
// The backward at 640 vectors (5120) runs the ring kernel with 2 rows: H200, 2026-11-30 third session,
// bench/next_ops.sh, commit c214844, timed as bench_ops.py times (L2 flushed), with the dweight reduction:
// 3543 / with dresidual_out 3641 GB/s against the register kernel's 3120 / 2887 (its lower register count
// fits 2 blocks of 320 threads an SM instead of 1; 3 and 4 rows: 3422 / 3745 and 3385 / 3703). At 256, 512
// and 1024 vectors the ring lost by 4-20% (2870 vs 3098, 3293 vs 3534, 3587 vs 3743 without dresidual_out).
// At 256 and 512 vectors one vector a thread (W = 8 / 16: one row a block of 256 / 512 threads, two blocks of 512 an
// SM at 64 registers, 32 warps: rms_bwd_vec1_kernel) beat two vectors a thread (W = 4 / 8, 16 warps an SM) by
// 1.8-2.6% / 1.0-2.2%: H200, 2026-12-01 seventh session, ops_tune next runs 3-7 (docs/PERF.md), without
// dresidual_out (with it the bulk-copy ring of fk_rms_tma_pick runs at these widths on 9.0 devices).
static const fk_rms_rows_rule fk_rms_rows_bwd[] = {
    {256, {8, 1, 512, 0}},  // (was {4, 2}: 2907 / with dresidual_out 3523; block per row 2101 / 2385)
    {512, {16, 1, 512, 0}}, // (was {8, 2}: 3112 / 3723; 2205 / 2465)
    {640, {10, 2, 320, 2}}, // (above)
    {1024, {16, 2, 512, 0}}, // 2910 / 3593 (1670 / 1819)
};

// The rule for a row of nvec vectors: of the rules valid for it, the one measured nearest to nvec (the smaller
// on a tie). 0 when none is valid (nvec > 1024): the block-per-row kernels take the row.
static inline int fk_rms_rows_pick(int64_t nvec, int bwd, int residual, fk_rms_rows_shape *out) {
    const fk_rms_rows_rule *r = bwd ? fk_rms_rows_bwd : residual ? fk_rms_rows_fwd_res : fk_rms_rows_fwd;
    const int               n = 4;
    int                     best = -1;
    int64_t                 best_d = 0;
    for (int i = 0; i < n; i++) {
        if (!fk_rms_rows_valid(r[i].s, nvec, nvec == fk_rms_rows_cap(r[i].s), bwd)) continue;
        const int64_t d = r[i].nvec > nvec ? r[i].nvec - nvec : nvec - r[i].nvec;
        if (best < 0 || d < best_d) best = i, best_d = d;
    }
    if (best < 0) return 0;
    *out = r[best].s;
    return 1;
}

// --- RMSNorm forward: one row a block ------------------------------------------------------------------
// rms_fwd_row_kernel: rows of 256..1024 16-byte vectors (bf16: hidden 2048..8192) whose weight has x's dtype,
// two vectors a thread in a block of round_up(nvec / 2, 32) threads, one row a block; *minb: the launch bound's
// blocks of 512 threads (4: 32 registers, 3: 40). H200, 2026-11-30 fourth session, bench/next_ops.sh (ops_tune
// next, bf16, 16384 rows, GB/s against the row groups of fk_rms_rows_fwd / _fwd_res; docs/PERF.md):
//   vectors  threads  forward                        with the residual add
//   256      128      40 regs 3689 (32 regs 3657; 3377)  40 regs 3871 (3697)
//   512      256      40 regs 3871 (32 regs 3787; 3551)  40 regs 4060 (3703)
//   640      320      32 regs 3943 (39 regs 3756; 3675)  43 regs, 4 blocks 4086 (32, spilling: 3700; 3797)
//   1024     512      32 regs 3973 (40 regs 3894; 3800)  40 regs 4076 (32 regs, spilling: 3675; 3804)
// (Each figure: the candidate under __launch_bounds__(threads, blocks an SM); production caps at 512 threads, so
// 640 with the residual add gets 40 registers and 5 blocks, not the 4 measured.) The residual add needs 40 (at
// 32 it spills); without it 40 where a block has at most 256 threads or the row leaves vectors idle, else 32.
// Outside 256..1024 vectors the row groups (fk_rms_rows_pick) or the block-per-row kernels run; 0 then.
static inline int fk_rms_row1_pick(int64_t nvec, int residual, int *threads, int *minb) {
    if (nvec < 256 || nvec > 1024) return 0;
    *threads = (int)((nvec + 1) / 2 + 31) / 32 * 32;
    *minb    = residual || *threads <= 256 || nvec != 2 * (int64_t)*threads ? 3 : 4;
    return 1;
}
// --- RMSNorm backward through bulk copies (sm_90) ---------------------------------------------------------
// rms_bwd_tma_kernel (src/cuda/rmsnorm.cu): a ring of `stages` rows a block filled by cp.async.bulk, vpt vectors
// a thread, at most bps blocks an SM. Rows of 256..1024 16-byte vectors; the measured rule nearest to nvec
// applies (with vpt doubled where the row would need more than 512 threads). H200, 2026-11-30 fifth session, bench/next_ops.sh (ops_tune next, bf16, 16384 rows, L2 flushed, GB/s,
// the dweight reduction behind a programmatic dependency; in brackets the row groups with it / without it):
//   vectors  with dresidual_out                   without
//   256      v1 s4 b2 3579 (3514 / 3454)          row groups (3343 / 3268; best bulk 3315)
//   512      v1 s4 b1 3867 (3743 / 3685)          row groups (3692 / 3644; best bulk 3682)
//   640      v2 s4 b1 4016 (- / 3756)             v2 s2 b3 3781 (- / 3726)
//   1024     v2 s3 b1 4051 (- / 3565)             v4 s4 b1 3974 (- / 3837)
// 0: the row groups (or the block-per-row kernels) take the row.
typedef struct fk_rms_tma_shape {
    int vpt, stages, bps;
} fk_rms_tma_shape;
static inline int fk_rms_tma_pick(int64_t nvec, int dres, fk_rms_tma_shape *out) {
    static const struct {
        int64_t          nvec;
        fk_rms_tma_shape dres, plain; // plain.vpt == 0: the row groups
    } rules[] = {
        {256, {1, 4, 2}, {0, 0, 0}},
        {512, {1, 4, 1}, {0, 0, 0}},
        {640, {2, 4, 1}, {2, 2, 3}},
        {1024, {2, 3, 1}, {4, 4, 1}},
    };
    if (nvec < 256 || nvec > 1024) return 0;
    int best = 0;
    for (int i = 1; i < 4; i++) {
        const int64_t d = rules[i].nvec > nvec ? rules[i].nvec - nvec : nvec - rules[i].nvec;
        const int64_t b = rules[best].nvec > nvec ? rules[best].nvec - nvec : nvec - rules[best].nvec;
        if (d < b) best = i;
    }
    fk_rms_tma_shape s = dres ? rules[best].dres : rules[best].plain;
    if (s.vpt == 0) return 0;
    while ((nvec + s.vpt - 1) / s.vpt > 512) s.vpt *= 2; // 512 threads at most (vpt 1, 2, 4 are compiled)
    *out = s;
    return 1;
}

// --- RoPE: the per-token kernel --------------------------------------------------------------------------
// rope_tok_kernel covers: half-split, fp32 tables or computed angles, 16-byte vectors everywhere (every
// pointer aligned, every stride and half and the unrotated tail multiples of the vector), half <= 256 (the
// inverse frequencies travel in the kernel parameters), and 32-bit head offsets and token counts. Anything
// else runs rope_kernel.
#define FK_ROPE_TOK_HALF_MAX 256
static inline int fk_rope_tok_covers(const fk_rope_problem *p, int64_t es) {
    const int64_t V = 16 / es, half = p->rotary_dim / 2, htot = p->nheads_q + (p->k ? p->nheads_k : 0);
    const void   *ptr[4] = {p->q, p->q_out, p->k, p->k_out};
    const int64_t st[12] = {p->q_bs, p->q_ss, p->q_hs, p->q_out_bs, p->q_out_ss, p->q_out_hs,
                            p->k_bs, p->k_ss, p->k_hs, p->k_out_bs, p->k_out_ss, p->k_out_hs};
    if (p->interleaved || half % V != 0 || (p->head_dim - p->rotary_dim) % V != 0 || half > FK_ROPE_TOK_HALF_MAX)
        return 0;
    if (p->cos_tab && p->cs_dtype != FK_DTYPE_F32) return 0;
    for (int i = 0; i < 4; i++)
        if (ptr[i] && (uintptr_t)ptr[i] % 16 != 0) return 0;
    for (int i = 0; i < (p->k ? 12 : 6); i++)
        if (st[i] % V != 0) return 0;
    const int64_t lim = (int64_t)1 << 31;
    if (p->batch * p->seqlen >= lim || htot * (p->head_dim + p->q_hs + p->q_out_hs) >= lim) return 0;
    if (p->k && htot * (p->k_hs + p->k_out_hs) >= lim) return 0;
    return 1;
}

// --- SwiGLU: one flat array ------------------------------------------------------------------------------
// swiglu_flat_kernel covers n elements of contiguous operands (the caller merged the rows), every pointer
// 16-byte aligned, n < 2^32 - 16 (32-bit offsets, one thread past the last whole vector).
static inline int fk_swiglu_flat_covers(const void *const *ptr, int nptr, int64_t n) {
    if (n <= 0 || n >= ((int64_t)1 << 32) - 16) return 0;
    for (int i = 0; i < nptr; i++)
        if (ptr[i] && (uintptr_t)ptr[i] % 16 != 0) return 0;
    return 1;
}

#ifdef __cplusplus
}
#endif

#endif // FK_OPS_SELECT_H
