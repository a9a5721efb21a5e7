/*
 * ref_ops.h — float64 references for RMSNorm, RoPE and SwiGLU (tests only, never shipped), and the small
 * host/device buffer helper the three op drivers share.
 *
 * Every reference takes a dtype `dt`: FK_DTYPE_F64 gives the exact float64 reference; another float dtype
 * gives the same naive math with every intermediate result rounded to that dtype (reductions summed in
 * double and rounded once, as torch does). The drivers use the second to set fp16/bf16 tolerances:
 * "kernel error <= 2 x naive error + atol".
 *
 * Operands are contiguous doubles holding values already rounded to their storage dtype.
 */
#ifndef REF_OPS_H
#define REF_OPS_H

#include "flashkit.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

// h, y : [rows, hidden]; w : [hidden]; rstd : [rows]. h is what is normalized (the caller forms
// round(x + residual) for the fused add).
void ref_rmsnorm_fwd(fk_dtype dt, int64_t rows, int64_t hidden, const double *h, const double *w, double eps,
                     double weight_offset, double *y, double *rstd);
// rstd is the forward's (as stored). dres may be NULL. Writes dx [rows, hidden] and dw [hidden].
void ref_rmsnorm_bwd(fk_dtype dt, int64_t rows, int64_t hidden, const double *h, const double *w,
                     double weight_offset, const double *rstd, const double *dy, const double *dres, double *dx,
                     double *dw);

// x, out : [batch, seqlen, nheads, head_dim]; pos : [batch * seqlen]; cos_tab/sin_tab : [max_pos, rotary_dim/2]
// or NULL (then computed from base: theta = p * base^(-2i / rotary_dim)). inverse = 1 rotates by -theta.
void ref_rope(fk_dtype dt, int64_t batch, int64_t seqlen, int64_t nheads, int64_t head_dim, int64_t rotary_dim,
              int interleaved, const int64_t *pos, const double *cos_tab, const double *sin_tab, double base,
              int inverse, const double *x, double *out);

// n elements.
void ref_swiglu_fwd(fk_dtype dt, int64_t n, const double *gate, const double *up, double *out);
void ref_swiglu_bwd(fk_dtype dt, int64_t n, const double *dout, const double *gate, const double *up,
                    double *dgate, double *dup);

// --- buffers for the op drivers: host memory, mirrored on the GPU for CUDA cases --------------------------
typedef struct ref_buf {
    void  *host;
    void  *dev;   // NULL for CPU cases
    size_t bytes;
} ref_buf;

// Allocates `bytes` of host memory (and device memory when on_device). False on failure.
bool  ref_buf_alloc(ref_buf *b, size_t bytes, bool on_device);
void  ref_buf_free(ref_buf *b);
void *ref_buf_ptr(const ref_buf *b);  // what the kernel sees: dev when present, else host
bool  ref_buf_upload(const ref_buf *b);   // host -> device (no-op on the CPU)
bool  ref_buf_download(const ref_buf *b); // device -> host (no-op on the CPU)

// --- views and verdicts ---------------------------------------------------------------------------------
// The elements of view t (its shape and strides; data read from the host copy `host`) as contiguous doubles.
void ref_view_read(const fk_tensor *t, const void *host, double *out);
// Writes contiguous doubles into view t of the host copy `host` (rounded to t's dtype).
void ref_view_write(const fk_tensor *t, void *host, const double *in);
// Are the buf_elems elements of `host` that lie outside view t still NaN (poison)? Outputs must not write
// beyond their view.
bool ref_outside_view_untouched(const fk_tensor *t, const void *host, int64_t buf_elems);
// Elements in view t.
int64_t ref_view_count(const fk_tensor *t);
// The tolerance rule of docs/HELPERS_COMMON.md on output view t against the float64 reference `ref`:
// fp32 rel L2 <= 1e-5, f64 rel L2 <= 1e-12, fp16/bf16 max_abs <= 2 * max_abs(naive - ref) + atol with
// atol = eps(dtype) * max|ref|; any NaN/Inf is a failure. Writes a one-line detail.
bool ref_verdict(const fk_tensor *t, const void *host, const double *ref, const double *naive, char *detail,
                 size_t detail_size);

#endif // REF_OPS_H
