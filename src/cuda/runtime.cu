/*
 * runtime.cu — the CUDA backend's device queries and the pointer check behind "mixed devices".
 */
#include "../core/fk_internal.h"

#include <cuda_runtime.h>
#include <stdio.h>
#include <string.h>

extern "C" int fk_cuda_device_count(void) {
    int n = 0;
    if (cudaGetDeviceCount(&n) != cudaSuccess) {
        cudaGetLastError(); // clear the sticky "no device" error
        return 0;
    }
    return n;
}

extern "C" fk_status fk_cuda_device_props(int index, fk_device_props *props, int *max_smem_optin) {
    int n = fk_cuda_device_count();
    if (index < 0 || index >= n)
        return fk_error(FK_STATUS_NO_DEVICE, "cuda:%d asked for, but %d CUDA device(s) are visible", index, n);
    cudaDeviceProp p;
    cudaError_t    e = cudaGetDeviceProperties(&p, index);
    if (e != cudaSuccess)
        return fk_error(FK_STATUS_CUDA_ERROR, "cudaGetDeviceProperties(cuda:%d): %s", index, cudaGetErrorString(e));
    memset(props, 0, sizeof *props);
    size_t len = strnlen(p.name, sizeof props->name - 1); // truncate explicitly: the name is longer in CUDA
    memcpy(props->name, p.name, len);
    props->name[len] = '\0';
    props->cc_major        = p.major;
    props->cc_minor        = p.minor;
    props->multiprocessors = p.multiProcessorCount;
    props->memory_bytes    = (int64_t)p.totalGlobalMem;
    *max_smem_optin        = (int)p.sharedMemPerBlockOptin;
    return FK_STATUS_SUCCESS;
}

extern "C" fk_status fk_cuda_pointer_device(const void *ptr, int *device_index) {
    cudaPointerAttributes a;
    cudaError_t           e = cudaPointerGetAttributes(&a, ptr);
    if (e != cudaSuccess) {
        cudaGetLastError();
        return fk_error(FK_STATUS_CUDA_ERROR, "cudaPointerGetAttributes: %s", cudaGetErrorString(e));
    }
    // Managed memory is reachable from its device; device memory from its device only; host memory not at all
    // (pinned-mapped host memory is treated as host: flashkit does not read through mappings).
    *device_index = (a.type == cudaMemoryTypeDevice || a.type == cudaMemoryTypeManaged) ? a.device : -1;
    return FK_STATUS_SUCCESS;
}
