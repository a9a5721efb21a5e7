/*
 * ref_ops.c — float64 references for RMSNorm, RoPE and SwiGLU, written as the formulas read (see ref_ops.h).
 */
#include "ref_ops.h"

#include "common/fk_test.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

// Every intermediate goes through R: exact for f64, the naive low-precision math otherwise.
#define R(x) fk_round_to(dt, (x))

void ref_rmsnorm_fwd(fk_dtype dt, int64_t rows, int64_t hidden, const double *h, const double *w, double eps,
                     double weight_offset, double *y, double *rstd) {
    for (int64_t r = 0; r < rows; r++) {
        const double *hr = h + r * hidden;
        double        ss = 0;
        for (int64_t j = 0; j < hidden; j++) ss += R(hr[j] * hr[j]);
        double rs = R(1.0 / sqrt(R(R(ss / (double)hidden) + eps)));
        if (rstd) rstd[r] = rs;
        for (int64_t j = 0; j < hidden; j++) y[r * hidden + j] = R(R(hr[j] * rs) * R(weight_offset + w[j]));
    }
}

void ref_rmsnorm_bwd(fk_dtype dt, int64_t rows, int64_t hidden, const double *h, const double *w,
                     double weight_offset, const double *rstd, const double *dy, const double *dres, double *dx,
                     double *dw) {
    for (int64_t j = 0; j < hidden; j++) dw[j] = 0;
    for (int64_t r = 0; r < rows; r++) {
        const double *hr = h + r * hidden, *dyr = dy + r * hidden;
        const double  rs = rstd[r];
        double        dot = 0;
        for (int64_t j = 0; j < hidden; j++) dot += R(R(dyr[j] * R(weight_offset + w[j])) * hr[j]);
        double coef = R(R(rs * rs) * R(dot) / (double)hidden);
        for (int64_t j = 0; j < hidden; j++) {
            double g = R(dyr[j] * R(weight_offset + w[j]));
            double d = R(rs * R(g - R(hr[j] * coef)));
            if (dres) d = R(d + dres[r * hidden + j]);
            dx[r * hidden + j] = d;
            dw[j] += R(R(dyr[j] * hr[j]) * rs);
        }
    }
    for (int64_t j = 0; j < hidden; j++) dw[j] = R(dw[j]);
}

void ref_rope(fk_dtype dt, int64_t batch, int64_t seqlen, int64_t nheads, int64_t head_dim, int64_t rotary_dim,
              int interleaved, const int64_t *pos, const double *cos_tab, const double *sin_tab, double base,
              int inverse, const double *x, double *out) {
    const int64_t half = rotary_dim / 2;
    for (int64_t b = 0; b < batch; b++)
        for (int64_t s = 0; s < seqlen; s++) {
            int64_t p = pos[b * seqlen + s];
            for (int64_t h = 0; h < nheads; h++) {
                const double *xi = x + ((b * seqlen + s) * nheads + h) * head_dim;
                double       *o  = out + ((b * seqlen + s) * nheads + h) * head_dim;
                for (int64_t j = rotary_dim; j < head_dim; j++) o[j] = xi[j];
                for (int64_t i = 0; i < half; i++) {
                    double c, sn;
                    if (cos_tab) {
                        c  = cos_tab[p * half + i];
                        sn = sin_tab[p * half + i];
                    } else {
                        double theta = (double)p * pow(base, -2.0 * (double)i / (double)rotary_dim);
                        c            = R(cos(theta));
                        sn           = R(sin(theta));
                    }
                    if (inverse) sn = -sn;
                    int64_t j1 = interleaved ? 2 * i : i, j2 = interleaved ? 2 * i + 1 : i + half;
                    double  x1 = xi[j1], x2 = xi[j2];
                    o[j1] = R(R(x1 * c) - R(x2 * sn));
                    o[j2] = R(R(x1 * sn) + R(x2 * c));
                }
            }
        }
}

void ref_swiglu_fwd(fk_dtype dt, int64_t n, const double *gate, const double *up, double *out) {
    for (int64_t i = 0; i < n; i++) {
        double sig = R(1.0 / (1.0 + exp(-gate[i])));
        out[i]     = R(R(gate[i] * sig) * up[i]);
    }
}

void ref_swiglu_bwd(fk_dtype dt, int64_t n, const double *dout, const double *gate, const double *up,
                    double *dgate, double *dup) {
    for (int64_t i = 0; i < n; i++) {
        double g = gate[i], sig = R(1.0 / (1.0 + exp(-g)));
        double dsilu = R(sig * R(1.0 + R(g * R(1.0 - sig))));
        dgate[i]     = R(R(dout[i] * up[i]) * dsilu);
        dup[i]       = R(dout[i] * R(g * sig));
    }
}

