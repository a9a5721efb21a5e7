/*
 * test_rmsnorm.c — RMSNorm forward (plain and with the fused residual add) and backward against the float64
 * reference, on every backend present; the reference's backward against central finite differences;
 * determinism of dweight; every bad-input rule.
 * Run: build/test_rmsnorm [-v] [-p SUBSTRING] [-b cpu|cuda]
 */
#include "common/fk_test.h"
#include "ref/ref_ops.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct backend {
    fk_device_kind kind;
    const char    *name;
    fk_context_t   ctx;
} backend;

static fk_tensor view2(void *data, fk_dtype dt, fk_device dev, int64_t rows, int64_t cols, int64_t rs) {
    fk_tensor t = fk_tensor_make(data, dt, dev, 2, (int64_t[]){rows, cols});
    t.stride[0] = rs;
    return t;
}
static fk_tensor view1(void *data, fk_dtype dt, fk_device dev, int64_t n) {
    return fk_tensor_make(data, dt, dev, 1, (int64_t[]){n});
}

static bool call_ok(fk_status st, const char *sig) {
    if (st == FK_STATUS_SUCCESS) return true;
    char msg[600];
    snprintf(msg, sizeof msg, "%s: %s", fk_status_string(st), fk_last_error_message());
    if (FK_STATUS_CATEGORY(st) == FK_STATUS_NOT_SUPPORTED) fk_test_skip(sig, msg);
    else fk_test_fail(sig, msg);
    return false;
}

static double *dalloc(int64_t n) { return (double *)malloc((size_t)(n > 0 ? n : 1) * sizeof(double)); }

typedef struct rms_case {
    fk_dtype dt, wdt, dwdt;
    int64_t  rows, hidden, pad;
    int      residual;  // fused add
    int      inplace;   // residual_out = residual (forward), dx = dy (backward)
    int      dres;      // dresidual_out in backward
    float    eps, offset;
    int      det;       // backward: deterministic = 1 (a GPU then keeps the static row assignment)
} rms_case;

