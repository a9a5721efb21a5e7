/*
 * ref_attn.c — float64 reference attention (see ref_attn.h). One query row at a time: its full score row
 * is materialized, then the softmax, then the output (and in backward the row's gradient terms).
 */
#include "ref_attn.h"

#include "common/fk_test.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define R(x) fk_round_to(dt, (x))

int64_t ref_attn_total(const int64_t *lens, int64_t batch) {
    int64_t t = 0;
    for (int64_t b = 0; b < batch; b++) t += lens[b];
    return t;
}

static int visible(const ref_attn_cfg *c, int64_t i, int64_t j, int64_t sq, int64_t sk) {
    int64_t diag = i + sk - sq;
    if (c->causal && j > diag) return 0;
    if (c->window_left >= 0 && j < diag - c->window_left) return 0;
    if (c->window_right >= 0 && j > diag + c->window_right) return 0;
    return 1;
}

// Score row of query (token qt, head h) against the sk keys starting at token k0; -inf where masked.
// Returns the number of visible keys. raw (optional) gets tanh values for the softcap derivative.
static int64_t score_row(fk_dtype dt, const ref_attn_cfg *c, const double *q, const double *k, int64_t b, int64_t h,
                         int64_t i, int64_t qt, int64_t k0, int64_t sq, int64_t sk, double *s, double *th) {
    const int64_t d = c->d, hk = h / (c->hq / c->hkv);
    int64_t       nvis = 0;
    for (int64_t j = 0; j < sk; j++) {
        if (!visible(c, i, j, sq, sk)) {
            s[j] = -INFINITY;
            continue;
        }
        nvis++;
        double dot = 0;
        for (int64_t e = 0; e < d; e++) dot += q[(qt * c->hq + h) * d + e] * k[((k0 + j) * c->hkv + hk) * d + e];
        double x = R(c->scale * dot);
        if (c->softcap > 0) {
            double t = R(tanh(R(x / c->softcap)));
            if (th) th[j] = t;
            x = R(c->softcap * t);
        }
        if (c->alibi) {
            double slope = c->alibi[b * c->alibi_bs + h];
            x            = R(x - R(slope * fabs((double)(i + sk - sq - j))));
        }
        s[j] = x;
    }
    return nvis;
}

void ref_attn_fwd(fk_dtype dt, const ref_attn_cfg *c, const double *q, const double *k, const double *v, double *o,
                  double *lse) {
    const int64_t d = c->d, total_q = ref_attn_total(c->len_q, c->batch);
    int64_t       maxk = 1;
    for (int64_t b = 0; b < c->batch; b++) maxk = c->len_k[b] > maxk ? c->len_k[b] : maxk;
    double *s = malloc((size_t)maxk * sizeof(double));
    for (int64_t b = 0, q0 = 0, k0 = 0; b < c->batch; q0 += c->len_q[b], k0 += c->len_k[b], b++) {
        const int64_t sq = c->len_q[b], sk = c->len_k[b];
        for (int64_t h = 0; h < c->hq; h++) {
            const int64_t hk = h / (c->hq / c->hkv);
            for (int64_t i = 0; i < sq; i++) {
                double *orow = o + ((q0 + i) * c->hq + h) * d;
                int64_t nvis = score_row(dt, c, q, k, b, h, i, q0 + i, k0, sq, sk, s, NULL);
                if (nvis == 0) {
                    for (int64_t e = 0; e < d; e++) orow[e] = 0;
                    lse[h * total_q + q0 + i] = -INFINITY;
                    continue;
                }
                double mx = -INFINITY, sum = 0;
                for (int64_t j = 0; j < sk; j++) mx = s[j] > mx ? s[j] : mx;
                for (int64_t j = 0; j < sk; j++) sum += exp(s[j] - mx);
                lse[h * total_q + q0 + i] = mx + log(sum);
                for (int64_t e = 0; e < d; e++) {
                    double acc = 0;
                    for (int64_t j = 0; j < sk; j++) {
                        if (s[j] == -INFINITY) continue;
                        acc += R(exp(s[j] - mx) / sum) * v[((k0 + j) * c->hkv + hk) * d + e];
                    }
                    orow[e] = R(acc);
                }
            }
        }
    }
    free(s);
}

