// vimnmx_check.cu — one-call GPU check of the suspected cause of the issue-5 v2 prep bug (docs/PERF.md, run 4):
// `n = max(0, min(8, x)); if (n == 8) ...` compiles on sm_90 (CUDA 13.0) to VIMNMX.RELU with a predicate output
// that the branch uses as "n == 8". Prints, for x = -9..9, n and whether the n == 8 branch was taken; expected:
// taken only for x >= 8. The v2 prep's failures match "taken also at x = 0".
// Build and run: nvcc -O3 -arch=sm_90 dev/cuda/vimnmx_check.cu -o /tmp/vimnmx && /tmp/vimnmx
// (SASS: cuobjdump -sass /tmp/vimnmx | grep VIMNMX)
#include <cuda_runtime.h>
#include <stdio.h>

__global__ void clamp_test(const int *x, int *n_out, int *taken, int count) {
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= count) return;
    const int n = max(0, min(8, x[i]));
    n_out[i]    = n;
    taken[i]    = (n == 8) ? 1 : 0;
}

int main() {
    const int count = 19;
    int       hx[count], hn[count], ht[count], *dx, *dn, *dt;
    for (int i = 0; i < count; ++i) hx[i] = i - 9;
    cudaMalloc(&dx, sizeof hx), cudaMalloc(&dn, sizeof hn), cudaMalloc(&dt, sizeof ht);
    cudaMemcpy(dx, hx, sizeof hx, cudaMemcpyHostToDevice);
    clamp_test<<<1, 32>>>(dx, dn, dt, count);
    if (cudaMemcpy(hn, dn, sizeof hn, cudaMemcpyDeviceToHost) != cudaSuccess ||
        cudaMemcpy(ht, dt, sizeof ht, cudaMemcpyDeviceToHost) != cudaSuccess) {
        printf("vimnmx_check: CUDA error %s\n", cudaGetErrorString(cudaGetLastError()));
        return 2;
    }
    int bad = 0;
    for (int i = 0; i < count; ++i) {
        const int want_n = hx[i] < 0 ? 0 : hx[i] > 8 ? 8 : hx[i], want_t = hx[i] >= 8;
        const int ok     = hn[i] == want_n && ht[i] == want_t;
        bad += !ok;
        printf("%s x %3d: n %d, n == 8 taken %d\n", ok ? "ok  " : "BAD ", hx[i], hn[i], ht[i]);
    }
    printf("vimnmx_check: %s\n", bad ? "FAIL (the compiled n == 8 test disagrees with the source)" : "ok");
    return bad != 0;
}
