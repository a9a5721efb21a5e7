/*
 * test_memory.c — the memory estimators against numbers worked out here from first principles (tensor
 * extents times element sizes; the flash workspace from the public size queries on real buffers), the
 * flash < naive and O(seqlen) vs O(seqlen^2) properties, and every bad-input rule with its exact status.
 * Run: build/test_memory [-v] [-p FILTER]
 */
#include "common/fk_test.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void check_status(fk_status got, fk_status want, const char *sig) {
    char detail[640];
    snprintf(detail, sizeof detail, "got %d (%s), want %d; message: \"%s\"", (int)got, fk_status_string(got),
             (int)want, fk_last_error_message());
    bool msg_ok = want == FK_STATUS_SUCCESS ? fk_last_error_message()[0] == '\0' : fk_last_error_message()[0] != '\0';
    if (fk_test_selected(sig, FK_DEVICE_CPU)) fk_test_check(got == want && msg_ok, sig, detail);
}

static void check_u64(uint64_t got, uint64_t want, const char *sig) {
    char detail[128];
    snprintf(detail, sizeof detail, "got %llu, want %llu", (unsigned long long)got, (unsigned long long)want);
    if (fk_test_selected(sig, FK_DEVICE_CPU)) fk_test_check(got == want, sig, detail);
}

// The flash workspace of a call of this shape, asked the public way: a context with `threads` threads and
// real (small) buffers. Returns (size_t)-1 on failure.
static size_t query_workspace(const fk_attn_shape *s, int backward, int threads) {
    fk_device          cpu = {FK_DEVICE_CPU, 0};
    fk_context_options opt = {threads};
    fk_context_t       ctx = NULL;
    if (fk_context_init(cpu, &opt, &ctx)) return (size_t)-1;
    const int64_t qs[4] = {s->batch, s->seqlen_q, s->nheads_q, s->head_dim};
    const int64_t ks[4] = {s->batch, s->seqlen_k, s->nheads_kv, s->head_dim};
    const int64_t ls[3] = {s->batch, s->nheads_q, s->seqlen_q};
    const size_t  e = fk_dtype_size(s->dtype);
    const size_t  nq = (size_t)(qs[0] * qs[1] * qs[2] * qs[3]), nk = (size_t)(ks[0] * ks[1] * ks[2] * ks[3]);
    const fk_dtype ldt = s->dtype == FK_DTYPE_F64 ? FK_DTYPE_F64 : FK_DTYPE_F32;
    char         *buf = (char *)calloc(5 * nq * e + 4 * nk * e + (size_t)(ls[0] * ls[1] * ls[2]) * 8, 1);
    fk_attn_args  a;
    fk_attn_args_init(&a);
    char *p = buf;
    a.q   = fk_tensor_make(p, s->dtype, cpu, 4, qs), p += nq * e;
    a.o   = fk_tensor_make(p, s->dtype, cpu, 4, qs), p += nq * e;
    a.do_ = fk_tensor_make(p, s->dtype, cpu, 4, qs), p += nq * e;
    a.dq  = fk_tensor_make(p, s->dtype, cpu, 4, qs), p += nq * e;
    a.k   = fk_tensor_make(p, s->dtype, cpu, 4, ks), p += nk * e;
    a.v   = fk_tensor_make(p, s->dtype, cpu, 4, ks), p += nk * e;
    a.dk  = fk_tensor_make(p, s->dtype, cpu, 4, ks), p += nk * e;
    a.dv  = fk_tensor_make(p, s->dtype, cpu, 4, ks), p += nk * e;
    a.lse = fk_tensor_make(p, ldt, cpu, 3, ls);
    a.causal = s->causal;
    size_t    ws = 0;
    fk_status st = backward ? fk_attn_bwd_workspace_size(ctx, &a, &ws) : fk_attn_fwd_workspace_size(ctx, &a, &ws);
    free(buf);
    fk_context_free(ctx);
    return st ? (size_t)-1 : ws;
}