void ref_attn_bwd(fk_dtype dt, const ref_attn_cfg *c, const double *q, const double *k, const double *v,
                  const double *dout, double *dq, double *dk, double *dv) {
    const int64_t d = c->d, total_k = ref_attn_total(c->len_k, c->batch), total_q = ref_attn_total(c->len_q, c->batch);
    int64_t       maxk = 1;
    for (int64_t b = 0; b < c->batch; b++) maxk = c->len_k[b] > maxk ? c->len_k[b] : maxk;
    double *s = malloc((size_t)maxk * sizeof(double)), *th = malloc((size_t)maxk * sizeof(double));
    double *pr = malloc((size_t)maxk * sizeof(double)), *ds = malloc((size_t)maxk * sizeof(double));
    memset(dq, 0, (size_t)(total_q * c->hq * d) * sizeof(double));
    memset(dk, 0, (size_t)(total_k * c->hkv * d) * sizeof(double));
    memset(dv, 0, (size_t)(total_k * c->hkv * d) * sizeof(double));
    for (int64_t b = 0, q0 = 0, k0 = 0; b < c->batch; q0 += c->len_q[b], k0 += c->len_k[b], b++) {
        const int64_t sq = c->len_q[b], sk = c->len_k[b];
        for (int64_t h = 0; h < c->hq; h++) {
            const int64_t hk = h / (c->hq / c->hkv);
            for (int64_t i = 0; i < sq; i++) {
                const double *qrow = q + ((q0 + i) * c->hq + h) * d, *dorow = dout + ((q0 + i) * c->hq + h) * d;
                double       *dqrow = dq + ((q0 + i) * c->hq + h) * d;
                if (score_row(dt, c, q, k, b, h, i, q0 + i, k0, sq, sk, s, th) == 0) continue;
                double mx = -INFINITY, sum = 0;
                for (int64_t j = 0; j < sk; j++) mx = s[j] > mx ? s[j] : mx;
                for (int64_t j = 0; j < sk; j++) sum += exp(s[j] - mx);
                // P, dP = dO . v_j, Di = sum_j P dP, dS = P (dP - Di) (times 1 - tanh^2 under softcap).
                double di = 0;
                for (int64_t j = 0; j < sk; j++) {
                    pr[j] = s[j] == -INFINITY ? 0 : R(exp(s[j] - mx) / sum);
                    double dp = 0;
                    for (int64_t e = 0; e < d; e++) dp += dorow[e] * v[((k0 + j) * c->hkv + hk) * d + e];
                    ds[j] = R(dp);
                    di += pr[j] * ds[j];
                }
                for (int64_t j = 0; j < sk; j++) {
                    if (pr[j] == 0 && s[j] == -INFINITY) {
                        ds[j] = 0;
                        continue;
                    }
                    double g = R(pr[j] * (ds[j] - di));
                    if (c->softcap > 0) g = R(g * R(1.0 - th[j] * th[j]));
                    ds[j] = g;
                }
                for (int64_t j = 0; j < sk; j++) {
                    if (s[j] == -INFINITY) continue;
                    const double *krow = k + ((k0 + j) * c->hkv + hk) * d;
                    double       *dkrow = dk + ((k0 + j) * c->hkv + hk) * d, *dvrow = dv + ((k0 + j) * c->hkv + hk) * d;
                    for (int64_t e = 0; e < d; e++) {
                        dqrow[e] += c->scale * ds[j] * krow[e];
                        dkrow[e] += c->scale * ds[j] * qrow[e];
                        dvrow[e] += pr[j] * dorow[e];
                    }
                }
            }
        }
    }
    if (dt != FK_DTYPE_F64) {
        for (int64_t x = 0; x < total_q * c->hq * d; x++) dq[x] = R(dq[x]);
        for (int64_t x = 0; x < total_k * c->hkv * d; x++) {
            dk[x] = R(dk[x]);
            dv[x] = R(dv[x]);
        }
    }
    free(s);
    free(th);
    free(pr);
    free(ds);
}
