/*
 * d256_sim.cu — host-only simulation of the D = 256 candidate's fragment bookkeeping (src/cuda/attn_fwd_d256.cuh).
 * No GPU needed: `nvcc -std=c++17 -Isrc dev/cuda/d256_sim.cu -o /tmp/d256_sim && /tmp/d256_sim`.
 *
 * It emulates ldmatrix (.x4, plain and .trans) and mma.m16n8k16 per lane, following the PTX ISA fragment
 * layouts, and replays one 128 x 64 tile of the kernel with its own lane-address helpers (d256_lane_a,
 * d256_lane_b, d256_p_store) and the same base offsets and step constants as the kernel:
 *   1. S = Q K^T per warp (wr, wc) equals the direct product on its 32 rows x 32 keys;
 *   2. the own-P stores cover every element of sP exactly once, each with the value the kernel puts there;
 *   3. O += P V with own P from registers and the partner's from sP equals the direct P V on each warp's
 *      32 rows x 128 dims (P = S here: small integers, so every sum is exact);
 *   4. the epilogue's O stores into sQ cover the 128 x 256 tile exactly once.
 * Prints "d256_sim: ok" or the first mismatches and exits 1.
 */
#include "cuda/attn_fwd_d256.cuh"

#include <stdio.h>
#include <stdlib.h>
#include <vector>

using fk_cuda::d256_lane_a;
using fk_cuda::d256_lane_b;
using fk_cuda::d256_p_store;

namespace {

constexpr int D = 256, BR = 128, BC = 64, LD = D + 8, PLD = BC + 8, RW = 32, KH = 32, DH = 128, MT = 2;

// A register holds two 16-bit values; here two doubles (lo = lower column / lower k).
struct Reg {
    double lo, hi;
};
using Frag4 = Reg[32][4]; // per lane, 4 registers

// ldmatrix.x4: lane l gives the element offset of row (l % 8) of matrix (l / 8). Non-trans: lane (g, t) gets
// (row g, cols 2t, 2t+1) of matrix i in register i. Trans: (rows 2t, 2t+1; col g).
void ldmatrix(const std::vector<double> &sm, const int off[32], bool trans, Frag4 &out) {
    for (int lane = 0; lane < 32; ++lane) {
        const int g = lane >> 2, t = lane & 3;
        for (int i = 0; i < 4; ++i) {
            if (!trans) {
                const int row = off[8 * i + g];
                out[lane][i]  = {sm[row + 2 * t], sm[row + 2 * t + 1]};
            } else {
                out[lane][i] = {sm[off[8 * i + 2 * t] + g], sm[off[8 * i + 2 * t + 1] + g]};
            }
        }
    }
}

// mma.m16n8k16 row.col: c (per lane 4 fp32) += A (16x16) B (16x8). Layouts from common.cuh's comment.
void mma(double c[32][4], const Reg a[32][4], const Reg b[32][2]) {
    double A[16][16], B[16][8];
    for (int lane = 0; lane < 32; ++lane) {
        const int g = lane >> 2, t = lane & 3;
        A[g][2 * t] = a[lane][0].lo, A[g][2 * t + 1] = a[lane][0].hi;
        A[g + 8][2 * t] = a[lane][1].lo, A[g + 8][2 * t + 1] = a[lane][1].hi;
        A[g][2 * t + 8] = a[lane][2].lo, A[g][2 * t + 9] = a[lane][2].hi;
        A[g + 8][2 * t + 8] = a[lane][3].lo, A[g + 8][2 * t + 9] = a[lane][3].hi;
        B[2 * t][g] = b[lane][0].lo, B[2 * t + 1][g] = b[lane][0].hi;
        B[2 * t + 8][g] = b[lane][1].lo, B[2 * t + 9][g] = b[lane][1].hi;
    }
    for (int lane = 0; lane < 32; ++lane) {
        const int g = lane >> 2, t = lane & 3;
        for (int e = 0; e < 4; ++e) {
            const int row = g + 8 * (e >> 1), col = 2 * t + (e & 1);
            double    s   = 0;
            for (int k = 0; k < 16; ++k) s += A[row][k] * B[k][col];
            c[lane][e] += s;
        }
    }
}

int fails = 0;
void bad(const char *what, int a, int b, int c, double got, double want) {
    if (++fails <= 10) printf("MISMATCH %s (%d, %d, %d): got %g want %g\n", what, a, b, c, got, want);
}

} // namespace

