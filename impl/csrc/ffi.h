/* csrc/ffi.h: the XLA FFI handler that runs the row kernels for JAX on CPU
 * (impl/_jax.py): the part of XLA's FFI C ABI it reads, the handler (ffi_log_softmax)
 * and the two Python functions around it (ffi_handler, set_threads). Uses passes.h,
 * threads.h (rows_threads, default_threads) and blocks.h (special_counts_*,
 * special_row_*); the last piece before _kernel.c's method table. */

/* ---- XLA FFI: the row kernels as a custom call for JAX on CPU ----
 *
 * impl/_jax.py registers ffi_handler() with jax.ffi.register_ffi_target and calls it
 * with one operand, x: float32 or float64, rank >= 1, row-major, the slices as its
 * last axis; and one result, out: x's shape and dtype, or uint32 for float32 x, which
 * asks for the float32 bits rounded to odd. Rows with a NaN or a +inf, or of -inf
 * only, get the special values of docs/specification.md (special_row_*).
 *
 * The structs below declare the part of XLA's FFI C ABI (xla/ffi/api/c_api.h) that the
 * handler reads, with the layout that header gives them. XLA keeps that ABI stable
 * within an API major version and asks each handler, through the metadata extension,
 * which version it was written for. */

enum { FFI_API_MAJOR = 0, FFI_API_MINOR = 1 };
enum { FFI_EXT_METADATA = 1 };
enum { FFI_STAGE_EXECUTE = 3 };
enum { FFI_S32 = 4, FFI_U32 = 8, FFI_F32 = 11, FFI_F64 = 12 };
enum { FFI_ARG_BUFFER = 1 };
enum { FFI_INVALID_ARGUMENT = 3 };

typedef struct ffi_ext {
    size_t struct_size;
    int type;
    struct ffi_ext *next;
} ffi_ext;

typedef struct {
    size_t struct_size;
    ffi_ext *ext;
    int dtype;
    void *data;
    int64_t rank;
    int64_t *dims;
} ffi_buffer;

typedef struct { /* the call frame's args and rets */
    size_t struct_size;
    ffi_ext *ext;
    int64_t size;
    int *types;
    void **items;
} ffi_list;

typedef struct {
    size_t struct_size;
    ffi_ext *ext;
    int64_t size;
    int *types;
    void **names;
    void **attrs;
} ffi_attrs;

typedef struct {
    size_t struct_size;
    ffi_ext *ext;
    int major;
    int minor;
} ffi_version;

typedef struct {
    size_t struct_size;
    ffi_ext *ext;
    const char *message;
    int code;
} ffi_error_args;

typedef void *(*ffi_error_create)(ffi_error_args *);

typedef struct { /* the start of XLA_FFI_Api: only the error constructor is used */
    size_t struct_size;
    ffi_ext *ext;
    ffi_version version;
    const void *internal;
    ffi_error_create error_create;
} ffi_api;

typedef struct {
    size_t struct_size;
    ffi_ext *ext;
    const ffi_api *api;
    void *ctx;
    int stage;
    ffi_list args;
    ffi_list rets;
    ffi_attrs attrs;
    void *future;
} ffi_call_frame;

typedef struct {
    size_t struct_size;
    ffi_version version;
    uint32_t traits;
} ffi_metadata;

typedef struct {
    ffi_ext base;
    ffi_metadata *metadata;
} ffi_metadata_ext;

static void *
ffi_error(const ffi_call_frame *cf, const char *message)
{
    ffi_error_args a = {sizeof a, NULL, message, FFI_INVALID_ARGUMENT};
    return cf->api->error_create(&a);
}

/* The special values (docs/specification.md) for a row the kernels declined (a NaN, a
 * +inf, or -inf only), the row whole */
#define DEFINE_SPECIAL_WHOLE(NAME, T, COUNTS, ROW)                                         \
    static void NAME(const T *x, T *out, Py_ssize_t n)                                     \
    {                                                                                      \
        double v[10];                                                                      \
        COUNTS(x, n, v);                                                                   \
        ROW(x, out, n, v[3], v[4] > 0.0 || v[9] == -INFINITY ? ANSWER_NAN : 0);            \
    }

DEFINE_SPECIAL_WHOLE(special_whole_f32, float, special_counts_f32, special_row_f32)
DEFINE_SPECIAL_WHOLE(special_whole_f64, double, special_counts_f64, special_row_f64)

