/*
 * swiglu.c — CPU SwiGLU forward and backward (semantics: src/core/ops_internal.h).
 *
 * Rows are spread over threads; each row is processed in fp32 chunks on the stack (f64 storage: double).
 * Every output element depends only on the same element of the inputs, so outputs may alias inputs.
 */
#include "ops_cpu.h"

#include <math.h>

static void fwd_row_f32(const fk_swiglu_problem *p, int64_t r) {
    const fk_dtype dt = p->dtype;
    const void    *g  = fk_cpu_at(p->gate, dt, r * p->gate_rs);
    const void    *u  = fk_cpu_at(p->up, dt, r * p->up_rs);
    void          *o  = fk_cpu_at_mut(p->out, dt, r * p->out_rs);
    float          gb[FK_CPU_CHUNK], ub[FK_CPU_CHUNK];
    for (int64_t j0 = 0; j0 < p->width; j0 += FK_CPU_CHUNK) {
        int64_t n = p->width - j0 < FK_CPU_CHUNK ? p->width - j0 : FK_CPU_CHUNK;
        fk_cpu_load(gb, fk_cpu_at(g, dt, j0), dt, n);
        fk_cpu_load(ub, fk_cpu_at(u, dt, j0), dt, n);
        for (int64_t i = 0; i < n; i++) gb[i] = gb[i] / (1.0f + expf(-gb[i])) * ub[i];
        fk_cpu_store(fk_cpu_at_mut(o, dt, j0), dt, gb, n);
    }
}

static void bwd_row_f32(const fk_swiglu_problem *p, int64_t r) {
    const fk_dtype dt = p->dtype;
    const void    *g  = fk_cpu_at(p->gate, dt, r * p->gate_rs);
    const void    *u  = fk_cpu_at(p->up, dt, r * p->up_rs);
    const void    *d  = fk_cpu_at(p->dout, dt, r * p->dout_rs);
    void          *dg = fk_cpu_at_mut(p->dgate, dt, r * p->dgate_rs);
    void          *du = fk_cpu_at_mut(p->dup, dt, r * p->dup_rs);
    float          gb[FK_CPU_CHUNK], ub[FK_CPU_CHUNK], db[FK_CPU_CHUNK];
    for (int64_t j0 = 0; j0 < p->width; j0 += FK_CPU_CHUNK) {
        int64_t n = p->width - j0 < FK_CPU_CHUNK ? p->width - j0 : FK_CPU_CHUNK;
        fk_cpu_load(gb, fk_cpu_at(g, dt, j0), dt, n);
        fk_cpu_load(ub, fk_cpu_at(u, dt, j0), dt, n);
        fk_cpu_load(db, fk_cpu_at(d, dt, j0), dt, n);
        for (int64_t i = 0; i < n; i++) {
            float sig = 1.0f / (1.0f + expf(-gb[i]));
            float dgv = db[i] * ub[i] * sig * (1.0f + gb[i] * (1.0f - sig));
            ub[i]     = db[i] * gb[i] * sig; // dup
            gb[i]     = dgv;                 // dgate
        }
        fk_cpu_store(fk_cpu_at_mut(dg, dt, j0), dt, gb, n);
        fk_cpu_store(fk_cpu_at_mut(du, dt, j0), dt, ub, n);
    }
}

static void fwd_row_f64(const fk_swiglu_problem *p, int64_t r) {
    const double *g = (const double *)p->gate + r * p->gate_rs;
    const double *u = (const double *)p->up + r * p->up_rs;
    double       *o = (double *)p->out + r * p->out_rs;
    for (int64_t j = 0; j < p->width; j++) o[j] = g[j] / (1.0 + exp(-g[j])) * u[j];
}

static void bwd_row_f64(const fk_swiglu_problem *p, int64_t r) {
    const double *g  = (const double *)p->gate + r * p->gate_rs;
    const double *u  = (const double *)p->up + r * p->up_rs;
    const double *d  = (const double *)p->dout + r * p->dout_rs;
    double       *dg = (double *)p->dgate + r * p->dgate_rs;
    double       *du = (double *)p->dup + r * p->dup_rs;
    for (int64_t j = 0; j < p->width; j++) {
        double gj = g[j], uj = u[j], dj = d[j]; // read all three first: outputs may alias inputs
        double sig = 1.0 / (1.0 + exp(-gj));
        dg[j]      = dj * uj * sig * (1.0 + gj * (1.0 - sig));
        du[j]      = dj * gj * sig;
    }
}

static fk_status swiglu_run(const struct fk_context *ctx, const fk_swiglu_problem *p, int backward) {
    const int     nt   = ctx->num_threads;
    const int64_t rows = p->rows;
    const int     par  = nt > 1 && rows > 1 && rows * p->width >= FK_CPU_PAR_MIN_WORK;
    const int     f64  = p->dtype == FK_DTYPE_F64;
    FK_OMP_PARALLEL_FOR
    for (int64_t r = 0; r < rows; r++) {
        if (f64) backward ? bwd_row_f64(p, r) : fwd_row_f64(p, r);
        else backward ? bwd_row_f32(p, r) : fwd_row_f32(p, r);
    }
    return FK_STATUS_SUCCESS;
}

fk_status fk_cpu_swiglu_fwd(const struct fk_context *ctx, const fk_swiglu_problem *p) { return swiglu_run(ctx, p, 0); }
fk_status fk_cpu_swiglu_bwd(const struct fk_context *ctx, const fk_swiglu_problem *p) { return swiglu_run(ctx, p, 1); }
