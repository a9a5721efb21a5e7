/*
 * flashkit.h — the one public header of flashkit, a C library of fused transformer kernels.
 *
 * C11. Needs no CUDA header: streams are passed as `void *` (a cudaStream_t cast; NULL = default stream).
 *
 * Order of this file: version, export macros, status codes, dtypes and devices, tensor descriptor,
 * context, then one section per op family (attention, RMSNorm, RoPE, SwiGLU), then memory estimation.
 *
 * Conventions shared by every op
 *   - Every entry point returns fk_status. On failure, fk_last_error_message() holds a sentence that names
 *     the argument at fault. The library never prints, exits or aborts.
 *   - Tensors are described by fk_tensor: a data pointer, a dtype, a device, and up to 4 extents with
 *     64-bit element strides (not bytes). The last (innermost) stride must be 1 unless an op says otherwise.
 *     Other strides are free (a qkv-packed tensor is three strided views); a stride of 0 broadcasts where an
 *     op allows it.
 *   - Storage dtypes are fp32, fp16 and bf16, with fp32 arithmetic; the CPU backend also takes fp64, computed
 *     in fp64 (so torch.autograd.gradcheck can run in float64). Index tensors are int32 or int64.
 *   - Ops that need scratch memory have a `*_workspace_size` query; the caller passes a buffer at least that
 *     large (on the context's device). A smaller buffer returns FK_STATUS_WORKSPACE_TOO_SMALL, a NULL one
 *     when bytes are needed FK_STATUS_BAD_PARAM_NULL_POINTER; the library
 *     never allocates behind the caller's back during a compute call.
 *
 * Thread safety
 *   - fk_context_t is immutable after fk_context_init: one context may be used by many threads at once.
 *     fk_context_free must not race with any use of that context.
 *   - Workspaces, output tensors and streams belong to the caller: do not use one from two calls at once.
 *   - fk_last_error_message() is per thread.
 */
#ifndef FLASHKIT_H
#define FLASHKIT_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

// --- version -------------------------------------------------------------------------------------------

#define FK_VERSION_MAJOR 0
#define FK_VERSION_MINOR 1
#define FK_VERSION_PATCH 0
#define FK_VERSION_NUMBER (FK_VERSION_MAJOR * 10000 + FK_VERSION_MINOR * 100 + FK_VERSION_PATCH)
#define FK_QUOTE_(x) #x
#define FK_EXPAND_AND_QUOTE_(x) FK_QUOTE_(x)
#define FK_VERSION_STRING                                                                             \
    FK_EXPAND_AND_QUOTE_(FK_VERSION_MAJOR) "." FK_EXPAND_AND_QUOTE_(FK_VERSION_MINOR) "." FK_EXPAND_AND_QUOTE_( \
        FK_VERSION_PATCH)

// --- export macros ---------------------------------------------------------------------------------------

#if defined(_WIN32) && defined(FK_SHARED)
#ifdef FK_BUILD
#define FK_API __declspec(dllexport)
#else
#define FK_API __declspec(dllimport)
#endif
#elif defined(__GNUC__)
#define FK_API __attribute__((visibility("default")))
#else
#define FK_API
#endif

// Run-time version, to detect a header/library mismatch: compare with FK_VERSION_NUMBER.
FK_API unsigned    fk_version_number(void);
FK_API const char *fk_version_string(void);

// --- status codes ----------------------------------------------------------------------------------------
// Grouped by category (thousands). Values are stable once released; FK_STATUS_CATEGORY(s) gives the group.

