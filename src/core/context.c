/*
 * context.c — contexts, build information and device properties.
 */
#include "fk_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void fk_get_build_info(fk_build_info *info) {
    if (!info) return;
    memset(info, 0, sizeof *info);
#ifdef FK_WITH_CUDA
    info->cuda_compiled     = 1;
    info->cuda_device_count = fk_cuda_device_count();
#endif
#ifdef _OPENMP
    info->openmp = 1;
#endif
    info->cpu_simd = fk_cpu_detect_simd();
}

fk_status fk_get_device_props(fk_device device, fk_device_props *props) {
    fk_clear_error();
    if (!props) return fk_error(FK_STATUS_BAD_PARAM_NULL_POINTER, "fk_get_device_props: props is NULL");
    memset(props, 0, sizeof *props);
    if (device.kind == FK_DEVICE_CPU) {
        snprintf(props->name, sizeof props->name, "cpu (%s)",
                 fk_cpu_detect_simd() == 512 ? "avx512" : fk_cpu_detect_simd() == 256 ? "avx2" : "portable");
        props->multiprocessors = fk_cpu_default_threads();
        return FK_STATUS_SUCCESS;
    }
    if (device.kind != FK_DEVICE_CUDA)
        return fk_error(FK_STATUS_BAD_PARAM_UNKNOWN_DEVICE, "fk_get_device_props: device.kind %d is unknown",
                        (int)device.kind);
#ifdef FK_WITH_CUDA
    int smem = 0;
    return fk_cuda_device_props(device.index, props, &smem);
#else
    return fk_error(FK_STATUS_NOT_SUPPORTED_BACKEND,
                    "fk_get_device_props: cuda:%d asked for, but flashkit was built without CUDA", device.index);
#endif
}

fk_status fk_context_init(fk_device device, const fk_context_options *options, fk_context_t *out) {
    fk_clear_error();
    if (!out) return fk_error(FK_STATUS_BAD_PARAM_NULL_POINTER, "fk_context_init: ctx (the output) is NULL");
    *out = NULL;
    if (device.kind != FK_DEVICE_CPU && device.kind != FK_DEVICE_CUDA)
        return fk_error(FK_STATUS_BAD_PARAM_UNKNOWN_DEVICE, "fk_context_init: device.kind %d is unknown",
                        (int)device.kind);
    if (options && options->num_threads < 0)
        return fk_error(FK_STATUS_BAD_PARAM_VALUE, "fk_context_init: options->num_threads must be >= 0, got %d",
                        options->num_threads);
    struct fk_context c;
    memset(&c, 0, sizeof c);
    c.device      = device;
    c.cpu_simd    = fk_cpu_detect_simd();
    c.num_threads = (options && options->num_threads > 0) ? options->num_threads : fk_cpu_default_threads();
    if (device.kind == FK_DEVICE_CPU) {
        if (device.index != 0)
            return fk_error(FK_STATUS_BAD_PARAM_UNKNOWN_DEVICE, "fk_context_init: the CPU device index must be 0, got %d",
                            device.index);
    } else {
#ifdef FK_WITH_CUDA
        fk_device_props props;
        FK_TRY(fk_cuda_device_props(device.index, &props, &c.max_smem_optin));
        c.cc_major = props.cc_major;
        c.cc_minor = props.cc_minor;
        c.sm_count = props.multiprocessors;
#else
        return fk_error(FK_STATUS_NOT_SUPPORTED_BACKEND,
                        "fk_context_init: cuda:%d asked for, but flashkit was built without CUDA", device.index);
#endif
    }
    struct fk_context *p = (struct fk_context *)malloc(sizeof *p);
    if (!p) return fk_error(FK_STATUS_ALLOC_FAILED, "fk_context_init: out of host memory");
    *p   = c;
    *out = p;
    return FK_STATUS_SUCCESS;
}

void fk_context_free(fk_context_t ctx) { free(ctx); }

fk_device fk_context_device(fk_context_t ctx) {
    fk_device none = {FK_DEVICE_CPU, 0};
    return ctx ? ctx->device : none;
}

int fk_context_num_threads(fk_context_t ctx) { return ctx ? ctx->num_threads : 0; }
