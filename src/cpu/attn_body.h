/*
 * attn_body.h — the tiled FlashAttention forward and backward, written once and included twice by
 * src/cpu/attn.c: with T = float (storage f32/f16/bf16, the SIMD primitives) and T = double (storage f64,
 * portable loops). Not a header to include anywhere else.
 *
 * Needs, defined by the includer: T, FN(name) (suffixes the name), KERN (the primitive table type, with
 * members gemm / exp_sum / row_max over T), LOAD_ROW(dst, src, dtype, n), STORE_ROW(dst, dtype, src, n),
 * EXP, LOG, TANH, and the shared helpers of attn.c (seq_of, key_span, row_span, round_up, BRF, BR, BC, BRC,
 * FK_NOINLINE).
 *
 * Tile scratch (per thread, from the caller's workspace), Dp = head_dim rounded up to FK_ATTN_NV; the row
 * count of the query-side buffers is BRC = max(BRF, BR) (forward and backward query tiles):
 *   qs  [BRC x Dp]  query rows times scale      kt  [Dp x BC]  key tile, transposed
 *   vx  [BC x Dp]  value tile (fwd) / dq acc   vt  [Dp x BC]  value tile, transposed (bwd)
 *   s   [BRC x BC] scores, then probabilities  dp  [BRC x BC]  dP, then dS (bwd)
 *   acc [BRC x Dp]  output accumulator (fwd) / dO rows (bwd)
 *   kr  [BC x Dp]  key tile as rows (bwd pass 2) / dK acc (pass 1)
 *   dva [BRC x Dp] dV / dQ acc                  pt, dst [BC x BR]  P^T, dS^T (pass 1)
 *   cd  [BRC x BC]  softcap derivative 1 - tanh^2    rows: m, l / lse, Di [BRC each]; tmp [Dp]
 */

typedef struct FN(scratch) {
    T *qs, *kt, *vx, *vt, *s, *dp, *acc, *kr, *dva, *pt, *dst, *cd, *ra, *rb, *tmp;
} FN(scratch);

// Elements of T one thread's scratch needs (every buffer padded to a 64-byte multiple).
static int64_t FN(scratch_elems)(int64_t d) {
    const int64_t dp = round_up(d, FK_ATTN_NV), al = 64 / (int64_t)sizeof(T);
    return round_up(BRC * dp, al) * 2 + round_up(dp * BC, al) * 2 + round_up(BC * dp, al) * 2 + round_up(BRC * dp, al) +
           round_up(BRC * BC, al) * 3 + round_up(BC * BR, al) * 2 + round_up(BRC, al) * 2 + round_up(dp, al);
}

static FN(scratch) FN(carve)(T *w, int64_t d) {
    const int64_t dp = round_up(d, FK_ATTN_NV), al = 64 / (int64_t)sizeof(T);
    FN(scratch) s;
#define FK_TAKE(field, n) (s.field = w, w += round_up((n), al))
    FK_TAKE(qs, BRC * dp);
    FK_TAKE(acc, BRC * dp);
    FK_TAKE(kt, dp * BC);
    FK_TAKE(vt, dp * BC);
    FK_TAKE(vx, BC * dp);
    FK_TAKE(kr, BC * dp);
    FK_TAKE(dva, BRC * dp); // dV acc (pass 1) or dQ acc (pass 2)
    FK_TAKE(s, BRC * BC);
    FK_TAKE(dp, BRC * BC);
    FK_TAKE(cd, BRC * BC);
    FK_TAKE(pt, BC * BR);
    FK_TAKE(dst, BC * BR);
    FK_TAKE(ra, BRC);
    FK_TAKE(rb, BRC);
    FK_TAKE(tmp, dp);
#undef FK_TAKE
    return s;
}

// --- tile loads ------------------------------------------------------------------------------------------