typedef enum fk_status {
    FK_STATUS_SUCCESS = 0,

    // The caller passed something wrong. Fix the call.
    FK_STATUS_BAD_PARAM                 = 1000, // generic; the message says what
    FK_STATUS_BAD_PARAM_NULL_POINTER    = 1001, // a required pointer (or tensor data) is NULL
    FK_STATUS_BAD_PARAM_SHAPE           = 1002, // extents do not agree between operands, or are < 1
    FK_STATUS_BAD_PARAM_STRIDE          = 1003, // innermost stride is not 1, or a stride is negative
    FK_STATUS_BAD_PARAM_DTYPE_MISMATCH  = 1004, // operands that must share a dtype do not
    FK_STATUS_BAD_PARAM_DEVICE_MISMATCH = 1005, // a tensor lives on another device than the context
    FK_STATUS_BAD_PARAM_OVERFLOW        = 1006, // a size or offset product overflows 64 bits
    FK_STATUS_BAD_PARAM_HEADS           = 1007, // nheads_q is not a multiple of nheads_kv
    FK_STATUS_BAD_PARAM_VALUE           = 1008, // a scalar is out of range (eps < 0, window < -1, ...)
    FK_STATUS_BAD_PARAM_UNKNOWN_DEVICE  = 1009, // device kind is not one of fk_device_kind
    FK_STATUS_BAD_PARAM_NDIM            = 1010, // a tensor has the wrong number of dimensions
    FK_STATUS_WORKSPACE_TOO_SMALL       = 1011, // workspace smaller than the size query returned

    // The call is valid but this build or backend cannot do it.
    FK_STATUS_NOT_SUPPORTED          = 2000, // generic; the message says what
    FK_STATUS_NOT_SUPPORTED_HEAD_DIM = 2001, // head dim > 256 (or not built on this backend)
    FK_STATUS_NOT_SUPPORTED_DTYPE    = 2002, // dtype not handled by this op/backend
    FK_STATUS_NOT_SUPPORTED_ARCH     = 2003, // GPU architecture older than sm_80
    FK_STATUS_NOT_SUPPORTED_FEATURE  = 2004, // feature combination not implemented on this backend yet
    FK_STATUS_NOT_SUPPORTED_BACKEND  = 2005, // CUDA asked for, but this library was built without CUDA

    // The environment failed.
    FK_STATUS_NO_DEVICE     = 3000, // CUDA built in, but no such device is present
    FK_STATUS_CUDA_ERROR    = 3001, // a CUDA runtime call or launch failed; the message has CUDA's text
    FK_STATUS_ALLOC_FAILED  = 3002, // host allocation failed (context creation only)
    FK_STATUS_COMM_ERROR    = 3003, // NCCL could not be loaded, or an NCCL call failed; the message has NCCL's text

    FK_STATUS_INTERNAL = 4000, // a bug in flashkit: please report it with the message
} fk_status;

#define FK_STATUS_CATEGORY(s) (((int)(s) / 1000) * 1000)

// Static text for a status code ("bad parameter: null pointer"). Never NULL.
FK_API const char *fk_status_string(fk_status status);
// This thread's detailed message for its last failed call ("attn: k.stride[3] must be 1, got 2").
// Empty string when the last call on this thread succeeded. Valid until this thread's next flashkit call.
FK_API const char *fk_last_error_message(void);

// --- dtypes and devices ----------------------------------------------------------------------------------

typedef enum fk_dtype {
    FK_DTYPE_F32   = 0,
    FK_DTYPE_F16   = 1,
    FK_DTYPE_BF16  = 2,
    FK_DTYPE_INT32 = 3, // index tensors only (cu_seqlens, positions)
    FK_DTYPE_INT64 = 4, // index tensors only
    FK_DTYPE_F64   = 5, // CPU backend only, computed in fp64: for gradient checks and high-precision references
} fk_dtype;

FK_API size_t      fk_dtype_size(fk_dtype dtype); // bytes per element; 0 for an unknown dtype
FK_API const char *fk_dtype_name(fk_dtype dtype); // "f32", "f16", "bf16", "i32", "i64", "f64", "?"

typedef enum fk_device_kind {
    FK_DEVICE_CPU  = 1,
    FK_DEVICE_CUDA = 2,
} fk_device_kind;

typedef struct fk_device {
    fk_device_kind kind;
    int            index; // CUDA device ordinal; 0 for the CPU
} fk_device;

// What this build has and what this machine shows. Never fails.
typedef struct fk_build_info {
    int cuda_compiled;    // 1 when the library was built with the CUDA backend
    int openmp;           // 1 when the CPU backend was built with OpenMP
    int cpu_simd;         // widest SIMD used at run time: 0 portable, 256 AVX2+FMA, 512 AVX-512F
    int cuda_device_count; // devices visible now (0 without CUDA or without a GPU)
} fk_build_info;
FK_API void fk_get_build_info(fk_build_info *info);