static void run_case(const backend *be, const rms_case *c, uint64_t seed) {
    char sig[200];
    snprintf(sig, sizeof sig, "rmsnorm %s %s w=%s dw=%s rows=%lld hidden=%lld%s%s%s%s eps=%g off=%g%s", be->name,
             fk_dtype_name(c->dt), fk_dtype_name(c->wdt), fk_dtype_name(c->dwdt), (long long)c->rows,
             (long long)c->hidden, c->pad ? " strided" : "", c->residual ? " residual" : "",
             c->inplace ? " inplace" : "", c->dres ? " dres" : "", (double)c->eps, (double)c->offset,
             c->det ? " det" : "");
    if (!fk_test_selected(sig, be->kind)) return;
    const bool     gpu = be->kind == FK_DEVICE_CUDA;
    const fk_dtype dt = c->dt, sdt = dt == FK_DTYPE_F64 ? FK_DTYPE_F64 : FK_DTYPE_F32;
    const int64_t  R = c->rows, H = c->hidden, rs = H + c->pad, nb = R * rs, n = R * H;
    const size_t   es = fk_dtype_size(dt);
    fk_device      dev = {be->kind, 0};
    fk_rng         rng;
    fk_rng_seed(&rng, seed);

    ref_buf x, res, rout, y, w, rstd, dy, dres, dx, dw;
    bool    ok = ref_buf_alloc(&x, (size_t)nb * es, gpu) && ref_buf_alloc(&res, (size_t)nb * es, gpu) &&
              ref_buf_alloc(&rout, (size_t)nb * es, gpu) && ref_buf_alloc(&y, (size_t)nb * es, gpu) &&
              ref_buf_alloc(&w, (size_t)H * fk_dtype_size(c->wdt), gpu) &&
              ref_buf_alloc(&rstd, (size_t)R * fk_dtype_size(sdt), gpu) && ref_buf_alloc(&dy, (size_t)nb * es, gpu) &&
              ref_buf_alloc(&dres, (size_t)nb * es, gpu) && ref_buf_alloc(&dx, (size_t)nb * es, gpu) &&
              ref_buf_alloc(&dw, (size_t)H * fk_dtype_size(c->dwdt), gpu);
    if (!ok) {
        fk_test_fail(sig, "allocation failed");
        return;
    }
    fk_fill_normal(x.host, dt, nb, 1.0, &rng, NULL);
    fk_fill_normal(res.host, dt, nb, 1.0, &rng, NULL);
    fk_fill_normal(w.host, c->wdt, H, 1.0, &rng, NULL);
    fk_fill_normal(dy.host, dt, nb, 1.0, &rng, NULL);
    fk_fill_normal(dres.host, dt, nb, 1.0, &rng, NULL);
    fk_poison(rout.host, dt, nb);
    fk_poison(y.host, dt, nb);
    fk_poison(rstd.host, sdt, R);
    fk_poison(dx.host, dt, nb);
    fk_poison(dw.host, c->dwdt, H);

    // Views (device pointers for the call, host twins for reading back).
    fk_tensor tx = view2(ref_buf_ptr(&x), dt, dev, R, H, rs), hx = view2(x.host, dt, dev, R, H, rs);
    fk_tensor tres = view2(ref_buf_ptr(&res), dt, dev, R, H, rs), hres = view2(res.host, dt, dev, R, H, rs);
    ref_buf  *routb = c->inplace ? &res : &rout;
    fk_tensor trout = view2(ref_buf_ptr(routb), dt, dev, R, H, rs), hrout = view2(routb->host, dt, dev, R, H, rs);
    fk_tensor ty = view2(ref_buf_ptr(&y), dt, dev, R, H, rs), hy = view2(y.host, dt, dev, R, H, rs);
    fk_tensor tw = view1(ref_buf_ptr(&w), c->wdt, dev, H), hw = view1(w.host, c->wdt, dev, H);
    fk_tensor trstd = view1(ref_buf_ptr(&rstd), sdt, dev, R), hrstd = view1(rstd.host, sdt, dev, R);
    fk_tensor tdy = view2(ref_buf_ptr(&dy), dt, dev, R, H, rs), hdy = view2(dy.host, dt, dev, R, H, rs);
    fk_tensor tdres = view2(ref_buf_ptr(&dres), dt, dev, R, H, rs), hdres = view2(dres.host, dt, dev, R, H, rs);
    ref_buf  *dxb = c->inplace ? &dy : &dx;
    fk_tensor tdx = view2(ref_buf_ptr(dxb), dt, dev, R, H, rs), hdx = view2(dxb->host, dt, dev, R, H, rs);
    fk_tensor tdw = view1(ref_buf_ptr(&dw), c->dwdt, dev, H), hdw = view1(dw.host, c->dwdt, dev, H);

    double *x64 = dalloc(n), *r64 = dalloc(n), *h64 = dalloc(n), *w64 = dalloc(H), *dy64 = dalloc(n);
    double *dres64 = dalloc(n), *ref = dalloc(n), *nv = dalloc(n), *rs_ref = dalloc(R), *rs_nv = dalloc(R);
    double *dw_ref = dalloc(H), *dw_nv = dalloc(H);
    ref_view_read(&hx, hx.data, x64);
    ref_view_read(&hres, hres.data, r64);
    ref_view_read(&hw, hw.data, w64);
    ref_view_read(&hdy, hdy.data, dy64);
    ref_view_read(&hdres, hdres.data, dres64);
    // h is what gets normalized: x, or x + residual rounded to the storage dtype.
    for (int64_t i = 0; i < n; i++) h64[i] = c->residual ? fk_round_to(dt, x64[i] + r64[i]) : x64[i];
    char detail[1400], d1[400], d2[400], d3[400], s2[260];

    // --- forward ---
    fk_rmsnorm_args a;
    fk_rmsnorm_args_init(&a);
    a.x = tx, a.weight = tw, a.y = ty, a.rstd = trstd, a.eps = c->eps, a.weight_offset = c->offset;
    if (c->residual) a.residual = tres, a.residual_out = trout;
    snprintf(s2, sizeof s2, "%s fwd", sig);
    ok = ref_buf_upload(&x) && ref_buf_upload(&res) && ref_buf_upload(&rout) && ref_buf_upload(&y) &&
         ref_buf_upload(&w) && ref_buf_upload(&rstd);
    if (!ok) fk_test_fail(s2, "device copy failed");
    else if (call_ok(fk_rmsnorm_fwd(be->ctx, &a, NULL), s2)) {
        if (!ref_buf_download(routb) || !ref_buf_download(&y) || !ref_buf_download(&rstd)) {
            fk_test_fail(s2, "device copy failed");
        } else {
            ref_rmsnorm_fwd(FK_DTYPE_F64, R, H, h64, w64, c->eps, c->offset, ref, rs_ref);
            ref_rmsnorm_fwd(dt, R, H, h64, w64, c->eps, c->offset, nv, rs_nv);
            bool oky = ref_verdict(&hy, hy.data, ref, nv, d1, sizeof d1);
            // rstd is stored in fp32 (f64): its tolerance is that dtype's, whatever x's dtype.
            fk_tensor hr = hrstd;
            bool      okr;
            {
                fk_err e = fk_compare(hr.data, sdt, rs_ref, R);
                okr      = e.nonfinite == 0 && e.rel <= (sdt == FK_DTYPE_F64 ? 1e-12 : 1e-5);
                snprintf(d2, sizeof d2, "rel=%.3g", e.rel);
            }
            bool okh = true;
            d3[0]    = '\0';
            if (c->residual) { // residual_out must hold round(x + residual) exactly
                double *got = dalloc(n);
                ref_view_read(&hrout, hrout.data, got);
                fk_err e = fk_compare_d(got, h64, n);
                okh      = e.nonfinite == 0 && e.max_abs == 0;
                snprintf(d3, sizeof d3, " | residual_out max_abs=%.3g", e.max_abs);
                free(got);
            }
            bool untouched = ref_outside_view_untouched(&hy, hy.data, nb) &&
                             (!c->residual || c->inplace || ref_outside_view_untouched(&hrout, hrout.data, nb));
            snprintf(detail, sizeof detail, "y: %s | rstd: %s%s%s", d1, d2, d3,
                     untouched ? "" : " | wrote outside a view");
            fk_test_check(oky && okr && okh && untouched, s2, detail);
        }
    }

    // --- backward: h as forward left it, rstd from the reference (rounded to its storage dtype) ---
    ref_rmsnorm_fwd(FK_DTYPE_F64, R, H, h64, w64, c->eps, c->offset, ref, rs_ref);
    for (int64_t r = 0; r < R; r++) fk_set(rstd.host, sdt, r, rs_ref[r]), rs_ref[r] = fk_get(rstd.host, sdt, r);
    fk_tensor th = tx, hh = hx;
    if (c->residual) {
        th = trout, hh = hrout;
        ref_view_write(&hh, hh.data, h64);
    } else {
        ref_view_write(&hh, hh.data, h64); // x unchanged; rewritten in case nothing ran
    }
    fk_rmsnorm_args_init(&a);
    a.x = th, a.weight = tw, a.rstd = trstd, a.dy = tdy, a.dx = tdx, a.dweight = tdw;
    a.eps = c->eps, a.weight_offset = c->offset, a.deterministic = c->det;
    if (c->dres) a.dresidual_out = tdres;
    snprintf(s2, sizeof s2, "%s bwd", sig);
    size_t   wsb = 0;
    fk_status st = fk_rmsnorm_bwd_workspace_size(be->ctx, &a, &wsb);
    if (st == FK_STATUS_SUCCESS) { // the size asked for does not depend on `deterministic`
        size_t other = 0;
        a.deterministic = !c->det;
        if (fk_rmsnorm_bwd_workspace_size(be->ctx, &a, &other) != FK_STATUS_SUCCESS || other != wsb) {
            char why[128];
            snprintf(why, sizeof why, "workspace size %zu with deterministic = %d, %zu with %d", wsb, c->det, other, !c->det);
            fk_test_fail(s2, why);
        }
        a.deterministic = c->det;
    }
    ref_buf  ws;
    if (!call_ok(st, s2)) {
        // reported
    } else if (!ref_buf_alloc(&ws, wsb, gpu)) {
        fk_test_fail(s2, "workspace allocation failed");
    } else {
        // The workspace as a caller may pass it: any bytes (the GPU's run-time row counter claims it afresh).
        for (size_t i = 0; i < wsb; i++) ((unsigned char *)ws.host)[i] = (unsigned char)(0xa5 ^ (i * 131));
        if (gpu && !ref_buf_upload(&ws)) fk_test_fail(s2, "device copy failed");
        ok = ref_buf_upload(routb) && ref_buf_upload(&x) && ref_buf_upload(&rstd) && ref_buf_upload(&dy) &&
             ref_buf_upload(&dres) && ref_buf_upload(&dx) && ref_buf_upload(&dw);
        if (!ok) fk_test_fail(s2, "device copy failed");
        else if (call_ok(fk_rmsnorm_bwd(be->ctx, &a, ref_buf_ptr(&ws), wsb, NULL), s2)) {
            if (!ref_buf_download(dxb) || !ref_buf_download(&dw)) {
                fk_test_fail(s2, "device copy failed");
            } else {
                const double *dr = c->dres ? dres64 : NULL;
                ref_rmsnorm_bwd(FK_DTYPE_F64, R, H, h64, w64, c->offset, rs_ref, dy64, dr, ref, dw_ref);
                ref_rmsnorm_bwd(dt, R, H, h64, w64, c->offset, rs_ref, dy64, dr, nv, dw_nv);
                bool okx = ref_verdict(&hdx, hdx.data, ref, nv, d1, sizeof d1);
                // dweight is judged in its own dtype; the naive bound uses x's dtype math. In fp32/f64 it is a
                // sum over rows that can cancel, so its error is measured against the size of the summands,
                // sum_r |dy h rstd| (the usual backward-stability yardstick for a reduction).
                bool okw;
                if (c->dwdt == FK_DTYPE_F32 || c->dwdt == FK_DTYPE_F64) {
                    double num = 0, den = 0;
                    int64_t bad = 0;
                    for (int64_t j = 0; j < H; j++) {
                        double sabs = 0, got = fk_get(dw.host, c->dwdt, j);
                        for (int64_t r = 0; r < R; r++) sabs += fabs(dy64[r * H + j] * h64[r * H + j] * rs_ref[r]);
                        if (!isfinite(got)) bad++;
                        num += (got - dw_ref[j]) * (got - dw_ref[j]);
                        den += sabs * sabs;
                    }
                    double rel = den > 0 ? sqrt(num / den) : sqrt(num), tol = c->dwdt == FK_DTYPE_F32 ? 1e-5 : 1e-12;
                    okw = bad == 0 && rel <= tol;
                    snprintf(d2, sizeof d2, "%s rel to sum|terms| = %.3g (tol %.0e) nonfinite=%lld",
                             fk_dtype_name(c->dwdt), rel, tol, (long long)bad);
                } else {
                    okw = ref_verdict(&hdw, hdw.data, dw_ref, dw_nv, d2, sizeof d2);
                }
                bool untouched = c->inplace || ref_outside_view_untouched(&hdx, hdx.data, nb);
                // A second run with the same workspace: bit-identical dx always, and bit-identical dweight on
                // the CPU and when deterministic (else dweight's summation order may change: it is judged again).
                bool same = true, dw2 = true;
                {
                    size_t dwb = (size_t)H * fk_dtype_size(c->dwdt), dxbytes = (size_t)nb * es;
                    void  *keep = malloc(dwb), *keepx = malloc(dxbytes);
                    memcpy(keep, dw.host, dwb), memcpy(keepx, dxb->host, dxbytes);
                    ref_view_write(&hdy, hdy.data, dy64); // in place runs overwrote dy
                    same = ref_buf_upload(&dy) &&
                           fk_rmsnorm_bwd(be->ctx, &a, ref_buf_ptr(&ws), wsb, NULL) == FK_STATUS_SUCCESS &&
                           ref_buf_download(dxb) && ref_buf_download(&dw) && memcmp(keepx, dxb->host, dxbytes) == 0;
                    if (!gpu || c->det) same = same && memcmp(keep, dw.host, dwb) == 0;
                    else if (c->dwdt != FK_DTYPE_F32 && c->dwdt != FK_DTYPE_F64) {
                        char again[160];
                        dw2 = ref_verdict(&hdw, hdw.data, dw_ref, dw_nv, again, sizeof again);
                    }
                    free(keep), free(keepx);
                }
                snprintf(detail, sizeof detail, "dx: %s | dweight: %s%s%s%s", d1, d2,
                         untouched ? "" : " | wrote outside dx's view",
                         same ? "" : " | second run: dx (or deterministic dweight) not bit-identical",
                         dw2 ? "" : " | second run: dweight out of tolerance");
                fk_test_check(okx && okw && untouched && same && dw2, s2, detail);
            }
        }
        ref_buf_free(&ws);
    }

    free(x64), free(r64), free(h64), free(w64), free(dy64), free(dres64), free(ref), free(nv), free(rs_ref);
    free(rs_nv), free(dw_ref), free(dw_nv);
    ref_buf_free(&x), ref_buf_free(&res), ref_buf_free(&rout), ref_buf_free(&y), ref_buf_free(&w);
    ref_buf_free(&rstd), ref_buf_free(&dy), ref_buf_free(&dres), ref_buf_free(&dx), ref_buf_free(&dw);
}

