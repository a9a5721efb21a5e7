// Host replay of bwd2_prep_kernel / bwd2_convert_kernel index arithmetic (attn_bwd_v2.cuh): every row's dot
// product over head_dim (shuffle tree emulated), dq_acc rows zeroed over the full pitch, each (row, chunk) of the
// convert visited once; head_dim not multiple of 8; grids smaller than the row count.
// Run: g++ -O2 -std=c++17 dev/cuda/bwd2_prep_replay.cc -o /tmp/p && /tmp/p
#include <cstdio>
#include <vector>
#include <cstdint>
template <int DB> int run(int64_t nrows, int head_dim, int grid) {
  constexpr int LPR = DB / 8, RPW = 32 / LPR;
  std::vector<double> acc_ref(nrows, 0), got(nrows, -1); std::vector<int> zero(nrows * DB, 0), seen(nrows, 0);
  auto val = [](int64_t r, int d) { return (double)((r * 7 + d * 3) % 11 - 5); };
  for (int64_t r = 0; r < nrows; ++r) for (int d = 0; d < head_dim; ++d) acc_ref[r] += val(r, d) * val(r, d);
  const int64_t step = (int64_t)grid * 8 * RPW; int bad = 0;
  for (int blk = 0; blk < grid; ++blk) for (int w = 0; w < 8; ++w)
    for (int64_t base = ((int64_t)blk * 8 + w) * RPW; base < nrows; base += step) {
      double a[32];
      for (int lane = 0; lane < 32; ++lane) { int sub = lane % LPR, d0 = sub * 8, n = std::max(0, std::min(8, head_dim - d0));
        int64_t row = base + lane / LPR; a[lane] = 0;
        if (row < nrows) for (int e = 0; e < 8; ++e) if (e < n) a[lane] += val(row, d0 + e) * val(row, d0 + e); }
      for (int off = LPR / 2; off > 0; off >>= 1) { double b[32]; for (int l = 0; l < 32; ++l) b[l] = a[l] + a[l ^ off]; for (int l = 0; l < 32; ++l) a[l] = b[l]; }
      for (int lane = 0; lane < 32; ++lane) { int sub = lane % LPR, d0 = sub * 8; int64_t row = base + lane / LPR;
        if (row < nrows) { if (sub == 0) { got[row] = a[lane]; ++seen[row]; } for (int e = 0; e < 8; ++e) ++zero[row * DB + d0 + e]; } }
    }
  for (int64_t r = 0; r < nrows; ++r) { if (seen[r] != 1 || got[r] != acc_ref[r]) { if (bad++ < 3) printf("prep row %lld seen %d got %g want %g\n", (long long)r, seen[r], got[r], acc_ref[r]); }
    for (int d = 0; d < DB; ++d) if (zero[r * DB + d] != 1 && bad++ < 3) printf("zero row %lld d %d: %d\n", (long long)r, d, zero[r * DB + d]); }
  // convert
  constexpr int TPR = DB / 8, RPB = 256 / TPR; const int64_t g = (nrows + RPB - 1) / RPB; std::vector<int> cv(nrows * DB, 0);
  for (int64_t bx = 0; bx < g; ++bx) for (int tid = 0; tid < 256; ++tid) { int64_t row = bx * RPB + tid / TPR; if (row >= nrows) continue;
    int d0 = (tid % TPR) * 8; if (d0 >= head_dim) continue; for (int e = 0; e < 8 && d0 + e < head_dim; ++e) ++cv[row * DB + d0 + e]; }
  for (int64_t r = 0; r < nrows; ++r) for (int d = 0; d < head_dim; ++d) if (cv[r * DB + d] != 1 && bad++ < 3) printf("convert row %lld d %d: %d\n", (long long)r, d, cv[r * DB + d]);
  printf("DB %d rows %lld hd %d grid %d: %s\n", DB, (long long)nrows, head_dim, grid, bad ? "FAIL" : "ok"); return bad;
}
int main() { int bad = 0;
  for (int64_t rows : {1, 7, 33, 1000, 4097}) for (int grid : {1, 3, 64}) {
    for (int hd : {1, 8, 40, 63, 64}) bad += run<64>(rows, hd, grid);
    for (int hd : {65, 100, 111, 128}) bad += run<128>(rows, hd, grid);
    for (int hd : {129, 200, 255, 256}) bad += run<256>(rows, hd, grid); }
  printf("prep_replay: %s\n", bad ? "FAIL" : "ok"); return bad != 0; }