typedef struct fk_device_props {
    char    name[128];
    int     cc_major, cc_minor;  // compute capability (0 for the CPU)
    int     multiprocessors;     // SMs for CUDA, logical cores for the CPU
    int64_t memory_bytes;        // device memory (0 for the CPU: not queried)
} fk_device_props;
// FK_STATUS_NOT_SUPPORTED_BACKEND without CUDA compiled in; FK_STATUS_NO_DEVICE for a missing ordinal.
FK_API fk_status fk_get_device_props(fk_device device, fk_device_props *props);

// --- tensor descriptor -----------------------------------------------------------------------------------

#define FK_MAX_DIMS 4

typedef struct fk_tensor {
    void     *data;               // NULL marks an optional tensor as absent
    fk_dtype  dtype;
    fk_device device;
    int       ndim;               // 1..FK_MAX_DIMS
    int64_t   shape[FK_MAX_DIMS]; // extents, outermost first
    int64_t   stride[FK_MAX_DIMS]; // element strides, outermost first
} fk_tensor;

// A contiguous (row-major) descriptor; ndim is taken from how many extents are given (1..4).
FK_API fk_tensor fk_tensor_make(void *data, fk_dtype dtype, fk_device device, int ndim, const int64_t *shape);
// The absent optional tensor (data NULL, ndim 0).
FK_API fk_tensor fk_tensor_none(void);

// --- context ---------------------------------------------------------------------------------------------
// One per device. Caches what every call needs and is slow to query (SM count, shared-memory limits,
// CPU thread count). Immutable after creation, so shareable across threads.

typedef struct fk_context *fk_context_t;

typedef struct fk_context_options {
    int num_threads; // CPU backend threads; 0 = OpenMP's default (OMP_NUM_THREADS or all cores)
} fk_context_options;

// options may be NULL for the defaults. Creating a CUDA context selects nothing globally: every call
// sets the device for its own duration and restores the caller's device.
FK_API fk_status fk_context_init(fk_device device, const fk_context_options *options, fk_context_t *ctx);
FK_API void      fk_context_free(fk_context_t ctx); // NULL is a no-op
FK_API fk_device fk_context_device(fk_context_t ctx);
FK_API int       fk_context_num_threads(fk_context_t ctx);

// --- attention -------------------------------------------------------------------------------------------
// FlashAttention semantics (Dao et al.): O = softmax(scale * Q K^T + bias, masked) V, computed in tiles with
// an online softmax: memory O(seqlen), never the (Sq x Sk) score matrix.
//
// Operands (fixed-length batch):
//   q   : [batch, seqlen_q, nheads_q,  head_dim]   fp32 | fp16 | bf16 (| fp64 on the CPU)
//   k   : [batch, seqlen_k, nheads_kv, head_dim]   same dtype as q
//   v   : [batch, seqlen_k, nheads_kv, head_dim]   same dtype as q
//   o   : [batch, seqlen_q, nheads_q,  head_dim]   same dtype as q (output)
//   lse : [batch, nheads_q, seqlen_q]              fp32 (fp64 when q is fp64), natural-log log-sum-exp of the scaled, capped,
//                                                  biased, masked scores; optional in forward, required
//                                                  in backward. A row that sees no key has lse = -inf.
// Operands (variable length, when cu_seqlens_q.data != NULL): sequences are packed along the token axis.
//   q, o : [total_q, nheads_q,  head_dim]; k, v : [total_k, nheads_kv, head_dim]
//   cu_seqlens_q, cu_seqlens_k : [batch + 1] int32, cumulative offsets starting at 0, non-decreasing
//   lse  : [nheads_q, total_q]
//   max_seqlen_q / max_seqlen_k : upper bounds of the per-sequence lengths (used to size launches)
//   The CPU backend checks the offsets (within [0, total], non-decreasing, lengths <= max_seqlen) and returns
//   FK_STATUS_BAD_PARAM_VALUE. On CUDA the offsets stay on the device and the host does not read them (no sync):
//   a sequence whose offsets fall outside [0, total] is treated as empty and a length beyond max_seqlen is cut
//   to it, so bad offsets give unspecified output for those rows but never an out-of-bounds access.
// Broadcast: nheads_q % nheads_kv == 0; query head h reads key/value head h / (nheads_q / nheads_kv).
// Head dim: 1..256 on the CPU; on CUDA see the README's support matrix. Innermost strides must be 1.
//
// Masking, for query row i (0-based within its sequence) and key column j, with sq, sk that sequence's
// lengths; causal and windows are aligned to the bottom-right corner (FlashAttention >= 2.1):
//   causal:  key j is visible iff j <= i + sk - sq
//   window:  key j is visible iff  i + sk - sq - window_left <= j <= i + sk - sq + window_right
//            (window_left/right = -1 means unbounded on that side; causal is window_right = 0)
//   a row that sees no key gives o = 0 and lse = -inf.
// Score, before the softmax:
//   s = scale * q.k ; if softcap > 0: s = softcap * tanh(s / softcap) ; s += alibi bias
//   alibi bias = -slope[b?][h] * |i + sk - sq - j|   (FlashAttention's convention)
//
// Backward (fk_attn_bwd) recomputes the probabilities from q, k and lse. It reads q, k, v, o, lse and do_,
// and writes dq, dk, dv (same shapes and dtype as q, k, v). dk and dv are summed over the query heads of
// each group (GQA/MQA). `deterministic` = 1 asks for bit-identical results from run to run (the CPU
// backend always is).

