/*
 * memory.c — memory estimation: how many bytes an attention call, or a whole training step of a Llama-style
 * decoder, needs. Pure functions: no context is created, no device memory is touched. The flash workspace
 * comes from fk_attn_select, the same selection function the size queries and the kernels use, so the
 * estimate and the call can never disagree.
 *
 * Attention (fk_estimate_attn_memory), per pass. Element sizes: e = storage dtype, f = 4 (fp32; 8 for f64).
 *   forward  inputs  q, k, v
 *            outputs o
 *            lse     [B, Hq, Sq] fp32 (f64 when the dtype is f64): flash writes it; naive has none (0)
 *   backward inputs  q, k, v, o, do_, and lse (backward reads forward's lse, so it is an input here: lse = 0)
 *            outputs dq, dk, dv
 *   extra = outputs + lse + workspace (everything beyond the inputs), in both passes.
 *   flash workspace: what fk_attn_select reports for this shape on this device.
 *   naive workspace — the model counted (an eager, PyTorch-like matmul / softmax / matmul), M = B*Hq*Sq*Sk:
 *     forward : S = scale * Q K^T (M x e), P = softmax(S) (M x e), and when e < 4 the fp32 softmax result
 *               before it is cast back to the storage dtype (M x 4). The causal mask is applied to S in place
 *               (a masked_fill copy is not counted). fp32: 8 bytes per score, bf16/fp16: 8, f64: 16.
 *     backward: P (recomputed, or kept from the forward: M x e), dP = dO V^T (M x e), dS = P * (dP - rowsum)
 *               (M x e), and when e < 4 one fp32 matrix for the softmax backward (M x 4).
 *   The matrices are counted for every query head (GQA broadcasts K/V but the scores are per query head).
 *
 * Training step (fk_estimate_train_step_memory), T = batch * seqlen tokens, e = param dtype, d = hidden/nheads:
 *   parameters  embedding V*h; per layer Wq h*(Hq*d), Wk and Wv h*(Hkv*d) each, Wo (Hq*d)*h, two RMSNorm
 *               weights h each, gate and up h*I each, down I*h; final norm h; lm head h*V (untied). x e.
 *   gradients   same count x e.
 *   optimizer   Adam: two fp32 moments (8 bytes per parameter), + a fp32 master copy (4 bytes) when
 *               master_fp32 = 1 and the parameters are not already fp32.
 *   activations saved for backward, per layer (no recompute):
 *               x (layer input, read by RMSNorm 1) T*h*e, rstd 1 T*4, RMSNorm 1 output T*h*e,
 *               q, k, v after RoPE T*(Hq+2Hkv)*d*e, attention: the forward estimate's outputs + lse
 *               (flash: o and lse; naive: o plus its workspace, the S and P matrices, which are the
 *               attention_scores part), h1 (residual after attention, RMSNorm 2 input) T*h*e, rstd 2 T*4,
 *               RMSNorm 2 output T*h*e, gate and up T*I*e each, silu(gate)*up T*I*e.
 *               Outside the layers: final norm input T*h*e, its rstd T*4, its output T*h*e (token ids are
 *               not counted). recompute = 1 keeps only each layer's input x (T*h*e) plus the outside terms.
 *   peak_transient the largest temporary alive at once: the larger of
 *               - the logits, T*V fp32, and
 *               - one layer's backward: the residual-stream gradient T*h*e, plus the larger of the attention
 *                 backward's extra (dq, dk, dv + workspace; naive: its P, dP, dS matrices) plus dO of the
 *                 attention T*Hq*d*e, and the MLP's gradients d(gate), d(up), d(act) 3*T*I*e; with recompute,
 *                 plus that layer's saved activations, rebuilt for its backward.
 *   total = parameters + gradients + optimizer + activations + peak_transient.
 *   The attention terms use the CPU backend's rule with one thread (this function has no device argument):
 *   causal attention, Sq = Sk = seqlen, through fk_estimate_attn_memory itself.
 */
#include "attn_internal.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

// --- checked uint64 arithmetic ---------------------------------------------------------------------------

typedef struct u64acc {
    int ok; // 0 once anything overflowed
} u64acc;

static uint64_t mulu(u64acc *a, uint64_t x, uint64_t y) {
    if (x != 0 && y > UINT64_MAX / x) {
        a->ok = 0;
        return 0;
    }
    return x * y;
}

static uint64_t addu(u64acc *a, uint64_t x, uint64_t y) {
    if (y > UINT64_MAX - x) {
        a->ok = 0;
        return 0;
    }
    return x + y;
}