// rows [r0, r0 + n) of head h of a [row, head, dim] operand at `base` (element offset `off` of sequence
// start), times `mul`, into dst [round_up(n, MR) x dp]; padding rows and columns are zero.
static void FN(load_rows)(T *dst, int64_t dp, const void *base, fk_dtype dt, int64_t off, int64_t rs, int64_t n,
                          int64_t d, T mul) {
    const int64_t es = (int64_t)fk_dtype_size(dt), m = round_up(n, FK_ATTN_MR);
    for (int64_t r = 0; r < n; r++) {
        T *row = dst + r * dp;
        LOAD_ROW(row, (const char *)base + (off + r * rs) * es, dt, d);
        if (mul != (T)1)
            for (int64_t c = 0; c < d; c++) row[c] *= mul;
        for (int64_t c = d; c < dp; c++) row[c] = 0;
    }
    for (int64_t r = n; r < m; r++) memset(dst + r * dp, 0, (size_t)dp * sizeof(T));
}

// The same n rows transposed into dst [dp x BC] (column r = row r); columns n..BC are zero.
static void FN(load_rows_t)(T *dst, T *tmp, const void *base, fk_dtype dt, int64_t off, int64_t rs, int64_t n,
                            int64_t d) {
    const int64_t es = (int64_t)fk_dtype_size(dt);
    for (int64_t r = 0; r < n; r++) {
        LOAD_ROW(tmp, (const char *)base + (off + r * rs) * es, dt, d);
        for (int64_t c = 0; c < d; c++) dst[c * BC + r] = tmp[c];
    }
    if (n < BC)
        for (int64_t c = 0; c < d; c++) memset(dst + c * BC + n, 0, (size_t)(BC - n) * sizeof(T));
}

// Rows at element offsets offs[0..n) (each a row start), as FN(load_rows) with mul = 1: the paged KV cache,
// whose rows of one tile may sit in different blocks.
static void FN(load_rows_idx)(T *dst, int64_t dp, const void *base, fk_dtype dt, const int64_t *offs, int64_t n,
                              int64_t d) {
    const int64_t es = (int64_t)fk_dtype_size(dt), m = round_up(n, FK_ATTN_MR);
    for (int64_t r = 0; r < n; r++) {
        T *row = dst + r * dp;
        LOAD_ROW(row, (const char *)base + offs[r] * es, dt, d);
        for (int64_t c = d; c < dp; c++) row[c] = 0;
    }
    for (int64_t r = n; r < m; r++) memset(dst + r * dp, 0, (size_t)dp * sizeof(T));
}

// The same, transposed into dst [dp x BC], as FN(load_rows_t).
static void FN(load_rows_t_idx)(T *dst, T *tmp, const void *base, fk_dtype dt, const int64_t *offs, int64_t n,
                                int64_t d) {
    const int64_t es = (int64_t)fk_dtype_size(dt);
    for (int64_t r = 0; r < n; r++) {
        LOAD_ROW(tmp, (const char *)base + offs[r] * es, dt, d);
        for (int64_t c = 0; c < d; c++) dst[c * BC + r] = tmp[c];
    }
    if (n < BC)
        for (int64_t c = 0; c < d; c++) memset(dst + c * BC + n, 0, (size_t)(BC - n) * sizeof(T));
}

// --- scores ----------------------------------------------------------------------------------------------