typedef struct fk_attn_args {
    fk_tensor q, k, v, o, lse;       // forward operands (o written by fwd, read by bwd)
    fk_tensor do_, dq, dk, dv;       // backward operands (ignored by fwd)
    fk_tensor cu_seqlens_q;          // [batch + 1] int32; data NULL = fixed-length batch
    fk_tensor cu_seqlens_k;          // [batch + 1] int32; required when cu_seqlens_q is given
    int64_t   max_seqlen_q;          // variable length only
    int64_t   max_seqlen_k;          // variable length only
    fk_tensor alibi_slopes;          // fp32 [nheads_q] or [batch, nheads_q]; data NULL = no ALiBi
    float     softmax_scale;         // 0 = 1/sqrt(head_dim) (the default set by fk_attn_args_init)
    float     softcap;               // 0 = off
    int       causal;                // 0 or 1
    int64_t   window_left;           // -1 = unbounded
    int64_t   window_right;          // -1 = unbounded
    int       deterministic;         // backward only
} fk_attn_args;

// Fills the defaults: every tensor absent, scale 0 (=1/sqrt(d)), softcap 0, causal 0, windows -1.
// Always start from this: a zeroed struct would mean "window of 0".
FK_API void fk_attn_args_init(fk_attn_args *args);

FK_API fk_status fk_attn_fwd_workspace_size(fk_context_t ctx, const fk_attn_args *args, size_t *bytes);
FK_API fk_status fk_attn_fwd(fk_context_t ctx, const fk_attn_args *args, void *workspace, size_t workspace_bytes,
                             void *stream);
FK_API fk_status fk_attn_bwd_workspace_size(fk_context_t ctx, const fk_attn_args *args, size_t *bytes);
FK_API fk_status fk_attn_bwd(fk_context_t ctx, const fk_attn_args *args, void *workspace, size_t workspace_bytes,
                             void *stream);

// --- RMSNorm ---------------------------------------------------------------------------------------------
// y = h * rstd * (weight_offset + w),  rstd = 1 / sqrt(mean(h^2) + eps),  per row, in fp32.
// h = x                 when residual is absent;
// h = x + residual      when residual is given, and h is written to residual_out (the new residual stream).
// Operands:
//   x, residual, residual_out, y : [rows, hidden]  (row stride free, inner stride 1); one dtype
//   weight                       : [hidden]         any float dtype
//   rstd                         : [rows] fp32      optional in forward (saved for backward)
// weight_offset: 0, or 1 for Gemma's "(1 + w)" convention.
// Backward: reads dy, h (pass residual_out when the add was fused, else x), weight, rstd; optional
// dresidual_out (gradient arriving at residual_out from later layers, added to dh). Writes dx [rows, hidden]
// (which is also the gradient of `residual` when the add was fused) and dweight [hidden] (any float dtype;
// the sum over rows, accumulated in fp32 through the workspace). `deterministic` = 1 asks for a dweight that is
// bit-identical from run to run; 0 (the default, as for attention) lets a GPU hand the last rows out at run
// time, which changes dweight's fp32 summation order (not dx). The CPU backend always is deterministic.

