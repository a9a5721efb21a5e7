/*
 * fk_internal.h — what every part of the library shares and no user sees: the context, the error helpers,
 * the tensor checks, and the backend entry points that are not op-specific.
 * Op families keep their own internal headers (attn_internal.h, ops_internal.h).
 */
#ifndef FK_INTERNAL_H
#define FK_INTERNAL_H

#include "flashkit.h"

#include <stdarg.h>
#include <stdbool.h>

#ifdef __cplusplus
extern "C" {
#endif

// --- context ---------------------------------------------------------------------------------------------

struct fk_context {
    fk_device device;
    int       num_threads;     // CPU: threads for parallel regions (>= 1)
    // CUDA only (zero on the CPU), read once at init:
    int       cc_major, cc_minor;
    int       sm_count;
    int       max_smem_optin;  // bytes of shared memory a block may opt into
    int       cpu_simd;        // CPU: 0 portable, 256 AVX2+FMA, 512 AVX-512F
};

// --- errors ----------------------------------------------------------------------------------------------

// Records a message for this thread and returns `status`, so checks read `return fk_error(S, "...", ...)`.
fk_status fk_error(fk_status status, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 2, 3)))
#endif
    ;
// Every public entry point calls this first, so fk_last_error_message() describes the latest call.
void fk_clear_error(void);

// --- checked size arithmetic -----------------------------------------------------------------------------

// a * b into *out; false on overflow of int64 or a negative operand.
bool fk_mul_i64(int64_t a, int64_t b, int64_t *out);
bool fk_add_i64(int64_t a, int64_t b, int64_t *out);

// --- tensor checks ---------------------------------------------------------------------------------------
// Each returns FK_STATUS_SUCCESS or records a message naming `op` and `name` and returns the status.

// data non-NULL, ndim == want_ndim, extents >= 1 (>= 0 when allow_empty), inner stride 1, strides >= 0,
// device equal to the context's, and the highest element offset representable in int64.
fk_status fk_check_tensor(const char *op, const char *name, const fk_tensor *t, const struct fk_context *ctx,
                          int want_ndim);
// Like fk_check_tensor for tensors that may be absent (data == NULL): absent returns success.
fk_status fk_check_optional_tensor(const char *op, const char *name, const fk_tensor *t,
                                   const struct fk_context *ctx, int want_ndim);
// t->shape[dim] == want, else FK_STATUS_BAD_PARAM_SHAPE naming both.
fk_status fk_check_extent(const char *op, const char *name, const fk_tensor *t, int dim, int64_t want);
// fp32/fp16/bf16/fp64, else FK_STATUS_NOT_SUPPORTED_DTYPE (backends reject fp64 where they lack it).
fk_status fk_check_float_dtype(const char *op, const char *name, const fk_tensor *t);
// a->dtype == b->dtype, else FK_STATUS_BAD_PARAM_DTYPE_MISMATCH.
fk_status fk_check_same_dtype(const char *op, const char *name_a, const fk_tensor *a, const char *name_b,
                              const fk_tensor *b);
// Context is non-NULL and its device kind is known.
fk_status fk_check_context(const char *op, const struct fk_context *ctx);
// The caller's workspace against what the size query `query` asked for: too few bytes is
// FK_STATUS_WORKSPACE_TOO_SMALL, a NULL buffer when bytes are needed FK_STATUS_BAD_PARAM_NULL_POINTER.
fk_status fk_check_workspace(const char *op, const void *workspace, size_t workspace_bytes, size_t need,
                             const char *query);

#define FK_TRY(expr)                                                                                          \
    do {                                                                                                      \
        fk_status fk_try_status_ = (expr);                                                                    \
        if (fk_try_status_ != FK_STATUS_SUCCESS) return fk_try_status_;                                       \
    } while (0)

// --- dtype conversion (host side) ------------------------------------------------------------------------

float    fk_half_to_float(uint16_t h);
uint16_t fk_float_to_half(float f); // round to nearest even
float    fk_bf16_to_float(uint16_t h);
uint16_t fk_float_to_bf16(float f); // round to nearest even; NaN stays NaN

// Loads element i of a float-dtype buffer as fp32 / stores fp32 into it (rounding to nearest even).
static inline float fk_load_f(const void *p, fk_dtype dt, int64_t i) {
    switch (dt) {
    case FK_DTYPE_F16: return fk_half_to_float(((const uint16_t *)p)[i]);
    case FK_DTYPE_BF16: return fk_bf16_to_float(((const uint16_t *)p)[i]);
    case FK_DTYPE_F64: return (float)((const double *)p)[i];
    default: return ((const float *)p)[i];
    }
}
static inline void fk_store_f(void *p, fk_dtype dt, int64_t i, float x) {
    switch (dt) {
    case FK_DTYPE_F16: ((uint16_t *)p)[i] = fk_float_to_half(x); break;
    case FK_DTYPE_BF16: ((uint16_t *)p)[i] = fk_float_to_bf16(x); break;
    case FK_DTYPE_F64: ((double *)p)[i] = x; break;
    default: ((float *)p)[i] = x; break;
    }
}
// Loads an int32/int64 index element as int64.
static inline int64_t fk_load_index(const void *p, fk_dtype dt, int64_t i) {
    return dt == FK_DTYPE_INT64 ? ((const int64_t *)p)[i] : (int64_t)((const int32_t *)p)[i];
}

// --- CPU backend runtime ---------------------------------------------------------------------------------

int fk_cpu_detect_simd(void);       // 0, 256 or 512, from CPUID
int fk_cpu_default_threads(void);   // OpenMP's max threads, or 1 without OpenMP

// --- CUDA backend runtime (src/cuda/runtime.cu; only with FK_WITH_CUDA) ---------------------------------

#ifdef FK_WITH_CUDA
int       fk_cuda_device_count(void);
fk_status fk_cuda_device_props(int index, fk_device_props *props, int *max_smem_optin);
// Where does `ptr` live? Sets *device_index to the CUDA ordinal, or -1 for host memory.
fk_status fk_cuda_pointer_device(const void *ptr, int *device_index);
#endif // FK_WITH_CUDA

#ifdef __cplusplus
}
#endif

#endif // FK_INTERNAL_H