// Row i (within its sequence) of a score tile over keys [j0, j0 + nk): softcap (its derivative 1 - t^2 into
// cd when cd != NULL), ALiBi, the mask, and -inf in the padding columns nk..BC. `full` = every key of the
// tile is visible to every row of the tile (no per-element mask needed).
static void FN(score_row)(const fk_attn_problem *p, T *srow, T *cd, int64_t i, int64_t j0, int64_t nk,
                          int64_t sq, int64_t sk, T slope, int full) {
    if (p->softcap > 0.0f) {
        const T cap = (T)p->softcap, inv = (T)1 / cap;
        for (int64_t c = 0; c < nk; c++) {
            T t     = TANH(srow[c] * inv);
            srow[c] = cap * t;
            if (cd) cd[c] = (T)1 - t * t;
        }
    }
    if (slope != (T)0) {
        const int64_t diag = i + sk - sq;
        for (int64_t c = 0; c < nk; c++) {
            int64_t dist = diag - (j0 + c);
            srow[c] -= slope * (T)(dist < 0 ? -dist : dist);
        }
    }
    if (!full) {
        int64_t lo, hi;
        fk_attn_key_range(p, i, sq, sk, &lo, &hi);
        for (int64_t c = 0; c < nk; c++)
            if (j0 + c < lo || j0 + c >= hi) srow[c] = -(T)INFINITY;
    }
    for (int64_t c = nk; c < BC; c++) srow[c] = -(T)INFINITY;
}

// Is every key of [j0, j0 + nk) visible to every row of [i0, i0 + nq)? (lo and hi grow with the row.)
static int FN(tile_full)(const fk_attn_problem *p, int64_t i0, int64_t nq, int64_t j0, int64_t nk, int64_t sq,
                         int64_t sk) {
    int64_t lo_a, hi_a, lo_b, hi_b;
    fk_attn_key_range(p, i0, sq, sk, &lo_a, &hi_a);
    fk_attn_key_range(p, i0 + nq - 1, sq, sk, &lo_b, &hi_b);
    return lo_b <= j0 && hi_a >= j0 + nk;
}

static T FN(slope_of)(const fk_attn_problem *p, int64_t b, int64_t h) {
    return p->alibi ? (T)p->alibi[b * p->alibi_bs + h] : (T)0;
}

// --- forward ---------------------------------------------------------------------------------------------