typedef struct fk_rmsnorm_args {
    fk_tensor x, residual, residual_out, weight, y, rstd; // forward
    fk_tensor dy, dresidual_out, dx, dweight;             // backward (x above is h)
    float     eps;                                        // default 1e-6
    float     weight_offset;                              // 0 (default) or 1
    int       deterministic;                              // backward only; 0 (default) or 1
} fk_rmsnorm_args;

FK_API void      fk_rmsnorm_args_init(fk_rmsnorm_args *args);
FK_API fk_status fk_rmsnorm_fwd(fk_context_t ctx, const fk_rmsnorm_args *args, void *stream);
FK_API fk_status fk_rmsnorm_bwd_workspace_size(fk_context_t ctx, const fk_rmsnorm_args *args, size_t *bytes);
FK_API fk_status fk_rmsnorm_bwd(fk_context_t ctx, const fk_rmsnorm_args *args, void *workspace,
                                size_t workspace_bytes, void *stream);

// --- RoPE ------------------------------------------------------------------------------------------------
// Rotary position embedding on the first rotary_dim features of every head of q and k; the other features
// are copied unchanged. Pairs: half-split (GPT-NeoX) pairs feature i with i + rotary_dim/2; interleaved
// (GPT-J) pairs 2i with 2i+1. For token position p and pair i:
//   theta = p * inv_freq[i],  inv_freq[i] = base^(-2i / rotary_dim)        (when cos/sin are absent)
//   (x1, x2) -> (x1 cos - x2 sin, x1 sin + x2 cos)
// Operands:
//   q, q_out : [batch, seqlen, nheads_q, head_dim];  k, k_out : [batch, seqlen, nheads_k, head_dim]
//              k is optional (absent: only q); q_out may be q itself (in place), likewise k_out.
//   positions: [batch, seqlen] int32 or int64 (stride 0 broadcasts); absent: p = pos_offset + s
//   cos, sin : [max_position, rotary_dim / 2], fp32 or q's dtype; absent: computed from base in fp32
// Backward is the inverse rotation: call fk_rope_bwd with q/k = the incoming gradients and q_out/k_out =
// the gradients of the inputs.

typedef struct fk_rope_args {
    fk_tensor q, k, q_out, k_out;
    fk_tensor positions;
    fk_tensor cos, sin;
    int64_t   rotary_dim;  // 0 = head_dim; must be even and <= head_dim
    int       interleaved; // 0 half-split (GPT-NeoX, the default), 1 interleaved (GPT-J)
    int64_t   pos_offset;  // used when positions is absent
    float     base;        // default 10000
} fk_rope_args;

FK_API void      fk_rope_args_init(fk_rope_args *args);
FK_API fk_status fk_rope_fwd(fk_context_t ctx, const fk_rope_args *args, void *stream);
FK_API fk_status fk_rope_bwd(fk_context_t ctx, const fk_rope_args *args, void *stream);

// --- SwiGLU ----------------------------------------------------------------------------------------------
// out = silu(gate) * up, silu(g) = g / (1 + exp(-g)).
// Operands: gate, up, out : [rows, width], one dtype, row strides free. A concatenated [rows, 2*width]
// tensor is passed as two strided views (gate = columns [0, width), up = columns [width, 2*width)).
// Backward: reads dout, gate, up; writes dgate, dup (which may be views of one [rows, 2*width] tensor).

typedef struct fk_swiglu_args {
    fk_tensor gate, up, out;
    fk_tensor dout, dgate, dup;
} fk_swiglu_args;

FK_API void      fk_swiglu_args_init(fk_swiglu_args *args);
FK_API fk_status fk_swiglu_fwd(fk_context_t ctx, const fk_swiglu_args *args, void *stream);
FK_API fk_status fk_swiglu_bwd(fk_context_t ctx, const fk_swiglu_args *args, void *stream);

// --- memory estimation -----------------------------------------------------------------------------------
// Pure functions: no context, no device. Built on the same size functions the kernels use, so the figures
// match what a call will need.

