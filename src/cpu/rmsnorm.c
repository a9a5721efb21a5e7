/*
 * rmsnorm.c — CPU RMSNorm forward and backward (semantics: src/core/ops_internal.h).
 *
 * One row per loop iteration, rows spread over threads. A row is read twice (sum of squares, then the
 * scaled output), in chunks converted to fp32 on the stack, so any hidden size works without scratch memory.
 * fp64 storage takes the plain double loops at the end of each section.
 *
 * dweight is the only reduction across rows. It is made deterministic by a fixed partition: rows are split
 * into min(num_threads, rows) contiguous blocks (the block count depends on the context, never on what
 * OpenMP hands out), each block sums its rows in order into its own workspace row, and the block rows are
 * then added in block order.
 */
#include "ops_cpu.h"

#include <math.h>
#include <stdint.h>

static int64_t num_blocks(const struct fk_context *ctx, const fk_rmsnorm_problem *p) {
    int64_t nt = ctx->num_threads > 0 ? ctx->num_threads : 1;
    return nt < p->rows ? nt : p->rows;
}

static size_t acc_size(const fk_rmsnorm_problem *p) { return p->dtype == FK_DTYPE_F64 ? sizeof(double) : sizeof(float); }

size_t fk_cpu_rmsnorm_bwd_workspace(const struct fk_context *ctx, const fk_rmsnorm_problem *p) {
    return (size_t)num_blocks(ctx, p) * (size_t)p->hidden * acc_size(p) + 64;
}

// Sum of squares with 8 independent lanes, so the loop vectorizes without reassociation flags; the lanes are
// combined in a fixed order.
static inline void sumsq_lanes(const float *restrict a, int64_t n, float *restrict lane) {
    int64_t i = 0;
    for (; i + 8 <= n; i += 8)
        for (int k = 0; k < 8; k++) lane[k] += a[i + k] * a[i + k];
    for (; i < n; i++) lane[0] += a[i] * a[i];
}
static inline void dot_lanes(const float *restrict a, const float *restrict b, int64_t n, float *restrict lane) {
    int64_t i = 0;
    for (; i + 8 <= n; i += 8)
        for (int k = 0; k < 8; k++) lane[k] += a[i + k] * b[i + k];
    for (; i < n; i++) lane[0] += a[i] * b[i];
}
static inline float sum_lanes(const float *lane) {
    return ((lane[0] + lane[1]) + (lane[2] + lane[3])) + ((lane[4] + lane[5]) + (lane[6] + lane[7]));
}

// --- forward ---------------------------------------------------------------------------------------------

static void fwd_row_f32(const fk_rmsnorm_problem *p, int64_t r) {
    const fk_dtype dt = p->dtype;
    const int64_t  H  = p->hidden;
    const void    *x  = fk_cpu_at(p->x, dt, r * p->x_rs);
    const void    *rs = p->residual ? fk_cpu_at(p->residual, dt, r * p->residual_rs) : NULL;
    void          *ro = p->residual ? fk_cpu_at_mut(p->residual_out, dt, r * p->residual_out_rs) : NULL;
    void          *y  = fk_cpu_at_mut(p->y, dt, r * p->y_rs);
    const void    *h  = ro ? (const void *)ro : x; // what pass 2 re-reads: the rounded h
    float          hb[FK_CPU_CHUNK], tb[FK_CPU_CHUNK];
    float          lane[8] = {0};

    // Pass 1: h (stored to residual_out when the add is fused) and its sum of squares.
    for (int64_t j0 = 0; j0 < H; j0 += FK_CPU_CHUNK) {
        int64_t n = H - j0 < FK_CPU_CHUNK ? H - j0 : FK_CPU_CHUNK;
        fk_cpu_load(hb, fk_cpu_at(x, dt, j0), dt, n);
        if (rs) {
            fk_cpu_load(tb, fk_cpu_at(rs, dt, j0), dt, n);
            for (int64_t i = 0; i < n; i++) hb[i] += tb[i];
            fk_cpu_store(fk_cpu_at_mut(ro, dt, j0), dt, hb, n);
            if (dt != FK_DTYPE_F32) fk_cpu_load(hb, fk_cpu_at(ro, dt, j0), dt, n); // normalize what was stored
        }
        sumsq_lanes(hb, n, lane);
    }
    float rstd = 1.0f / sqrtf(sum_lanes(lane) / (float)H + p->eps);
    if (p->rstd) ((float *)p->rstd)[r] = rstd;

    // Pass 2: y = h * rstd * (offset + w).
    for (int64_t j0 = 0; j0 < H; j0 += FK_CPU_CHUNK) {
        int64_t n = H - j0 < FK_CPU_CHUNK ? H - j0 : FK_CPU_CHUNK;
        fk_cpu_load(hb, fk_cpu_at(h, dt, j0), dt, n);
        fk_cpu_load(tb, fk_cpu_at(p->weight, p->weight_dtype, j0), p->weight_dtype, n);
        const float off = p->weight_offset;
        for (int64_t i = 0; i < n; i++) hb[i] = hb[i] * rstd * (off + tb[i]);
        fk_cpu_store(fk_cpu_at_mut(y, dt, j0), dt, hb, n);
    }
}