// One work item: query rows [i0, i0 + nqi) of the nh heads h .. h + nh - 1 (nh > 1 only when they share a
// kv head: decode packs a GQA group into one tile, so each K/V tile is converted once for the whole group and
// the GEMMs get nh x more useful rows). Tile row r is head h + r / nqi, position i0 + r % nqi.
// kv != NULL: the keys of sequence b come from a KV cache (attn_kvcache_internal.h), seqlen_k(b) of them.
// Split-KV (decode): the item covers only chunk ci of nc of the key tiles its rows see (tiles [ci * n / nc,
// (ci + 1) * n / nc) of the n tiles from the span's first key, the same tile boundaries as nc = 1) and writes
// its partial result, O normalized and the LSE, to po [nq x D] and pl [nq] instead of o and lse (-inf for a
// row that sees no key of the chunk; its po row is then not written). nc = 1, po = NULL: the whole item.
FK_NOINLINE static void FN(fwd_item)(const fk_attn_problem *p, const fk_attn_kv *kv, const KERN *kn, FN(scratch) *w,
                         int64_t b, int64_t h, int64_t nh, int64_t i0, int64_t ci, int64_t nc, T *po, T *pl) {
    seq_t sq = seq_of(p, b);
    if (kv) sq.sk = kv->cache_seqlens[b] + kv->seqlen_new;
    const int64_t D = p->head_dim, dp = round_up(D, FK_ATTN_NV), hk = h / (p->nheads_q / p->nheads_kv);
    const fk_dtype dt = p->dtype;
    if (i0 >= sq.sq) return;
    const int64_t nqi = sq.sq - i0 < BRF / nh ? sq.sq - i0 : BRF / nh, nq = nh * nqi, mq = round_up(nq, FK_ATTN_MR);
    const T       slope = FN(slope_of)(p, b, h);
    T *m = w->ra, *l = w->rb;

    // q is (B, Sq, Hq, D): this tile's rows, pre-multiplied by the softmax scale, one head after the other.
    for (int64_t g = 0; g < nh; g++)
        FN(load_rows)(w->qs + g * nqi * dp, dp, p->q, dt, b * p->q_bs + (sq.q0 + i0) * p->q_rs + (h + g) * p->q_hs,
                      p->q_rs, nqi, D, (T)p->scale);
    if (nh > 1) memset(w->qs + nq * dp, 0, (size_t)((mq - nq) * dp) * sizeof(T)); // groups overlap their padding
    memset(w->acc, 0, (size_t)(mq * dp) * sizeof(T));
    for (int64_t r = 0; r < BRF; r++) {
        m[r] = -(T)INFINITY;
        l[r] = 0;
    }

    // The cache entry of a contiguous KV cache (kv: k_bs is the entry stride); a paged one is read by row.
    const int64_t kb = kv && kv->cache_batch_idx ? kv->cache_batch_idx[b] : b;
    const int     paged = kv && kv->block_table;
    int64_t       koffs[BC], voffs[BC];
    int64_t lo, hi;
    key_span(p, i0, nqi, sq.sq, sq.sk, &lo, &hi);
    if (nc > 1 && hi > lo) {
        const int64_t n = (hi - lo + BC - 1) / BC, t0 = ci * n / nc, t1 = (ci + 1) * n / nc;
        hi = lo + t1 * BC < hi ? lo + t1 * BC : hi;
        lo += t0 * BC;
    }
    for (int64_t j0 = lo; j0 < hi; j0 += BC) {
        const int64_t nk = hi - j0 < BC ? hi - j0 : BC;
        // k, v are (B, Sk, Hkv, D): the key tile transposed (B operand of S = Q K^T), values as rows.
        if (paged) {
            for (int64_t c = 0; c < nk; c++) {
                koffs[c] = fk_attn_kv_row(kv, b, j0 + c, p->k_bs, p->k_rs) + hk * p->k_hs;
                voffs[c] = fk_attn_kv_row(kv, b, j0 + c, p->v_bs, p->v_rs) + hk * p->v_hs;
            }
            FN(load_rows_t_idx)(w->kt, w->tmp, p->k, dt, koffs, nk, D);
            FN(load_rows_idx)(w->vx, dp, p->v, dt, voffs, nk, D);
        } else {
            const int64_t koff = kb * p->k_bs + (sq.k0 + j0) * p->k_rs + hk * p->k_hs;
            const int64_t voff = kb * p->v_bs + (sq.k0 + j0) * p->v_rs + hk * p->v_hs;
            FN(load_rows_t)(w->kt, w->tmp, p->k, dt, koff, p->k_rs, nk, D);
            FN(load_rows)(w->vx, dp, p->v, dt, voff, p->v_rs, nk, D, (T)1);
        }

        kn->gemm(mq, BC, D, w->qs, dp, w->kt, BC, w->s, BC, 0); // S = (scale Q) K^T
        const int full = FN(tile_full)(p, i0, nqi, j0, nk, sq.sq, sq.sk);
        for (int64_t r = 0; r < nq; r++) {
            T            *srow = w->s + r * BC;
            const int64_t g    = nh > 1 ? r / nqi : 0;
            FN(score_row)(p, srow, NULL, i0 + r - g * nqi, j0, nk, sq.sq, sq.sk,
                          g ? FN(slope_of)(p, b, h + g) : slope, full);
            // Online softmax: new running max, rescale what was accumulated under the old one.
            T mx = kn->row_max(srow, BC), mnew = m[r] > mx ? m[r] : mx;
            if (mnew == -(T)INFINITY) { // no visible key yet: this row's P is zero
                memset(srow, 0, BC * sizeof(T));
                continue;
            }
            T sum   = kn->exp_sum(srow, BC, mnew);
            T alpha = EXP(m[r] - mnew); // 0 when m was -inf (the accumulator is still 0)
            if (alpha != (T)1) {
                T *arow = w->acc + r * dp;
                for (int64_t c = 0; c < dp; c++) arow[c] *= alpha;
            }
            l[r] = l[r] * alpha + sum;
            m[r] = mnew;
        }
        for (int64_t r = nq; r < mq; r++) memset(w->s + r * BC, 0, BC * sizeof(T));
        kn->gemm(mq, dp, nk, w->s, BC, w->vx, dp, w->acc, dp, 1); // O += P V
    }

    // Epilogue: O = acc / l, lse = m + log l (o = 0, lse = -inf for a row that saw no key).
    if (po) {
        for (int64_t r = 0; r < nq; r++) {
            const T *arow = w->acc + r * dp;
            if (!(l[r] > 0)) {
                pl[r] = -(T)INFINITY;
                continue;
            }
            const T inv = (T)1 / l[r];
            for (int64_t c = 0; c < D; c++) po[r * D + c] = arow[c] * inv;
            pl[r] = m[r] + LOG(l[r]);
        }
        return;
    }
    for (int64_t r = 0; r < nq; r++) {
        const int64_t g = nh > 1 ? r / nqi : 0, hr = h + g, ir = sq.q0 + i0 + r - g * nqi;
        T            *arow = w->acc + r * dp;
        T             inv  = l[r] > 0 ? (T)1 / l[r] : (T)0;
        for (int64_t c = 0; c < D; c++) arow[c] *= inv;
        STORE_ROW(fk_cpu_at_mut(p->o, dt, b * p->o_bs + ir * p->o_rs + hr * p->o_hs), dt, arow, D);
        if (p->lse)
            ((T *)p->lse)[b * p->lse_bs + hr * p->lse_hs + ir * p->lse_rs] = l[r] > 0 ? m[r] + LOG(l[r]) : -(T)INFINITY;
    }
}