// One small attention shape, every field against hand arithmetic.
static void attn_case(fk_dtype dt, int causal) {
    const int64_t B = 2, Sq = 40, Sk = 72, Hq = 4, Hkv = 2, D = 24;
    const int     threads = 3;
    fk_attn_shape s = {B, Sq, Sk, Hq, Hkv, D, dt, causal};
    fk_device     cpu = {FK_DEVICE_CPU, 0};
    const uint64_t e = dt == FK_DTYPE_F32 ? 4 : dt == FK_DTYPE_F64 ? 8 : 2;
    const uint64_t lse_e = dt == FK_DTYPE_F64 ? 8 : 4;
    const uint64_t q = B * Sq * Hq * D * e, k = B * Sk * Hkv * D * e, lse = B * Hq * Sq * lse_e;
    const uint64_t scores = B * Hq * Sq * Sk; // per query head
    char sig[96];
    for (int bwd = 0; bwd < 2; bwd++)
        for (int naive = 0; naive < 2; naive++) {
            fk_attn_memory m;
            snprintf(sig, sizeof sig, "attn_%s_%s_%s%s", bwd ? "bwd" : "fwd", naive ? "naive" : "flash",
                     fk_dtype_name(dt), causal ? "_causal" : "");
            char s2[128];
            snprintf(s2, sizeof s2, "%s_status", sig);
            check_status(fk_estimate_attn_memory(&s, naive, bwd, cpu, threads, &m), FK_STATUS_SUCCESS, s2);
            // inputs: q k v (+ o, do_, lse for backward); outputs: o (dq dk dv)
            uint64_t in = bwd ? q + 2 * k + q + q + lse : q + 2 * k;
            uint64_t out = bwd ? q + 2 * k : q;
            uint64_t l = (!bwd && !naive) ? lse : 0;
            uint64_t ws;
            if (naive) {
                // fwd: S and P in the dtype, + fp32 softmax when the dtype is 16-bit; bwd: P, dP, dS (+ fp32)
                uint64_t per = (bwd ? 3 : 2) * e + (e < 4 ? 4 : 0);
                ws = scores * per;
            } else {
                ws = (uint64_t)query_workspace(&s, bwd, threads);
            }
            snprintf(s2, sizeof s2, "%s_inputs", sig), check_u64(m.inputs, in, s2);
            snprintf(s2, sizeof s2, "%s_outputs", sig), check_u64(m.outputs, out, s2);
            snprintf(s2, sizeof s2, "%s_lse", sig), check_u64(m.lse, l, s2);
            snprintf(s2, sizeof s2, "%s_workspace", sig), check_u64(m.workspace, ws, s2);
            snprintf(s2, sizeof s2, "%s_extra", sig), check_u64(m.extra, out + l + ws, s2);
        }
}

// flash extra < naive extra, flash grows linearly in seqlen and naive quadratically.
static void growth(void) {
    fk_device cpu = {FK_DEVICE_CPU, 0};
    uint64_t  fx[3], nx[3];
    for (int bwd = 0; bwd < 2; bwd++) {
        for (int i = 0; i < 3; i++) {
            int64_t        S = 1024LL << i;
            fk_attn_shape  s = {1, S, S, 8, 8, 64, FK_DTYPE_BF16, 1};
            fk_attn_memory f, n;
            fk_estimate_attn_memory(&s, 0, bwd, cpu, 2, &f);
            fk_estimate_attn_memory(&s, 1, bwd, cpu, 2, &n);
            fx[i] = f.extra, nx[i] = n.extra;
            char sig[64], det[128];
            snprintf(sig, sizeof sig, "flash_below_naive_%s_S%lld", bwd ? "bwd" : "fwd", (long long)S);
            snprintf(det, sizeof det, "flash %llu, naive %llu", (unsigned long long)f.extra, (unsigned long long)n.extra);
            if (fk_test_selected(sig, FK_DEVICE_CPU)) fk_test_check(f.extra * 10 < n.extra, sig, det);
        }
        for (int i = 1; i < 3; i++) {
            double rf = (double)fx[i] / (double)fx[i - 1], rn = (double)nx[i] / (double)nx[i - 1];
            char   sig[64], det[128];
            snprintf(det, sizeof det, "seqlen x2: flash extra x%.3f, naive extra x%.3f", rf, rn);
            snprintf(sig, sizeof sig, "flash_linear_%s_%d", bwd ? "bwd" : "fwd", i);
            if (fk_test_selected(sig, FK_DEVICE_CPU)) fk_test_check(rf > 1.5 && rf <= 2.05, sig, det);
            snprintf(sig, sizeof sig, "naive_quadratic_%s_%d", bwd ? "bwd" : "fwd", i);
            if (fk_test_selected(sig, FK_DEVICE_CPU)) fk_test_check(rn > 3.9 && rn <= 4.0, sig, det);
        }
    }
}