static void fwd_row_f64(const fk_rmsnorm_problem *p, int64_t r) {
    const int64_t  H  = p->hidden;
    const double  *x  = (const double *)p->x + r * p->x_rs;
    const double  *rs = p->residual ? (const double *)p->residual + r * p->residual_rs : NULL;
    double        *ro = p->residual ? (double *)p->residual_out + r * p->residual_out_rs : NULL;
    double        *y  = (double *)p->y + r * p->y_rs;
    double         ss = 0;
    for (int64_t j = 0; j < H; j++) {
        double h = rs ? x[j] + rs[j] : x[j];
        if (ro) ro[j] = h;
        ss += h * h;
    }
    double rstd = 1.0 / sqrt(ss / (double)H + (double)p->eps);
    if (p->rstd) ((double *)p->rstd)[r] = rstd;
    const double *h = ro ? ro : x;
    for (int64_t j = 0; j < H; j++)
        y[j] = h[j] * rstd * ((double)p->weight_offset + fk_cpu_load_d(p->weight, p->weight_dtype, j));
}

fk_status fk_cpu_rmsnorm_fwd(const struct fk_context *ctx, const fk_rmsnorm_problem *p) {
    const int     nt   = ctx->num_threads;
    const int     par  = nt > 1 && p->rows > 1 && p->rows * p->hidden >= FK_CPU_PAR_MIN_WORK;
    const int64_t rows = p->rows;
    if (p->dtype == FK_DTYPE_F64) {
        FK_OMP_PARALLEL_FOR
        for (int64_t r = 0; r < rows; r++) fwd_row_f64(p, r);
    } else {
        FK_OMP_PARALLEL_FOR
        for (int64_t r = 0; r < rows; r++) fwd_row_f32(p, r);
    }
    return FK_STATUS_SUCCESS;
}

// --- backward --------------------------------------------------------------------------------------------

// One row: dx, and dy * h * rstd added into this block's partial dweight row `dw`.
static void bwd_row_f32(const fk_rmsnorm_problem *p, int64_t r, float *restrict dw) {
    const fk_dtype dt   = p->dtype;
    const fk_dtype wdt  = p->weight_dtype;
    const int64_t  H    = p->hidden;
    const void    *h    = fk_cpu_at(p->x, dt, r * p->x_rs);
    const void    *dy   = fk_cpu_at(p->dy, dt, r * p->dy_rs);
    const void    *dres = p->dresidual_out ? fk_cpu_at(p->dresidual_out, dt, r * p->dresidual_out_rs) : NULL;
    void          *dx   = fk_cpu_at_mut(p->dx, dt, r * p->dx_rs);
    const float    rstd = ((const float *)p->rstd)[r];
    const float    off  = p->weight_offset;
    float          hb[FK_CPU_CHUNK], gb[FK_CPU_CHUNK], tb[FK_CPU_CHUNK];
    float          lane[8] = {0};

    // Pass 1: sum_j g_j h_j with g = dy * (offset + w); dweight partials.
    for (int64_t j0 = 0; j0 < H; j0 += FK_CPU_CHUNK) {
        int64_t n = H - j0 < FK_CPU_CHUNK ? H - j0 : FK_CPU_CHUNK;
        fk_cpu_load(hb, fk_cpu_at(h, dt, j0), dt, n);
        fk_cpu_load(gb, fk_cpu_at(dy, dt, j0), dt, n);
        fk_cpu_load(tb, fk_cpu_at(p->weight, wdt, j0), wdt, n);
        float *restrict dwj = dw + j0;
        for (int64_t i = 0; i < n; i++) dwj[i] += gb[i] * hb[i] * rstd;
        for (int64_t i = 0; i < n; i++) gb[i] *= off + tb[i];
        dot_lanes(gb, hb, n, lane);
    }
    const float coef = rstd * rstd * sum_lanes(lane) / (float)H;

    // Pass 2: dx = rstd * (g - h * coef) (+ dresidual_out).
    for (int64_t j0 = 0; j0 < H; j0 += FK_CPU_CHUNK) {
        int64_t n = H - j0 < FK_CPU_CHUNK ? H - j0 : FK_CPU_CHUNK;
        fk_cpu_load(hb, fk_cpu_at(h, dt, j0), dt, n);
        fk_cpu_load(gb, fk_cpu_at(dy, dt, j0), dt, n);
        fk_cpu_load(tb, fk_cpu_at(p->weight, wdt, j0), wdt, n);
        for (int64_t i = 0; i < n; i++) gb[i] = rstd * (gb[i] * (off + tb[i]) - hb[i] * coef);
        if (dres) {
            fk_cpu_load(tb, fk_cpu_at(dres, dt, j0), dt, n);
            for (int64_t i = 0; i < n; i++) gb[i] += tb[i];
        }
        fk_cpu_store(fk_cpu_at_mut(dx, dt, j0), dt, gb, n);
    }
}

