/*
 * frag_sim.c — host-side simulation of the mma.m16n8k16 / ldmatrix lane layouts used by src/cuda/attn_bwd_d256.cuh
 * (bwd_split_tc_kernel, promoted from the issue-5 candidates):
 * checks that P^T / dS^T written from the S^T accumulators are read back as the right A operands (dV, dK), that
 * dS is read transposed as the A operand of dQ, and that Q / dO are the right B operands of S^T and of dK / dV.
 * Shared memory is simulated as an array of element labels. Build and run: cc -O1 dev/cuda/frag_sim.c && ./a.out (the production
 * tile: cc -O1 -DD=256 -DBM=64 -DBN=64 -DNW=8 -DSPLIT=4 dev/cuda/frag_sim.c && ./a.out)
 */
#include <stdio.h>
#include <stdlib.h>

#ifndef D /* a tile: cc -DD=256 -DBM=64 -DBN=64 -DNW=8 -DSPLIT=4 */
#define D 128
#define BM 64
#define BN 128
#define NW 8
#define SPLIT 2
#endif
enum { G = NW / SPLIT, KP = BN / G, MT = KP / 16, QW = BM / SPLIT,
       NS = QW / 8, DW = D / SPLIT, LD = D + 8, LDS = BM + 8 };

static int  smem[BN * LDS * 2];      /* sP then sDS, labels */
static int  tileQ[BM * LD];          /* Q tile [query][dim] */
static int  fails;
#define LABEL(r, c) ((r) * 4096 + (c)) /* element (row, col) of a logical matrix */

/* ldmatrix.x4 (non-trans): lane l gets, in register m, elements (row l/4, cols 2(l%4), 2(l%4)+1) of matrix m,
 * matrix m's row r read at the address given by lane 8m + r. Addresses are element indices into mem. */
static void ldsm(const int *mem, const int addr[32], int out[32][4][2], int trans) {
    for (int l = 0; l < 32; ++l)
        for (int m = 0; m < 4; ++m)
            for (int h = 0; h < 2; ++h) {
                if (!trans) out[l][m][h] = mem[addr[8 * m + l / 4] + 2 * (l % 4) + h];
                else out[l][m][h] = mem[addr[8 * m + 2 * (l % 4) + h] + l / 4];
            }
}
static void expect(int got, int want, const char *what, int lane, int m, int h) {
    if (got != want && fails++ < 10)
        printf("FAIL %s lane %d reg %d half %d: got (%d,%d) want (%d,%d)\n", what, lane, m, h, got / 4096, got % 4096,
               want / 4096, want % 4096);
}

