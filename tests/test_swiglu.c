/*
 * test_swiglu.c — SwiGLU forward and backward against the float64 reference, on every backend present;
 * the reference's backward against central finite differences; every bad-input rule.
 * Run: build/test_swiglu [-v] [-p SUBSTRING] [-b cpu|cuda]
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

static const fk_dtype dtypes[] = {FK_DTYPE_F32, FK_DTYPE_F16, FK_DTYPE_BF16, FK_DTYPE_F64};

static fk_tensor view2(void *data, fk_dtype dt, fk_device dev, int64_t rows, int64_t cols, int64_t rs) {
    fk_tensor t = fk_tensor_make(data, dt, dev, 2, (int64_t[]){rows, cols});
    t.stride[0] = rs;
    return t;
}

// Records a call's status: true to go on; a "not supported" answer is a skip with the library's reason.
static bool call_ok(fk_status st, const char *sig) {
    if (st == FK_STATUS_SUCCESS) return true;
    char msg[600];
    snprintf(msg, sizeof msg, "%s: %s", fk_status_string(st), fk_last_error_message());
    if (FK_STATUS_CATEGORY(st) == FK_STATUS_NOT_SUPPORTED) fk_test_skip(sig, msg);
    else fk_test_fail(sig, msg);
    return false;
}

// One layout: separate padded tensors (packed = 0), gate/up (dgate/dup) as the two halves of one
// [rows, 2 * width] tensor (packed = 1), or separate contiguous tensors (packed = 2: the layout a backend may
// treat as one long row). inplace = 1 writes out over gate, and dgate/dup over gate/up.
static void run_case(const backend *be, fk_dtype dt, int64_t rows, int64_t width, int packed, int inplace,
                     uint64_t seed) {
    char sig[160];
    snprintf(sig, sizeof sig, "swiglu %s %s rows=%lld width=%lld %s%s", be->name, fk_dtype_name(dt),
             (long long)rows, (long long)width, packed == 1 ? "packed" : packed == 2 ? "contiguous" : "separate",
             inplace ? " inplace" : "");
    if (!fk_test_selected(sig, be->kind)) return;
    const bool    gpu = be->kind == FK_DEVICE_CUDA;
    const size_t  es  = fk_dtype_size(dt);
    fk_device     dev = {be->kind, 0};
    fk_rng        rng;
    fk_rng_seed(&rng, seed);

    // Buffers: inputs gu (gate|up), output o, gradient in d, gradient outputs dgu (dgate|dup).
    const int64_t pad = packed == 2 ? 0 : 3;
    const int64_t rs  = packed == 1 ? 2 * width : width + pad;          // row stride of every view
    const int64_t nel = packed == 1 ? rows * 2 * width : 2 * rows * rs; // gu and dgu elements
    const int64_t up0 = packed == 1 ? width : rows * rs;                // where up starts in gu
    ref_buf gu, o, d, dgu;
    if (!ref_buf_alloc(&gu, (size_t)nel * es, gpu) || !ref_buf_alloc(&o, (size_t)(rows * rs) * es, gpu) ||
        !ref_buf_alloc(&d, (size_t)(rows * rs) * es, gpu) || !ref_buf_alloc(&dgu, (size_t)nel * es, gpu)) {
        fk_test_fail(sig, "allocation failed");
        return;
    }
    fk_fill_normal(gu.host, dt, nel, 2.0, &rng, NULL);
    fk_fill_normal(d.host, dt, rows * rs, 1.0, &rng, NULL);
    fk_poison(o.host, dt, rows * rs);
    fk_poison(dgu.host, dt, nel);

    fk_tensor gate = view2(ref_buf_ptr(&gu), dt, dev, rows, width, rs);
    fk_tensor up   = view2((char *)ref_buf_ptr(&gu) + up0 * (int64_t)es, dt, dev, rows, width, rs);
    fk_tensor out  = inplace ? gate : view2(ref_buf_ptr(&o), dt, dev, rows, width, rs);
    fk_tensor dout = view2(ref_buf_ptr(&d), dt, dev, rows, width, rs);
    fk_tensor dg   = inplace ? gate : view2(ref_buf_ptr(&dgu), dt, dev, rows, width, rs);
    fk_tensor du   = inplace ? up : view2((char *)ref_buf_ptr(&dgu) + up0 * (int64_t)es, dt, dev, rows, width, rs);
    // Host-side twins (same shapes/strides) for reading views back.
    fk_tensor hgate = view2(gu.host, dt, dev, rows, width, rs);
    fk_tensor hup   = view2((char *)gu.host + up0 * (int64_t)es, dt, dev, rows, width, rs);
    fk_tensor hdout = view2(d.host, dt, dev, rows, width, rs);
    fk_tensor hout  = inplace ? hgate : view2(o.host, dt, dev, rows, width, rs);
    fk_tensor hdg   = inplace ? hgate : view2(dgu.host, dt, dev, rows, width, rs);
    fk_tensor hdu   = inplace ? hup : view2((char *)dgu.host + up0 * (int64_t)es, dt, dev, rows, width, rs);

    const int64_t n    = rows * width;
    double       *g64  = malloc((size_t)n * sizeof(double)), *u64 = malloc((size_t)n * sizeof(double));
    double       *d64  = malloc((size_t)n * sizeof(double));
    double       *ref  = malloc((size_t)n * sizeof(double)), *nv = malloc((size_t)n * sizeof(double));
    double       *ref2 = malloc((size_t)n * sizeof(double)), *nv2 = malloc((size_t)n * sizeof(double));
    ref_view_read(&hgate, hgate.data, g64);
    ref_view_read(&hup, hup.data, u64);
    ref_view_read(&hdout, d.host, d64);
    char detail[400], s2[200];

    // Forward.
    fk_swiglu_args a;
    fk_swiglu_args_init(&a);
    a.gate = gate;
    a.up   = up;
    a.out  = out;
    snprintf(s2, sizeof s2, "%s fwd", sig);
    if (ref_buf_upload(&gu) && ref_buf_upload(&o) && call_ok(fk_swiglu_fwd(be->ctx, &a, NULL), s2)) {
        if (!ref_buf_download(inplace ? &gu : &o)) fk_test_fail(s2, "device copy failed");
        else {
            ref_swiglu_fwd(FK_DTYPE_F64, n, g64, u64, ref);
            ref_swiglu_fwd(dt, n, g64, u64, nv);
            bool ok = ref_verdict(&hout, hout.data, ref, nv, detail, sizeof detail);
            if (!inplace && !ref_outside_view_untouched(&hout, o.host, rows * rs)) {
                ok = false;
                strcat(detail, "; wrote outside the out view");
            }
            fk_test_check(ok, s2, detail);
        }
    }

    // Backward (inputs restored first: the in-place forward overwrote gate).
    ref_view_write(&hgate, hgate.data, g64);
    fk_swiglu_args_init(&a);
    a.gate  = gate;
    a.up    = up;
    a.dout  = dout;
    a.dgate = dg;
    a.dup   = du;
    snprintf(s2, sizeof s2, "%s bwd", sig);
    if (ref_buf_upload(&gu) && ref_buf_upload(&d) && ref_buf_upload(&dgu) &&
        call_ok(fk_swiglu_bwd(be->ctx, &a, NULL), s2)) {
        if (!ref_buf_download(inplace ? &gu : &dgu)) fk_test_fail(s2, "device copy failed");
        else {
            ref_swiglu_bwd(FK_DTYPE_F64, n, d64, g64, u64, ref, ref2);
            ref_swiglu_bwd(dt, n, d64, g64, u64, nv, nv2);
            char d1[400], d2[400], both[820];
            bool ok1 = ref_verdict(&hdg, hdg.data, ref, nv, d1, sizeof d1);
            bool ok2 = ref_verdict(&hdu, hdu.data, ref2, nv2, d2, sizeof d2);
            snprintf(both, sizeof both, "dgate: %s | dup: %s", d1, d2);
            fk_test_check(ok1 && ok2, s2, both);
        }
    }
    free(g64), free(u64), free(d64), free(ref), free(nv), free(ref2), free(nv2);
    ref_buf_free(&gu), ref_buf_free(&o), ref_buf_free(&d), ref_buf_free(&dgu);
}

// The reference backward against central differences of the reference forward, loss = sum(out * dout).
static void check_reference_gradients(void) {
    const char *sig = "swiglu reference bwd vs finite differences";
    if (!fk_test_selected(sig, FK_DEVICE_CPU)) return;
    enum { N = 9 };
    fk_rng rng;
    fk_rng_seed(&rng, 7);
    double g[N], u[N], dout[N], dg[N], du[N], out[N];
    for (int i = 0; i < N; i++) g[i] = 3 * fk_rng_normal(&rng), u[i] = fk_rng_normal(&rng), dout[i] = fk_rng_normal(&rng);
    ref_swiglu_bwd(FK_DTYPE_F64, N, dout, g, u, dg, du);
    double worst = 0;
    for (int which = 0; which < 2; which++)
        for (int i = 0; i < N; i++) {
            double *x = which ? u : g, keep = x[i], eps = 1e-5, lp = 0, lm = 0;
            x[i] = keep + eps;
            ref_swiglu_fwd(FK_DTYPE_F64, N, g, u, out);
            for (int j = 0; j < N; j++) lp += out[j] * dout[j];
            x[i] = keep - eps;
            ref_swiglu_fwd(FK_DTYPE_F64, N, g, u, out);
            for (int j = 0; j < N; j++) lm += out[j] * dout[j];
            x[i]      = keep;
            double fd = (lp - lm) / (2 * eps), an = which ? du[i] : dg[i];
            double e  = fabs(fd - an) / (1 + fabs(an));
            if (e > worst) worst = e;
        }
    char detail[100];
    snprintf(detail, sizeof detail, "max error %.2e (tol 1e-7)", worst);
    fk_test_check(worst < 1e-7, sig, detail);
}

static void expect(fk_status got, fk_status want, const char *sig) {
    char detail[700];
    const char *msg = fk_last_error_message();
    snprintf(detail, sizeof detail, "got %d (%s), want %d; message: \"%s\"", (int)got, fk_status_string(got),
             (int)want, msg);
    fk_test_check(got == want && msg[0] != '\0', sig, detail);
}

static void negative_tests(fk_context_t ctx) {
    if (!fk_test_selected("swiglu bad", FK_DEVICE_CPU)) return;
    fk_device cpu = {FK_DEVICE_CPU, 0}, gpu = {FK_DEVICE_CUDA, 0};
    float     buf[4][64];
    for (int i = 0; i < 4; i++)
        for (int j = 0; j < 64; j++) buf[i][j] = 0.5f;
    fk_swiglu_args good;
    fk_swiglu_args_init(&good);
    good.gate = good.dout = fk_tensor_make(buf[0], FK_DTYPE_F32, cpu, 2, (int64_t[]){4, 8});
    good.up   = fk_tensor_make(buf[1], FK_DTYPE_F32, cpu, 2, (int64_t[]){4, 8});
    good.out = good.dgate = fk_tensor_make(buf[2], FK_DTYPE_F32, cpu, 2, (int64_t[]){4, 8});
    good.dup  = fk_tensor_make(buf[3], FK_DTYPE_F32, cpu, 2, (int64_t[]){4, 8});
    fk_swiglu_args a;
    // The control must succeed with an empty message.
    a = good;
    {
        fk_status st = fk_swiglu_fwd(ctx, &a, NULL);
        fk_test_check(st == FK_STATUS_SUCCESS && fk_last_error_message()[0] == '\0', "swiglu bad: control fwd", "");
        st = fk_swiglu_bwd(ctx, &a, NULL);
        fk_test_check(st == FK_STATUS_SUCCESS && fk_last_error_message()[0] == '\0', "swiglu bad: control bwd", "");
    }
    expect(fk_swiglu_fwd(NULL, &good, NULL), FK_STATUS_BAD_PARAM_NULL_POINTER, "swiglu bad: ctx NULL");
    expect(fk_swiglu_fwd(ctx, NULL, NULL), FK_STATUS_BAD_PARAM_NULL_POINTER, "swiglu bad: args NULL");
    a = good, a.gate.data = NULL;
    expect(fk_swiglu_fwd(ctx, &a, NULL), FK_STATUS_BAD_PARAM_NULL_POINTER, "swiglu bad: gate.data NULL");
    a = good, a.out = fk_tensor_none();
    expect(fk_swiglu_fwd(ctx, &a, NULL), FK_STATUS_BAD_PARAM_NULL_POINTER, "swiglu bad: out absent");
    a = good, a.dup = fk_tensor_none();
    expect(fk_swiglu_bwd(ctx, &a, NULL), FK_STATUS_BAD_PARAM_NULL_POINTER, "swiglu bad: dup absent (bwd)");
    a = good, a.up.ndim = 3, a.up.shape[2] = 1, a.up.stride[2] = 1;
    expect(fk_swiglu_fwd(ctx, &a, NULL), FK_STATUS_BAD_PARAM_NDIM, "swiglu bad: up ndim 3");
    a = good, a.up.shape[1] = 7;
    expect(fk_swiglu_fwd(ctx, &a, NULL), FK_STATUS_BAD_PARAM_SHAPE, "swiglu bad: up width differs");
    a = good, a.out.shape[0] = 2;
    expect(fk_swiglu_fwd(ctx, &a, NULL), FK_STATUS_BAD_PARAM_SHAPE, "swiglu bad: out rows differ");
    a = good, a.dgate.shape[1] = 4;
    expect(fk_swiglu_bwd(ctx, &a, NULL), FK_STATUS_BAD_PARAM_SHAPE, "swiglu bad: dgate width differs (bwd)");
    a = good, a.gate.shape[0] = 0;
    expect(fk_swiglu_fwd(ctx, &a, NULL), FK_STATUS_BAD_PARAM_SHAPE, "swiglu bad: gate rows 0");
    a = good, a.gate.stride[1] = 2, a.gate.shape[1] = 8, a.up.shape[1] = 8;
    expect(fk_swiglu_fwd(ctx, &a, NULL), FK_STATUS_BAD_PARAM_STRIDE, "swiglu bad: gate inner stride 2");
    a = good, a.out.stride[0] = -8;
    expect(fk_swiglu_fwd(ctx, &a, NULL), FK_STATUS_BAD_PARAM_STRIDE, "swiglu bad: out negative row stride");
    a = good, a.up.dtype = FK_DTYPE_BF16;
    expect(fk_swiglu_fwd(ctx, &a, NULL), FK_STATUS_BAD_PARAM_DTYPE_MISMATCH, "swiglu bad: up dtype differs");
    a = good, a.dout.dtype = FK_DTYPE_F16;
    expect(fk_swiglu_bwd(ctx, &a, NULL), FK_STATUS_BAD_PARAM_DTYPE_MISMATCH, "swiglu bad: dout dtype differs");
    a = good, a.gate.dtype = a.up.dtype = a.out.dtype = FK_DTYPE_INT32;
    expect(fk_swiglu_fwd(ctx, &a, NULL), FK_STATUS_NOT_SUPPORTED_DTYPE, "swiglu bad: int32 gate");
    a = good, a.out.device = gpu;
    expect(fk_swiglu_fwd(ctx, &a, NULL), FK_STATUS_BAD_PARAM_DEVICE_MISMATCH, "swiglu bad: out on cuda");
}

// CUDA: f64 is CPU-only and must be refused before any kernel.
static void cuda_f64_refused(const backend *be) {
    const char *sig = "swiglu cuda f64 refused";
    if (!fk_test_selected(sig, be->kind)) return;
    fk_device dev = {FK_DEVICE_CUDA, 0};
    void     *p   = fk_test_dev_alloc(4 * 8 * sizeof(double));
    if (!p) {
        fk_test_fail(sig, "device allocation failed");
        return;
    }
    fk_swiglu_args a;
    fk_swiglu_args_init(&a);
    a.gate = a.up = a.out = fk_tensor_make(p, FK_DTYPE_F64, dev, 2, (int64_t[]){4, 8});
    expect(fk_swiglu_fwd(be->ctx, &a, NULL), FK_STATUS_NOT_SUPPORTED_DTYPE, sig);
    fk_test_dev_free(p);
}

int main(int argc, char **argv) {
    fk_test_init(argc, argv, "test_swiglu");
    backend     bes[2];
    int         nbe = 0;
    const char *why = NULL;
    fk_device   cpu = {FK_DEVICE_CPU, 0};
    if (fk_context_init(cpu, NULL, &bes[nbe].ctx) == FK_STATUS_SUCCESS) {
        bes[nbe].kind = FK_DEVICE_CPU, bes[nbe].name = "cpu";
        nbe++;
    } else {
        fk_test_fail("swiglu cpu context", fk_last_error_message());
    }
    if (fk_test_have_cuda(&why)) {
        fk_device gpu = {FK_DEVICE_CUDA, 0};
        if (fk_context_init(gpu, NULL, &bes[nbe].ctx) == FK_STATUS_SUCCESS) {
            bes[nbe].kind = FK_DEVICE_CUDA, bes[nbe].name = "cuda";
            nbe++;
        } else {
            fk_test_fail("swiglu cuda context", fk_last_error_message());
        }
    } else {
        fk_test_skip("swiglu cuda", why);
    }

    static const int64_t widths[] = {1, 7, 17, 1000, 4096};
    static const int64_t rowss[]  = {1, 3, 257};
    uint64_t             seed     = 1;
    for (int b = 0; b < nbe; b++) {
        for (size_t di = 0; di < sizeof dtypes / sizeof dtypes[0]; di++) {
            if (bes[b].kind == FK_DEVICE_CUDA && dtypes[di] == FK_DTYPE_F64) continue;
            for (size_t wi = 0; wi < sizeof widths / sizeof widths[0]; wi++)
                for (size_t ri = 0; ri < sizeof rowss / sizeof rowss[0]; ri++) {
                    if (widths[wi] >= 4096 && rowss[ri] > 3) continue; // keeps the driver fast under ASan
                    for (int packed = 0; packed < 2; packed++)
                        run_case(&bes[b], dtypes[di], rowss[ri], widths[wi], packed, 0, seed++);
                }
            run_case(&bes[b], dtypes[di], 5, 33, 1, 1, seed++);
            run_case(&bes[b], dtypes[di], 4, 100, 0, 1, seed++);
            // Contiguous operands, widths that are not a multiple of a 16-byte vector (one long row on CUDA).
            run_case(&bes[b], dtypes[di], 7, 9, 2, 0, seed++);
            run_case(&bes[b], dtypes[di], 33, 1000, 2, 0, seed++);
            run_case(&bes[b], dtypes[di], 6, 13, 2, 1, seed++);
        }
        if (bes[b].kind == FK_DEVICE_CUDA) cuda_f64_refused(&bes[b]);
    }
    check_reference_gradients();
    if (nbe > 0 && bes[0].kind == FK_DEVICE_CPU) negative_tests(bes[0].ctx);
    for (int b = 0; b < nbe; b++) fk_context_free(bes[b].ctx);
    return fk_test_finish();
}
