/*
 * ops_next_replay.c — host replay of the index arithmetic of the fused-op kernels promoted from the former
 * src/cuda/ops_next.cuh (now rms_{fwd,bwd}_rows_kernel in src/cuda/rmsnorm.cu, swiglu_flat_kernel in swiglu.cu,
 * rope_tok_kernel in rope.cu; review of 2026-11-30, no GPU needed), and of the production selection
 * (src/core/ops_select.h: every width the RMSNorm rules give a shape replays clean).
 *   cc -O2 -std=c11 -Isrc -Iinclude dev/cuda/ops_next_replay.c -o /tmp/ops_next_replay && /tmp/ops_next_replay
 * RMSNorm fwd/bwd rows kernels, in both row orders (software pipeline: the next row's loads before this row's
 * reduction; plain): every row loaded only when < rows and processed with its own packs, every element of every
 * row loaded exactly once and handled exactly once and never at a column >= hidden (the partial last vector by
 * its one owner thread), the staged weight read at the right column (split layout), every row of the
 * [grid x groups, ld] dweight partials written with every column's rows in it (blocks without a row included),
 * each group's barrier count equal across its warps. SwiGLU flat: every element once, offsets < 2^32. RoPE
 * per-token (1 head in flight, g capped so that a token has at most 256 threads): every (token, head, feature)
 * written once (pairs rotated, tail copied when out of place).
 */
#include "core/ops_select.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int fails = 0;
#define CHECK(c, ...)                                                                                          \
    do {                                                                                                       \
        if (!(c) && fails++ < 20) {                                                                            \
            printf("FAIL: " __VA_ARGS__);                                                                      \
            printf("\n");                                                                                      \
        }                                                                                                      \
    } while (0)

// --- RMSNorm -------------------------------------------------------------------------------------------------
static int split_at(int N, int nvec, int idx, int k) { return N % 4 == 0 ? ((k >> 2) * nvec + idx) * 4 + (k & 3) : idx * N + k; }

// The kernels' shape rules (occupancy aside): -1 refused, else 1 when the exact-fit instance runs.
static int rows_plan(int N, int W, int VPL, int bwd, int threads, int hidden) {
    const fk_rms_rows_shape s = {W, VPL, threads, 0};
    const int64_t nvec = (hidden + N - 1) / N;
    const int ex = hidden == fk_rms_rows_cap(s) * N;
    return fk_rms_rows_valid(s, nvec, ex, bwd) ? ex : -1;
}

// The thread's loads of row r (x and residual; backward h, dy and dresidual_out: the same columns): whole vectors,
// and (forward, !ex) the partial last vector by its owner.
static void rms_load(int *loaded, int N, int W, int VPL, int bwd, int ex, int hidden, long rows, int t, long r) {
    CHECK(r >= 0 && r < rows, "load of row %ld of %ld", r, rows);
    if (r < 0 || r >= rows) return;
    const int gt = t % (32 * W), nfull = ex ? VPL * 32 * W : hidden / N, tailn = ex ? 0 : hidden - nfull * N;
    for (int v = 0; v < VPL; v++) {
        const int idx = gt + v * 32 * W, j0 = idx * N;
        const int n   = !bwd ? ((ex || idx < nfull) ? N : 0) : ex ? N : (hidden - j0 < N ? hidden - j0 : N);
        for (int k = 0; k < n && j0 + k < hidden; k++) loaded[r * hidden + j0 + k]++;
    }
    if (!bwd && !ex && tailn > 0 && gt == nfull % (32 * W))
        for (int k = 0; k < tailn; k++) loaded[r * hidden + nfull * N + k]++;
}