static void attn_bad_inputs(void) {
    fk_device      cpu = {FK_DEVICE_CPU, 0}, cuda = {FK_DEVICE_CUDA, 0}, bad = {(fk_device_kind)7, 0};
    fk_attn_shape  ok = {1, 16, 16, 2, 2, 32, FK_DTYPE_F32, 0}, s;
    fk_attn_memory m;
    check_status(fk_estimate_attn_memory(NULL, 0, 0, cpu, 0, &m), FK_STATUS_BAD_PARAM_NULL_POINTER, "bad_null_shape");
    check_status(fk_estimate_attn_memory(&ok, 0, 0, cpu, 0, NULL), FK_STATUS_BAD_PARAM_NULL_POINTER, "bad_null_out");
    s = ok, s.batch = 0;
    check_status(fk_estimate_attn_memory(&s, 0, 0, cpu, 0, &m), FK_STATUS_BAD_PARAM_SHAPE, "bad_batch_0");
    s = ok, s.seqlen_k = -3;
    check_status(fk_estimate_attn_memory(&s, 1, 0, cpu, 0, &m), FK_STATUS_BAD_PARAM_SHAPE, "bad_seqlen_k_negative");
    s = ok, s.head_dim = 0;
    check_status(fk_estimate_attn_memory(&s, 0, 1, cpu, 0, &m), FK_STATUS_BAD_PARAM_SHAPE, "bad_head_dim_0");
    s = ok, s.nheads_q = 3;
    check_status(fk_estimate_attn_memory(&s, 0, 0, cpu, 0, &m), FK_STATUS_BAD_PARAM_HEADS, "bad_heads_ratio");
    s = ok, s.dtype = FK_DTYPE_INT32;
    check_status(fk_estimate_attn_memory(&s, 0, 0, cpu, 0, &m), FK_STATUS_NOT_SUPPORTED_DTYPE, "bad_dtype_int");
    s = ok, s.causal = 2;
    check_status(fk_estimate_attn_memory(&s, 0, 0, cpu, 0, &m), FK_STATUS_BAD_PARAM_VALUE, "bad_causal_2");
    check_status(fk_estimate_attn_memory(&ok, 2, 0, cpu, 0, &m), FK_STATUS_BAD_PARAM_VALUE, "bad_naive_2");
    check_status(fk_estimate_attn_memory(&ok, 0, -1, cpu, 0, &m), FK_STATUS_BAD_PARAM_VALUE, "bad_backward_-1");
    check_status(fk_estimate_attn_memory(&ok, 0, 0, cpu, -1, &m), FK_STATUS_BAD_PARAM_VALUE, "bad_threads_negative");
    check_status(fk_estimate_attn_memory(&ok, 0, 0, bad, 0, &m), FK_STATUS_BAD_PARAM_UNKNOWN_DEVICE, "bad_device_kind");
    fk_device cpu1 = {FK_DEVICE_CPU, 1};
    check_status(fk_estimate_attn_memory(&ok, 0, 0, cpu1, 0, &m), FK_STATUS_BAD_PARAM_UNKNOWN_DEVICE, "bad_cpu_index");
    s = ok, s.head_dim = 300; // flash on the CPU stops at 256; naive has no such limit
    check_status(fk_estimate_attn_memory(&s, 0, 0, cpu, 0, &m), FK_STATUS_NOT_SUPPORTED_HEAD_DIM, "flash_head_dim_300");
    check_status(fk_estimate_attn_memory(&s, 1, 0, cpu, 0, &m), FK_STATUS_SUCCESS, "naive_head_dim_300");

    // Overflow: the score matrix, or q itself, past 2^64 bytes.
    s = ok, s.seqlen_q = s.seqlen_k = 1LL << 31, s.nheads_q = s.nheads_kv = 1LL << 10;
    check_status(fk_estimate_attn_memory(&s, 1, 0, cpu, 0, &m), FK_STATUS_BAD_PARAM_OVERFLOW, "overflow_naive_scores");
    s = ok, s.batch = INT64_MAX / 2;
    check_status(fk_estimate_attn_memory(&s, 0, 0, cpu, 0, &m), FK_STATUS_BAD_PARAM_OVERFLOW, "overflow_flash_inputs");
    check_status(fk_estimate_attn_memory(&s, 0, 1, cpu, 0, &m), FK_STATUS_BAD_PARAM_OVERFLOW, "overflow_flash_bwd");
    // The same shape at 2^31 keys fits for flash: O(seqlen) extra.
    s = ok, s.seqlen_q = s.seqlen_k = 1LL << 31, s.nheads_q = s.nheads_kv = 1LL << 10;
    check_status(fk_estimate_attn_memory(&s, 0, 0, cpu, 0, &m), FK_STATUS_SUCCESS, "flash_long_fits");

    // CUDA: naive needs no device; flash needs the CUDA backend (and a device).
    check_status(fk_estimate_attn_memory(&ok, 1, 0, cuda, 0, &m), FK_STATUS_SUCCESS, "naive_cuda_no_device_needed");
    fk_build_info bi;
    fk_get_build_info(&bi);
    fk_status st = fk_estimate_attn_memory(&ok, 0, 0, cuda, 0, &m);
    if (!bi.cuda_compiled || bi.cuda_device_count == 0)
        check_status(st, FK_STATUS_NOT_SUPPORTED_BACKEND, "flash_cuda_unavailable");
    else
        check_status(st, FK_STATUS_SUCCESS, "flash_cuda_available");
}