static uint64_t mul3(u64acc *a, uint64_t x, uint64_t y, uint64_t z) { return mulu(a, mulu(a, x, y), z); }
static uint64_t mul4(u64acc *a, uint64_t w, uint64_t x, uint64_t y, uint64_t z) {
    return mulu(a, mulu(a, mulu(a, w, x), y), z);
}
static uint64_t maxu(uint64_t x, uint64_t y) { return x > y ? x : y; }

// --- attention -------------------------------------------------------------------------------------------

static fk_status check_extent(const char *op, const char *name, int64_t v) {
    if (v < 1) return fk_error(FK_STATUS_BAD_PARAM_SHAPE, "%s: %s must be >= 1, got %lld", op, name, (long long)v);
    return FK_STATUS_SUCCESS;
}

static fk_status check_attn_shape(const char *op, const fk_attn_shape *s) {
    FK_TRY(check_extent(op, "shape->batch", s->batch));
    FK_TRY(check_extent(op, "shape->seqlen_q", s->seqlen_q));
    FK_TRY(check_extent(op, "shape->seqlen_k", s->seqlen_k));
    FK_TRY(check_extent(op, "shape->nheads_q", s->nheads_q));
    FK_TRY(check_extent(op, "shape->nheads_kv", s->nheads_kv));
    FK_TRY(check_extent(op, "shape->head_dim", s->head_dim));
    if (s->nheads_q % s->nheads_kv != 0)
        return fk_error(FK_STATUS_BAD_PARAM_HEADS, "%s: shape->nheads_q (%lld) must be a multiple of shape->nheads_kv (%lld)",
                        op, (long long)s->nheads_q, (long long)s->nheads_kv);
    if (s->dtype != FK_DTYPE_F32 && s->dtype != FK_DTYPE_F16 && s->dtype != FK_DTYPE_BF16 && s->dtype != FK_DTYPE_F64)
        return fk_error(FK_STATUS_NOT_SUPPORTED_DTYPE, "%s: shape->dtype must be f32, f16, bf16 or f64, got %s (%d)", op,
                        fk_dtype_name(s->dtype), (int)s->dtype);
    if (s->causal != 0 && s->causal != 1)
        return fk_error(FK_STATUS_BAD_PARAM_VALUE, "%s: shape->causal must be 0 or 1, got %d", op, s->causal);
    return FK_STATUS_SUCCESS;
}

// The context a call on `device` would see, without creating one: CPU threads resolved as fk_context_init
// does; for CUDA the properties the selection reads (compute capability, SMs, shared memory).
static fk_status estimate_context(const char *op, fk_device device, int num_threads, struct fk_context *c) {
    memset(c, 0, sizeof *c);
    c->device      = device;
    c->cpu_simd    = fk_cpu_detect_simd();
    c->num_threads = num_threads > 0 ? num_threads : fk_cpu_default_threads();
    if (device.kind == FK_DEVICE_CPU) return FK_STATUS_SUCCESS;
#ifdef FK_WITH_CUDA
    fk_device_props props;
    if (fk_cuda_device_props(device.index, &props, &c->max_smem_optin) != FK_STATUS_SUCCESS) {
        char why[256];
        snprintf(why, sizeof why, "%s", fk_last_error_message());
        return fk_error(FK_STATUS_NOT_SUPPORTED_BACKEND,
                        "%s: the flash workspace on cuda:%d depends on the device, which cannot be queried (%s)", op,
                        device.index, why);
    }
    c->cc_major = props.cc_major;
    c->cc_minor = props.cc_minor;
    c->sm_count = props.multiprocessors;
    return FK_STATUS_SUCCESS;
#else
    return fk_error(FK_STATUS_NOT_SUPPORTED_BACKEND,
                    "%s: the flash workspace on cuda:%d depends on the CUDA backend, and flashkit was built without CUDA",
                    op, device.index);
#endif
}

