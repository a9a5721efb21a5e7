/*
 * attn_fwd_wgmma_pp.cu — dev only: the schedules of the wgmma forward (fwd_wgmma_main's PP 0 .. 4 in
 * src/cuda/attn_fwd_wgmma.cuh: plain, warpgroup ping-pong and rolled load loops; production's is WgTile::PP), instantiated in
 * their own translation unit so that dev/cuda/wgmma_run.sh compiles them beside attn_fwd_wgmma_check.cu (ptxas
 * time) and links them in.
 * Production's tile per head dim (WgTile), both dtypes.
 */
#include "../../src/cuda/attn_fwd_wgmma.cuh"

template <int PP, int D, bool BF16>
static cudaError_t pp_tile(const fk_wg::FwdParams &f, int batch, int nheads, cudaStream_t st) {
    using T = fk_wg::WgTile<D>;
    return fk_wg::launch_fwd_wgmma_tile<D, T::BN, T::NWG, T::MINB, BF16, PP>(f, batch, nheads, st);
}

template <int PP>
static cudaError_t pp_launch(int d, bool bf16, const fk_wg::FwdParams &f, int batch, int nheads, cudaStream_t st) {
    if (bf16) {
        if (d == 64) return pp_tile<PP, 64, true>(f, batch, nheads, st);
        if (d == 128) return pp_tile<PP, 128, true>(f, batch, nheads, st);
        if (d == 256) return pp_tile<PP, 256, true>(f, batch, nheads, st);
    } else {
        if (d == 64) return pp_tile<PP, 64, false>(f, batch, nheads, st);
        if (d == 128) return pp_tile<PP, 128, false>(f, batch, nheads, st);
        if (d == 256) return pp_tile<PP, 256, false>(f, batch, nheads, st);
    }
    return cudaErrorNotSupported;
}

// pp: 0 .. 4 (fwd_wgmma_main's schedules; anything else: cudaErrorNotSupported).
cudaError_t fwd_wgmma_pp_launch(int pp, int d, bool bf16, const fk_wg::FwdParams &f, int batch, int nheads,
                                cudaStream_t st) {
    if (pp == 0) return pp_launch<0>(d, bf16, f, batch, nheads, st);
    if (pp == 1) return pp_launch<1>(d, bf16, f, batch, nheads, st);
    if (pp == 2) return pp_launch<2>(d, bf16, f, batch, nheads, st);
    if (pp == 3) return pp_launch<3>(d, bf16, f, batch, nheads, st);
    if (pp == 4) return pp_launch<4>(d, bf16, f, batch, nheads, st);
    return cudaErrorNotSupported;
}
