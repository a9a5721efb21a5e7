/*
 * status.c — status strings, the per-thread detailed message, version queries, checked arithmetic.
 */
#include "fk_internal.h"

#include <stdio.h>
#include <string.h>

static _Thread_local char fk_last_msg[512];

unsigned    fk_version_number(void) { return FK_VERSION_NUMBER; }
const char *fk_version_string(void) { return FK_VERSION_STRING; }

const char *fk_status_string(fk_status s) {
    switch (s) {
    case FK_STATUS_SUCCESS: return "success";
    case FK_STATUS_BAD_PARAM: return "bad parameter";
    case FK_STATUS_BAD_PARAM_NULL_POINTER: return "bad parameter: null pointer";
    case FK_STATUS_BAD_PARAM_SHAPE: return "bad parameter: shape";
    case FK_STATUS_BAD_PARAM_STRIDE: return "bad parameter: stride";
    case FK_STATUS_BAD_PARAM_DTYPE_MISMATCH: return "bad parameter: dtype mismatch";
    case FK_STATUS_BAD_PARAM_DEVICE_MISMATCH: return "bad parameter: device mismatch";
    case FK_STATUS_BAD_PARAM_OVERFLOW: return "bad parameter: size overflow";
    case FK_STATUS_BAD_PARAM_HEADS: return "bad parameter: nheads_q not a multiple of nheads_kv";
    case FK_STATUS_BAD_PARAM_VALUE: return "bad parameter: value out of range";
    case FK_STATUS_BAD_PARAM_UNKNOWN_DEVICE: return "bad parameter: unknown device";
    case FK_STATUS_BAD_PARAM_NDIM: return "bad parameter: number of dimensions";
    case FK_STATUS_WORKSPACE_TOO_SMALL: return "bad parameter: workspace too small";
    case FK_STATUS_NOT_SUPPORTED: return "not supported";
    case FK_STATUS_NOT_SUPPORTED_HEAD_DIM: return "not supported: head dim";
    case FK_STATUS_NOT_SUPPORTED_DTYPE: return "not supported: dtype";
    case FK_STATUS_NOT_SUPPORTED_ARCH: return "not supported: GPU architecture";
    case FK_STATUS_NOT_SUPPORTED_FEATURE: return "not supported: feature on this backend";
    case FK_STATUS_NOT_SUPPORTED_BACKEND: return "not supported: backend not built";
    case FK_STATUS_NO_DEVICE: return "no such device";
    case FK_STATUS_CUDA_ERROR: return "CUDA error";
    case FK_STATUS_ALLOC_FAILED: return "allocation failed";
    case FK_STATUS_COMM_ERROR: return "communication error (NCCL)";
    case FK_STATUS_INTERNAL: return "internal error";
    }
    return "unknown status";
}

const char *fk_last_error_message(void) { return fk_last_msg; }

void fk_clear_error(void) { fk_last_msg[0] = '\0'; }

fk_status fk_error(fk_status status, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(fk_last_msg, sizeof fk_last_msg, fmt, ap);
    va_end(ap);
    return status;
}

bool fk_mul_i64(int64_t a, int64_t b, int64_t *out) {
    if (a < 0 || b < 0) return false;
    if (a != 0 && b > INT64_MAX / a) return false;
    *out = a * b;
    return true;
}

bool fk_add_i64(int64_t a, int64_t b, int64_t *out) {
    if (a < 0 || b < 0) return false;
    if (a > INT64_MAX - b) return false;
    *out = a + b;
    return true;
}
