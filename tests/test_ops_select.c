// test_ops_select.c — the device-free launch-shape rules of the CUDA fused ops (src/core/ops_select.h): every
// RMSNorm row width 1..1100 vectors gets a rule that is valid for it and compiled (rmsnorm.cu instantiates the
// shapes of the three tables), the measured widths get exactly their measured winner, no width past 1024 gets
// one; RoPE per-token coverage and SwiGLU flat coverage on their boundaries. Runs without a GPU.
#include "../src/core/ops_select.h"
#include "common/fk_test.h"

#include <stdio.h>
#include <string.h>

static int same(fk_rms_rows_shape a, fk_rms_rows_shape b) {
    return a.w == b.w && a.vpl == b.vpl && a.threads == b.threads && a.stages == b.stages;
}

// The (W, VPL) instances rmsnorm.cu compiles (rows_kernel_for).
static int compiled(fk_rms_rows_shape s, int bwd) {
    static const int fw[][2] = {{4, 2}, {8, 2}, {10, 2}, {16, 2}, {4, 5}, {5, 4}};
    static const int bw[][2] = {{4, 2}, {8, 2}, {10, 2}, {16, 2}, {8, 1}, {16, 1}};
    for (int i = 0; i < 6; i++)
        if ((bwd ? bw : fw)[i][0] == s.w && (bwd ? bw : fw)[i][1] == s.vpl) return 1;
    return 0;
}

static void check(int ok, const char *sig, const char *detail) {
    if (ok) fk_test_pass(sig, detail);
    else fk_test_fail(sig, detail);
}

static void rms_rules(void) {
    for (int mode = 0; mode < 3; mode++) { // fwd, fwd + residual, bwd
        const int bwd = mode == 2, res = mode == 1;
        const fk_rms_rows_rule *tab = bwd ? fk_rms_rows_bwd : res ? fk_rms_rows_fwd_res : fk_rms_rows_fwd;
        int bad = 0;
        char msg[160] = "";
        for (int64_t nvec = 1; nvec <= 1100; nvec++) {
            fk_rms_rows_shape s;
            const int got = fk_rms_rows_pick(nvec, bwd, res, &s);
            if (nvec > 1024) {
                if (got && !bad++) snprintf(msg, sizeof msg, "nvec %lld past 1024 got a rule", (long long)nvec);
                continue;
            }
            if (!got) {
                if (!bad++) snprintf(msg, sizeof msg, "nvec %lld got no rule", (long long)nvec);
                continue;
            }
            if (!fk_rms_rows_valid(s, nvec, nvec == fk_rms_rows_cap(s), bwd) || !compiled(s, bwd))
                if (!bad++) snprintf(msg, sizeof msg, "nvec %lld: w%dv%d/%d invalid or not compiled", (long long)nvec, s.w, s.vpl, s.threads);
        }
        for (int i = 0; i < 4; i++) { // a measured width takes its own winner
            fk_rms_rows_shape s;
            if (!fk_rms_rows_pick(tab[i].nvec, bwd, res, &s) || !same(s, tab[i].s))
                if (!bad++) snprintf(msg, sizeof msg, "measured nvec %lld does not take its winner", (long long)tab[i].nvec);
        }
        char sig[64];
        snprintf(sig, sizeof sig, "rms_rows_pick %s", bwd ? "bwd" : res ? "fwd+res" : "fwd");
        check(!bad, sig, bad ? msg : "1..1100 vectors");
    }
    // Nearest valid: 300 vectors cannot take 256's w4v2 (cap 256), so 512's; 700 takes 1024's (640 too small).
    fk_rms_rows_shape s;
    check(fk_rms_rows_pick(300, 0, 0, &s) && s.w == 8 && s.vpl == 2, "rms_rows_pick 300 -> w8v2", "");
    check(fk_rms_rows_pick(700, 1, 0, &s) && s.w == 16 && s.vpl == 2, "rms_rows_pick 700 -> w16v2", "");
    check(fk_rms_rows_pick(13, 0, 0, &s) && s.w == 4 && s.vpl == 2, "rms_rows_pick 13 -> w4v2", "");
    check(fk_rms_rows_pick(300, 1, 0, &s) && s.w == 16 && s.vpl == 1, "rms_rows_pick bwd 300 -> w16v1", "");
    // Preconditions: 16 groups of W > 1 exceed the 15 named barriers; VPL 8 forward tails spill.
    const fk_rms_rows_shape b16 = {2, 1, 1024, 0}, v8 = {1, 8, 64, 0};
    check(!fk_rms_rows_valid(b16, 64, 1, 0) && !fk_rms_rows_valid(v8, 255, 0, 0) && fk_rms_rows_valid(v8, 256, 1, 0) &&
              fk_rms_rows_valid(v8, 255, 0, 1),
          "rms_rows_valid preconditions", "");
    // The ring (stages): backward only, 2..8 rows.
    const fk_rms_rows_shape r2 = {10, 2, 320, 2}, r1 = {10, 2, 320, 1}, r9 = {10, 2, 320, 9};
    check(fk_rms_rows_valid(r2, 640, 1, 1) && !fk_rms_rows_valid(r2, 640, 1, 0) && !fk_rms_rows_valid(r1, 640, 1, 1) &&
              !fk_rms_rows_valid(r9, 640, 1, 1),
          "rms_rows_valid ring stages", "");
}