static void *
ffi_log_softmax(ffi_call_frame *cf)
{
    ffi_ext *e = cf->ext;
    if (e != NULL && e->type == FFI_EXT_METADATA) {
        ffi_metadata *md = ((ffi_metadata_ext *)e)->metadata;
        md->version = (ffi_version){sizeof(ffi_version), NULL, FFI_API_MAJOR, FFI_API_MINOR};
        md->traits = 0;
        return NULL;
    }
    if (cf->stage != FFI_STAGE_EXECUTE) {
        return NULL;
    }
    if (cf->args.size != 1 || cf->rets.size != 1 || cf->args.types[0] != FFI_ARG_BUFFER) {
        return ffi_error(cf, "impl_log_softmax: one operand and one result expected");
    }
    const ffi_buffer *x = (const ffi_buffer *)cf->args.items[0];
    const ffi_buffer *o = (const ffi_buffer *)cf->rets.items[0];
    /* out uint32 for float32 x: the float32 bits rounded to odd (impl/_jax.py rounds
     * them again to float16 or bfloat16) */
    int odd = x->dtype == FFI_F32 && o->dtype == FFI_U32;
    if ((x->dtype != FFI_F32 && x->dtype != FFI_F64) || (o->dtype != x->dtype && !odd) ||
        x->rank < 1 || o->rank != x->rank) {
        return ffi_error(cf, "impl_log_softmax: x float32/float64 of rank >= 1, out like x "
                             "(or uint32 for float32 x) expected");
    }
    Py_ssize_t nrows = 1;
    for (int64_t i = 0; i < x->rank; i++) {
        if (o->dims[i] != x->dims[i]) {
            return ffi_error(cf, "impl_log_softmax: the result's shape does not match x");
        }
        nrows *= i < x->rank - 1 ? x->dims[i] : 1;
    }
    Py_ssize_t n = x->dims[x->rank - 1];
    if (nrows == 0 || n == 0) {
        return NULL;
    }
    int32_t *bad = malloc((size_t)nrows * sizeof(int32_t));
    if (bad == NULL) {
        return ffi_error(cf, "impl_log_softmax: out of memory");
    }
    row_job job = {.x = x->data, .out = o->data, .bad = bad, .nrows = nrows, .n = n,
                   .f64 = x->dtype == FFI_F64, .out_kind = odd ? OUT_F32_ODD : OUT_F32};
    /* XLA runs its CPU threads with subnormals flushed to zero: fp_enter (common.h) */
    unsigned int csr = fp_enter();
    rows_threads(&job, __atomic_load_n(&default_threads, __ATOMIC_RELAXED));
    fp_leave(csr);
    /* The rows the kernels declined are all special-valued: their outputs are exact */
    for (Py_ssize_t r = 0; r < nrows; r++) {
        if (bad[r]) {
            if (job.f64) {
                special_whole_f64((const double *)x->data + r * n, (double *)o->data + r * n, n);
            }
            else {
                special_whole_f32((const float *)x->data + r * n, (float *)o->data + r * n, n);
            }
        }
    }
    free(bad);
    return NULL;
}

PyDoc_STRVAR(ffi_handler_doc,
"ffi_handler() -> PyCapsule\n\n"
"The XLA FFI handler that runs the row kernels in a JAX program on CPU (see\n"
"impl/_jax.py), for jax.ffi.register_ffi_target.");

static PyObject *
py_ffi_handler(PyObject *self, PyObject *noargs)
{
    return PyCapsule_New((void *)ffi_log_softmax, NULL, NULL);
}

PyDoc_STRVAR(set_threads_doc,
"set_threads(k) -> None\n\n"
"The threads the XLA handler's calls may use (impl.set_num_threads sets it).");

static PyObject *
py_set_threads(PyObject *self, PyObject *args)
{
    int k;
    if (!PyArg_ParseTuple(args, "i", &k)) {
        return NULL;
    }
    if (k < 1) {
        PyErr_SetString(PyExc_ValueError, "set_threads needs k >= 1");
        return NULL;
    }
    __atomic_store_n(&default_threads, k > MAX_THREADS ? MAX_THREADS : k, __ATOMIC_RELAXED);
    Py_RETURN_NONE;
}
