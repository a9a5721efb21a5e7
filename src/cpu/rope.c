/*
 * rope.c — CPU rotary position embedding, forward and backward (semantics: src/core/ops_internal.h).
 *
 * Tokens (b, s) are spread over threads. For each token the cos/sin of a block of pairs is formed once and
 * applied to every head of q and k, so the transcendental cost is per token, not per head. Each block of
 * pairs is loaded to fp32, rotated and stored before the next one is touched, so q_out == q is safe.
 */
#include "ops_cpu.h"

#include <math.h>

#define PAIR_BLOCK 64    // pairs rotated together: two 256-byte fp32 operands, cos and sin on the stack
#define INV_FREQ_TAB 1024 // inv_freq precomputed for the first pairs (rotary_dim <= 2048); beyond, on the fly

static const double two_pi = 6.283185307179586476925286766559;

static int64_t token_position(const fk_rope_problem *p, int64_t b, int64_t s) {
    if (!p->positions) return p->pos_offset + s;
    return fk_load_index(p->positions, p->pos_dtype, b * p->pos_bs + s * p->pos_ss);
}

// inv_freq[i] = base^(-2i / rotary_dim), the same expression the float64 reference evaluates.
static double inv_freq(const fk_rope_problem *p, const double *tab, int64_t i) {
    if (i < INV_FREQ_TAB) return tab[i];
    return pow((double)p->base, -2.0 * (double)i / (double)p->rotary_dim);
}

// cos/sin of pairs [i0, i0 + n) at position pos; sign -1 gives the inverse rotation.
static void angles_f32(const fk_rope_problem *p, const double *tab, int64_t pos, int64_t i0, int64_t n, float sign,
                       float *restrict c, float *restrict sn) {
    if (p->cos_tab) {
        fk_cpu_load(c, fk_cpu_at(p->cos_tab, p->cs_dtype, pos * p->cos_rs + i0), p->cs_dtype, n);
        fk_cpu_load(sn, fk_cpu_at(p->sin_tab, p->cs_dtype, pos * p->sin_rs + i0), p->cs_dtype, n);
    } else {
        for (int64_t i = 0; i < n; i++) {
            // theta in double, reduced to [-pi, pi]: fp32 theta would lose ~p * 6e-8 radians.
            double theta = remainder((double)pos * inv_freq(p, tab, i0 + i), two_pi);
            c[i]         = cosf((float)theta);
            sn[i]        = sinf((float)theta);
        }
    }
    for (int64_t i = 0; i < n; i++) sn[i] *= sign;
}

// Rotates pairs [i0, i0 + n) of one head (in -> out, fp32 math).
static void rotate_block_f32(const void *in, void *out, fk_dtype dt, int64_t half, int interleaved, int64_t i0,
                             int64_t n, const float *restrict c, const float *restrict sn) {
    float a[2 * PAIR_BLOCK], b[PAIR_BLOCK];
    if (interleaved) {
        fk_cpu_load(a, fk_cpu_at(in, dt, 2 * i0), dt, 2 * n);
        for (int64_t i = 0; i < n; i++) {
            float x1 = a[2 * i], x2 = a[2 * i + 1];
            a[2 * i]     = x1 * c[i] - x2 * sn[i];
            a[2 * i + 1] = x1 * sn[i] + x2 * c[i];
        }
        fk_cpu_store(fk_cpu_at_mut(out, dt, 2 * i0), dt, a, 2 * n);
    } else {
        fk_cpu_load(a, fk_cpu_at(in, dt, i0), dt, n);
        fk_cpu_load(b, fk_cpu_at(in, dt, half + i0), dt, n);
        for (int64_t i = 0; i < n; i++) {
            float x1 = a[i], x2 = b[i];
            a[i] = x1 * c[i] - x2 * sn[i];
            b[i] = x1 * sn[i] + x2 * c[i];
        }
        fk_cpu_store(fk_cpu_at_mut(out, dt, i0), dt, a, n);
        fk_cpu_store(fk_cpu_at_mut(out, dt, half + i0), dt, b, n);
    }
}

// Copies the features [rotary_dim, head_dim) of one head (nothing to do in place).
static void copy_tail(const fk_rope_problem *p, const void *in, void *out) {
    if (in == out || p->rotary_dim == p->head_dim) return;
    size_t es = fk_dtype_size(p->dtype);
    memcpy((char *)out + p->rotary_dim * (int64_t)es, (const char *)in + p->rotary_dim * (int64_t)es,
           (size_t)(p->head_dim - p->rotary_dim) * es);
}

