/*
 * fk_test.h — the small harness every test driver shares: seeded random data, poisoning, error metrics,
 * one-line case signatures, filters, pass/fail/skip counting. Tests call only the public API plus this.
 *
 * Driver flags (parsed by fk_test_init): -p SUBSTRING runs only cases whose signature contains it;
 * -b cpu|cuda runs only that backend; -v prints passing cases too.
 */
#ifndef FK_TEST_H
#define FK_TEST_H

#include "flashkit.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct fk_rng {
    uint64_t s;
} fk_rng;

void   fk_rng_seed(fk_rng *r, uint64_t seed);
double fk_rng_uniform(fk_rng *r); // [0, 1)
double fk_rng_normal(fk_rng *r);  // N(0, 1)

// Fills n elements of a host buffer of dtype dt with N(0, scale^2), rounded to the dtype; also writes the
// rounded values as double into ref (may be NULL), so references see exactly what the kernel sees.
void fk_fill_normal(void *buf, fk_dtype dt, int64_t n, double scale, fk_rng *r, double *ref);
// NaN in every element (float dtypes), so unwritten outputs are caught.
void fk_poison(void *buf, fk_dtype dt, int64_t n);
double fk_get(const void *buf, fk_dtype dt, int64_t i);       // element i as double
void   fk_set(void *buf, fk_dtype dt, int64_t i, double x);  // store with round-to-nearest-even
// Round a double through a dtype (what a store of that dtype keeps).
double fk_round_to(fk_dtype dt, double x);
// Machine epsilon of a float dtype (2^-23, 2^-10, 2^-7, 2^-52).
double fk_dtype_eps(fk_dtype dt);

// Error of got (dtype dt, n elements, element i at got[i * 1]) against a float64 reference.
typedef struct fk_err {
    double  max_abs;   // max |got - ref|
    double  max_ref;   // max |ref|
    double  rel;       // ||got - ref||_2 / ||ref||_2
    int64_t nonfinite; // NaN/Inf count in got (a failure by itself)
    int64_t first_bad; // index of the first NaN/Inf, -1 if none
} fk_err;
fk_err fk_compare(const void *got, fk_dtype dt, const double *ref, int64_t n);
fk_err fk_compare_d(const double *got, const double *ref, int64_t n);

// --- driver bookkeeping --------------------------------------------------------------------------------
void fk_test_init(int argc, char **argv, const char *driver_name);
// Should a case with this signature run? (filter flags)
bool fk_test_selected(const char *signature, fk_device_kind backend);
// Record a case result with its signature and a detail string (errors, tolerance).
void fk_test_pass(const char *signature, const char *detail);
void fk_test_fail(const char *signature, const char *detail);
void fk_test_skip(const char *signature, const char *reason);
// Assert helper for plain checks: records a pass or a fail; returns cond.
bool fk_test_check(bool cond, const char *signature, const char *detail);
// A bad-input rule: the size query returned `query`, the call `call`; both must be `want`, each with a non-empty
// message (query_msg / call_msg: fk_last_error_message() was set right after each). The detail names all three.
bool fk_test_expect_status(const char *signature, fk_status want, fk_status query, bool query_msg, fk_status call,
                           bool call_msg);
// Prints the summary and returns the process exit code (non-zero on any failure or when nothing ran).
int fk_test_finish(void);

// Is a CUDA device usable from this build and machine? Sets *why when not.
bool fk_test_have_cuda(const char **why);

// Device buffers for GPU cases, through the library-independent CUDA runtime when present. Without a
// CUDA build these return NULL, and callers skip. Host<->device copies return false on failure.
void *fk_test_dev_alloc(size_t bytes);
void  fk_test_dev_free(void *p);
bool  fk_test_h2d(void *dst, const void *src, size_t bytes);
bool  fk_test_d2h(void *dst, const void *src, size_t bytes);
bool  fk_test_dev_sync(void);

#endif // FK_TEST_H