static void rms_replay_order(int N, int W, int VPL, int bwd, int threads, int hidden, long rows, int grid, int pf) {
    const int ex = rows_plan(N, W, VPL, bwd, threads, hidden);
    if (ex < 0) return;
    const int nvec = (hidden + N - 1) / N, groups = threads / (32 * W);
    int *ws = calloc((size_t)nvec * N, sizeof(int)); // staged weight: column + 1, -1 past hidden
    for (int e = 0; e < nvec * N; e++) {
        const int idx = e / N, k = e - idx * N, at = split_at(N, nvec, idx, k);
        CHECK(at >= 0 && at < nvec * N, "weight slot out of range");
        ws[at] = e < hidden ? e + 1 : -1;
    }
    int  *seen = calloc((size_t)rows * hidden, sizeof(int)), *loaded = calloc((size_t)rows * hidden, sizeof(int));
    long *dwc  = calloc((size_t)hidden, sizeof(long));
    for (int b = 0; b < grid; b++) {
        long *acc  = calloc((size_t)groups * hidden, sizeof(long)); // rows each group's registers hold per column
        int  *bars = calloc((size_t)threads / 32, sizeof(int));
        for (int t = 0; t < threads; t++) {
            const int gt = t % (32 * W), grp = t / (32 * W);
            const int nfull = ex ? VPL * 32 * W : hidden / N, tailn = ex ? 0 : hidden - nfull * N;
            const int own_tail = !ex && tailn > 0 && gt == nfull % (32 * W);
            // The row loop as the kernels run it: with pf, the prologue loads the first row and each iteration
            // loads row r + step before its reduction (the barrier); `cur` is the row the current packs hold.
            const long step = (long)grid * groups;
            long       r = (long)b * groups + grp, cur = -1;
            if (pf && r < rows) cur = r, rms_load(loaded, N, W, VPL, bwd, ex, hidden, rows, t, r);
            for (; r < rows; r += step) {
                if (!pf) cur = r, rms_load(loaded, N, W, VPL, bwd, ex, hidden, rows, t, r);
                CHECK(cur == r, "pf%d: row %ld processed with the packs of row %ld", pf, r, cur);
                long nxt = -1;
                if (pf && r + step < rows) nxt = r + step, rms_load(loaded, N, W, VPL, bwd, ex, hidden, rows, t, nxt);
                if ((t & 31) == 0 && W > 1) bars[t / 32]++;
                for (int v = 0; v < VPL; v++) {
                    const int idx = gt + v * 32 * W, j0 = idx * N;
                    int n;
                    if (!bwd) n = (ex || idx < nfull) ? N : 0;
                    else n = ex ? N : (hidden - j0 < N ? hidden - j0 : N);
                    for (int k = 0; k < n; k++) {
                        const int j = j0 + k;
                        CHECK(j < hidden, "N%d W%d V%d bwd%d: column %d >= hidden %d", N, W, VPL, bwd, j, hidden);
                        if (j >= hidden) continue;
                        seen[r * hidden + j]++;
                        CHECK(ws[split_at(N, nvec, idx, k)] == j + 1, "weight of column %d read from another slot", j);
                        if (bwd) acc[grp * hidden + j]++;
                    }
                }
                if (!bwd && own_tail)
                    for (int k = 0; k < tailn; k++) {
                        const int j = nfull * N + k;
                        CHECK(j < hidden, "tail column %d >= hidden %d", j, hidden);
                        seen[r * hidden + j]++;
                        CHECK(ws[split_at(N, nvec, nfull, k)] == j + 1, "tail weight slot");
                    }
                if (pf) cur = nxt;
            }
        }
        for (int g = 0; g < groups; g++)
            for (int w = 1; w < W; w++) CHECK(bars[g * W + w] == bars[g * W], "group %d: warps reach its barrier unequally", g);
        if (bwd) { // each group's partial row: part[(block * groups + g) * ld + j] for every j < hidden, once
            int *cnt = calloc((size_t)groups * hidden, sizeof(int));
            for (int g = 0; g < groups; g++)
                for (int gt = 0; gt < 32 * W; gt++)
                    for (int v = 0; v < VPL; v++) {
                        const int idx = gt + v * 32 * W;
                        if (idx >= nvec) continue;
                        for (int k = 0; k < N && idx * N + k < hidden; k++) {
                            const int j = idx * N + k;
                            cnt[g * hidden + j]++;
                            dwc[j] += acc[g * hidden + j];
                        }
                    }
            for (int g = 0; g < groups; g++)
                for (int e = 0; e < hidden; e++)
                    CHECK(cnt[g * hidden + e] == 1, "group %d's partial column %d written %d times", g, e, cnt[g * hidden + e]);
            free(cnt);
        }
        free(acc), free(bars);
    }
    for (long i = 0; i < rows * hidden; i++)
        CHECK(loaded[i] == 1, "N%d W%d V%d bwd%d pf%d threads %d hidden %d: element %ld loaded %d times", N, W, VPL, bwd,
              pf, threads, hidden, i, loaded[i]);
    for (long i = 0; i < rows * hidden; i++)
        CHECK(seen[i] == 1, "N%d W%d V%d bwd%d threads %d hidden %d: element %ld handled %d times", N, W, VPL, bwd,
              threads, hidden, i, seen[i]);
    if (bwd)
        for (int e = 0; e < hidden; e++) CHECK(dwc[e] == rows, "dweight column %d holds %ld of %ld rows", e, dwc[e], rows);
    free(ws), free(seen), free(loaded), free(dwc);
}

