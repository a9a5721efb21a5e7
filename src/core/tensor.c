/*
 * tensor.c — descriptors, dtype helpers and the checks every op runs on its tensors.
 */
#include "fk_internal.h"

#include <string.h>

size_t fk_dtype_size(fk_dtype dt) {
    switch (dt) {
    case FK_DTYPE_F32: return 4;
    case FK_DTYPE_F16: return 2;
    case FK_DTYPE_BF16: return 2;
    case FK_DTYPE_INT32: return 4;
    case FK_DTYPE_INT64: return 8;
    case FK_DTYPE_F64: return 8;
    }
    return 0;
}

const char *fk_dtype_name(fk_dtype dt) {
    switch (dt) {
    case FK_DTYPE_F32: return "f32";
    case FK_DTYPE_F16: return "f16";
    case FK_DTYPE_BF16: return "bf16";
    case FK_DTYPE_INT32: return "i32";
    case FK_DTYPE_INT64: return "i64";
    case FK_DTYPE_F64: return "f64";
    }
    return "?";
}

fk_tensor fk_tensor_make(void *data, fk_dtype dtype, fk_device device, int ndim, const int64_t *shape) {
    fk_tensor t;
    memset(&t, 0, sizeof t);
    t.data   = data;
    t.dtype  = dtype;
    t.device = device;
    if (ndim < 0) ndim = 0;
    if (ndim > FK_MAX_DIMS) ndim = FK_MAX_DIMS;
    t.ndim = ndim;
    int64_t s = 1;
    for (int d = ndim - 1; d >= 0; d--) {
        t.shape[d]  = shape ? shape[d] : 0;
        t.stride[d] = s;
        s *= t.shape[d] > 0 ? t.shape[d] : 1;
    }
    return t;
}

fk_tensor fk_tensor_none(void) {
    fk_tensor t;
    memset(&t, 0, sizeof t);
    t.device.kind = FK_DEVICE_CPU;
    return t;
}

static const char *device_name(fk_device_kind k) {
    return k == FK_DEVICE_CPU ? "cpu" : k == FK_DEVICE_CUDA ? "cuda" : "unknown";
}

fk_status fk_check_workspace(const char *op, const void *workspace, size_t workspace_bytes, size_t need,
                             const char *query) {
    if (workspace_bytes < need)
        return fk_error(FK_STATUS_WORKSPACE_TOO_SMALL, "%s: workspace_bytes is %zu but %s asks for %zu", op,
                        workspace_bytes, query, need);
    if (need > 0 && !workspace)
        return fk_error(FK_STATUS_BAD_PARAM_NULL_POINTER, "%s: workspace is NULL but %s asks for %zu bytes", op,
                        query, need);
    return FK_STATUS_SUCCESS;
}

fk_status fk_check_context(const char *op, const struct fk_context *ctx) {
    if (!ctx) return fk_error(FK_STATUS_BAD_PARAM_NULL_POINTER, "%s: ctx is NULL", op);
    if (ctx->device.kind != FK_DEVICE_CPU && ctx->device.kind != FK_DEVICE_CUDA)
        return fk_error(FK_STATUS_BAD_PARAM_UNKNOWN_DEVICE, "%s: ctx has unknown device kind %d", op,
                        (int)ctx->device.kind);
    return FK_STATUS_SUCCESS;
}

fk_status fk_check_tensor(const char *op, const char *name, const fk_tensor *t, const struct fk_context *ctx,
                          int want_ndim) {
    if (!t->data) return fk_error(FK_STATUS_BAD_PARAM_NULL_POINTER, "%s: %s.data is NULL", op, name);
    if (fk_dtype_size(t->dtype) == 0)
        return fk_error(FK_STATUS_NOT_SUPPORTED_DTYPE, "%s: %s.dtype %d is not an fk_dtype", op, name,
                        (int)t->dtype);
    if (t->device.kind != FK_DEVICE_CPU && t->device.kind != FK_DEVICE_CUDA)
        return fk_error(FK_STATUS_BAD_PARAM_UNKNOWN_DEVICE, "%s: %s.device.kind %d is not an fk_device_kind", op,
                        name, (int)t->device.kind);
    if (t->device.kind != ctx->device.kind || t->device.index != ctx->device.index)
        return fk_error(FK_STATUS_BAD_PARAM_DEVICE_MISMATCH, "%s: %s is on %s:%d but the context is on %s:%d", op,
                        name, device_name(t->device.kind), t->device.index, device_name(ctx->device.kind),
                        ctx->device.index);
    if (t->ndim != want_ndim)
        return fk_error(FK_STATUS_BAD_PARAM_NDIM, "%s: %s must have %d dimensions, got %d", op, name, want_ndim,
                        t->ndim);
    int64_t last = 0; // highest element offset
    for (int d = 0; d < t->ndim; d++) {
        if (t->shape[d] < 1)
            return fk_error(FK_STATUS_BAD_PARAM_SHAPE, "%s: %s.shape[%d] must be >= 1, got %lld", op, name, d,
                            (long long)t->shape[d]);
        if (t->stride[d] < 0)
            return fk_error(FK_STATUS_BAD_PARAM_STRIDE, "%s: %s.stride[%d] must be >= 0, got %lld", op, name, d,
                            (long long)t->stride[d]);
        int64_t span;
        if (!fk_mul_i64(t->shape[d] - 1, t->stride[d], &span) || !fk_add_i64(last, span, &last))
            return fk_error(FK_STATUS_BAD_PARAM_OVERFLOW, "%s: %s's extent %d times its stride overflows 64 bits",
                            op, name, d);
    }
    int64_t bytes;
    if (!fk_add_i64(last, 1, &bytes) || !fk_mul_i64(bytes, (int64_t)fk_dtype_size(t->dtype), &bytes))
        return fk_error(FK_STATUS_BAD_PARAM_OVERFLOW, "%s: %s spans more bytes than fit in 64 bits", op, name);
    if (t->stride[t->ndim - 1] != 1 && t->shape[t->ndim - 1] > 1)
        return fk_error(FK_STATUS_BAD_PARAM_STRIDE, "%s: %s.stride[%d] (innermost) must be 1, got %lld", op, name,
                        t->ndim - 1, (long long)t->stride[t->ndim - 1]);
#ifdef FK_WITH_CUDA
    if (ctx->device.kind == FK_DEVICE_CUDA) {
        // The descriptor says CUDA; make sure the memory agrees (a host pointer would fault on the GPU).
        int where = -1;
        FK_TRY(fk_cuda_pointer_device(t->data, &where));
        if (where != ctx->device.index)
            return fk_error(FK_STATUS_BAD_PARAM_DEVICE_MISMATCH,
                            "%s: %s.data points to %s%d memory but the context is on cuda:%d", op, name,
                            where < 0 ? "host" : "cuda:", where < 0 ? 0 : where, ctx->device.index);
    }
#endif
    return FK_STATUS_SUCCESS;
}