// One row a block (forward): 256..1024 vectors, every vector covered by 2 x threads, threads a multiple of 32 and at
// most 512 (the launch bound), fewer than 32 threads idle past the row; the measured widths take the measured
// block sizes and register caps.
static void rms_row1_rules(void) {
    int  bad = 0, t, m;
    char msg[160] = "";
    for (int64_t nvec = 1; nvec <= 1100; nvec++)
        for (int res = 0; res < 2; res++) {
            const int got = fk_rms_row1_pick(nvec, res, &t, &m);
            if (got != (nvec >= 256 && nvec <= 1024)) {
                if (!bad++) snprintf(msg, sizeof msg, "nvec %lld res %d: pick %d", (long long)nvec, res, got);
                continue;
            }
            if (got && (t % 32 != 0 || t > 512 || 2 * (int64_t)t < nvec || 2 * (int64_t)(t - 32) >= nvec || (m != 3 && m != 4)))
                if (!bad++) snprintf(msg, sizeof msg, "nvec %lld res %d: %d threads, minb %d", (long long)nvec, res, t, m);
        }
    check(!bad, "rms_row1_pick 1..1100 vectors", msg);
    static const int meas[4][4] = {{256, 128, 3, 3}, {512, 256, 3, 3}, {640, 320, 4, 3}, {1024, 512, 4, 3}};
    int ok = 1;
    for (int i = 0; i < 4; i++)
        for (int res = 0; res < 2; res++)
            ok &= fk_rms_row1_pick(meas[i][0], res, &t, &m) && t == meas[i][1] && m == meas[i][2 + res];
    ok &= fk_rms_row1_pick(1000, 0, &t, &m) && t == 512 && m == 3; // idle vectors: 40 registers
    check(ok, "rms_row1_pick measured widths", "");
}

// Backward through bulk copies: 256..1024 vectors only, at most 512 threads, the measured widths take their
// measured shapes, and without dresidual_out the row groups keep 256 and 512 (and the widths nearest them).
static void rms_tma_rules(void) {
    int              bad = 0;
    char             msg[160] = "";
    fk_rms_tma_shape s;
    for (int64_t nvec = 1; nvec <= 1100; nvec++)
        for (int dres = 0; dres < 2; dres++) {
            const int got = fk_rms_tma_pick(nvec, dres, &s);
            if (got && (nvec < 256 || nvec > 1024 || (nvec + s.vpt - 1) / s.vpt > 512 || s.stages < 2 || s.bps < 1))
                if (!bad++) snprintf(msg, sizeof msg, "nvec %lld dres %d: v%d s%d b%d", (long long)nvec, dres, s.vpt, s.stages, s.bps);
            if (!got && dres && nvec >= 256 && nvec <= 1024)
                if (!bad++) snprintf(msg, sizeof msg, "nvec %lld with dresidual_out: not taken", (long long)nvec);
        }
    check(!bad, "rms_tma_pick 1..1100 vectors", msg);
    static const int meas[8][5] = {{256, 1, 1, 4, 2}, {512, 1, 1, 4, 1}, {640, 1, 2, 4, 1}, {1024, 1, 2, 3, 1},
                                   {256, 0, 0, 0, 0}, {512, 0, 0, 0, 0}, {640, 0, 2, 2, 3}, {1024, 0, 4, 4, 1}};
    int ok = 1;
    for (int i = 0; i < 8; i++) {
        const int got = fk_rms_tma_pick(meas[i][0], meas[i][1], &s);
        ok &= meas[i][2] ? got && s.vpt == meas[i][2] && s.stages == meas[i][3] && s.bps == meas[i][4] : !got;
    }
    check(ok, "rms_tma_pick measured widths", "");
}

