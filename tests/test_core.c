/*
 * test_core.c — version, status strings, contexts, build info and tensor descriptors.
 * Run: build/test_core [-v]
 */
#include "common/fk_test.h"

#include <stdio.h>
#include <string.h>

static void check_status(fk_status got, fk_status want, const char *sig) {
    char detail[640];
    snprintf(detail, sizeof detail, "got %d (%s), want %d; message: \"%s\"", (int)got, fk_status_string(got),
             (int)want, fk_last_error_message());
    bool msg_ok = want == FK_STATUS_SUCCESS ? fk_last_error_message()[0] == '\0' : fk_last_error_message()[0] != '\0';
    fk_test_check(got == want && msg_ok, sig, detail);
}

int main(int argc, char **argv) {
    fk_test_init(argc, argv, "test_core");

    fk_test_check(fk_version_number() == FK_VERSION_NUMBER, "version_number", fk_version_string());
    fk_test_check(strcmp(fk_version_string(), FK_VERSION_STRING) == 0, "version_string", FK_VERSION_STRING);
    fk_test_check(FK_STATUS_CATEGORY(FK_STATUS_BAD_PARAM_SHAPE) == FK_STATUS_BAD_PARAM, "status_category", "");
    fk_test_check(FK_STATUS_CATEGORY(FK_STATUS_NOT_SUPPORTED_DTYPE) == FK_STATUS_NOT_SUPPORTED, "status_category2", "");

    // Every status code has its own string.
    const fk_status all[] = {FK_STATUS_SUCCESS, FK_STATUS_BAD_PARAM, FK_STATUS_BAD_PARAM_NULL_POINTER,
                             FK_STATUS_BAD_PARAM_SHAPE, FK_STATUS_BAD_PARAM_STRIDE,
                             FK_STATUS_BAD_PARAM_DTYPE_MISMATCH, FK_STATUS_BAD_PARAM_DEVICE_MISMATCH,
                             FK_STATUS_BAD_PARAM_OVERFLOW, FK_STATUS_BAD_PARAM_HEADS, FK_STATUS_BAD_PARAM_VALUE,
                             FK_STATUS_BAD_PARAM_UNKNOWN_DEVICE, FK_STATUS_BAD_PARAM_NDIM,
                             FK_STATUS_WORKSPACE_TOO_SMALL, FK_STATUS_NOT_SUPPORTED,
                             FK_STATUS_NOT_SUPPORTED_HEAD_DIM, FK_STATUS_NOT_SUPPORTED_DTYPE,
                             FK_STATUS_NOT_SUPPORTED_ARCH, FK_STATUS_NOT_SUPPORTED_FEATURE,
                             FK_STATUS_NOT_SUPPORTED_BACKEND, FK_STATUS_NO_DEVICE, FK_STATUS_CUDA_ERROR,
                             FK_STATUS_ALLOC_FAILED, FK_STATUS_COMM_ERROR, FK_STATUS_INTERNAL};
    int n = (int)(sizeof all / sizeof all[0]), distinct = 1;
    for (int i = 0; i < n; i++)
        for (int j = 0; j < i; j++)
            if (!strcmp(fk_status_string(all[i]), fk_status_string(all[j]))) distinct = 0;
    fk_test_check(distinct, "status_strings_distinct", "");
    fk_test_check(!strcmp(fk_status_string((fk_status)12345), "unknown status"), "status_string_unknown", "");

    fk_test_check(fk_dtype_size(FK_DTYPE_BF16) == 2 && fk_dtype_size(FK_DTYPE_INT64) == 8 &&
                      fk_dtype_size((fk_dtype)99) == 0,
                  "dtype_size", "");

    // Contexts.
    fk_context_t ctx = NULL;
    fk_device    cpu = {FK_DEVICE_CPU, 0};
    check_status(fk_context_init(cpu, NULL, &ctx), FK_STATUS_SUCCESS, "context_init_cpu");
    fk_test_check(ctx && fk_context_num_threads(ctx) >= 1, "context_threads", "");
    fk_context_free(ctx);
    fk_context_options opt = {3};
    check_status(fk_context_init(cpu, &opt, &ctx), FK_STATUS_SUCCESS, "context_init_threads");
    fk_test_check(fk_context_num_threads(ctx) == 3, "context_threads_option", "");
    fk_context_free(ctx);
    fk_context_free(NULL);

    check_status(fk_context_init(cpu, NULL, NULL), FK_STATUS_BAD_PARAM_NULL_POINTER, "context_init_null");
    fk_device bad = {(fk_device_kind)7, 0};
    check_status(fk_context_init(bad, NULL, &ctx), FK_STATUS_BAD_PARAM_UNKNOWN_DEVICE, "context_init_unknown");
    fk_context_options neg = {-2};
    check_status(fk_context_init(cpu, &neg, &ctx), FK_STATUS_BAD_PARAM_VALUE, "context_init_neg_threads");

    fk_build_info bi;
    fk_get_build_info(&bi);
    fk_device gpu99 = {FK_DEVICE_CUDA, 99};
    fk_status want  = bi.cuda_compiled ? FK_STATUS_NO_DEVICE : FK_STATUS_NOT_SUPPORTED_BACKEND;
    check_status(fk_context_init(gpu99, NULL, &ctx), want, "context_init_cuda_absent");
    fk_device_props props;
    check_status(fk_get_device_props(cpu, &props), FK_STATUS_SUCCESS, "device_props_cpu");
    check_status(fk_get_device_props(gpu99, &props), want, "device_props_cuda_absent");

    const char *why = NULL;
    if (fk_test_have_cuda(&why)) {
        fk_device gpu0 = {FK_DEVICE_CUDA, 0};
        check_status(fk_context_init(gpu0, NULL, &ctx), FK_STATUS_SUCCESS, "context_init_cuda0");
        fk_context_free(ctx);
        check_status(fk_get_device_props(gpu0, &props), FK_STATUS_SUCCESS, "device_props_cuda0");
        printf("  cuda:0 = %s, sm_%d%d, %d SMs\n", props.name, props.cc_major, props.cc_minor, props.multiprocessors);
    } else {
        fk_test_skip("context_init_cuda0", why);
    }

    // Descriptors.
    int64_t   shape[3] = {2, 3, 5};
    float     buf[30];
    fk_tensor t = fk_tensor_make(buf, FK_DTYPE_F32, cpu, 3, shape);
    fk_test_check(t.ndim == 3 && t.stride[0] == 15 && t.stride[1] == 5 && t.stride[2] == 1, "tensor_make", "");
    fk_tensor none = fk_tensor_none();
    fk_test_check(none.data == NULL && none.ndim == 0, "tensor_none", "");

    return fk_test_finish();
}