// The reference backward against central differences of the reference forward.
// loss = sum(y * gy) + sum(h * gr): its gradient w.r.t. h is dx with dresidual_out = gr.
static void check_reference_gradients(void) {
    const char *sig = "rmsnorm reference bwd vs finite differences";
    if (!fk_test_selected(sig, FK_DEVICE_CPU)) return;
    enum { RR = 2, HH = 5 };
    fk_rng rng;
    fk_rng_seed(&rng, 11);
    double h[RR * HH], w[HH], gy[RR * HH], gr[RR * HH], y[RR * HH], rstd[RR], dx[RR * HH], dw[HH];
    for (int i = 0; i < RR * HH; i++) h[i] = fk_rng_normal(&rng), gy[i] = fk_rng_normal(&rng), gr[i] = fk_rng_normal(&rng);
    for (int i = 0; i < HH; i++) w[i] = fk_rng_normal(&rng);
    double worst = 0;
    for (int off = 0; off < 2; off++) {
        const double eps = 1e-3;
        ref_rmsnorm_fwd(FK_DTYPE_F64, RR, HH, h, w, eps, off, y, rstd);
        ref_rmsnorm_bwd(FK_DTYPE_F64, RR, HH, h, w, off, rstd, gy, gr, dx, dw);
        for (int which = 0; which < 2; which++)
            for (int i = 0; i < (which ? HH : RR * HH); i++) {
                double *v = which ? w : h, keep = v[i], step = 1e-5, l[2];
                for (int sgn = 0; sgn < 2; sgn++) {
                    v[i] = keep + (sgn ? -step : step);
                    ref_rmsnorm_fwd(FK_DTYPE_F64, RR, HH, h, w, eps, off, y, rstd);
                    l[sgn] = 0;
                    for (int j = 0; j < RR * HH; j++) l[sgn] += y[j] * gy[j] + h[j] * gr[j];
                }
                v[i]      = keep;
                double fd = (l[0] - l[1]) / (2 * step), an = which ? dw[i] : dx[i];
                double e  = fabs(fd - an) / (1 + fabs(an));
                if (e > worst) worst = e;
            }
    }
    char detail[100];
    snprintf(detail, sizeof detail, "max error %.2e (tol 1e-7)", worst);
    fk_test_check(worst < 1e-7, sig, detail);
}