static void rope_rules(void) {
    static char buf[4096] __attribute__((aligned(16)));
    fk_rope_problem p;
    memset(&p, 0, sizeof p);
    p.dtype = FK_DTYPE_BF16, p.batch = 2, p.seqlen = 5, p.nheads_q = 4, p.nheads_k = 2, p.head_dim = 128, p.rotary_dim = 128;
    p.q = p.q_out = buf, p.k = p.k_out = buf;
    p.q_bs = p.q_out_bs = 5 * 4 * 128, p.q_ss = p.q_out_ss = 4 * 128, p.q_hs = p.q_out_hs = 128;
    p.k_bs = p.k_out_bs = 5 * 2 * 128, p.k_ss = p.k_out_ss = 2 * 128, p.k_hs = p.k_out_hs = 128;
    check(fk_rope_tok_covers(&p, 2), "rope_tok_covers half-split bf16", "");
    fk_rope_problem t = p;
    t.interleaved = 1;
    check(!fk_rope_tok_covers(&t, 2), "rope_tok_covers interleaved -> rope_kernel", "");
    t = p, t.rotary_dim = 24; // half 12: not a multiple of 8
    check(!fk_rope_tok_covers(&t, 2), "rope_tok_covers half % 8 -> rope_kernel", "");
    t = p, t.rotary_dim = 64;
    check(fk_rope_tok_covers(&t, 2), "rope_tok_covers partial rotary, tail % 8", "");
    t = p, t.q_hs = 132;
    check(!fk_rope_tok_covers(&t, 2), "rope_tok_covers odd stride -> rope_kernel", "");
    t = p, t.q = buf + 2;
    check(!fk_rope_tok_covers(&t, 2), "rope_tok_covers misaligned -> rope_kernel", "");
    t = p, t.cos_tab = t.sin_tab = buf, t.cs_dtype = FK_DTYPE_BF16;
    check(!fk_rope_tok_covers(&t, 2), "rope_tok_covers bf16 tables -> rope_kernel", "");
    t.cs_dtype = FK_DTYPE_F32;
    check(fk_rope_tok_covers(&t, 2), "rope_tok_covers fp32 tables", "");
    t = p, t.head_dim = t.rotary_dim = 1024; // half 512 > 256
    check(!fk_rope_tok_covers(&t, 2), "rope_tok_covers half > 256 -> rope_kernel", "");
    t = p, t.k = t.k_out = NULL, t.nheads_k = 0, t.k_hs = 3; // k's strides ignored without k
    check(fk_rope_tok_covers(&t, 2), "rope_tok_covers q only", "");
}

static void swiglu_rules(void) {
    static char buf[64] __attribute__((aligned(16)));
    const void *ok[3] = {buf, buf + 16, buf + 32}, *mis[3] = {buf, buf + 8, NULL};
    check(fk_swiglu_flat_covers(ok, 3, 1001 * 1003) && fk_swiglu_flat_covers(ok, 3, 1), "swiglu_flat_covers", "");
    check(!fk_swiglu_flat_covers(mis, 3, 64), "swiglu_flat_covers misaligned", "");
    check(!fk_swiglu_flat_covers(ok, 3, ((int64_t)1 << 32) - 16) && fk_swiglu_flat_covers(ok, 3, ((int64_t)1 << 32) - 17),
          "swiglu_flat_covers 32-bit bound", "");
}

int main(int argc, char **argv) {
    // The rules are header-only; naming the library symbols fk_testlib needs pulls their objects out of
    // flashkit_static, which the link line names first.
    fk_build_info bi;
    fk_get_build_info(&bi);
    if (!fk_version_string()) return 1;
    fk_test_init(argc, argv, "test_ops_select");
    rms_rules();
    rms_row1_rules();
    rms_tma_rules();
    rope_rules();
    swiglu_rules();
    return fk_test_finish();
}