static void token_f32(const fk_rope_problem *p, const double *tab, int64_t b, int64_t s, float sign) {
    const fk_dtype dt   = p->dtype;
    const int64_t  half = p->rotary_dim / 2;
    const int64_t  pos  = token_position(p, b, s);
    const void    *q    = fk_cpu_at(p->q, dt, b * p->q_bs + s * p->q_ss);
    void          *qo   = fk_cpu_at_mut(p->q_out, dt, b * p->q_out_bs + s * p->q_out_ss);
    const void    *k    = p->k ? fk_cpu_at(p->k, dt, b * p->k_bs + s * p->k_ss) : NULL;
    void          *ko   = p->k ? fk_cpu_at_mut(p->k_out, dt, b * p->k_out_bs + s * p->k_out_ss) : NULL;
    float          c[PAIR_BLOCK], sn[PAIR_BLOCK];
    for (int64_t i0 = 0; i0 < half; i0 += PAIR_BLOCK) {
        int64_t n = half - i0 < PAIR_BLOCK ? half - i0 : PAIR_BLOCK;
        angles_f32(p, tab, pos, i0, n, sign, c, sn);
        for (int64_t h = 0; h < p->nheads_q; h++)
            rotate_block_f32(fk_cpu_at(q, dt, h * p->q_hs), fk_cpu_at_mut(qo, dt, h * p->q_out_hs), dt, half,
                             p->interleaved, i0, n, c, sn);
        for (int64_t h = 0; h < p->nheads_k; h++)
            rotate_block_f32(fk_cpu_at(k, dt, h * p->k_hs), fk_cpu_at_mut(ko, dt, h * p->k_out_hs), dt, half,
                             p->interleaved, i0, n, c, sn);
    }
    for (int64_t h = 0; h < p->nheads_q; h++)
        copy_tail(p, fk_cpu_at(q, dt, h * p->q_hs), fk_cpu_at_mut(qo, dt, h * p->q_out_hs));
    for (int64_t h = 0; h < p->nheads_k; h++)
        copy_tail(p, fk_cpu_at(k, dt, h * p->k_hs), fk_cpu_at_mut(ko, dt, h * p->k_out_hs));
}

// f64 storage: the same loops in double, element by element.
static void head_f64(const fk_rope_problem *p, const double *in, double *out, int64_t pos, const double *tab,
                     double sign) {
    const int64_t half = p->rotary_dim / 2;
    for (int64_t i = 0; i < half; i++) {
        double c, s;
        if (p->cos_tab) {
            c = fk_cpu_load_d(p->cos_tab, p->cs_dtype, pos * p->cos_rs + i);
            s = fk_cpu_load_d(p->sin_tab, p->cs_dtype, pos * p->sin_rs + i);
        } else {
            double theta = (double)pos * inv_freq(p, tab, i);
            c            = cos(theta);
            s            = sin(theta);
        }
        s *= sign;
        int64_t j1 = p->interleaved ? 2 * i : i, j2 = p->interleaved ? 2 * i + 1 : i + half;
        double  x1 = in[j1], x2 = in[j2];
        out[j1] = x1 * c - x2 * s;
        out[j2] = x1 * s + x2 * c;
    }
    copy_tail(p, in, out);
}

static void token_f64(const fk_rope_problem *p, const double *tab, int64_t b, int64_t s, double sign) {
    const int64_t pos = token_position(p, b, s);
    for (int64_t h = 0; h < p->nheads_q; h++)
        head_f64(p, (const double *)p->q + b * p->q_bs + s * p->q_ss + h * p->q_hs,
                 (double *)p->q_out + b * p->q_out_bs + s * p->q_out_ss + h * p->q_out_hs, pos, tab, sign);
    for (int64_t h = 0; h < p->nheads_k; h++)
        head_f64(p, (const double *)p->k + b * p->k_bs + s * p->k_ss + h * p->k_hs,
                 (double *)p->k_out + b * p->k_out_bs + s * p->k_out_ss + h * p->k_out_hs, pos, tab, sign);
}

static fk_status rope_run(const struct fk_context *ctx, const fk_rope_problem *p, const char *op, int sign) {
    // Positions are data: check them all before anything is written (q_out may be q).
    if (p->positions && p->cos_tab) {
        for (int64_t b = 0; b < p->batch; b++)
            for (int64_t s = 0; s < p->seqlen; s++) {
                int64_t pos = token_position(p, b, s);
                if (pos < 0 || pos >= p->max_position)
                    return fk_error(FK_STATUS_BAD_PARAM_VALUE,
                                    "%s: positions[%lld][%lld] = %lld is outside cos/sin's [0, %lld)", op,
                                    (long long)b, (long long)s, (long long)pos, (long long)p->max_position);
            }
    }
    double tab[INV_FREQ_TAB];
    if (!p->cos_tab) {
        int64_t n = p->rotary_dim / 2 < INV_FREQ_TAB ? p->rotary_dim / 2 : INV_FREQ_TAB;
        for (int64_t i = 0; i < n; i++) tab[i] = pow((double)p->base, -2.0 * (double)i / (double)p->rotary_dim);
    }
    const int64_t tokens = p->batch * p->seqlen;
    const int     nt     = ctx->num_threads;
    const int     par    = nt > 1 && tokens > 1 && tokens * (p->nheads_q + p->nheads_k) * p->head_dim >= FK_CPU_PAR_MIN_WORK;
    const int     f64    = p->dtype == FK_DTYPE_F64;
    const int64_t seqlen = p->seqlen;
    FK_OMP_PARALLEL_FOR
    for (int64_t t = 0; t < tokens; t++) {
        if (f64) token_f64(p, tab, t / seqlen, t % seqlen, (double)sign);
        else token_f32(p, tab, t / seqlen, t % seqlen, (float)sign);
    }
    return FK_STATUS_SUCCESS;
}

fk_status fk_cpu_rope_fwd(const struct fk_context *ctx, const fk_rope_problem *p) {
    return rope_run(ctx, p, "rope_fwd", 1);
}

fk_status fk_cpu_rope_bwd(const struct fk_context *ctx, const fk_rope_problem *p) {
    return rope_run(ctx, p, "rope_bwd", -1);
}