static void expect(fk_status got, fk_status want, const char *sig) {
    char        detail[700];
    const char *msg = fk_last_error_message();
    snprintf(detail, sizeof detail, "got %d (%s), want %d; message: \"%s\"", (int)got, fk_status_string(got),
             (int)want, msg);
    fk_test_check(got == want && msg[0] != '\0', sig, detail);
}

static void negative_tests(fk_context_t ctx) {
    if (!fk_test_selected("rmsnorm bad", FK_DEVICE_CPU)) return;
    fk_device cpu = {FK_DEVICE_CPU, 0}, gpu = {FK_DEVICE_CUDA, 0};
    static float buf[8][4 * 16], ws[4096];
    for (int i = 0; i < 8; i++)
        for (int j = 0; j < 64; j++) buf[i][j] = 0.25f + (float)j / 64;
    fk_rmsnorm_args g; // a valid forward + backward call
    fk_rmsnorm_args_init(&g);
    g.x            = fk_tensor_make(buf[0], FK_DTYPE_F32, cpu, 2, (int64_t[]){4, 16});
    g.residual     = fk_tensor_make(buf[1], FK_DTYPE_F32, cpu, 2, (int64_t[]){4, 16});
    g.residual_out = fk_tensor_make(buf[2], FK_DTYPE_F32, cpu, 2, (int64_t[]){4, 16});
    g.y            = fk_tensor_make(buf[3], FK_DTYPE_F32, cpu, 2, (int64_t[]){4, 16});
    g.weight       = fk_tensor_make(buf[4], FK_DTYPE_F32, cpu, 1, (int64_t[]){16});
    g.rstd         = fk_tensor_make(buf[5], FK_DTYPE_F32, cpu, 1, (int64_t[]){4});
    g.dy           = fk_tensor_make(buf[6], FK_DTYPE_F32, cpu, 2, (int64_t[]){4, 16});
    g.dx           = fk_tensor_make(buf[7], FK_DTYPE_F32, cpu, 2, (int64_t[]){4, 16});
    g.dweight      = fk_tensor_make(buf[4] + 16, FK_DTYPE_F32, cpu, 1, (int64_t[]){16});
    size_t need = 0;
    fk_status st = fk_rmsnorm_fwd(ctx, &g, NULL);
    fk_test_check(st == FK_STATUS_SUCCESS && !fk_last_error_message()[0], "rmsnorm bad: control fwd", fk_last_error_message());
    st = fk_rmsnorm_bwd_workspace_size(ctx, &g, &need);
    fk_test_check(st == FK_STATUS_SUCCESS && need > 0 && need <= sizeof ws, "rmsnorm bad: control workspace size", "");
    st = fk_rmsnorm_bwd(ctx, &g, ws, sizeof ws, NULL);
    fk_test_check(st == FK_STATUS_SUCCESS && !fk_last_error_message()[0], "rmsnorm bad: control bwd", fk_last_error_message());

    fk_rmsnorm_args a;
#define FWD(sig, want, ...) (a = g, __VA_ARGS__, expect(fk_rmsnorm_fwd(ctx, &a, NULL), want, "rmsnorm bad: " sig))
#define BWD(sig, want, ...) (a = g, __VA_ARGS__, expect(fk_rmsnorm_bwd(ctx, &a, ws, sizeof ws, NULL), want, "rmsnorm bad: " sig))
    expect(fk_rmsnorm_fwd(NULL, &g, NULL), FK_STATUS_BAD_PARAM_NULL_POINTER, "rmsnorm bad: ctx NULL");
    expect(fk_rmsnorm_fwd(ctx, NULL, NULL), FK_STATUS_BAD_PARAM_NULL_POINTER, "rmsnorm bad: args NULL");
    expect(fk_rmsnorm_bwd(ctx, NULL, ws, sizeof ws, NULL), FK_STATUS_BAD_PARAM_NULL_POINTER, "rmsnorm bad: args NULL (bwd)");
    expect(fk_rmsnorm_bwd_workspace_size(ctx, &g, NULL), FK_STATUS_BAD_PARAM_NULL_POINTER, "rmsnorm bad: bytes NULL");
    FWD("x.data NULL", FK_STATUS_BAD_PARAM_NULL_POINTER, a.x.data = NULL);
    FWD("y absent", FK_STATUS_BAD_PARAM_NULL_POINTER, a.y = fk_tensor_none());
    FWD("weight absent", FK_STATUS_BAD_PARAM_NULL_POINTER, a.weight = fk_tensor_none());
    FWD("residual without residual_out", FK_STATUS_BAD_PARAM_NULL_POINTER, a.residual_out = fk_tensor_none());
    FWD("residual_out without residual", FK_STATUS_BAD_PARAM, a.residual = fk_tensor_none());
    BWD("rstd absent (bwd)", FK_STATUS_BAD_PARAM_NULL_POINTER, a.rstd = fk_tensor_none());
    BWD("dweight absent (bwd)", FK_STATUS_BAD_PARAM_NULL_POINTER, a.dweight = fk_tensor_none());
    BWD("dy absent (bwd)", FK_STATUS_BAD_PARAM_NULL_POINTER, a.dy = fk_tensor_none());
    FWD("x ndim 3", FK_STATUS_BAD_PARAM_NDIM, a.x.ndim = 3, a.x.shape[2] = 1, a.x.stride[2] = 1);
    FWD("weight ndim 2", FK_STATUS_BAD_PARAM_NDIM, a.weight.ndim = 2, a.weight.shape[1] = 1, a.weight.stride[1] = 1);
    FWD("y rows differ", FK_STATUS_BAD_PARAM_SHAPE, a.y.shape[0] = 3);
    FWD("weight length differs", FK_STATUS_BAD_PARAM_SHAPE, a.weight.shape[0] = 15);
    FWD("residual hidden differs", FK_STATUS_BAD_PARAM_SHAPE, a.residual.shape[1] = 8);
    FWD("rstd length differs", FK_STATUS_BAD_PARAM_SHAPE, a.rstd.shape[0] = 5);
    BWD("dx hidden differs (bwd)", FK_STATUS_BAD_PARAM_SHAPE, a.dx.shape[1] = 8);
    BWD("dweight length differs (bwd)", FK_STATUS_BAD_PARAM_SHAPE, a.dweight.shape[0] = 8);
    FWD("x rows 0", FK_STATUS_BAD_PARAM_SHAPE, a.x.shape[0] = 0);
    FWD("x inner stride 2", FK_STATUS_BAD_PARAM_STRIDE, a.x.stride[1] = 2, a.x.shape[0] = 2, a.y.shape[0] = 2,
        a.residual.shape[0] = 2, a.residual_out.shape[0] = 2, a.rstd.shape[0] = 2);
    FWD("y negative row stride", FK_STATUS_BAD_PARAM_STRIDE, a.y.stride[0] = -16);
    FWD("y dtype differs", FK_STATUS_BAD_PARAM_DTYPE_MISMATCH, a.y.dtype = FK_DTYPE_BF16);
    FWD("residual dtype differs", FK_STATUS_BAD_PARAM_DTYPE_MISMATCH, a.residual.dtype = FK_DTYPE_F16);
    FWD("rstd dtype f16", FK_STATUS_BAD_PARAM_DTYPE_MISMATCH, a.rstd.dtype = FK_DTYPE_F16);
    BWD("dy dtype differs (bwd)", FK_STATUS_BAD_PARAM_DTYPE_MISMATCH, a.dy.dtype = FK_DTYPE_BF16);
    FWD("x int32", FK_STATUS_NOT_SUPPORTED_DTYPE, a.x.dtype = FK_DTYPE_INT32);
    FWD("weight int64", FK_STATUS_NOT_SUPPORTED_DTYPE, a.weight.dtype = FK_DTYPE_INT64);
    BWD("dweight int32 (bwd)", FK_STATUS_NOT_SUPPORTED_DTYPE, a.dweight.dtype = FK_DTYPE_INT32);
    FWD("y on cuda", FK_STATUS_BAD_PARAM_DEVICE_MISMATCH, a.y.device = gpu);
    BWD("dx on cuda (bwd)", FK_STATUS_BAD_PARAM_DEVICE_MISMATCH, a.dx.device = gpu);
    FWD("eps negative", FK_STATUS_BAD_PARAM_VALUE, a.eps = -1e-6f);
    FWD("eps NaN", FK_STATUS_BAD_PARAM_VALUE, a.eps = NAN);
    FWD("eps inf", FK_STATUS_BAD_PARAM_VALUE, a.eps = INFINITY);
    FWD("weight_offset 0.5", FK_STATUS_BAD_PARAM_VALUE, a.weight_offset = 0.5f);
    BWD("eps negative (bwd)", FK_STATUS_BAD_PARAM_VALUE, a.eps = -1.0f);
#undef FWD
#undef BWD
    expect(fk_rmsnorm_bwd(ctx, &g, ws, need - 1, NULL), FK_STATUS_WORKSPACE_TOO_SMALL, "rmsnorm bad: workspace too small");
    expect(fk_rmsnorm_bwd(ctx, &g, NULL, 0, NULL), FK_STATUS_WORKSPACE_TOO_SMALL, "rmsnorm bad: workspace NULL, 0 bytes");
    expect(fk_rmsnorm_bwd(ctx, &g, NULL, need, NULL), FK_STATUS_BAD_PARAM_NULL_POINTER, "rmsnorm bad: workspace NULL");
}