// Both row orders: pf, the software pipeline (rows_prefetch in rmsnorm.cu, on for all but one instance), and
// the plain loop that the instance without it runs.
static void rms_replay(int N, int W, int VPL, int bwd, int threads, int hidden, long rows, int grid) {
    rms_replay_order(N, W, VPL, bwd, threads, hidden, rows, grid, 1);
    rms_replay_order(N, W, VPL, bwd, threads, hidden, rows, grid, 0);
}

// --- SwiGLU flat -----------------------------------------------------------------------------------------------
static void swiglu_replay(uint64_t n, int N, int threads) {
    if (n == 0 || n >= ((uint64_t)1 << 32) - 16) return; // refused by the launcher
    const uint32_t nvec = (uint32_t)(n / N);
    const uint64_t blocks = ((uint64_t)nvec + 1 + threads - 1) / threads;
    CHECK(blocks * threads <= 0xffffffffull, "thread index overflows 32 bits");
    unsigned char *seen = calloc(n, 1);
    for (uint64_t b = 0; b < blocks; b++)
        for (int t = 0; t < threads; t++) {
            const uint32_t i = (uint32_t)(b * threads + t);
            if (i < nvec) {
                const uint32_t o = i * (uint32_t)N;
                CHECK((uint64_t)i * N + N <= n, "vector past n");
                for (int k = 0; k < N; k++) seen[o + k]++;
            } else if (i == nvec)
                for (uint32_t e = nvec * (uint32_t)N; e < n; e++) seen[e]++;
        }
    for (uint64_t e = 0; e < n; e++) CHECK(seen[e] == 1, "swiglu n %llu: element %llu %d times", (unsigned long long)n, (unsigned long long)e, seen[e]);
    free(seen);
}

// --- RoPE per-token --------------------------------------------------------------------------------------------
static void rope_replay(int tokens, int Hq, int Hk, int D, int rd, int q_inplace, int k_inplace, int g_in, int threads,
                        int HIF) {
    const int V = 8, half = rd / 2, htot = Hq + Hk;
    if (half % V || (D - rd) % V || half > 256) return; // refused
    const int need_tail = rd < D && (!q_inplace || (Hk && !k_inplace));
    const int units_rot = half / V, units_tail = need_tail ? (D - rd) / V : 0, units = units_rot + units_tail;
    const int ux = units < threads ? units : threads; // rope.cu's run(), rope_tok_kernel branch
    int       g  = g_in < htot ? g_in : htot;
    if (g > 256 / ux) g = 256 / ux;
    if (g < 1) g = 1;
    const int tx = ux * g;
    int ty = threads / tx;
    if (ty < 1) ty = 1;
    if (ty > tokens) ty = tokens;
    CHECK(tx * ty <= 256, "rope block of %d x %d threads", tx, ty);
    const int blocks = (tokens + ty - 1) / ty;
    int      *seen   = calloc((size_t)tokens * htot * D, sizeof(int));
    for (int bx = 0; bx < blocks; bx++)
        for (int y = 0; y < ty; y++)
            for (int x = 0; x < tx; x++) {
                const int u0 = x % ux, g0 = x / ux;
                for (int t = bx * ty + y; t < tokens; t += blocks * ty)
                    for (int u = u0; u < units; u += ux) {
                        if (u < units_rot) {
                            const int i0 = u * V, o2 = half + i0;
                            for (int h0 = g0; h0 < htot; h0 += HIF * g)
                                for (int j = 0; j < HIF; j++) {
                                    const int hh = h0 + j * g;
                                    if (hh >= htot) continue;
                                    for (int k = 0; k < V; k++) seen[((size_t)t * htot + hh) * D + i0 + k]++, seen[((size_t)t * htot + hh) * D + o2 + k]++;
                                }
                        } else {
                            const int o = rd + (u - units_rot) * V;
                            for (int hh = g0; hh < htot; hh += g) {
                                const int inplace = hh < Hq ? q_inplace : k_inplace;
                                if (!inplace)
                                    for (int k = 0; k < V; k++) seen[((size_t)t * htot + hh) * D + o + k]++;
                            }
                        }
                    }
            }
    for (int t = 0; t < tokens; t++)
        for (int hh = 0; hh < htot; hh++)
            for (int f = 0; f < D; f++) {
                const int inplace = hh < Hq ? q_inplace : k_inplace;
                const int want    = f < rd ? 1 : inplace ? 0 : 1;
                CHECK(seen[((size_t)t * htot + hh) * D + f] == want, "rope tokens %d heads %d+%d D %d rd %d g %d thr %d hif %d: (%d,%d,%d) %d times",
                      tokens, Hq, Hk, D, rd, g_in, threads, HIF, t, hh, f, seen[((size_t)t * htot + hh) * D + f]);
            }
    free(seen);
}