// The flash workspace: a problem with extents, dtype and flags only (no tensor is dereferenced by selection).
static fk_status flash_workspace(const char *op, const fk_attn_shape *s, int backward, fk_device device,
                                 int num_threads, uint64_t *ws) {
    struct fk_context ctx;
    FK_TRY(estimate_context(op, device, num_threads, &ctx));
    const int64_t B = s->batch, Sq = s->seqlen_q, Sk = s->seqlen_k, Hq = s->nheads_q, Hkv = s->nheads_kv,
                  D = s->head_dim;
    fk_attn_problem p;
    memset(&p, 0, sizeof p);
    p.dtype     = s->dtype;
    p.batch     = B;
    p.seqlen_q  = Sq;
    p.seqlen_k  = Sk;
    p.nheads_q  = Hq;
    p.nheads_kv = Hkv;
    p.head_dim  = D;
    p.total_q   = B * Sq;
    p.total_k   = B * Sk;
    // Contiguous [B, S, H, D] strides and lse [B, Hq, Sq], as the call would resolve them.
    p.q_bs = p.o_bs = p.do_bs = p.dq_bs = Sq * Hq * D;
    p.q_rs = p.o_rs = p.do_rs = p.dq_rs = Hq * D;
    p.q_hs = p.o_hs = p.do_hs = p.dq_hs = D;
    p.k_bs = p.v_bs = p.dk_bs = p.dv_bs = Sk * Hkv * D;
    p.k_rs = p.v_rs = p.dk_rs = p.dv_rs = Hkv * D;
    p.k_hs = p.v_hs = p.dk_hs = p.dv_hs = D;
    p.lse_bs = Hq * Sq;
    p.lse_hs = Sq;
    p.lse_rs = 1;
    // Selection may check that the backward has an lse; it never reads it. This address stands for "present".
    static float lse_present;
    if (backward) p.lse = &lse_present;
    p.scale        = (float)(1.0 / sqrt((double)D));
    p.softcap      = 0.0f;
    p.window_left  = -1;
    p.window_right = s->causal ? 0 : -1;
    p.causal       = s->causal;
    size_t bytes   = 0;
    FK_TRY(fk_attn_select(&ctx, &p, backward, &bytes));
    *ws = (uint64_t)bytes;
    return FK_STATUS_SUCCESS;
}

// Everything but the checks; a->ok = 0 on overflow.
static void attn_sizes(u64acc *a, const fk_attn_shape *s, int naive, int backward, fk_attn_memory *m) {
    const uint64_t e    = fk_dtype_size(s->dtype);
    const uint64_t f    = s->dtype == FK_DTYPE_F64 ? 8 : 4;
    const uint64_t B    = (uint64_t)s->batch, Sq = (uint64_t)s->seqlen_q, Sk = (uint64_t)s->seqlen_k;
    const uint64_t Hq   = (uint64_t)s->nheads_q, Hkv = (uint64_t)s->nheads_kv, D = (uint64_t)s->head_dim;
    const uint64_t qsz  = mul4(a, B, Sq, Hq, mulu(a, D, e)); // q, o, do_, dq
    const uint64_t ksz  = mul4(a, B, Sk, Hkv, mulu(a, D, e)); // k, v, dk, dv
    const uint64_t lsez = mul4(a, B, Hq, Sq, f);
    const uint64_t kv   = addu(a, ksz, ksz);
    memset(m, 0, sizeof *m);
    if (!backward) {
        m->inputs  = addu(a, qsz, kv);
        m->outputs = qsz;
        m->lse     = naive ? 0 : lsez;
    } else {
        m->inputs  = addu(a, addu(a, addu(a, qsz, kv), addu(a, qsz, qsz)), lsez);
        m->outputs = addu(a, qsz, kv);
        m->lse     = 0;
    }
    if (naive) {
        const uint64_t M      = mul4(a, B, Hq, Sq, Sk);
        const uint64_t per    = (backward ? 3 : 2) * e + (e < 4 ? 4 : 0);
        m->workspace          = mulu(a, M, per);
    }
}

fk_status fk_estimate_attn_memory(const fk_attn_shape *shape, int naive, int backward, fk_device device,
                                  int num_threads, fk_attn_memory *out) {
    fk_clear_error();
    const char *op = "fk_estimate_attn_memory";
    if (!out) return fk_error(FK_STATUS_BAD_PARAM_NULL_POINTER, "%s: out is NULL", op);
    memset(out, 0, sizeof *out);
    if (!shape) return fk_error(FK_STATUS_BAD_PARAM_NULL_POINTER, "%s: shape is NULL", op);
    if (naive != 0 && naive != 1)
        return fk_error(FK_STATUS_BAD_PARAM_VALUE, "%s: naive must be 0 or 1, got %d", op, naive);
    if (backward != 0 && backward != 1)
        return fk_error(FK_STATUS_BAD_PARAM_VALUE, "%s: backward must be 0 or 1, got %d", op, backward);
    if (device.kind != FK_DEVICE_CPU && device.kind != FK_DEVICE_CUDA)
        return fk_error(FK_STATUS_BAD_PARAM_UNKNOWN_DEVICE, "%s: device.kind %d is unknown", op, (int)device.kind);
    if (device.index < 0 || (device.kind == FK_DEVICE_CPU && device.index != 0))
        return fk_error(FK_STATUS_BAD_PARAM_UNKNOWN_DEVICE, "%s: device.index %d is not valid for %s", op,
                        device.index, device.kind == FK_DEVICE_CPU ? "the CPU (must be 0)" : "CUDA");
    if (num_threads < 0)
        return fk_error(FK_STATUS_BAD_PARAM_VALUE, "%s: num_threads must be >= 0 (0 = library default), got %d", op,
                        num_threads);
    FK_TRY(check_attn_shape(op, shape));

    u64acc         a = {1};
    fk_attn_memory m;
    attn_sizes(&a, shape, naive, backward, &m);
    if (!a.ok)
        return fk_error(FK_STATUS_BAD_PARAM_OVERFLOW, "%s: the byte count of this shape overflows 64 bits", op);
    if (!naive) {
        // Selection forms size_t products of the extents; the tensor byte counts above fitting in 64 bits
        // (checked first) keeps those in range too.
        FK_TRY(flash_workspace(op, shape, backward, device, num_threads, &m.workspace));
    }
    m.extra = addu(&a, addu(&a, m.outputs, m.lse), m.workspace);
    if (!a.ok)
        return fk_error(FK_STATUS_BAD_PARAM_OVERFLOW, "%s: the byte count of this shape overflows 64 bits", op);
    *out = m;
    return FK_STATUS_SUCCESS;
}