static void bwd_row_f64(const fk_rmsnorm_problem *p, int64_t r, double *restrict dw) {
    const int64_t H    = p->hidden;
    const double *h    = (const double *)p->x + r * p->x_rs;
    const double *dy   = (const double *)p->dy + r * p->dy_rs;
    const double *dres = p->dresidual_out ? (const double *)p->dresidual_out + r * p->dresidual_out_rs : NULL;
    double       *dx   = (double *)p->dx + r * p->dx_rs;
    const double  rstd = ((const double *)p->rstd)[r];
    const double  off  = p->weight_offset;
    double        dot  = 0;
    for (int64_t j = 0; j < H; j++) {
        dw[j] += dy[j] * h[j] * rstd;
        dot += dy[j] * (off + fk_cpu_load_d(p->weight, p->weight_dtype, j)) * h[j];
    }
    const double coef = rstd * rstd * dot / (double)H;
    for (int64_t j = 0; j < H; j++) {
        double g = dy[j] * (off + fk_cpu_load_d(p->weight, p->weight_dtype, j));
        double d = rstd * (g - h[j] * coef);
        dx[j]    = dres ? d + dres[j] : d; // dx may be dy itself: dy[j] is read before dx[j] is written
    }
}

// dweight[j] = sum of the block rows, in block order (columns are independent: split them over threads).
static void reduce_dweight(const fk_rmsnorm_problem *p, int nt, int64_t blocks, const char *base) {
    const int64_t H       = p->hidden;
    const int64_t nchunks = (H + FK_CPU_CHUNK - 1) / FK_CPU_CHUNK;
    const int     par     = nt > 1 && nchunks > 1 && blocks * H >= FK_CPU_PAR_MIN_WORK;
    FK_OMP_PARALLEL_FOR
    for (int64_t c = 0; c < nchunks; c++) {
        int64_t j0 = c * FK_CPU_CHUNK, n = H - j0 < FK_CPU_CHUNK ? H - j0 : FK_CPU_CHUNK;
        if (p->dtype == FK_DTYPE_F64) {
            const double *part = (const double *)base;
            for (int64_t i = 0; i < n; i++) {
                double s = 0;
                for (int64_t b = 0; b < blocks; b++) s += part[b * H + j0 + i];
                fk_cpu_store_d(p->dweight, p->dweight_dtype, j0 + i, s);
            }
        } else {
            const float *part = (const float *)base;
            float        sb[FK_CPU_CHUNK];
            for (int64_t i = 0; i < n; i++) sb[i] = part[j0 + i];
            for (int64_t b = 1; b < blocks; b++)
                for (int64_t i = 0; i < n; i++) sb[i] += part[b * H + j0 + i];
            fk_cpu_store(fk_cpu_at_mut(p->dweight, p->dweight_dtype, j0), p->dweight_dtype, sb, n);
        }
    }
}

fk_status fk_cpu_rmsnorm_bwd(const struct fk_context *ctx, const fk_rmsnorm_problem *p, void *ws, size_t ws_bytes) {
    const int     nt     = ctx->num_threads;
    const int64_t H      = p->hidden;
    const int64_t rows   = p->rows;
    const int64_t blocks = num_blocks(ctx, p);
    const int     par    = nt > 1 && blocks > 1 && rows * H >= FK_CPU_PAR_MIN_WORK;
    const int     f64    = p->dtype == FK_DTYPE_F64;
    // Align the caller's workspace to 64 bytes (the size query added that much slack).
    char *base = (char *)(((uintptr_t)ws + 63) & ~(uintptr_t)63);

    FK_OMP_PARALLEL_FOR
    for (int64_t b = 0; b < blocks; b++) {
        int64_t r0 = b * rows / blocks, r1 = (b + 1) * rows / blocks;
        if (f64) {
            double *dw = (double *)base + b * H;
            for (int64_t j = 0; j < H; j++) dw[j] = 0;
            for (int64_t r = r0; r < r1; r++) bwd_row_f64(p, r, dw);
        } else {
            float *dw = (float *)base + b * H;
            for (int64_t j = 0; j < H; j++) dw[j] = 0;
            for (int64_t r = r0; r < r1; r++) bwd_row_f32(p, r, dw);
        }
    }

    reduce_dweight(p, nt, blocks, base);
    (void)ws_bytes;
    return FK_STATUS_SUCCESS;
}
