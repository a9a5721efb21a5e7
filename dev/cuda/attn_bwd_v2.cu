/*
 * attn_bwd_v2.cu — dev only: instances of the backward candidates (dev/cuda/attn_bwd_v2.cuh) and their whole
 * call, for attn_bwd_check (check2, time2). Not part of the library build (CMake globs src/ only).
 * Parameters are built as attn_bwd.cu's make_params builds them (same workspace layout; the deterministic
 * counters sized by the candidate's BM).
 */
#include "attn_bwd_v2.h"

#include "attn_bwd_v2.cuh"

#include <string.h>

using namespace fk_cuda;

typedef cudaError_t (*MainFn)(const BwdParams &, int, cudaStream_t);

namespace {

struct CandImpl {
    MainFn f16, bf16;
};

#define PROD(D) \
    {launch_bwd_tc<D, BwdTile<D>::BM, BwdTile<D>::BN, BwdTile<D>::NW, BwdTile<D>::MINB, false>, \
     launch_bwd_tc<D, BwdTile<D>::BM, BwdTile<D>::BN, BwdTile<D>::NW, BwdTile<D>::MINB, true>}
#define V2(D, BM, BN, NW, SP, MINB) \
    {launch_bwd2_tc<D, BM, BN, NW, SP, MINB, false>, launch_bwd2_tc<D, BM, BN, NW, SP, MINB, true>}
#define V2CAND(D, BM, BN, NW, SP, MINB) \
    {"v2 " #BM "x" #BN "w" #NW "s" #SP "b" #MINB, D, BM, Bwd2Shape<D, BM, BN, NW, SP>::SMEM, 0}
#define PRODCAND(D) \
    {"io2", D, BwdTile<D>::BM, BwdShape<D, BwdTile<D>::BM, BwdTile<D>::BN, BwdTile<D>::NW>::SMEM, 1}

// The one list: kBwdCands[i] is run by kImpl[i]. Tiles: see the counting in attn_bwd_v2.cuh.
const CandImpl kImpl[] = {
    PROD(64), V2(64, 32, 128, 8, 2, 2), V2(64, 64, 128, 8, 2, 1),
    PROD(128), V2(128, 64, 128, 8, 2, 1), V2(128, 32, 128, 8, 2, 1),
    PROD(256), V2(256, 64, 64, 8, 4, 1), V2(256, 32, 64, 8, 2, 1),
};

} // namespace

const BwdCand kBwdCands[] = {
    PRODCAND(64), V2CAND(64, 32, 128, 8, 2, 2), V2CAND(64, 64, 128, 8, 2, 1),
    PRODCAND(128), V2CAND(128, 64, 128, 8, 2, 1), V2CAND(128, 32, 128, 8, 2, 1),
    PRODCAND(256), V2CAND(256, 64, 64, 8, 4, 1), V2CAND(256, 32, 64, 8, 2, 1),
    {NULL, 0, 0, 0, 0}};
static_assert(sizeof kImpl / sizeof kImpl[0] + 1 == sizeof kBwdCands / sizeof kBwdCands[0], "one list");

namespace {

int bucket_of(int64_t d) { return d <= 64 ? 64 : d <= 128 ? 128 : d <= 256 ? 256 : 0; }
size_t align256(size_t x) { return (x + 255) & ~(size_t)255; }

struct Layout {
    size_t dq_acc, dsum, lsef, sem, total;
    int    n_mblocks;
};
Layout layout(const BwdCand *c, const fk_attn_problem *p) {
    Layout       l;
    const size_t rows = (size_t)p->total_q * (size_t)p->nheads_q;
    l.n_mblocks       = (int)((p->seqlen_q + c->BM - 1) / c->BM);
    l.dq_acc          = 0;
    l.dsum            = align256(rows * c->D * sizeof(float));
    l.lsef            = l.dsum + align256(rows * sizeof(float));
    l.sem             = l.lsef + align256(rows * sizeof(float));
    l.total = l.sem + (p->deterministic ? align256((size_t)p->batch * p->nheads_q * l.n_mblocks * sizeof(int)) : 0);
    return l;
}
bool aligned16(const void *ptr, int64_t s0, int64_t s1, int64_t s2) {
    return ((uintptr_t)ptr % 16 == 0) && s0 % 8 == 0 && s1 % 8 == 0 && s2 % 8 == 0;
}
int64_t clamp_window(int64_t w) { return w < 0 ? -1 : (w > ((int64_t)1 << 29) ? ((int64_t)1 << 29) : w); }

// attn_bwd.cu's make_params, with the candidate's layout.
BwdParams params(const BwdCand *c, const fk_attn_problem *p, void *ws) {
    BwdParams f;
    memset(&f, 0, sizeof f);
    f.q = p->q, f.k = p->k, f.v = p->v, f.o = p->o, f.do_ = p->do_;
    f.dq = p->dq, f.dk = p->dk, f.dv = p->dv;
    f.lse  = (const float *)p->lse;
    f.q_bs = p->q_bs, f.q_rs = p->q_rs, f.q_hs = p->q_hs;
    f.k_bs = p->k_bs, f.k_rs = p->k_rs, f.k_hs = p->k_hs;
    f.v_bs = p->v_bs, f.v_rs = p->v_rs, f.v_hs = p->v_hs;
    f.o_bs = p->o_bs, f.o_rs = p->o_rs, f.o_hs = p->o_hs;
    f.do_bs = p->do_bs, f.do_rs = p->do_rs, f.do_hs = p->do_hs;
    f.dq_bs = p->dq_bs, f.dq_rs = p->dq_rs, f.dq_hs = p->dq_hs;
    f.dk_bs = p->dk_bs, f.dk_rs = p->dk_rs, f.dk_hs = p->dk_hs;
    f.dv_bs = p->dv_bs, f.dv_rs = p->dv_rs, f.dv_hs = p->dv_hs;
    f.lse_bs = p->lse_bs, f.lse_hs = p->lse_hs, f.lse_rs = p->lse_rs;
    f.cu_q = p->cu_seqlens_q, f.cu_k = p->cu_seqlens_k;
    f.alibi = p->alibi, f.alibi_bs = p->alibi_bs;
    f.batch = (int)p->batch, f.seqlen_q = (int)p->seqlen_q, f.seqlen_k = (int)p->seqlen_k;
    f.head_dim = (int)p->head_dim, f.nheads_q = (int)p->nheads_q;
    f.group        = (int)(p->nheads_q / p->nheads_kv);
    f.window_left  = (int)clamp_window(p->window_left);
    f.window_right = (int)clamp_window(p->window_right);
    f.scale        = p->scale;
    f.scale_log2   = p->scale * FK_BWD_LOG2E;
    f.softcap      = p->softcap > 0.f ? p->softcap : 0.f;
    f.softcap_inv  = f.softcap > 0.f ? p->scale / f.softcap : 0.f;
    f.softcap_log2 = f.softcap * FK_BWD_LOG2E;
    f.transform    = (f.softcap > 0.f || p->alibi != NULL || !(p->scale > 0.f)) ? 1 : 0;
    f.vec_in = aligned16(p->q, p->q_bs, p->q_rs, p->q_hs) && aligned16(p->k, p->k_bs, p->k_rs, p->k_hs) &&
               aligned16(p->v, p->v_bs, p->v_rs, p->v_hs) && aligned16(p->do_, p->do_bs, p->do_rs, p->do_hs);
    f.vec_out = aligned16(p->dq, p->dq_bs, p->dq_rs, p->dq_hs) && aligned16(p->dk, p->dk_bs, p->dk_rs, p->dk_hs) &&
                aligned16(p->dv, p->dv_bs, p->dv_rs, p->dv_hs);
    f.deterministic = p->deterministic ? 1 : 0;
    const Layout l  = layout(c, p);
    char        *w  = (char *)ws;
    f.dq_acc        = (float *)(w + l.dq_acc);
    f.dsum          = (float *)(w + l.dsum);
    f.lsef          = (float *)(w + l.lsef);
    f.sem           = p->deterministic ? (int *)(w + l.sem) : NULL;
    f.total_q       = p->total_q;
    f.total_k       = p->total_k;
    f.acc_d         = c->D;
    f.n_mblocks     = l.n_mblocks;
    return f;
}

template <int DT> cudaError_t prep2(int D, const BwdParams &f, int sms, cudaStream_t st) {
    return D == 64 ? launch_bwd2_prep<DT, 64>(f, sms, st)
           : D == 128 ? launch_bwd2_prep<DT, 128>(f, sms, st) : launch_bwd2_prep<DT, 256>(f, sms, st);
}
template <int DT> cudaError_t convert2(int D, const BwdParams &f, cudaStream_t st) {
    return D == 64 ? launch_bwd2_convert<DT, 64>(f, st)
           : D == 128 ? launch_bwd2_convert<DT, 128>(f, st) : launch_bwd2_convert<DT, 256>(f, st);
}

} // namespace

int bwd_cand_supports(const BwdCand *c, const fk_attn_problem *p, int max_smem_optin) {
    return (p->dtype == FK_DTYPE_F16 || p->dtype == FK_DTYPE_BF16) && bucket_of(p->head_dim) == c->D &&
           c->smem <= max_smem_optin && p->seqlen_q <= ((int64_t)1 << 28) && p->seqlen_k <= ((int64_t)1 << 28) &&
           p->batch <= 65535 && p->nheads_q <= 65535 && p->lse != NULL;
}

size_t bwd_cand_ws_bytes(const BwdCand *c, const fk_attn_problem *p) { return layout(c, p).total; }

cudaError_t bwd_cand_run(const BwdCand *c, const fk_attn_problem *p, void *ws, int sms, int main_only,
                         cudaStream_t st) {
    if (p->total_q == 0 && p->total_k == 0) return cudaSuccess;
    const BwdParams f    = params(c, p, ws);
    const bool      bf16 = p->dtype == FK_DTYPE_BF16;
    const Layout    l    = layout(c, p);
    cudaError_t     e;
    if (!main_only && p->total_q > 0) {
        if ((e = bf16 ? prep2<2>(c->D, f, sms, st) : prep2<1>(c->D, f, sms, st)) != cudaSuccess) return e;
    }
    if (f.sem && (e = cudaMemsetAsync(f.sem, 0, l.total - l.sem, st)) != cudaSuccess) return e;
    if (f.seqlen_k > 0) {
        const CandImpl &im = kImpl[c - kBwdCands];
        if ((e = (bf16 ? im.bf16 : im.f16)(f, (int)p->nheads_kv, st)) != cudaSuccess) return e;
    }
    if (!main_only && p->total_q > 0) {
        if ((e = bf16 ? convert2<2>(c->D, f, st) : convert2<1>(c->D, f, st)) != cudaSuccess) return e;
    }
    return cudaSuccess;
}
