/*
 * ref_merge.c — float64 reference of the attention merge (see ref_merge.h). Written from the definition
 * (a softmax over the union of disjoint key sets), independently of the library's formula.
 */
#include "ref_merge.h"

#include "common/fk_test.h"

#include <math.h>

void ref_attn_merge(fk_dtype dt, int64_t rows, int64_t d, int nparts, const double *out_parts,
                    const double *lse_parts, double *out, double *lse) {
    for (int64_t r = 0; r < rows; r++) {
        double *o = out + r * d;
        if (dt == FK_DTYPE_F64) {
            double m = -INFINITY;
            for (int k = 0; k < nparts; k++) m = fmax(m, lse_parts[k * rows + r]);
            for (int64_t x = 0; x < d; x++) o[x] = 0.0;
            if (m == -INFINITY) {
                lse[r] = -INFINITY;
                continue;
            }
            double s = 0.0;
            for (int k = 0; k < nparts; k++) {
                const double l = lse_parts[k * rows + r];
                if (l == -INFINITY) continue;
                const double w = exp(l - m);
                s += w;
                for (int64_t x = 0; x < d; x++) o[x] += w * out_parts[((int64_t)k * rows + r) * d + x];
            }
            for (int64_t x = 0; x < d; x++) o[x] /= s;
            lse[r] = m + log(s);
            continue;
        }
        // Running accumulator in dt: start empty (lse -inf), fold each part, round out after every fold.
        double la = -INFINITY;
        for (int64_t x = 0; x < d; x++) o[x] = 0.0;
        for (int k = 0; k < nparts; k++) {
            const double lp = lse_parts[k * rows + r];
            if (lp == -INFINITY) continue;
            const double l  = la == -INFINITY ? lp : fmax(la, lp) + log1p(exp(-fabs(la - lp)));
            const double wa = la == -INFINITY ? 0.0 : exp(la - l), wp = exp(lp - l);
            for (int64_t x = 0; x < d; x++)
                o[x] = fk_round_to(dt, wa * o[x] + wp * out_parts[((int64_t)k * rows + r) * d + x]);
            la = l;
        }
        lse[r] = la;
    }
}