typedef struct fk_attn_shape {
    int64_t  batch, seqlen_q, seqlen_k, nheads_q, nheads_kv, head_dim;
    fk_dtype dtype;  // storage dtype of q, k, v, o
    int      causal; // naive path materializes the full matrix either way; kept for reports
} fk_attn_shape;

typedef struct fk_attn_memory {
    uint64_t inputs;    // q, k, v (and do_ for backward)
    uint64_t outputs;   // o (forward); dq, dk, dv (backward)
    uint64_t lse;       // fp32 [batch, nheads_q, seqlen_q]
    uint64_t workspace; // flash: the workspace size query; naive: the score and probability matrices
    uint64_t extra;     // everything beyond inputs: outputs + lse + workspace
} fk_attn_memory;

// naive = 1 counts the matmul-softmax-matmul path that materializes scores. backward = 1 counts the
// backward pass (it keeps the forward's o and lse as inputs). device picks whose workspace rule is used
// (CPU workspace depends on num_threads; pass 0 for the library default).
FK_API fk_status fk_estimate_attn_memory(const fk_attn_shape *shape, int naive, int backward, fk_device device,
                                         int num_threads, fk_attn_memory *out);

typedef struct fk_model_config {
    int64_t  vocab, hidden, intermediate, layers, nheads, nheads_kv; // Llama-style decoder
    int64_t  batch, seqlen;
    fk_dtype param_dtype;   // weights and activations (bf16 typical); gradients in the same dtype
    int      master_fp32;   // 1: fp32 master weights kept beside low-precision ones (mixed precision)
    int      flash;         // 1: flash attention (no score matrix kept); 0: naive attention
    int      recompute;     // 1: activation checkpointing per layer (only layer inputs kept)
} fk_model_config;

typedef struct fk_train_memory {
    uint64_t parameters, gradients, optimizer;  // optimizer = Adam's two fp32 moments (+ fp32 master)
    uint64_t activations;                       // saved for backward, all layers
    uint64_t attention_scores;                  // part of activations spent on score/probability matrices
    uint64_t peak_transient;                    // largest temporary of one layer's backward / the logits
    uint64_t total;
} fk_train_memory;

FK_API fk_status fk_estimate_train_step_memory(const fk_model_config *config, fk_train_memory *out);

// --- attention merge and ring attention (context parallelism) ----------------------------------------------
// Attention over a set of keys is the LSE-weighted mean of attention over disjoint parts of that set. For one
// query row with partial results (o_a, lse_a) and (o_p, lse_p) over two disjoint key sets:
//   lse = log(exp(lse_a) + exp(lse_p))
//   o   = exp(lse_a - lse) * o_a + exp(lse_p - lse) * o_p
// computed in fp32 around the larger LSE. A part with lse = -inf saw no key: its o is never read (it may hold
// anything, NaN included), so it contributes nothing. Both -inf gives o = 0, lse = -inf.
//
// fk_attn_merge updates an accumulator (out, lse) in place with one partial (part_out, part_lse): out and lse
// are read and written. Start an accumulator by filling lse with -inf (out need not be initialized), or from a
// first partial. This is split-KV decode's reduction and ring attention's running merge.
// Operands (fixed-length):
//   out, part_out : [batch, seqlen, nheads, head_dim]  fp32 | fp16 | bf16 (the two may differ)
//   lse, part_lse : [batch, nheads, seqlen]            fp32
// Operands (packed, as in variable-length attention): out, part_out [tokens, nheads, head_dim];
//   lse, part_lse [nheads, tokens]. Strides are free (inner stride 1): a merge may target a view.
// Works on CPU and CUDA contexts; fp64 is not supported.

typedef struct fk_attn_merge_args {
    fk_tensor out, lse;           // the accumulator: read and written
    fk_tensor part_out, part_lse; // one partial result: read
} fk_attn_merge_args;

FK_API void      fk_attn_merge_args_init(fk_attn_merge_args *args);
FK_API fk_status fk_attn_merge(fk_context_t ctx, const fk_attn_merge_args *args, void *stream);