// --- buffers ---------------------------------------------------------------------------------------------

bool ref_buf_alloc(ref_buf *b, size_t bytes, bool on_device) {
    memset(b, 0, sizeof *b);
    b->bytes = bytes;
    b->host  = malloc(bytes ? bytes : 1);
    if (!b->host) return false;
    if (on_device) {
        b->dev = fk_test_dev_alloc(bytes);
        if (!b->dev) {
            free(b->host);
            b->host = NULL;
            return false;
        }
    }
    return true;
}

void ref_buf_free(ref_buf *b) {
    free(b->host);
    if (b->dev) fk_test_dev_free(b->dev);
    memset(b, 0, sizeof *b);
}

void *ref_buf_ptr(const ref_buf *b) { return b->dev ? b->dev : b->host; }
bool  ref_buf_upload(const ref_buf *b) { return !b->dev || fk_test_h2d(b->dev, b->host, b->bytes); }
bool  ref_buf_download(const ref_buf *b) { return !b->dev || fk_test_d2h(b->host, b->dev, b->bytes); }

// --- views and verdicts ----------------------------------------------------------------------------------

int64_t ref_view_count(const fk_tensor *t) {
    int64_t n = 1;
    for (int d = 0; d < t->ndim; d++) n *= t->shape[d];
    return n;
}

// Element offset of the i-th element (row-major over t's shape) of view t.
static int64_t view_offset(const fk_tensor *t, int64_t i) {
    int64_t off = 0;
    for (int d = t->ndim - 1; d >= 0; d--) {
        off += (i % t->shape[d]) * t->stride[d];
        i /= t->shape[d];
    }
    return off;
}

void ref_view_read(const fk_tensor *t, const void *host, double *out) {
    int64_t n = ref_view_count(t);
    for (int64_t i = 0; i < n; i++) out[i] = fk_get(host, t->dtype, view_offset(t, i));
}

void ref_view_write(const fk_tensor *t, void *host, const double *in) {
    int64_t n = ref_view_count(t);
    for (int64_t i = 0; i < n; i++) fk_set(host, t->dtype, view_offset(t, i), in[i]);
}

bool ref_outside_view_untouched(const fk_tensor *t, const void *host, int64_t buf_elems) {
    unsigned char *in = (unsigned char *)calloc((size_t)buf_elems, 1);
    if (!in) return false;
    int64_t n = ref_view_count(t);
    for (int64_t i = 0; i < n; i++) in[view_offset(t, i)] = 1;
    bool ok = true;
    for (int64_t i = 0; i < buf_elems && ok; i++)
        if (!in[i] && !isnan(fk_get(host, t->dtype, i))) ok = false;
    free(in);
    return ok;
}

bool ref_verdict(const fk_tensor *t, const void *host, const double *ref, const double *naive, char *detail,
                 size_t detail_size) {
    int64_t n   = ref_view_count(t);
    double *got = (double *)malloc((size_t)n * sizeof(double));
    if (!got) {
        snprintf(detail, detail_size, "out of memory");
        return false;
    }
    ref_view_read(t, host, got);
    fk_err e  = fk_compare_d(got, ref, n);
    bool   ok = e.nonfinite == 0;
    if (t->dtype == FK_DTYPE_F32 || t->dtype == FK_DTYPE_F64) {
        double tol = t->dtype == FK_DTYPE_F32 ? 1e-5 : 1e-12;
        ok         = ok && e.rel <= tol;
        snprintf(detail, detail_size, "%s rel=%.3g (tol %.0e) max_abs=%.3g nonfinite=%lld", fk_dtype_name(t->dtype),
                 e.rel, tol, e.max_abs, (long long)e.nonfinite);
    } else {
        fk_err en  = fk_compare_d(naive, ref, n);
        double tol = 2.0 * en.max_abs + fk_dtype_eps(t->dtype) * e.max_ref;
        ok         = ok && e.max_abs <= tol;
        snprintf(detail, detail_size, "%s max_abs=%.3g (tol %.3g = 2 x naive %.3g + atol) rel=%.3g nonfinite=%lld",
                 fk_dtype_name(t->dtype), e.max_abs, tol, en.max_abs, e.rel, (long long)e.nonfinite);
    }
    free(got);
    return ok;
}