static void cuda_f64_refused(const backend *be) {
    const char *sig = "rmsnorm cuda f64 refused";
    if (!fk_test_selected(sig, be->kind)) return;
    fk_device dev = {FK_DEVICE_CUDA, 0};
    void     *p   = fk_test_dev_alloc(4 * 8 * sizeof(double) * 2);
    if (!p) {
        fk_test_fail(sig, "device allocation failed");
        return;
    }
    fk_rmsnorm_args a;
    fk_rmsnorm_args_init(&a);
    a.x = a.y = fk_tensor_make(p, FK_DTYPE_F64, dev, 2, (int64_t[]){4, 8});
    a.weight  = fk_tensor_make((double *)p + 32, FK_DTYPE_F64, dev, 1, (int64_t[]){8});
    expect(fk_rmsnorm_fwd(be->ctx, &a, NULL), FK_STATUS_NOT_SUPPORTED_DTYPE, sig);
    fk_test_dev_free(p);
}

int main(int argc, char **argv) {
    fk_test_init(argc, argv, "test_rmsnorm");
    backend     bes[2];
    int         nbe = 0;
    const char *why = NULL;
    fk_device   cpu = {FK_DEVICE_CPU, 0};
    if (fk_context_init(cpu, NULL, &bes[nbe].ctx) == FK_STATUS_SUCCESS) {
        bes[nbe].kind = FK_DEVICE_CPU, bes[nbe].name = "cpu";
        nbe++;
    } else {
        fk_test_fail("rmsnorm cpu context", fk_last_error_message());
    }
    if (fk_test_have_cuda(&why)) {
        fk_device gpu = {FK_DEVICE_CUDA, 0};
        if (fk_context_init(gpu, NULL, &bes[nbe].ctx) == FK_STATUS_SUCCESS) {
            bes[nbe].kind = FK_DEVICE_CUDA, bes[nbe].name = "cuda";
            nbe++;
        } else {
            fk_test_fail("rmsnorm cuda context", fk_last_error_message());
        }
    } else {
        fk_test_skip("rmsnorm cuda", why);
    }

    static const fk_dtype dtypes[] = {FK_DTYPE_F32, FK_DTYPE_F16, FK_DTYPE_BF16, FK_DTYPE_F64};
    // 5120 and 5000: on CUDA the backward's ring kernel (640 vectors of fp16/bf16; 5000 ends in a partial one).
    // 12000 and 40000: wide rows (on CUDA the largest register-resident shapes and the kernels that re-read).
    // 2048, 3000, 4096, 5120, 8192: on CUDA the forward's one-row-a-block kernel (256..1024 whole vectors; with 3000
    // and 5000 some of the last warp's vectors fall past the row; 2047 and 4095 end in a partial vector: not that
    // kernel), with and without the residual.
    static const int64_t  hiddens[] = {1, 7, 17, 1000, 2047, 2048, 3000, 4095, 4096, 5000, 5120, 8192, 12000, 40000};
    static const int64_t  rowss[]   = {1, 3, 257};
    uint64_t              seed      = 1;
    for (int b = 0; b < nbe; b++) {
        int k = 0; // case counter: cycles the secondary options so every combination appears
        for (size_t di = 0; di < 4; di++) {
            fk_dtype dt = dtypes[di];
            if (bes[b].kind == FK_DEVICE_CUDA && dt == FK_DTYPE_F64) continue;
            for (size_t hi = 0; hi < sizeof hiddens / sizeof hiddens[0]; hi++)
                for (size_t ri = 0; ri < 3; ri++)
                    for (int variant = 0; variant < 2; variant++, k++) {
                        if (hiddens[hi] >= 2048 && rowss[ri] > 3) continue; // keeps the driver fast under ASan
                        rms_case c;
                        c.dt       = dt;
                        c.rows     = rowss[ri];
                        c.hidden   = hiddens[hi];
                        c.residual = variant;
                        c.offset   = (float)((k >> 1) & 1);
                        c.inplace  = (k % 3) == 0;
                        c.dres     = variant && (k % 4) != 1;
                        c.pad      = (k % 2) ? 5 : 0;
                        // Mixed weight dtypes: fp32 weights with low-precision x, bf16 weights with fp32 x.
                        c.wdt  = (k % 3 == 1) ? (dt == FK_DTYPE_F32 ? FK_DTYPE_BF16 : FK_DTYPE_F32) : dt;
                        c.dwdt = (k % 5 == 2) ? FK_DTYPE_F32 : c.wdt;
                        if (dt == FK_DTYPE_F64) c.wdt = c.dwdt = (k % 3 == 1) ? FK_DTYPE_F32 : FK_DTYPE_F64;
                        // hidden 1: dx = rstd g eps / (h^2 + eps) cancels catastrophically for tiny eps
                        // (any fp32 kernel loses ~eps_fp32 / eps relative); a larger eps keeps it conditioned.
                        c.eps = c.hidden == 1 ? 0.5f : (k % 5 == 3 ? 1e-5f : 1e-6f);
                        run_case(&bes[b], &c, seed++);
                    }
        }
        if (bes[b].kind == FK_DEVICE_CUDA) {
            // The backward's bulk-copy ring (rms_bwd_tma_kernel, 9.0+ devices; 256..1024 whole vectors) wraps
            // around, and its slots' barriers change phase, only when a block has more rows than ring slots:
            // 1500 rows (6+ rows a block at any grid). fp32 at 1024 (256 vectors) and 4096 (1024), bf16 and fp16
            // at 2048 .. 8192; with and without dresidual_out, dx in place of dy or not.
            static const struct {
                fk_dtype dt;
                int64_t  hidden;
                int      wf32; // weight and dweight in fp32
            } ring[] = {{FK_DTYPE_BF16, 2048, 0}, {FK_DTYPE_BF16, 3000, 0}, {FK_DTYPE_F16, 4096, 0},
                        {FK_DTYPE_BF16, 5120, 1}, {FK_DTYPE_BF16, 8192, 0}, {FK_DTYPE_F32, 1024, 0},
                        {FK_DTYPE_F32, 4096, 0},  {FK_DTYPE_F32, 2048, 0},  {FK_DTYPE_BF16, 4096, 1}};
            // Variant 2 is variant 0 with deterministic = 1: exact rows of 256 / 512 vectors (bf16 2048 and 4096,
            // fp16 4096, fp32 1024 and 2048) otherwise take the run-time rows (rms_bwd_vec1_kernel's DYN: two
            // groups a block, 1024 threads at 512 vectors; the weight staged first when it has the rows' dtype,
            // else the fp32 weight's staging; variant 1 with dresidual_out's instance).
            for (size_t i = 0; i < sizeof ring / sizeof ring[0]; i++)
                for (int variant = 0; variant < 3; variant++) {
                    rms_case c = {.dt = ring[i].dt, .wdt = ring[i].dt, .dwdt = ring[i].dt, .rows = 1500,
                                  .hidden = ring[i].hidden, .pad = 0, .residual = variant == 1, .inplace = (int)(i % 2),
                                  .dres = variant == 1, .eps = 1e-6f, .offset = (float)(variant == 1), .det = variant == 2};
                    if (ring[i].wf32) c.wdt = c.dwdt = FK_DTYPE_F32;
                    run_case(&bes[b], &c, seed++);
                }
            cuda_f64_refused(&bes[b]);
        }
    }
    check_reference_gradients();
    if (nbe > 0 && bes[0].kind == FK_DEVICE_CPU) negative_tests(bes[0].ctx);
    for (int b = 0; b < nbe; b++) fk_context_free(bes[b].ctx);
    return fk_test_finish();
}