// Ring attention: one sequence split over the N ranks of an NCCL communicator (context parallelism). Each
// rank passes its local slice of q, k, v (and o, lse, do_, dq, dk, dv) in `attn`, with seqlen = the local
// length S (total length N * S); every rank calls with the same shapes and options. K/V slices travel around
// the ring (rank r sends to r+1, receives from r-1) on a communication stream while the caller's stream runs
// attention on the slice already held; partial results are merged by LSE (fk_attn_merge) in fp32.
// Backward reads forward's o and lse (the full-sequence ones each rank got from fk_ring_attn_fwd); dq
// accumulates locally in fp32, dK/dV accumulate in fp32 while travelling with their K/V and are sent home at
// the end.
//
// Layouts (which global tokens rank r holds, in this order, as its local rows 0..S-1):
//   FK_RING_LAYOUT_CONTIGUOUS: tokens [r*S, (r+1)*S). With causal, rank r does r+1 blocks of work: unbalanced.
//   FK_RING_LAYOUT_ZIGZAG:     the sequence is cut into 2N chunks of S/2 tokens; rank r holds chunk r then
//                              chunk 2N-1-r. With causal every rank does the same work. S must be even.
// Supported: fp32, fp16, bf16; head dims of fk_attn_fwd/bwd on CUDA; GQA/MQA; causal (either layout); softcap;
// scale. Not supported across the ring (FK_STATUS_NOT_SUPPORTED_FEATURE): varlen, windows, ALiBi.
// The communicator is the caller's (flashkit never creates or destroys one): pass an ncclComm_t as
// `nccl_comm`; its device must be the context's. NCCL is loaded at run time (dlopen "libnccl.so.2", or the
// path in the environment variable FK_NCCL_LIBRARY); without it the calls return FK_STATUS_COMM_ERROR. A build
// without CUDA or without nccl.h returns FK_STATUS_NOT_SUPPORTED_BACKEND; a CPU context
// FK_STATUS_NOT_SUPPORTED_FEATURE. A call that fails after it started communicating leaves the communicator in
// an unknown state (as NCCL's own calls do).
// Streams: `stream` is the compute stream (inputs are read and outputs written in its order); comm_stream is
// the stream NCCL runs on (NULL: the call creates one and releases it). The two are joined with events: when
// the work on `stream` is done, so is all of the call's communication.

typedef enum fk_ring_layout {
    FK_RING_LAYOUT_CONTIGUOUS = 0,
    FK_RING_LAYOUT_ZIGZAG     = 1,
} fk_ring_layout;

typedef struct fk_ring_attn_args {
    fk_attn_args   attn;        // this rank's slice (fixed-length batch; seqlen_q == seqlen_k == local S)
    void          *nccl_comm;   // ncclComm_t of the ring, on the context's device
    fk_ring_layout layout;      // default FK_RING_LAYOUT_ZIGZAG
    void          *comm_stream; // cudaStream_t for communication; NULL = one per call
} fk_ring_attn_args;

// Fills the defaults: attn as fk_attn_args_init, no communicator, zigzag layout, comm_stream NULL.
FK_API void      fk_ring_attn_args_init(fk_ring_attn_args *args);
FK_API fk_status fk_ring_attn_fwd_workspace_size(fk_context_t ctx, const fk_ring_attn_args *args, size_t *bytes);
FK_API fk_status fk_ring_attn_fwd(fk_context_t ctx, const fk_ring_attn_args *args, void *workspace,
                                  size_t workspace_bytes, void *stream);
FK_API fk_status fk_ring_attn_bwd_workspace_size(fk_context_t ctx, const fk_ring_attn_args *args, size_t *bytes);
FK_API fk_status fk_ring_attn_bwd(fk_context_t ctx, const fk_ring_attn_args *args, void *workspace,
                                  size_t workspace_bytes, void *stream);

