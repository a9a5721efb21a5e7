// Host replay of fwd_d256_kernel's per-row arithmetic (attn_fwd_d256.cuh): tile_range, reverse key walk, the mask
// as columns of each warp's key half (lo/hi -= n0 + wc*KH + 2t, col = 8j + e), the pair's max exchange, lazy
// rescale, own-half partial sums added in the epilogue, LSE, rows with no key; against a direct softmax (scores
// are random doubles, no dot products: this checks masks/softmax bookkeeping, not fragments).
// Run: g++ -O2 -std=c++17 dev/cuda/d256_softmax_replay.cc -o /tmp/f && /tmp/f
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <vector>
#include <algorithm>
struct P { int wl, wr; };
static void key_range(const P &p, int i, int sq, int sk, int &lo, int &hi) { int diag = i + sk - sq; lo = 0; hi = sk;
  if (p.wl >= 0) lo = std::max(lo, diag - p.wl); if (p.wr >= 0) hi = std::min(hi, diag + p.wr + 1); }
int main() { int bad = 0, ncase = 0; srand(5);
  const int BR = 128, BC = 64, KH = 32;
  int shapes[][4] = {{200,200,-1,-1},{200,200,-1,0},{77,300,-1,0},{300,77,-1,0},{1000,17,-1,0},{17,1000,-1,0},{260,190,50,10},{1,1,-1,-1},{1,1000,-1,0},{1000,1,-1,0},{130,200,40,30},{300,300,0,0},{129,65,-1,-1},{300,300,70,-1}};
  for (auto &sh : shapes) { int sq = sh[0], sk = sh[1]; P p{sh[2], sh[3]}; ++ncase;
    std::vector<double> s((size_t)sq * sk); for (auto &x : s) x = (rand() / (double)RAND_MAX - 0.5) * 20; // log2 units already
    for (int mb = 0; mb * BR < sq; ++mb) { int m0 = mb * BR, rows = std::min(BR, sq - m0);
      int lo0, hi0, lo1, hi1; key_range(p, m0, sq, sk, lo0, hi0); key_range(p, m0 + rows - 1, sq, sk, lo1, hi1);
      lo0 = std::max(lo0, 0); hi1 = std::max(hi1, 0); int n_min = lo0 / BC, n_max = (hi1 + BC - 1) / BC, max_lo = lo1, min_hi = hi0;
      for (int r = 0; r < BR; ++r) { int i = m0 + r;
        float m = -INFINITY, l[2] = {0, 0}; double o[2] = {0, 0}; // o: sum p * key index (a stand-in for PV), per half
        for (int n = n_max - 1; n >= n_min; --n) { int n0 = n * BC; float sc[2][KH], mx[2];
          for (int wc = 0; wc < 2; ++wc) { for (int c = 0; c < KH; ++c) { int key = n0 + wc * KH + c; sc[wc][c] = (i < sq && key < sk) ? (float)s[(size_t)i * sk + key] : 0.f; }
            if (!(n0 >= max_lo && n0 + BC <= min_hi)) { int lo, hi; key_range(p, i, sq, sk, lo, hi);
              for (int t = 0; t < 4; ++t) { int l2 = lo - (n0 + wc * KH + 2 * t), h2 = hi - (n0 + wc * KH + 2 * t);
                for (int j = 0; j < 4; ++j) for (int e = 0; e < 2; ++e) { int col = j * 8 + e; if (col < l2 || col >= h2) sc[wc][j * 8 + 2 * t + e] = -INFINITY; } } }
            mx[wc] = -INFINITY; for (int c = 0; c < KH; ++c) mx[wc] = std::max(mx[wc], sc[wc][c]); }
          float alpha = 1.f; float m_new[2];
          for (int wc = 0; wc < 2; ++wc) { float M = fmaxf(mx[wc], mx[1 - wc]); bool grow = M > m + 8.f; m_new[wc] = grow ? M : m; if (wc == 0) alpha = grow ? exp2f(m - M) : 1.f; }
          if (m_new[0] != m_new[1] && !(std::isnan(m_new[0]))) { printf("pair max disagree\n"); ++bad; }
          m = m_new[0]; float mu = m == -INFINITY ? 0.f : m;
          for (int wc = 0; wc < 2; ++wc) { float sum = 0; o[wc] *= alpha; for (int c = 0; c < KH; ++c) { float pp = exp2f(sc[wc][c] - mu); sum += pp; o[wc] += pp * (n0 + wc * KH + c + 1); } l[wc] = l[wc] * alpha + sum; }
        }
        if (r >= rows) continue;
        float L = l[0] + l[1]; double out = L > 0 ? (o[0] + o[1]) / L : 0; double lse = L > 0 ? (m + log2((double)L)) : -INFINITY;
        // direct
        int lo, hi; key_range(p, i, sq, sk, lo, hi); lo = std::max(lo, 0); hi = std::min(hi, sk);
        double M = -INFINITY; for (int k = lo; k < hi; ++k) M = std::max(M, s[(size_t)i * sk + k]);
        double Ld = 0, Od = 0; for (int k = lo; k < hi; ++k) { double e = exp2(s[(size_t)i * sk + k] - M); Ld += e; Od += e * (k + 1); }
        double outd = Ld > 0 ? Od / Ld : 0, lsed = Ld > 0 ? M + log2(Ld) : -INFINITY;
        bool ok = fabs(out - outd) <= 1e-4 * std::max(1.0, fabs(outd)) && ((std::isinf(lsed) && std::isinf(lse) && lse < 0) || fabs(lse - lsed) < 1e-4);
        if (!ok && bad++ < 5) printf("sq %d sk %d w %d,%d row %d: out %g want %g lse %g want %g\n", sq, sk, p.wl, p.wr, i, out, outd, lse, lsed);
      } } }
  printf("fwd_replay: %d shapes, %s\n", ncase, bad ? "FAIL" : "ok"); return bad != 0; }