// --- the production selection (fk_rms_rows_pick): the shape a width gets, replayed at that width ----------
static int select_replay(void) {
    int runs = 0;
    for (int mode = 0; mode < 3; mode++)
        for (int hidden = 1; hidden <= 8200; hidden += (hidden < 300 ? 1 : 37)) {
            const int bwd = mode == 2, res = mode == 1, nvec = (hidden + 7) / 8;
            fk_rms_rows_shape s;
            if (!fk_rms_rows_pick(nvec, bwd, res, &s)) {
                CHECK(nvec > 1024, "hidden %d (mode %d): no row-group shape", hidden, mode);
                continue;
            }
            CHECK(rows_plan(8, s.w, s.vpl, bwd, s.threads, hidden) >= 0, "hidden %d: picked shape refused", hidden);
            rms_replay(8, s.w, s.vpl, bwd, s.threads, hidden, 7, 2), runs++;
            rms_replay(4, s.w, s.vpl, bwd, s.threads, (hidden + 1) / 2, 5, 3), runs++; // fp32: the same nvec
        }
    return runs;
}

int main(void) {
    static const int cf[][2] = {{1, 8}, {2, 4}, {4, 2}, {2, 8}, {4, 4}, {8, 2}, {4, 5}, {5, 4}, {10, 2}, {4, 8}, {8, 4}, {16, 2}};
    static const int cb[][2] = {{4, 2}, {8, 1}, {8, 2}, {16, 1}, {10, 2}, {16, 2}};
    static const int hs[]    = {1, 7, 8, 9, 77, 100, 255, 2040, 2047, 2048, 4095, 4096, 5119, 5120, 8191, 8192};
    static const int thr[]   = {64, 128, 160, 256, 320, 480, 512};
    static const long rowsv[] = {1, 5, 37};
    static const int grids[] = {1, 3, 7}; // grids past ceil(rows / groups): blocks without a row
    int runs = 0;
    for (unsigned hi = 0; hi < sizeof hs / sizeof *hs; hi++)
        for (unsigned ti = 0; ti < sizeof thr / sizeof *thr; ti++)
            for (int ri = 0; ri < 3; ri++)
                for (int gi = 0; gi < 3; gi++) {
                    const int h = hs[hi], T = thr[ti];
                    for (unsigned c = 0; c < 12; c++)
                        if (rows_plan(8, cf[c][0], cf[c][1], 0, T, h) >= 0) rms_replay(8, cf[c][0], cf[c][1], 0, T, h, rowsv[ri], grids[gi]), runs++;
                    for (unsigned c = 0; c < 6; c++)
                        if (rows_plan(8, cb[c][0], cb[c][1], 1, T, h) >= 0) rms_replay(8, cb[c][0], cb[c][1], 1, T, h, rowsv[ri], grids[gi]), runs++;
                    if (rows_plan(1, 4, 32, 0, T, h) >= 0) rms_replay(1, 4, 32, 0, T, h, rowsv[ri], grids[gi]), runs++;
                    if (rows_plan(1, 16, 8, 1, T, h) >= 0) rms_replay(1, 16, 8, 1, T, h, rowsv[ri], grids[gi]), runs++;
                }
    printf("rmsnorm: %d shapes replayed\n", runs);

    static const uint64_t ns[] = {1, 7, 8, 9, 1001 * 1003, 4096 * 8 + 3, 65536};
    for (unsigned i = 0; i < sizeof ns / sizeof *ns; i++)
        for (int t = 128; t <= 256; t += 128) swiglu_replay(ns[i], 8, t), swiglu_replay(ns[i], 4, t);
    printf("swiglu: replayed (%d failures so far)\n", fails);

    static const int rc[][5] = {{74, 5, 3, 128, 64}, {150, 4, 2, 64, 64}, {40, 32, 32, 128, 128}, {9, 3, 0, 256, 128}, {5, 1, 1, 64, 16}};
    for (unsigned c = 0; c < sizeof rc / sizeof *rc; c++)
        for (int inq = 0; inq < 2; inq++)
            for (int ink = 0; ink < 2; ink++)
                for (int g = 1; g <= 8; g *= 2)
                    for (int t = 64; t <= 256; t *= 2)
                        for (int hif = 1; hif <= 1; hif *= 2) rope_replay(rc[c][0], rc[c][1], rc[c][2], rc[c][3], rc[c][4], inq, ink, g, t, hif);
    printf("rope: replayed (%d failures so far)\n", fails);

    printf("selection: %d widths replayed (%d failures so far)\n", select_replay(), fails);
    printf("ops_next_replay: %s (%d failures)\n", fails ? "FAIL" : "ok", fails);
    return fails != 0;
}
