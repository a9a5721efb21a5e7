// Host replay of one bwd_split_tc_kernel step (src/cuda/attn_bwd_d256.cuh; was bwd2_tc_kernel of the issue-5 candidates): S^T, dP^T -> (P, dS := S, dP) -> sP/sDS ->
// dV/dK (ldmatrix A from sP/sDS, .trans B from dO/Q) and dQ (DQP passes, gacc column mapping), with the
// kernel's address arithmetic, checked numerically against direct products. Integer data: exact sums.
// Run the production tile (and any other): for c in "256 64 64 8 4"; do set -- $c; g++ -O2 -std=c++17 -DD=$1 -DBM=$2 -DBN=$3 -DNW=$4 -DSPLIT=$5 dev/cuda/bwd2_replay.cc -o /tmp/r && /tmp/r; done
#include <cstdio>
#include <cstdlib>
#include <vector>
#ifndef D
#define D 128
#define BM 64
#define BN 128
#define NW 8
#define SPLIT 2
#endif
constexpr int G = NW / SPLIT, KP = BN / G, MT = KP / 16, QW = BM / SPLIT, NS = QW / 8, DW = D / SPLIT, ND = DW / 8;
constexpr int LD = D + 8, LDS = BM + 8;
constexpr int WM = (BM / 16 < NW) ? BM / 16 : NW, WN = NW / WM, MQ = BM / WM / 16, NQ = D / WN / 8;
constexpr bool FUSE = MT * ND * 8 + MT * NS * 8 < 160;
constexpr int DQP = FUSE ? 1 : 2, NQP = NQ / DQP;
struct Reg { double lo, hi; };
typedef Reg Frag[32][4];
static int fails;
static void bad(const char *w, int a, int b, double got, double want) { if (++fails < 10) printf("MISMATCH %s %d %d got %g want %g\n", w, a, b, got, want); }
// smem as one array of doubles, addresses in elements
static void ldsm(const std::vector<double> &m, const int off[32], bool trans, Frag &o) {
  for (int l = 0; l < 32; ++l) { int g = l >> 2, t = l & 3;
    for (int i = 0; i < 4; ++i)
      if (!trans) o[l][i] = {m[off[8 * i + g] + 2 * t], m[off[8 * i + g] + 2 * t + 1]};
      else o[l][i] = {m[off[8 * i + 2 * t] + g], m[off[8 * i + 2 * t + 1] + g]}; }
}
static void mma(double c[32][4], const Reg a[32][4], Reg b0[32], Reg b1[32]) {
  double A[16][16], B[16][8];
  for (int l = 0; l < 32; ++l) { int g = l >> 2, t = l & 3;
    A[g][2*t]=a[l][0].lo; A[g][2*t+1]=a[l][0].hi; A[g+8][2*t]=a[l][1].lo; A[g+8][2*t+1]=a[l][1].hi;
    A[g][2*t+8]=a[l][2].lo; A[g][2*t+9]=a[l][2].hi; A[g+8][2*t+8]=a[l][3].lo; A[g+8][2*t+9]=a[l][3].hi;
    B[2*t][g]=b0[l].lo; B[2*t+1][g]=b0[l].hi; B[2*t+8][g]=b1[l].lo; B[2*t+9][g]=b1[l].hi; }
  for (int l = 0; l < 32; ++l) { int g = l >> 2, t = l & 3;
    for (int e = 0; e < 4; ++e) { double s = 0; for (int k = 0; k < 16; ++k) s += A[g + 8 * (e >> 1)][k] * B[k][2 * t + (e & 1)]; c[l][e] += s; } }
}
int main() {
  // shared image, kernel layout: sK, sV, sQ (2 bufs), sdO (2 bufs), sP, sDS
  const int oK = 0, oV = BN * LD, oQ = 2 * BN * LD, oDO = oQ + 2 * BM * LD, oP = oDO + 2 * BM * LD, oDS = oP + BN * LDS;
  std::vector<double> sm(oDS + BN * LDS, 0.0 / 0.0);
  const int buf = 1, bo = buf * BM * LD;
  std::vector<double> K(BN * D), V(BN * D), Q(BM * D), dO(BM * D);
  srand(3);
  for (auto *x : {&K, &V, &Q, &dO}) for (auto &e : *x) e = rand() % 5 - 2;
  for (int r = 0; r < BN; ++r) for (int d = 0; d < D; ++d) sm[oK + r * LD + d] = K[r * D + d], sm[oV + r * LD + d] = V[r * D + d];
  for (int r = 0; r < BM; ++r) for (int d = 0; d < D; ++d) sm[oQ + bo + r * LD + d] = Q[r * D + d], sm[oDO + bo + r * LD + d] = dO[r * D + d];
  // direct: S^T[k][q] = K Q^T, dP^T = V dO^T; P := S, dS := dP (the elementwise map is per element, layout-free)
  std::vector<double> S(BN * BM, 0), dP(BN * BM, 0);
  for (int k = 0; k < BN; ++k) for (int q = 0; q < BM; ++q) for (int d = 0; d < D; ++d) S[k*BM+q] += K[k*D+d]*Q[q*D+d], dP[k*BM+q] += V[k*D+d]*dO[q*D+d];
  std::vector<double> dVd(BN * D, 0), dKd(BN * D, 0), dQd(BM * D, 0);
  for (int k = 0; k < BN; ++k) for (int d = 0; d < D; ++d) for (int q = 0; q < BM; ++q) dVd[k*D+d] += S[k*BM+q]*dO[q*D+d], dKd[k*D+d] += dP[k*BM+q]*Q[q*D+d];
  for (int q = 0; q < BM; ++q) for (int d = 0; d < D; ++d) for (int k = 0; k < BN; ++k) dQd[q*D+d] += dP[k*BM+q]*K[k*D+d];
  // 1-2: per warp S^T / dP^T fragments, stored to sP / sDS as the kernel does
  for (int warp = 0; warp < NW; ++warp) {
    const int grp = warp / SPLIT, part = warp % SPLIT, wkey = grp * KP, wq = part * QW;
    static double st[MT][NS][32][4], dp[MT][NS][32][4];
    for (int mt = 0; mt < MT; ++mt) for (int i = 0; i < NS; ++i) for (int l = 0; l < 32; ++l) for (int e = 0; e < 4; ++e) st[mt][i][l][e] = dp[mt][i][l][e] = 0;
    for (int ks = 0; ks < D / 16; ++ks) {
      Frag a[MT], av[MT];
      for (int mt = 0; mt < MT; ++mt) { int o1[32], o2[32];
        for (int l = 0; l < 32; ++l) { int arow = (l & 7) + ((l >> 3) & 1) * 8, acol = (l >> 4) * 8;
          o1[l] = oK + (wkey + arow) * LD + acol + mt * 16 * LD + ks * 16; o2[l] = o1[l] + BN * LD; }
        ldsm(sm, o1, false, a[mt]); ldsm(sm, o2, false, av[mt]); }
      for (int np = 0; np < QW / 16; ++np) { int o1[32], o2[32]; Frag bq, bd;
        for (int l = 0; l < 32; ++l) { o1[l] = oQ + (wq + (l & 7) + (l >> 4) * 8) * LD + ((l >> 3) & 1) * 8 + bo + np * 16 * LD + ks * 16; o2[l] = o1[l] + 2 * BM * LD; }
        ldsm(sm, o1, false, bq); ldsm(sm, o2, false, bd);
        Reg q0[32], q1[32], q2[32], q3[32], d0[32], d1[32], d2[32], d3[32];
        for (int l = 0; l < 32; ++l) { q0[l]=bq[l][0]; q1[l]=bq[l][1]; q2[l]=bq[l][2]; q3[l]=bq[l][3]; d0[l]=bd[l][0]; d1[l]=bd[l][1]; d2[l]=bd[l][2]; d3[l]=bd[l][3]; }
        for (int mt = 0; mt < MT; ++mt) { mma(st[mt][2*np], a[mt], q0, q1); mma(st[mt][2*np+1], a[mt], q2, q3); mma(dp[mt][2*np], av[mt], d0, d1); mma(dp[mt][2*np+1], av[mt], d2, d3); } }
    }
    for (int mt = 0; mt < MT; ++mt) for (int i = 0; i < NS; ++i) for (int l = 0; l < 32; ++l) { int g = l >> 2, t = l & 3;
      const int r0 = (wkey + mt * 16 + g) * LDS + wq + 8 * i + 2 * t, r1 = r0 + 8 * LDS;
      sm[oP + r0] = st[mt][i][l][0]; sm[oP + r0 + 1] = st[mt][i][l][1]; sm[oP + r1] = st[mt][i][l][2]; sm[oP + r1 + 1] = st[mt][i][l][3];
      sm[oDS + r0] = dp[mt][i][l][0]; sm[oDS + r0 + 1] = dp[mt][i][l][1]; sm[oDS + r1] = dp[mt][i][l][2]; sm[oDS + r1 + 1] = dp[mt][i][l][3]; }
  }
  // 4: dV, dK per warp
  std::vector<int> cov(BN * D, 0);
  for (int warp = 0; warp < NW; ++warp) {
    const int grp = warp / SPLIT, part = warp % SPLIT, wkey = grp * KP, wd = part * DW;
    static double dv[MT][ND][32][4], dk[MT][ND][32][4];
    for (int mt = 0; mt < MT; ++mt) for (int i = 0; i < ND; ++i) for (int l = 0; l < 32; ++l) for (int e = 0; e < 4; ++e) dv[mt][i][l][e] = dk[mt][i][l][e] = 0;
    for (int ks = 0; ks < BM / 16; ++ks) {
      Frag pa[MT], da[MT];
      for (int mt = 0; mt < MT; ++mt) { int o1[32], o2[32];
        for (int l = 0; l < 32; ++l) { int arow = (l & 7) + ((l >> 3) & 1) * 8, acol = (l >> 4) * 8;
          o1[l] = oP + (wkey + arow) * LDS + acol + mt * 16 * LDS + ks * 16; o2[l] = o1[l] + BN * LDS; }
        ldsm(sm, o1, false, pa[mt]); ldsm(sm, o2, false, da[mt]); }
      for (int dq2 = 0; dq2 < DW / 16; ++dq2) { int o1[32], o2[32]; Frag bdo, bq;
        for (int l = 0; l < 32; ++l) { int arow = (l & 7) + ((l >> 3) & 1) * 8, acol = (l >> 4) * 8;
          o2[l] = oQ + arow * LD + wd + acol + bo + ks * 16 * LD + dq2 * 16; o1[l] = o2[l] + 2 * BM * LD; }
        ldsm(sm, o1, true, bdo); ldsm(sm, o2, true, bq);
        Reg a0[32], a1[32], a2[32], a3[32], b0[32], b1[32], b2[32], b3[32];
        for (int l = 0; l < 32; ++l) { a0[l]=bdo[l][0]; a1[l]=bdo[l][1]; a2[l]=bdo[l][2]; a3[l]=bdo[l][3]; b0[l]=bq[l][0]; b1[l]=bq[l][1]; b2[l]=bq[l][2]; b3[l]=bq[l][3]; }
        for (int mt = 0; mt < MT; ++mt) { mma(dv[mt][2*dq2], pa[mt], a0, a1); mma(dv[mt][2*dq2+1], pa[mt], a2, a3); mma(dk[mt][2*dq2], da[mt], b0, b1); mma(dk[mt][2*dq2+1], da[mt], b2, b3); } }
    }
    // epilogue mapping: r = wkey + mt*16 + g + 8hh, d = wd + 8i + 2t (+1)
    for (int mt = 0; mt < MT; ++mt) for (int i = 0; i < ND; ++i) for (int l = 0; l < 32; ++l) for (int e = 0; e < 4; ++e) {
      int g = l >> 2, t = l & 3, r = wkey + mt * 16 + g + 8 * (e >> 1), d = wd + 8 * i + 2 * t + (e & 1);
      ++cov[r * D + d];
      if (dv[mt][i][l][e] != dVd[r * D + d]) bad("dV", r, d, dv[mt][i][l][e], dVd[r * D + d]);
      if (dk[mt][i][l][e] != dKd[r * D + d]) bad("dK", r, d, dk[mt][i][l][e], dKd[r * D + d]); }
  }
  for (int i = 0; i < BN * D; ++i) if (cov[i] != 1) bad("dK/dV coverage", i / D, i % D, cov[i], 1);
  // 5: dQ, DQP passes; destination column (relative to the row) wn*(D/WN) + 8*(pass*NQP + i) + 2t
  std::vector<double> dQ(BM * D, 0); std::vector<int> qc(BM * D, 0);
  for (int warp = 0; warp < NW; ++warp) {
    const int wm = warp % WM, wn = warp / WM;
    for (int pass = 0; pass < DQP; ++pass) {
      static double acc[MQ][NQP][32][4];
      for (int a = 0; a < MQ; ++a) for (int i = 0; i < NQP; ++i) for (int l = 0; l < 32; ++l) for (int e = 0; e < 4; ++e) acc[a][i][l][e] = 0;
      for (int ks = 0; ks < BN / 16; ++ks) {
        Frag a[MQ];
        for (int mq = 0; mq < MQ; ++mq) { int o[32];
          for (int l = 0; l < 32; ++l) o[l] = oDS + ((l & 7) + (l >> 4) * 8) * LDS + ((l >> 3) & 1) * 8 + ks * 16 * LDS + wm * (BM / WM) + mq * 16;
          ldsm(sm, o, true, a[mq]); }
        for (int np = 0; np < NQP / 2; ++np) { int o[32]; Frag bk;
          for (int l = 0; l < 32; ++l) { int arow = (l & 7) + ((l >> 3) & 1) * 8, acol = (l >> 4) * 8;
            o[l] = oK + arow * LD + acol + ks * 16 * LD + wn * (D / WN) + pass * NQP * 8 + np * 16; }
          ldsm(sm, o, true, bk);
          Reg b0[32], b1[32], b2[32], b3[32];
          for (int l = 0; l < 32; ++l) { b0[l]=bk[l][0]; b1[l]=bk[l][1]; b2[l]=bk[l][2]; b3[l]=bk[l][3]; }
          for (int mq = 0; mq < MQ; ++mq) { mma(acc[mq][2*np], a[mq], b0, b1); mma(acc[mq][2*np+1], a[mq], b2, b3); } }
      }
      for (int mq = 0; mq < MQ; ++mq) for (int i = 0; i < NQP; ++i) for (int l = 0; l < 32; ++l) for (int e = 0; e < 4; ++e) {
        int g = l >> 2, t = l & 3, r = wm * (BM / WM) + mq * 16 + g + 8 * (e >> 1), c = wn * (D / WN) + 8 * (pass * NQP + i) + 2 * t + (e & 1);
        dQ[r * D + c] += acc[mq][i][l][e]; ++qc[r * D + c]; }
    }
  }
  for (int i = 0; i < BM * D; ++i) { if (qc[i] != 1) bad("dQ coverage", i / D, i % D, qc[i], 1); if (dQ[i] != dQd[i]) bad("dQ", i / D, i % D, dQ[i], dQd[i]); }
  printf("bwd2_replay D%d BM%d BN%d NW%d SPLIT%d FUSE%d DQP%d: %s (%d)\n", D, BM, BN, NW, SPLIT, FUSE, DQP, fails ? "FAIL" : "ok", fails);
  return fails != 0;
}