// Work items over (batch, head group, query tile), nh query heads per tile: 1 for the plain forward; decode
// (kv != NULL) may pack a GQA group (nh = G, chosen by kv_plan in attn.c).
static void FN(fwd)(const struct fk_context *ctx, const fk_attn_problem *p, const fk_attn_kv *kv, const KERN *kn,
                    void *ws, int64_t nh) {
    const int     nt   = ctx->num_threads > 0 ? ctx->num_threads : 1;
    const int64_t rows = BRF / nh, ntq = (p->seqlen_q + rows - 1) / rows, hg = p->nheads_q / nh;
    const int64_t items = p->batch * hg * ntq;
    const int64_t per   = FN(scratch_elems)(p->head_dim);
    T            *base  = (T *)align64(ws);
    (void)nt;
#ifdef _OPENMP
#pragma omp parallel num_threads(nt)
#endif
    {
        FN(scratch) w = FN(carve)(base + (int64_t)thread_id() * per, p->head_dim);
#ifdef _OPENMP
#pragma omp for schedule(dynamic, 1)
#endif
        for (int64_t t = 0; t < items; t++) {
            int64_t qt = t % ntq, bh = t / ntq;
            FN(fwd_item)(p, kv, kn, &w, bh / hg, (bh % hg) * nh, nh, qt * rows, 0, 1, NULL, NULL);
        }
    }
    clear_unused_rows_fwd(p);
}

// --- backward --------------------------------------------------------------------------------------------