// --- training step ---------------------------------------------------------------------------------------

static void train_case(int flash, int recompute, fk_dtype dt, int master) {
    // A tiny Llama: vocab 100, hidden 16, 4 heads of 4 (2 kv heads), intermediate 40, 2 layers; batch 2 x 8.
    const uint64_t V = 100, h = 16, I = 40, L = 2, Hq = 4, Hkv = 2, d = 4, B = 2, S = 8, T = B * S;
    fk_model_config c = {(int64_t)V, (int64_t)h, (int64_t)I, (int64_t)L, (int64_t)Hq, (int64_t)Hkv, (int64_t)B,
                         (int64_t)S, dt, master, flash, recompute};
    const uint64_t e = dt == FK_DTYPE_F32 ? 4 : 2;
    char sig[96], s2[128];
    snprintf(sig, sizeof sig, "train_%s_%s%s%s", flash ? "flash" : "naive", fk_dtype_name(dt),
             recompute ? "_recompute" : "", master ? "_master" : "");

    // Parameters, counted by hand: per layer Wq 16x16, Wk 16x8, Wv 16x8, Wo 16x16, 2 norms of 16,
    // gate/up/down 16x40 each; embedding and lm head 100x16 each; final norm 16.
    const uint64_t per_layer = 256 + 128 + 128 + 256 + 32 + 3 * 640; // 2720
    const uint64_t count     = L * per_layer + 2 * 1600 + 16;          // 8656
    check_u64(count, 8656, "train_param_count_arith");
    fk_train_memory m;
    snprintf(s2, sizeof s2, "%s_status", sig);
    check_status(fk_estimate_train_step_memory(&c, &m), FK_STATUS_SUCCESS, s2);
    snprintf(s2, sizeof s2, "%s_parameters", sig), check_u64(m.parameters, count * e, s2);
    snprintf(s2, sizeof s2, "%s_gradients", sig), check_u64(m.gradients, count * e, s2);
    uint64_t opt = count * 8 + ((master && dt != FK_DTYPE_F32) ? count * 4 : 0);
    snprintf(s2, sizeof s2, "%s_optimizer", sig), check_u64(m.optimizer, opt, s2);

    // Saved per layer: x, norm1 out, h1, norm2 out (4 T h e), two rstd (2 T 4), q k v (T (Hq + 2 Hkv) d e),
    // attention output o (T Hq d e), flash: lse (B Hq S 4); naive: S and P (+ fp32 softmax for 16-bit),
    // gate, up, act (3 T I e).
    const uint64_t o = T * Hq * d * e, lse = B * Hq * S * 4;
    const uint64_t scores = flash ? 0 : B * Hq * S * S * (2 * e + (e < 4 ? 4 : 0));
    const uint64_t layer  = 4 * T * h * e + 2 * T * 4 + T * (Hq + 2 * Hkv) * d * e + o + (flash ? lse : 0) + scores +
                           3 * T * I * e;
    const uint64_t outside = 2 * T * h * e + T * 4;
    const uint64_t act     = recompute ? L * T * h * e + outside : L * layer + outside;
    snprintf(s2, sizeof s2, "%s_activations", sig), check_u64(m.activations, act, s2);
    snprintf(s2, sizeof s2, "%s_attention_scores", sig), check_u64(m.attention_scores, recompute ? 0 : L * scores, s2);

    // Transient: logits T V fp32, or one layer's backward: dX (T h e) + max(attention bwd extra + dO, MLP grads).
    fk_attn_shape  as = {(int64_t)B, (int64_t)S, (int64_t)S, (int64_t)Hq, (int64_t)Hkv, (int64_t)d, dt, 1};
    const uint64_t dqkv = T * Hq * d * e + 2 * T * Hkv * d * e;
    const uint64_t attn_ws =
        flash ? (uint64_t)query_workspace(&as, 1, 1) : B * Hq * S * S * (3 * e + (e < 4 ? 4 : 0));
    uint64_t attn_bwd = dqkv + attn_ws + o, mlp = 3 * T * I * e;
    uint64_t layer_bwd = T * h * e + (attn_bwd > mlp ? attn_bwd : mlp) + (recompute ? layer : 0);
    uint64_t logits = T * V * 4, peak = logits > layer_bwd ? logits : layer_bwd;
    snprintf(s2, sizeof s2, "%s_peak_transient", sig), check_u64(m.peak_transient, peak, s2);
    snprintf(s2, sizeof s2, "%s_total", sig), check_u64(m.total, 2 * count * e + opt + act + peak, s2);
}