fk_status fk_check_optional_tensor(const char *op, const char *name, const fk_tensor *t,
                                   const struct fk_context *ctx, int want_ndim) {
    if (!t->data) return FK_STATUS_SUCCESS;
    return fk_check_tensor(op, name, t, ctx, want_ndim);
}

fk_status fk_check_extent(const char *op, const char *name, const fk_tensor *t, int dim, int64_t want) {
    if (t->shape[dim] != want)
        return fk_error(FK_STATUS_BAD_PARAM_SHAPE, "%s: %s.shape[%d] must be %lld, got %lld", op, name, dim,
                        (long long)want, (long long)t->shape[dim]);
    return FK_STATUS_SUCCESS;
}

fk_status fk_check_float_dtype(const char *op, const char *name, const fk_tensor *t) {
    if (t->dtype != FK_DTYPE_F32 && t->dtype != FK_DTYPE_F16 && t->dtype != FK_DTYPE_BF16 &&
        t->dtype != FK_DTYPE_F64)
        return fk_error(FK_STATUS_NOT_SUPPORTED_DTYPE, "%s: %s.dtype must be f32, f16, bf16 or f64, got %s", op, name,
                        fk_dtype_name(t->dtype));
    return FK_STATUS_SUCCESS;
}

fk_status fk_check_same_dtype(const char *op, const char *name_a, const fk_tensor *a, const char *name_b,
                              const fk_tensor *b) {
    if (a->dtype != b->dtype)
        return fk_error(FK_STATUS_BAD_PARAM_DTYPE_MISMATCH, "%s: %s.dtype (%s) must match %s.dtype (%s)", op,
                        name_b, fk_dtype_name(b->dtype), name_a, fk_dtype_name(a->dtype));
    return FK_STATUS_SUCCESS;
}

// --- fp16 / bf16 conversion ------------------------------------------------------------------------------

float fk_half_to_float(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000) << 16;
    uint32_t exp  = (h >> 10) & 0x1f;
    uint32_t man  = h & 0x3ff;
    uint32_t bits;
    if (exp == 0) {
        if (man == 0) {
            bits = sign;
        } else { // subnormal: normalize
            int e = -1;
            do {
                e++;
                man <<= 1;
            } while ((man & 0x400) == 0);
            bits = sign | ((uint32_t)(127 - 15 - e) << 23) | ((man & 0x3ff) << 13);
        }
    } else if (exp == 31) {
        bits = sign | 0x7f800000u | (man << 13);
    } else {
        bits = sign | ((exp + 127 - 15) << 23) | (man << 13);
    }
    float f;
    memcpy(&f, &bits, 4);
    return f;
}

uint16_t fk_float_to_half(float f) {
    uint32_t x;
    memcpy(&x, &f, 4);
    uint32_t sign = (x >> 16) & 0x8000;
    uint32_t absx = x & 0x7fffffffu;
    if (absx >= 0x7f800000u) return (uint16_t)(sign | 0x7c00 | (absx > 0x7f800000u ? 0x200 : 0)); // inf/nan
    if (absx >= 0x477ff000u) return (uint16_t)(sign | 0x7c00); // rounds to >= 65520: inf
    if (absx < 0x38800000u) {                                  // below the smallest normal half: subnormal
        if (absx < 0x33000000u) return (uint16_t)sign;         // < 2^-25 rounds to 0
        uint32_t e     = absx >> 23;
        uint32_t man   = (absx & 0x7fffff) | 0x800000;
        uint32_t shift = 126 - e; // 14..24
        uint32_t half  = man >> shift;
        uint32_t rem   = man & ((1u << shift) - 1);
        uint32_t mid   = 1u << (shift - 1);
        if (rem > mid || (rem == mid && (half & 1))) half++;
        return (uint16_t)(sign | half);
    }
    uint32_t r = absx - 0x38000000u; // rebias exponent 127 -> 15
    uint32_t half = r >> 13;
    uint32_t rem  = r & 0x1fff;
    if (rem > 0x1000 || (rem == 0x1000 && (half & 1))) half++;
    return (uint16_t)(sign | half);
}

float fk_bf16_to_float(uint16_t h) {
    uint32_t bits = (uint32_t)h << 16;
    float    f;
    memcpy(&f, &bits, 4);
    return f;
}

uint16_t fk_float_to_bf16(float f) {
    uint32_t x;
    memcpy(&x, &f, 4);
    if ((x & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((x >> 16) | 0x40); // quiet NaN
    uint32_t rounding = 0x7fff + ((x >> 16) & 1);
    return (uint16_t)((x + rounding) >> 16);
}