// P and dS of one tile: S (in w->s, from (scale Q) K^T) becomes P = exp(S' - lse), and dP (in w->dp, from
// dO V^T) becomes dS = P (dP - Di) (times the softcap derivative). Rows nq..mq are zeroed.
static void FN(probs_dscores)(const fk_attn_problem *p, const KERN *kn, FN(scratch) *w, int64_t i0, int64_t nq,
                              int64_t mq, int64_t j0, int64_t nk, const seq_t *sq, T slope) {
    const int full = FN(tile_full)(p, i0, nq, j0, nk, sq->sq, sq->sk);
    const int cap  = p->softcap > 0.0f;
    for (int64_t r = 0; r < nq; r++) {
        T *srow = w->s + r * BC, *drow = w->dp + r * BC, *crow = w->cd + r * BC;
        T  L = w->ra[r], Di = w->rb[r];
        if (L == -(T)INFINITY) { // the row saw no key in the forward: no gradient through it
            memset(srow, 0, BC * sizeof(T));
            memset(drow, 0, BC * sizeof(T));
            continue;
        }
        FN(score_row)(p, srow, cap ? crow : NULL, i0 + r, j0, nk, sq->sq, sq->sk, slope, full);
        kn->exp_sum(srow, BC, L);
        if (cap)
            for (int64_t c = 0; c < BC; c++) drow[c] = srow[c] * (drow[c] - Di) * (c < nk ? crow[c] : (T)0);
        else
            for (int64_t c = 0; c < BC; c++) drow[c] = srow[c] * (drow[c] - Di);
    }
    for (int64_t r = nq; r < mq; r++) {
        memset(w->s + r * BC, 0, BC * sizeof(T));
        memset(w->dp + r * BC, 0, BC * sizeof(T));
    }
}

// Query-tile operands of the backward: (scale Q), dO, lse and Di rows of head h, rows [i0, i0 + nq).
static void FN(load_q_side)(const fk_attn_problem *p, FN(scratch) *w, const T *di, int64_t b, int64_t h,
                            const seq_t *sq, int64_t i0, int64_t nq) {
    const int64_t  D = p->head_dim, dp = round_up(D, FK_ATTN_NV);
    const fk_dtype dt = p->dtype;
    FN(load_rows)(w->qs, dp, p->q, dt, b * p->q_bs + (sq->q0 + i0) * p->q_rs + h * p->q_hs, p->q_rs, nq, D,
                  (T)p->scale);
    FN(load_rows)(w->acc, dp, p->do_, dt, b * p->do_bs + (sq->q0 + i0) * p->do_rs + h * p->do_hs, p->do_rs, nq, D,
                  (T)1);
    const T      *lse  = (const T *)p->lse;
    const int64_t grow = global_row_q(p, b, sq) + i0;
    for (int64_t r = 0; r < nq; r++) {
        w->ra[r] = lse[b * p->lse_bs + h * p->lse_hs + (sq->q0 + i0 + r) * p->lse_rs];
        w->rb[r] = di[h * p->total_q + grow + r];
    }
}

// Pass 0: Di = rowsum(dO * O) for every (token, query head), into di [Hq x total_q].
static void FN(bwd_di)(const fk_attn_problem *p, T *di, int nt) {
    const int64_t  D = p->head_dim, dp = round_up(D, FK_ATTN_NV), sqf = p->cu_seqlens_q ? 0 : p->seqlen_q;
    const fk_dtype dt = p->dtype;
    const int64_t  rows = p->total_q * p->nheads_q;
    (void)nt;
#ifdef _OPENMP
#pragma omp parallel num_threads(nt)
#endif
    {
        T bo[256 + FK_ATTN_NV], bd[256 + FK_ATTN_NV];
        (void)dp;
#ifdef _OPENMP
#pragma omp for schedule(static)
#endif
        for (int64_t t = 0; t < rows; t++) {
            int64_t h = t % p->nheads_q, tok = t / p->nheads_q;
            int64_t b = sqf ? tok / sqf : 0, i = sqf ? tok % sqf : tok;
            LOAD_ROW(bo, fk_cpu_at(p->o, dt, b * p->o_bs + i * p->o_rs + h * p->o_hs), dt, D);
            LOAD_ROW(bd, fk_cpu_at(p->do_, dt, b * p->do_bs + i * p->do_rs + h * p->do_hs), dt, D);
            T s = 0;
            for (int64_t c = 0; c < D; c++) s += bo[c] * bd[c];
            di[h * p->total_q + tok] = s;
        }
    }
}