static void train_checks(void) {
    for (int flash = 0; flash < 2; flash++)
        for (int rc = 0; rc < 2; rc++) {
            train_case(flash, rc, FK_DTYPE_BF16, 1);
            train_case(flash, rc, FK_DTYPE_F32, 0);
        }
    train_case(1, 0, FK_DTYPE_F32, 1); // master on fp32 weights adds nothing
    train_case(1, 0, FK_DTYPE_F16, 0);

    // A real model: naive attention needs more, flash saves exactly the score matrices' difference.
    fk_model_config c = {128256, 4096, 14336, 32, 32, 8, 1, 8192, FK_DTYPE_BF16, 1, 1, 0};
    fk_train_memory f, n;
    check_status(fk_estimate_train_step_memory(&c, &f), FK_STATUS_SUCCESS, "train_llama3_8b_flash");
    c.flash = 0;
    check_status(fk_estimate_train_step_memory(&c, &n), FK_STATUS_SUCCESS, "train_llama3_8b_naive");
    fk_test_check(n.attention_scores > 0 && f.attention_scores == 0 && n.total > f.total &&
                      n.activations - f.activations == n.attention_scores - 32ull * 32 * 8192 * 4,
                  "train_llama3_8b_naive_minus_flash", "activations differ by the scores less the flash lse");

    fk_model_config ok = {100, 16, 40, 2, 4, 2, 2, 8, FK_DTYPE_BF16, 1, 1, 0}, b;
    fk_train_memory m;
    check_status(fk_estimate_train_step_memory(NULL, &m), FK_STATUS_BAD_PARAM_NULL_POINTER, "train_bad_null_config");
    check_status(fk_estimate_train_step_memory(&ok, NULL), FK_STATUS_BAD_PARAM_NULL_POINTER, "train_bad_null_out");
    b = ok, b.layers = 0;
    check_status(fk_estimate_train_step_memory(&b, &m), FK_STATUS_BAD_PARAM_SHAPE, "train_bad_layers_0");
    b = ok, b.vocab = -1;
    check_status(fk_estimate_train_step_memory(&b, &m), FK_STATUS_BAD_PARAM_SHAPE, "train_bad_vocab");
    b = ok, b.nheads = 5;
    check_status(fk_estimate_train_step_memory(&b, &m), FK_STATUS_BAD_PARAM_SHAPE, "train_bad_hidden_heads");
    b = ok, b.nheads_kv = 3;
    check_status(fk_estimate_train_step_memory(&b, &m), FK_STATUS_BAD_PARAM_HEADS, "train_bad_kv_heads");
    b = ok, b.param_dtype = FK_DTYPE_F64;
    check_status(fk_estimate_train_step_memory(&b, &m), FK_STATUS_NOT_SUPPORTED_DTYPE, "train_bad_dtype");
    b = ok, b.recompute = 2;
    check_status(fk_estimate_train_step_memory(&b, &m), FK_STATUS_BAD_PARAM_VALUE, "train_bad_recompute");
    b = ok, b.flash = -1;
    check_status(fk_estimate_train_step_memory(&b, &m), FK_STATUS_BAD_PARAM_VALUE, "train_bad_flash");
    b = ok, b.master_fp32 = 3;
    check_status(fk_estimate_train_step_memory(&b, &m), FK_STATUS_BAD_PARAM_VALUE, "train_bad_master");
    b = ok, b.vocab = INT64_MAX / 4;
    check_status(fk_estimate_train_step_memory(&b, &m), FK_STATUS_BAD_PARAM_OVERFLOW, "train_overflow_vocab");
    b = ok, b.batch = 1LL << 40, b.seqlen = 1LL << 20, b.flash = 0;
    check_status(fk_estimate_train_step_memory(&b, &m), FK_STATUS_BAD_PARAM_OVERFLOW, "train_overflow_scores");
    b = ok, b.hidden = 4 * 300, b.nheads = 4; // head dim 300: flash attention cannot run it
    check_status(fk_estimate_train_step_memory(&b, &m), FK_STATUS_NOT_SUPPORTED_HEAD_DIM, "train_head_dim_300");
}

int main(int argc, char **argv) {
    fk_test_init(argc, argv, "test_memory");
    attn_case(FK_DTYPE_F32, 0);
    attn_case(FK_DTYPE_F32, 1);
    attn_case(FK_DTYPE_BF16, 1);
    attn_case(FK_DTYPE_F16, 0);
    attn_case(FK_DTYPE_F64, 0);
    growth();
    attn_bad_inputs();
    train_checks();
    return fk_test_finish();
}