// --- decode with a KV cache (flash_attn_with_kvcache) -------------------------------------------------------
// Attention of a few new query tokens against a cache of keys and values, with optional new keys and values
// appended to the cache in place first (incremental decoding; seqlen_q > 1 is speculative decoding).
// Operands:
//   q       : [batch, seqlen_q, nheads_q, head_dim]                  fp32 | fp16 | bf16 (| fp64 on the CPU)
//   k_cache, v_cache (same shape; read, and written where new keys land):
//             contiguous: [batch_cache, seqlen_cache, nheads_kv, head_dim]   capacity = seqlen_cache
//             paged:      [num_blocks, page_size, nheads_kv, head_dim]       capacity = max_blocks * page_size
//                         (paged when block_table is given)
//   k, v    : optional [batch, seqlen_new, nheads_kv, head_dim], both or neither; row i of sequence b is written
//             to cache row cache_seqlens[b] + i before the attention, which then sees those rows too
//   cache_seqlens   : int32 [batch], keys already in the cache per sequence; sequence b attends to
//                     seqlen_k(b) = cache_seqlens[b] + seqlen_new keys, which must be <= capacity
//   cache_batch_idx : optional int32 [batch] (contiguous cache only): sequence b uses cache entry
//                     cache_batch_idx[b] (absent: entry b, and batch_cache >= batch); entries must not repeat
//                     when k, v are appended
//   block_table     : optional int32 [batch, max_blocks]: key j of sequence b lives in block
//                     block_table[b][j / page_size], row j % page_size; only the blocks that hold keys
//                     < seqlen_k(b) are read and must be in [0, num_blocks)
//   o       : [batch, seqlen_q, nheads_q, head_dim], q's dtype;  lse : optional fp32 [batch, nheads_q, seqlen_q]
//   alibi_slopes, softmax_scale, softcap, causal, window_left/right: as fk_attn_args, with seqlen_k(b) as the
//             key length (causal: query i sees keys j <= seqlen_k(b) - seqlen_q + i).
// Rotary embedding is not part of this call: rotate q and the new k first (fk_rope_fwd with positions
// cache_seqlens[b] + i), as the Python binding's flash_attn_with_kvcache does.
// The CPU backend reads cache_seqlens, cache_batch_idx and block_table and checks their values
// (FK_STATUS_BAD_PARAM_VALUE). On CUDA (fp32, fp16, bf16; head dims 1..256; every other feature above) they stay
// on the device and the host does not read them (no sync): a sequence whose cache_seqlens[b] is negative or leaves
// no room for seqlen_new rows, or whose cache_batch_idx[b] is outside [0, k_cache.shape[0]), has no keys (o = 0,
// lse = -inf, nothing appended); a key whose block_table entry is outside [0, num_blocks) is skipped (not read,
// not written). Bad values so give unspecified output for those rows but never an out-of-bounds access; repeated
// cache_batch_idx entries with new k, v race. num_splits (split-KV: each sequence's keys in that many chunks,
// partials merged by LSE as fk_attn_merge does; 0 = the backend's choice): both backends honour it up to 128 and
// the capacity's key tiles (CPU tiles of 64 keys, CUDA tiles of 32; fp64 never splits); for a fixed
// num_splits >= 1 the CPU's results do not depend on the thread count, and CUDA's are the same from run to run.
// The workspace (split partials) depends on shapes and num_splits only, never on cache_seqlens.

typedef struct fk_attn_kvcache_args {
    fk_tensor q, k_cache, v_cache, k, v, o, lse;
    fk_tensor cache_seqlens;   // int32 [batch]; required
    fk_tensor cache_batch_idx; // int32 [batch]; data NULL = identity
    fk_tensor block_table;     // int32 [batch, max_blocks]; data NULL = contiguous cache
    fk_tensor alibi_slopes;    // fp32 [nheads_q] or [batch, nheads_q]; data NULL = no ALiBi
    float     softmax_scale;   // 0 = 1/sqrt(head_dim)
    float     softcap;         // 0 = off
    int       causal;          // 0 or 1
    int64_t   window_left;     // -1 = unbounded
    int64_t   window_right;    // -1 = unbounded
    int       num_splits;      // >= 0; 0 = backend's choice
} fk_attn_kvcache_args;

// Fills the defaults: every tensor absent, scale 0, softcap 0, causal 0, windows -1, num_splits 0.
FK_API void      fk_attn_kvcache_args_init(fk_attn_kvcache_args *args);
FK_API fk_status fk_attn_kvcache_workspace_size(fk_context_t ctx, const fk_attn_kvcache_args *args, size_t *bytes);
FK_API fk_status fk_attn_fwd_kvcache(fk_context_t ctx, const fk_attn_kvcache_args *args, void *workspace,
                                     size_t workspace_bytes, void *stream);

#ifdef __cplusplus
}
#endif

#endif // FLASHKIT_H