// Pass 1 item: dK, dV of key tile [j0, j0 + BC) of kv head hk, summed over the query heads of its group and
// every query row that sees the tile.
static void FN(bwd_kv_item)(const fk_attn_problem *p, const KERN *kn, FN(scratch) *w, const T *di, int64_t b,
                            int64_t hk, int64_t j0) {
    const seq_t    sq = seq_of(p, b);
    const int64_t  D = p->head_dim, dp = round_up(D, FK_ATTN_NV), G = p->nheads_q / p->nheads_kv;
    const fk_dtype dt = p->dtype;
    if (j0 >= sq.sk) return;
    const int64_t nk = sq.sk - j0 < BC ? sq.sk - j0 : BC;
    const int64_t koff = b * p->k_bs + (sq.k0 + j0) * p->k_rs + hk * p->k_hs;
    const int64_t voff = b * p->v_bs + (sq.k0 + j0) * p->v_rs + hk * p->v_hs;
    FN(load_rows_t)(w->kt, w->tmp, p->k, dt, koff, p->k_rs, nk, D);
    FN(load_rows_t)(w->vt, w->tmp, p->v, dt, voff, p->v_rs, nk, D);
    T *dka = w->kr, *dva = w->dva;
    memset(dka, 0, (size_t)(BC * dp) * sizeof(T));
    memset(dva, 0, (size_t)(BC * dp) * sizeof(T));

    int64_t ia, ib;
    row_span(p, j0, nk, sq.sq, sq.sk, &ia, &ib);
    for (int64_t g = 0; g < G; g++) {
        const int64_t h = hk * G + g;
        const T       slope = FN(slope_of)(p, b, h);
        for (int64_t i0 = ia; i0 < ib; i0 += BR) {
            const int64_t nq = ib - i0 < BR ? ib - i0 : BR, mq = round_up(nq, FK_ATTN_MR);
            FN(load_q_side)(p, w, di, b, h, &sq, i0, nq);
            kn->gemm(mq, BC, D, w->qs, dp, w->kt, BC, w->s, BC, 0);  // S  = (scale Q) K^T
            kn->gemm(mq, BC, D, w->acc, dp, w->vt, BC, w->dp, BC, 0); // dP = dO V^T
            FN(probs_dscores)(p, kn, w, i0, nq, mq, j0, nk, &sq, slope);
            // P^T and dS^T (BC x BR) so that both updates are plain row-major products.
            for (int64_t r = 0; r < nq; r++)
                for (int64_t c = 0; c < BC; c++) {
                    w->pt[c * BR + r]  = w->s[r * BC + c];
                    w->dst[c * BR + r] = w->dp[r * BC + c];
                }
            kn->gemm(BC, dp, nq, w->pt, BR, w->acc, dp, dva, dp, 1); // dV += P^T dO
            kn->gemm(BC, dp, nq, w->dst, BR, w->qs, dp, dka, dp, 1); // dK += dS^T (scale Q)
        }
    }
    for (int64_t c = 0; c < nk; c++) {
        STORE_ROW(fk_cpu_at_mut(p->dk, dt, b * p->dk_bs + (sq.k0 + j0 + c) * p->dk_rs + hk * p->dk_hs), dt,
                  dka + c * dp, D);
        STORE_ROW(fk_cpu_at_mut(p->dv, dt, b * p->dv_bs + (sq.k0 + j0 + c) * p->dv_rs + hk * p->dv_hs), dt,
                  dva + c * dp, D);
    }
}