int main() {
    // smem images (elements as doubles), pitch as in the kernel
    std::vector<double> sQ(BR * LD, NAN), sK(BC * LD, NAN), sV(BC * LD, NAN), sP(BR * PLD, NAN);
    std::vector<double> Q(BR * D), K(BC * D), V(BC * D);
    srand(7);
    for (int i = 0; i < BR * D; ++i) Q[i] = rand() % 5 - 2;
    for (int i = 0; i < BC * D; ++i) K[i] = rand() % 5 - 2, V[i] = rand() % 7 - 3;
    for (int r = 0; r < BR; ++r)
        for (int d = 0; d < D; ++d) sQ[r * LD + d] = Q[r * D + d];
    for (int r = 0; r < BC; ++r)
        for (int d = 0; d < D; ++d) sK[r * LD + d] = K[r * D + d], sV[r * LD + d] = V[r * D + d];
    // direct S (as P) and O = P V
    std::vector<double> Sd(BR * BC, 0), Od(BR * D, 0);
    for (int r = 0; r < BR; ++r)
        for (int j = 0; j < BC; ++j)
            for (int d = 0; d < D; ++d) Sd[r * BC + j] += Q[r * D + d] * K[j * D + d];
    for (int r = 0; r < BR; ++r)
        for (int d = 0; d < D; ++d)
            for (int j = 0; j < BC; ++j) Od[r * D + d] += Sd[r * BC + j] * V[j * D + d];

    // per warp: S fragments, then own P (registers) kept for step 3
    static double sc[8][MT][KH / 8][32][4];
    static Reg    pa[8][MT][KH / 16][32][4];
    std::vector<int> p_cover(BR * PLD, 0);
    for (int warp = 0; warp < 8; ++warp) {
        const int wr = warp & 3, wc = warp >> 2, wrow = wr * RW;
        int       q_frag[32], k_frag[32];
        for (int lane = 0; lane < 32; ++lane) {
            q_frag[lane] = wrow * LD + d256_lane_a(lane, LD);       // kernel: sQ + wrow * LD + d256_lane_a
            k_frag[lane] = wc * KH * LD + d256_lane_b(lane, LD);    // kernel: sK + wc * KH * LD + d256_lane_b
        }
        for (int mt = 0; mt < MT; ++mt)
            for (int j = 0; j < KH / 8; ++j)
                for (int lane = 0; lane < 32; ++lane)
                    for (int e = 0; e < 4; ++e) sc[warp][mt][j][lane][e] = 0;
        for (int ks = 0; ks < D / 16; ++ks) {
            Frag4 a[MT];
            for (int mt = 0; mt < MT; ++mt) {
                int off[32];
                for (int l = 0; l < 32; ++l) off[l] = q_frag[l] + mt * 16 * LD + ks * 16;
                ldmatrix(sQ, off, false, a[mt]);
            }
            for (int np = 0; np < KH / 16; ++np) {
                Frag4 bk;
                int   off[32];
                for (int l = 0; l < 32; ++l) off[l] = k_frag[l] + np * 16 * LD + ks * 16;
                ldmatrix(sK, off, false, bk);
                Reg b0[32][2], b1[32][2];
                for (int l = 0; l < 32; ++l) b0[l][0] = bk[l][0], b0[l][1] = bk[l][1], b1[l][0] = bk[l][2], b1[l][1] = bk[l][3];
                for (int mt = 0; mt < MT; ++mt) {
                    mma(sc[warp][mt][2 * np], a[mt], b0);
                    mma(sc[warp][mt][2 * np + 1], a[mt], b1);
                }
            }
        }
        // 1. S fragment (mt, j, lane, e) = S[wrow + mt*16 + g + 8(e>>1)][wc*KH + 8j + 2t + (e&1)]
        for (int mt = 0; mt < MT; ++mt)
            for (int j = 0; j < KH / 8; ++j)
                for (int lane = 0; lane < 32; ++lane)
                    for (int e = 0; e < 4; ++e) {
                        const int g = lane >> 2, t = lane & 3;
                        const int r = wrow + mt * 16 + g + 8 * (e >> 1), col = wc * KH + 8 * j + 2 * t + (e & 1);
                        if (sc[warp][mt][j][lane][e] != Sd[r * BC + col])
                            bad("S", warp, r, col, sc[warp][mt][j][lane][e], Sd[r * BC + col]);
                    }
        // 2. pack (as the kernel) and store own P into sP
        for (int mt = 0; mt < MT; ++mt)
            for (int kk = 0; kk < KH / 16; ++kk)
                for (int lane = 0; lane < 32; ++lane) {
                    auto &f = sc[warp][mt];
                    pa[warp][mt][kk][lane][0] = {f[2 * kk][lane][0], f[2 * kk][lane][1]};
                    pa[warp][mt][kk][lane][1] = {f[2 * kk][lane][2], f[2 * kk][lane][3]};
                    pa[warp][mt][kk][lane][2] = {f[2 * kk + 1][lane][0], f[2 * kk + 1][lane][1]};
                    pa[warp][mt][kk][lane][3] = {f[2 * kk + 1][lane][2], f[2 * kk + 1][lane][3]};
                    for (int r = 0; r < 4; ++r) {
                        const int o = d256_p_store(wr, wc, lane, mt, kk, r);
                        if (o % 2) bad("P store not 4-byte aligned", warp, lane, r, o, 0);
                        sP[o]     = pa[warp][mt][kk][lane][r].lo;
                        sP[o + 1] = pa[warp][mt][kk][lane][r].hi;
                        ++p_cover[o], ++p_cover[o + 1];
                    }
                }
    }
    for (int r = 0; r < BR; ++r)
        for (int j = 0; j < PLD; ++j) {
            const int want = j < BC ? 1 : 0;
            if (p_cover[r * PLD + j] != want) bad("P coverage", r, j, 0, p_cover[r * PLD + j], want);
            if (j < BC && sP[r * PLD + j] != Sd[r * BC + j]) bad("P value", r, j, 0, sP[r * PLD + j], Sd[r * BC + j]);
        }
    // 2b. bank check of the P stores: per (warp, mt, kk, r), the 32 lanes' 4-byte words hit 32 distinct banks
    for (int warp = 0; warp < 8; ++warp)
        for (int mt = 0; mt < MT; ++mt)
            for (int kk = 0; kk < 2; ++kk)
                for (int r = 0; r < 4; ++r) {
                    int seen = 0;
                    for (int lane = 0; lane < 32; ++lane)
                        seen |= 1 << ((d256_p_store(warp & 3, warp >> 2, lane, mt, kk, r) / 2) % 32);
                    if (seen != -1) bad("P store bank conflict", warp, mt, kk * 4 + r, 0, 0);
                }

    // 3. O += P V per warp: own keys (registers), then the partner's (ldmatrix from sP)
    std::vector<int> o_cover(BR * LD, 0);
    for (int warp = 0; warp < 8; ++warp) {
        const int wr = warp & 3, wc = warp >> 2, wo = 1 - wc, wrow = wr * RW;
        static double acc[MT][DH / 8][32][4];
        for (int mt = 0; mt < MT; ++mt)
            for (int j = 0; j < DH / 8; ++j)
                for (int l = 0; l < 32; ++l)
                    for (int e = 0; e < 4; ++e) acc[mt][j][l][e] = 0;
        int v_own[32], v_oth[32], p_oth[32];
        for (int l = 0; l < 32; ++l) {
            v_own[l] = wc * KH * LD + wc * DH + d256_lane_a(l, LD);
            v_oth[l] = wo * KH * LD + wc * DH + d256_lane_a(l, LD);
            p_oth[l] = wrow * PLD + wo * KH + d256_lane_a(l, PLD);
        }
        for (int half = 0; half < 2; ++half)
            for (int kk = 0; kk < KH / 16; ++kk) {
                Frag4 po[MT];
                if (half == 1)
                    for (int mt = 0; mt < MT; ++mt) {
                        int off[32];
                        for (int l = 0; l < 32; ++l) off[l] = p_oth[l] + mt * 16 * PLD + kk * 16;
                        ldmatrix(sP, off, false, po[mt]);
                    }
                for (int dp = 0; dp < DH / 16; ++dp) {
                    Frag4 bv;
                    int   off[32];
                    for (int l = 0; l < 32; ++l) off[l] = (half ? v_oth[l] : v_own[l]) + kk * 16 * LD + dp * 16;
                    ldmatrix(sV, off, true, bv);
                    Reg b0[32][2], b1[32][2];
                    for (int l = 0; l < 32; ++l)
                        b0[l][0] = bv[l][0], b0[l][1] = bv[l][1], b1[l][0] = bv[l][2], b1[l][1] = bv[l][3];
                    for (int mt = 0; mt < MT; ++mt) {
                        const Reg(*a)[4] = half ? po[mt] : pa[warp][mt][kk];
                        mma(acc[mt][2 * dp], a, b0);
                        mma(acc[mt][2 * dp + 1], a, b1);
                    }
                }
            }
        for (int mt = 0; mt < MT; ++mt)
            for (int j = 0; j < DH / 8; ++j)
                for (int l = 0; l < 32; ++l) {
                    const int g = l >> 2, t = l & 3;
                    for (int e = 0; e < 4; ++e) {
                        const int r = wrow + mt * 16 + g + 8 * (e >> 1), d = wc * DH + 8 * j + 2 * t + (e & 1);
                        if (acc[mt][j][l][e] != Od[r * D + d]) bad("O", warp, r, d, acc[mt][j][l][e], Od[r * D + d]);
                    }
                    // 4. epilogue store: sQ + r * LD + wc * DH + j * 8 + 2t (two elements), hh = 0, 1
                    for (int hh = 0; hh < 2; ++hh) {
                        const int r = wrow + mt * 16 + g + 8 * hh, o = r * LD + wc * DH + j * 8 + 2 * t;
                        ++o_cover[o], ++o_cover[o + 1];
                    }
                }
    }
    for (int r = 0; r < BR; ++r)
        for (int d = 0; d < LD; ++d)
            if (o_cover[r * LD + d] != (d < D ? 1 : 0)) bad("O store coverage", r, d, 0, o_cover[r * LD + d], d < D);

    // 5. the pair's row maxima: max_st / max_ld slots (wc * BR + wrow + g + mt * 16 + 8 hh) are written once each
    // and each warp reads exactly its partner's slot for the same row.
    std::vector<int> m_cover(2 * BR, 0);
    for (int warp = 0; warp < 8; ++warp)
        for (int g = 0; g < 8; ++g)
            for (int mt = 0; mt < MT; ++mt)
                for (int hh = 0; hh < 2; ++hh) {
                    const int wr = warp & 3, wc = warp >> 2, row = wr * RW + mt * 16 + g + 8 * hh;
                    ++m_cover[wc * BR + row];
                    const int rd = (1 - wc) * BR + wr * RW + g + mt * 16 + 8 * hh;
                    if (rd != (1 - wc) * BR + row) bad("max slot", warp, g, mt * 2 + hh, rd, row);
                }
    for (int i = 0; i < 2 * BR; ++i)
        if (m_cover[i] != 1) bad("max coverage", i, 0, 0, m_cover[i], 1);

    printf("d256_sim: %s (%d mismatches)\n", fails ? "FAIL" : "ok", fails);
    return fails ? 1 : 0;
}
