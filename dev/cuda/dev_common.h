// dev_common.h — dev only: what every dev/cuda check program shares (attn_fwd_check, attn_bwd_check,
// attn_fwd_wgmma_check, attn_bwd_wgmma_check, wgmma_check): the CUDA error check and the event timer.
// ops_tune.cu keeps its own, different ones (CK: message on stdout, exit 1; timer: L2 flush before each run).
#ifndef FK_DEV_COMMON_H
#define FK_DEV_COMMON_H

#include <cuda_runtime.h>

#include <algorithm>
#include <functional>
#include <stdio.h>
#include <stdlib.h>
#include <vector>

// A failed CUDA call: file, line, the call and the error on stderr, exit status 2.
#define CK(x)                                                                                                 \
    do {                                                                                                      \
        cudaError_t e_ = (x);                                                                                 \
        if (e_ != cudaSuccess) {                                                                              \
            fprintf(stderr, "%s:%d: %s: %s\n", __FILE__, __LINE__, #x, cudaGetErrorString(e_));               \
            exit(2);                                                                                          \
        }                                                                                                     \
    } while (0)

// Median of `reps` timed calls of fn (CUDA events on the default stream) after 3 untimed warm-ups.
static inline float time_ms(const std::function<void()> &fn, int reps) {
    cudaEvent_t e0, e1;
    CK(cudaEventCreate(&e0));
    CK(cudaEventCreate(&e1));
    for (int w = 0; w < 3; ++w) fn();
    std::vector<float> ts;
    for (int r = 0; r < reps; ++r) {
        CK(cudaEventRecord(e0));
        fn();
        CK(cudaEventRecord(e1));
        CK(cudaEventSynchronize(e1));
        float ms;
        CK(cudaEventElapsedTime(&ms, e0, e1));
        ts.push_back(ms);
    }
    std::sort(ts.begin(), ts.end());
    cudaEventDestroy(e0), cudaEventDestroy(e1);
    return ts[ts.size() / 2];
}

#endif // FK_DEV_COMMON_H