// --- training step ---------------------------------------------------------------------------------------

fk_status fk_estimate_train_step_memory(const fk_model_config *c, fk_train_memory *out) {
    fk_clear_error();
    const char *op = "fk_estimate_train_step_memory";
    if (!out) return fk_error(FK_STATUS_BAD_PARAM_NULL_POINTER, "%s: out is NULL", op);
    memset(out, 0, sizeof *out);
    if (!c) return fk_error(FK_STATUS_BAD_PARAM_NULL_POINTER, "%s: config is NULL", op);
    FK_TRY(check_extent(op, "config->vocab", c->vocab));
    FK_TRY(check_extent(op, "config->hidden", c->hidden));
    FK_TRY(check_extent(op, "config->intermediate", c->intermediate));
    FK_TRY(check_extent(op, "config->layers", c->layers));
    FK_TRY(check_extent(op, "config->nheads", c->nheads));
    FK_TRY(check_extent(op, "config->nheads_kv", c->nheads_kv));
    FK_TRY(check_extent(op, "config->batch", c->batch));
    FK_TRY(check_extent(op, "config->seqlen", c->seqlen));
    if (c->hidden % c->nheads != 0)
        return fk_error(FK_STATUS_BAD_PARAM_SHAPE, "%s: config->hidden (%lld) must be a multiple of config->nheads (%lld)",
                        op, (long long)c->hidden, (long long)c->nheads);
    if (c->nheads % c->nheads_kv != 0)
        return fk_error(FK_STATUS_BAD_PARAM_HEADS, "%s: config->nheads (%lld) must be a multiple of config->nheads_kv (%lld)",
                        op, (long long)c->nheads, (long long)c->nheads_kv);
    if (c->param_dtype != FK_DTYPE_F32 && c->param_dtype != FK_DTYPE_F16 && c->param_dtype != FK_DTYPE_BF16)
        return fk_error(FK_STATUS_NOT_SUPPORTED_DTYPE, "%s: config->param_dtype must be f32, f16 or bf16, got %s (%d)",
                        op, fk_dtype_name(c->param_dtype), (int)c->param_dtype);
    if (c->master_fp32 != 0 && c->master_fp32 != 1)
        return fk_error(FK_STATUS_BAD_PARAM_VALUE, "%s: config->master_fp32 must be 0 or 1, got %d", op, c->master_fp32);
    if (c->flash != 0 && c->flash != 1)
        return fk_error(FK_STATUS_BAD_PARAM_VALUE, "%s: config->flash must be 0 or 1, got %d", op, c->flash);
    if (c->recompute != 0 && c->recompute != 1)
        return fk_error(FK_STATUS_BAD_PARAM_VALUE, "%s: config->recompute must be 0 or 1, got %d", op, c->recompute);

    u64acc         a  = {1};
    const uint64_t e  = fk_dtype_size(c->param_dtype);
    const uint64_t V  = (uint64_t)c->vocab, h = (uint64_t)c->hidden, I = (uint64_t)c->intermediate;
    const uint64_t L  = (uint64_t)c->layers, Hq = (uint64_t)c->nheads, Hkv = (uint64_t)c->nheads_kv;
    const uint64_t d  = h / Hq;
    const uint64_t T  = mulu(&a, (uint64_t)c->batch, (uint64_t)c->seqlen);

    // Parameter count.
    const uint64_t attn_w  = addu(&a, mul3(&a, h, Hq, d), addu(&a, mul4(&a, 2, h, Hkv, d), mul3(&a, Hq, d, h)));
    const uint64_t mlp_w   = mul3(&a, 3, h, I);
    const uint64_t layer_w = addu(&a, addu(&a, attn_w, mlp_w), mulu(&a, 2, h));
    const uint64_t count   = addu(&a, addu(&a, mulu(&a, L, layer_w), mulu(&a, 2, mulu(&a, V, h))), h);
    const uint64_t params  = mulu(&a, count, e);
    uint64_t       optim   = mulu(&a, count, 8);
    if (c->master_fp32 && c->param_dtype != FK_DTYPE_F32) optim = addu(&a, optim, mulu(&a, count, 4));
    if (!a.ok) return fk_error(FK_STATUS_BAD_PARAM_OVERFLOW, "%s: the parameter byte count overflows 64 bits", op);

    // Attention, forward (saved) and backward (transient), from the attention estimate.
    fk_attn_shape sh;
    memset(&sh, 0, sizeof sh);
    sh.batch     = c->batch;
    sh.seqlen_q  = c->seqlen;
    sh.seqlen_k  = c->seqlen;
    sh.nheads_q  = c->nheads;
    sh.nheads_kv = c->nheads_kv;
    sh.head_dim  = (int64_t)d;
    sh.dtype     = c->param_dtype;
    sh.causal    = 1;
    const fk_device cpu = {FK_DEVICE_CPU, 0};
    fk_attn_memory  af, ab;
    fk_status       st = fk_estimate_attn_memory(&sh, !c->flash, 0, cpu, 1, &af);
    if (st == FK_STATUS_SUCCESS) st = fk_estimate_attn_memory(&sh, !c->flash, 1, cpu, 1, &ab);
    if (st != FK_STATUS_SUCCESS) {
        char why[256];
        snprintf(why, sizeof why, "%s", fk_last_error_message());
        return fk_error(st, "%s: the attention part failed: %s", op, why);
    }
    fk_clear_error();
    const uint64_t scores     = c->flash ? 0 : af.workspace;
    const uint64_t attn_saved = addu(&a, addu(&a, af.outputs, af.lse), scores);

    // Saved activations of one layer.
    const uint64_t Th   = mul3(&a, T, h, e);
    const uint64_t rstd = mulu(&a, T, 4);
    const uint64_t TI   = mul3(&a, T, I, e);
    const uint64_t qkv  = mul4(&a, T, addu(&a, Hq, mulu(&a, 2, Hkv)), d, e);
    uint64_t       layer_act = 0;
    layer_act = addu(&a, layer_act, mulu(&a, 4, Th));             // x, norm1 out, h1, norm2 out
    layer_act = addu(&a, layer_act, mulu(&a, 2, rstd));           // two rstd
    layer_act = addu(&a, layer_act, qkv);                         // q, k, v
    layer_act = addu(&a, layer_act, attn_saved);                  // o + lse (+ S, P)
    layer_act = addu(&a, layer_act, mulu(&a, 3, TI));             // gate, up, act
    const uint64_t outside = addu(&a, mulu(&a, 2, Th), rstd);     // final norm input, rstd, output

    uint64_t act, scores_all;
    if (c->recompute) {
        act        = addu(&a, mulu(&a, L, Th), outside);
        scores_all = 0;
    } else {
        act        = addu(&a, mulu(&a, L, layer_act), outside);
        scores_all = mulu(&a, L, scores);
    }

    // Transients.
    const uint64_t logits    = mul3(&a, T, V, 4);
    const uint64_t attn_bwd  = addu(&a, ab.extra, mul4(&a, T, Hq, d, e));
    uint64_t       layer_bwd = addu(&a, Th, maxu(attn_bwd, mulu(&a, 3, TI)));
    if (c->recompute) layer_bwd = addu(&a, layer_bwd, layer_act);
    const uint64_t peak = maxu(logits, layer_bwd);

    fk_train_memory m;
    m.parameters       = params;
    m.gradients        = params;
    m.optimizer        = optim;
    m.activations      = act;
    m.attention_scores = scores_all;
    m.peak_transient   = peak;
    m.total            = addu(&a, addu(&a, addu(&a, params, params), addu(&a, optim, act)), peak);
    if (!a.ok) return fk_error(FK_STATUS_BAD_PARAM_OVERFLOW, "%s: a byte count of this configuration overflows 64 bits", op);
    *out = m;
    return FK_STATUS_SUCCESS;
}