// Pass 2 item: dQ of query tile [i0, i0 + BR) of head h.
static void FN(bwd_q_item)(const fk_attn_problem *p, const KERN *kn, FN(scratch) *w, const T *di, int64_t b,
                           int64_t h, int64_t i0) {
    const seq_t    sq = seq_of(p, b);
    const int64_t  D = p->head_dim, dp = round_up(D, FK_ATTN_NV), hk = h / (p->nheads_q / p->nheads_kv);
    const fk_dtype dt = p->dtype;
    if (i0 >= sq.sq) return;
    const int64_t nq = sq.sq - i0 < BR ? sq.sq - i0 : BR, mq = round_up(nq, FK_ATTN_MR);
    const T       slope = FN(slope_of)(p, b, h);
    FN(load_q_side)(p, w, di, b, h, &sq, i0, nq);
    T *dqa = w->dva;
    memset(dqa, 0, (size_t)(mq * dp) * sizeof(T));

    int64_t lo, hi;
    key_span(p, i0, nq, sq.sq, sq.sk, &lo, &hi);
    for (int64_t j0 = lo; j0 < hi; j0 += BC) {
        const int64_t nk = hi - j0 < BC ? hi - j0 : BC;
        const int64_t koff = b * p->k_bs + (sq.k0 + j0) * p->k_rs + hk * p->k_hs;
        const int64_t voff = b * p->v_bs + (sq.k0 + j0) * p->v_rs + hk * p->v_hs;
        FN(load_rows_t)(w->kt, w->tmp, p->k, dt, koff, p->k_rs, nk, D);
        FN(load_rows)(w->kr, dp, p->k, dt, koff, p->k_rs, nk, D, (T)1);
        FN(load_rows_t)(w->vt, w->tmp, p->v, dt, voff, p->v_rs, nk, D);
        kn->gemm(mq, BC, D, w->qs, dp, w->kt, BC, w->s, BC, 0);  // S  = (scale Q) K^T
        kn->gemm(mq, BC, D, w->acc, dp, w->vt, BC, w->dp, BC, 0); // dP = dO V^T
        FN(probs_dscores)(p, kn, w, i0, nq, mq, j0, nk, &sq, slope);
        kn->gemm(mq, dp, nk, w->dp, BC, w->kr, dp, dqa, dp, 1); // dQ += dS K
    }
    const T scale = (T)p->scale;
    for (int64_t r = 0; r < nq; r++) {
        T *row = dqa + r * dp;
        for (int64_t c = 0; c < D; c++) row[c] *= scale;
        STORE_ROW(fk_cpu_at_mut(p->dq, dt, b * p->dq_bs + (sq.q0 + i0 + r) * p->dq_rs + h * p->dq_hs), dt, row, D);
    }
}

static void FN(bwd)(const struct fk_context *ctx, const fk_attn_problem *p, const KERN *kn, void *ws) {
    const int     nt  = ctx->num_threads > 0 ? ctx->num_threads : 1;
    T            *di  = (T *)align64(ws);
    T            *base = di + round_up(p->total_q * p->nheads_q, 64 / (int64_t)sizeof(T));
    const int64_t per = FN(scratch_elems)(p->head_dim);
    const int64_t ntk = (p->seqlen_k + BC - 1) / BC, ntq = (p->seqlen_q + BR - 1) / BR;
    const int64_t items_kv = p->batch * p->nheads_kv * ntk, items_q = p->batch * p->nheads_q * ntq;

    FN(bwd_di)(p, di, nt);
#ifdef _OPENMP
#pragma omp parallel num_threads(nt)
#endif
    {
        FN(scratch) w = FN(carve)(base + (int64_t)thread_id() * per, p->head_dim);
#ifdef _OPENMP
#pragma omp for schedule(dynamic, 1) nowait
#endif
        for (int64_t t = 0; t < items_kv; t++) {
            int64_t kt = t % ntk, bh = t / ntk;
            FN(bwd_kv_item)(p, kn, &w, di, bh / p->nheads_kv, bh % p->nheads_kv, kt * BC);
        }
        // dQ items read only inputs and Di, so they need no barrier after the dK/dV items.
#ifdef _OPENMP
#pragma omp for schedule(dynamic, 1)
#endif
        for (int64_t t = 0; t < items_q; t++) {
            int64_t qt = t % ntq, bh = t / ntq;
            FN(bwd_q_item)(p, kn, &w, di, bh / p->nheads_q, bh % p->nheads_q, qt * BR);
        }
    }
    clear_unused_rows_bwd(p);
}