int main(void) {
    /* 1. each warp writes P^T[key][query] from its S^T accumulators (labels = (key, query)) */
    for (int i = 0; i < BN * LDS * 2; ++i) smem[i] = -1;
    for (int warp = 0; warp < NW; ++warp) {
        const int grp = warp / SPLIT, part = warp % SPLIT, wkey = grp * KP, wq = part * QW;
        for (int lane = 0; lane < 32; ++lane) {
            const int g = lane >> 2, t = lane & 3;
            for (int mt = 0; mt < MT; ++mt)
                for (int i = 0; i < NS; ++i)
                    for (int e = 0; e < 4; ++e) {
                        /* C fragment: (row g + 8 (e >> 1), col 2t + (e & 1)) of the 16 x 8 tile (mt, i) */
                        const int key = wkey + mt * 16 + g + 8 * (e >> 1), q = wq + 8 * i + 2 * t + (e & 1);
                        /* the kernel's store: r0 = (wkey + 16 mt + g) LDS + wq + 8 i + 2 t, r1 = r0 + 8 LDS */
                        const int r0 = (wkey + mt * 16 + g) * LDS + wq + 8 * i + 2 * t, r1 = r0 + 8 * LDS;
                        const int at = ((e >> 1) ? r1 : r0) + (e & 1);
                        if (smem[at] != -1) printf("FAIL double write at %d\n", at), ++fails;
                        smem[at] = LABEL(key, q);
                    }
        }
    }
    for (int k = 0; k < BN; ++k)
        for (int q = 0; q < BM; ++q)
            if (smem[k * LDS + q] != LABEL(k, q)) { printf("FAIL sP (%d,%d) not written\n", k, q); ++fails; }
    /* 2. dV: A = P^T rows wkey.. (M = keys, K = queries), non-trans ldmatrix at pA + mt*16*LDS + ks*16 */
    for (int warp = 0; warp < NW; ++warp) {
        const int grp = warp / SPLIT, wkey = grp * KP;
        for (int mt = 0; mt < MT; ++mt)
            for (int ks = 0; ks < BM / 16; ++ks) {
                int addr[32], out[32][4][2];
                for (int lane = 0; lane < 32; ++lane) {
                    const int arow = (lane & 7) + ((lane >> 3) & 1) * 8, acol = (lane >> 4) * 8;
                    addr[lane] = (wkey + arow) * LDS + acol + mt * 16 * LDS + ks * 16;
                }
                ldsm(smem, addr, out, 0);
                for (int l = 0; l < 32; ++l) {
                    const int g = l >> 2, t = l & 3, m0 = wkey + mt * 16, k0 = ks * 16;
                    /* A layout: a0 (g, 2t..), a1 (g+8, 2t..), a2 (g, 2t+8..), a3 (g+8, 2t+8..) */
                    const int rr[4] = {g, g + 8, g, g + 8}, cc[4] = {2 * t, 2 * t, 2 * t + 8, 2 * t + 8};
                    for (int m = 0; m < 4; ++m)
                        for (int h = 0; h < 2; ++h)
                            expect(out[l][m][h], LABEL(m0 + rr[m], k0 + cc[m] + h), "A P^T", l, m, h);
                }
            }
    }
    /* 3. dQ: A = dS (M = queries, K = keys) = transpose of sP/sDS [key][query], trans ldmatrix at
     *    dsAt + ks*16*LDS + q0 with dsAt row (lane & 7) + (lane >> 4) * 8, col ((lane >> 3) & 1) * 8 */
    for (int ks = 0; ks < BN / 16; ++ks)
        for (int q0 = 0; q0 < BM; q0 += 16) {
            int addr[32], out[32][4][2];
            for (int lane = 0; lane < 32; ++lane)
                addr[lane] = ((lane & 7) + (lane >> 4) * 8) * LDS + ((lane >> 3) & 1) * 8 + ks * 16 * LDS + q0;
            ldsm(smem, addr, out, 1);
            for (int l = 0; l < 32; ++l) {
                const int g = l >> 2, t = l & 3;
                const int rr[4] = {g, g + 8, g, g + 8}, cc[4] = {2 * t, 2 * t, 2 * t + 8, 2 * t + 8};
                for (int m = 0; m < 4; ++m)
                    for (int h = 0; h < 2; ++h) /* dS[query][key] = label (key, query) */
                        expect(out[l][m][h], LABEL(ks * 16 + cc[m] + h, q0 + rr[m]), "A dS (dQ)", l, m, h);
            }
        }
    /* 4. S^T: B = Q^T (K = dims, N = queries): b0 = (k 2t.., n g), b1 = (k 2t+8.., n g); x4 gives two n-tiles.
     *    qB row wq + (lane & 7) + (lane >> 4) * 8, col ((lane >> 3) & 1) * 8, + np*16*LD + ks*16 */
    for (int q = 0; q < BM; ++q)
        for (int d = 0; d < LD; ++d) tileQ[q * LD + d] = LABEL(q, d);
    for (int part = 0; part < SPLIT; ++part)
        for (int np = 0; np < QW / 16; ++np)
            for (int ks = 0; ks < D / 16; ++ks) {
                const int wq = part * QW;
                int       addr[32], out[32][4][2];
                for (int lane = 0; lane < 32; ++lane)
                    addr[lane] = (wq + (lane & 7) + (lane >> 4) * 8) * LD + ((lane >> 3) & 1) * 8 + np * 16 * LD + ks * 16;
                ldsm(tileQ, addr, out, 0);
                for (int l = 0; l < 32; ++l) {
                    const int g = l >> 2, t = l & 3;
                    for (int m = 0; m < 4; ++m)
                        for (int h = 0; h < 2; ++h) { /* reg m: n-tile m/2, b(m%2) */
                            const int n = wq + np * 16 + (m / 2) * 8 + g, k = ks * 16 + (m % 2) * 8 + 2 * t + h;
                            expect(out[l][m][h], LABEL(n, k), "B Q (S^T)", l, m, h);
                        }
                }
            }
    /* 5. dK: B = Q (K = queries, N = dims): trans ldmatrix at qBt + ks*16*LD + dq2*16, qBt row arow, col wd + acol */
    for (int part = 0; part < SPLIT; ++part)
        for (int dq2 = 0; dq2 < DW / 16; ++dq2)
            for (int ks = 0; ks < BM / 16; ++ks) {
                const int wd = part * DW;
                int       addr[32], out[32][4][2];
                for (int lane = 0; lane < 32; ++lane) {
                    const int arow = (lane & 7) + ((lane >> 3) & 1) * 8, acol = (lane >> 4) * 8;
                    addr[lane] = arow * LD + wd + acol + ks * 16 * LD + dq2 * 16;
                }
                ldsm(tileQ, addr, out, 1);
                for (int l = 0; l < 32; ++l) {
                    const int g = l >> 2, t = l & 3;
                    for (int m = 0; m < 4; ++m)
                        for (int h = 0; h < 2; ++h) { /* reg m: n-tile m/2 (dims), b(m%2) (queries) */
                            const int n = wd + dq2 * 16 + (m / 2) * 8 + g, k = ks * 16 + (m % 2) * 8 + 2 * t + h;
                            expect(out[l][m][h], LABEL(k, n), "B Q (dK)", l, m, h);
                        }
                }
            }
    /* 6. bank conflicts of the 32-bit P^T stores: one warp instruction (fixed mt, i, half) */
    {
        int worst = 0;
        for (int i = 0; i < NS; ++i) {
            int banks[32] = {0};
            for (int lane = 0; lane < 32; ++lane) {
                const int g = lane >> 2, t = lane & 3, at = (g * LDS + 8 * i + 2 * t) * 2; /* bytes */
                banks[(at / 4) % 32]++;
            }
            for (int b = 0; b < 32; ++b) worst = banks[b] > worst ? banks[b] : worst;
        }
        printf("P^T store: worst %d-way bank conflict\n", worst);
        if (worst > 1) ++fails;
    }
    printf("frag_sim D%d BM%d BN%d NW%d SPLIT%d: %s\n", D, BM, BN, NW, SPLIT, fails ? "FAIL" : "ok");
    return fails ? 1 : 0;
}
