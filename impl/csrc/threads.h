/* csrc/threads.h: the thread pool: a job's rows in blocks, or one long row's passes in
 * segments, taken by pthreads from a shared counter, with the same bits for any number
 * of threads. Uses dd_math.h and passes.h; calls no Python API (it runs with the GIL
 * released). Called by bindings.h (rows) and ffi.h (the XLA handler, whose
 * set_threads sets default_threads). */

/* ---- Threads: blocks of rows, or segments of each pass of one long row ----
 *
 * The work is cut into blocks (of whole rows, or segments of one row) that the
 * threads take from a shared counter, so that a thread slowed down (the machine's
 * other work) leaves the rest to the others. Which thread computes a block does not
 * change its bits, and a long row's segments (a count fixed by the row's length, not
 * by the threads) are combined in their order: the result is the same for any number
 * of threads. */

#define BLOCK_BYTES ((size_t)256 << 10) /* input per block of rows: a cache's worth */
#define MAX_SEGS 32                     /* segments of one long row */
#define MAX_THREADS 256
/* Elements a thread must have, to be worth starting: measured on the machine at the
 * first call that could share its work (impl/_threads.py: a thread's start and join
 * against the kernels' time per element), or LOG_SOFTMAX_MIN_PER_THREAD; set through
 * set_per_thread. 2**14 until then. */
static Py_ssize_t per_thread = 1 << 14;

/* The threads a call may use where the caller does not say (set_threads) */
static int default_threads = 1;

typedef struct {
    double m;
    dd sum;
    Py_ssize_t k;
    Py_ssize_t unsure; /* float32 writes the fast path's bound left undecided */
} seg_part;

/* The whole work, shared by the threads */
typedef struct {
    const void *x;
    void *out;
    int32_t *bad; /* or NULL */
    Py_ssize_t nrows, n;
    int f64;
    int out_kind; /* float32 input: OUT_F32, or OUT_F32_ODD */
    int stream;   /* streams(): of the whole output, per thread */
    int nthreads; /* the threads the job runs on, the calling one included */
    Py_ssize_t per_block, nblocks;
    Py_ssize_t next; /* the next block to take (atomic) */
    /* one long row: the pass under way (0: max; 1: partial sums; 2: output) and
     * each segment's results */
    int phase;
    double m;
    lbound L; /* L = log1p(T) and its bound (rounding.h) */
    seg_part seg[MAX_SEGS];
} row_job;

/* The long row's passes beyond the first three (0: max; 1: partial sums; 2: output):
 * the slow path's sums in segments */
enum { PHASE_MEDIUM = 3, PHASE_EXACT = 4 };

/* One thread's share: the rows it left to the caller */
typedef struct {
    row_job *job;
    Py_ssize_t skipped;
} worker;

static inline Py_ssize_t
take_block(row_job *j)
{
    return __atomic_fetch_add(&j->next, 1, __ATOMIC_RELAXED);
}

/* rows_f32 or rows_f64 on nrows rows from row r0 */
static Py_ssize_t
some_rows(const row_job *j, Py_ssize_t r0, Py_ssize_t nrows)
{
    size_t isize = j->f64 ? sizeof(double) : sizeof(float);
    size_t at = (size_t)(r0 * j->n);
    const char *x = (const char *)j->x + at * isize;
    char *out = (char *)j->out + at * out_size(j->f64, j->out_kind);
    int32_t *bad = j->bad ? j->bad + r0 : NULL;
    if (j->f64) {
        return rows_f64((const double *)x, (double *)out, nrows, j->n, bad, j->stream);
    }
    return rows_f32((const float *)x, out, j->out_kind, nrows, j->n, bad);
}

/* Blocks of rows until none is left */
static void *
run_rows(void *arg)
{
    worker *w = (worker *)arg;
    row_job *j = w->job;
    for (Py_ssize_t b; (b = take_block(j)) < j->nblocks;) {
        Py_ssize_t r0 = b * j->per_block;
        Py_ssize_t nr = j->nrows - r0 < j->per_block ? j->nrows - r0 : j->per_block;
        w->skipped += some_rows(j, r0, nr);
    }
    if (j->stream) {
        stream_fence();
    }
    return NULL;
}

/* Segments of the long row's current pass until none is left */
static void *
run_segments(void *arg)
{
    row_job *j = ((worker *)arg)->job;
    size_t isize = j->f64 ? sizeof(double) : sizeof(float);
    for (Py_ssize_t b; (b = take_block(j)) < j->nblocks;) {
        Py_ssize_t at = b * j->per_block;
        Py_ssize_t len = j->n - at < j->per_block ? j->n - at : j->per_block;
        const void *x = (const char *)j->x + (size_t)at * isize;
        void *out = (char *)j->out + (size_t)at * out_size(j->f64, j->out_kind);
        seg_part *p = &j->seg[b];
        if (j->phase == 0) {
            p->m = j->f64 ? max_f64((const double *)x, len) : (double)max_f32((const float *)x, len);
        }
        else if (j->phase == 1 && j->f64) {
            partial_f64((const double *)x, len, j->m, 0.0, &p->sum, &p->k);
        }
        else if (j->phase == 1) {
            double T;
            partial_f32((const float *)x, len, (float)j->m, &T, &p->k);
            p->sum = (dd){T, 0.0};
        }
        else if (j->phase == PHASE_MEDIUM) { /* float32 rows: the middle path's sums */
            medium_sum_f32((const float *)x, len, (float)j->m, &p->sum, &p->k);
        }
        else if (j->phase == PHASE_EXACT && j->f64) {
            exact_sum_f64((const double *)x, len, j->m, &p->sum, &p->k);
        }
        else if (j->phase == PHASE_EXACT) {
            exact_sum_f32((const float *)x, len, (float)j->m, &p->sum, &p->k);
        }
        else if (j->f64) {
            p->unsure = write_row_f64((const double *)x, (double *)out, len, j->m, j->L, j->stream);
        }
        else {
            p->unsure = write_f32((const float *)x, out, j->out_kind, len, (float)j->m, j->L);
        }
    }
    if (j->phase == 2 && j->stream) {
        stream_fence();
    }
    return NULL;
}

/* The whole job on the calling thread, its output streamed where it is large */
static Py_ssize_t
rows_one_thread(row_job *j)
{
    size_t out_bytes = (size_t)(j->nrows * j->n) * out_size(j->f64, j->out_kind);
    j->stream = streams(j->f64, out_bytes);
    Py_ssize_t skipped = some_rows(j, 0, j->nrows);
    if (j->stream) {
        stream_fence();
    }
    return skipped;
}

/* Runs fn on j->nthreads workers of the job, the first on the calling thread and
 * each other on a thread of its own, from block 0; returns the rows they left to the
 * caller. A thread that cannot be started leaves its share to the others. */
static Py_ssize_t
on_threads(void *(*fn)(void *), row_job *j)
{
    worker w[MAX_THREADS];
    pthread_t t[MAX_THREADS];
    int started[MAX_THREADS];
    int nt = j->nthreads < 1 ? 1 : j->nthreads > MAX_THREADS ? MAX_THREADS : j->nthreads;
    j->next = 0;
    for (int i = 0; i < nt; i++) {
        w[i] = (worker){j, 0};
    }
    for (int i = 1; i < nt; i++) {
        started[i] = pthread_create(&t[i], NULL, fn, &w[i]) == 0;
    }
    fn(&w[0]);
    Py_ssize_t skipped = w[0].skipped;
    for (int i = 1; i < nt; i++) {
        if (started[i]) {
            pthread_join(t[i], NULL);
            skipped += w[i].skipped;
        }
    }
    return skipped;
}

static Py_ssize_t
seg_unsure(const row_job *j)
{
    Py_ssize_t unsure = 0;
    for (Py_ssize_t i = 0; i < j->nblocks; i++) {
        unsure += j->seg[i].unsure;
    }
    return unsure;
}

/* One long row, each pass in segments shared by the threads; returns 1 where the
 * row is left to the caller (as rows_f32/rows_f64 would) */
static Py_ssize_t
long_row(row_job *j)
{
    Py_ssize_t per = (j->n + MAX_SEGS - 1) / MAX_SEGS;
    j->per_block = (per + 63) / 64 * 64; /* whole cache lines */
    j->nblocks = (j->n + j->per_block - 1) / j->per_block;
    j->phase = 0;
    on_threads(run_segments, j);
    double m = -INFINITY;
    for (Py_ssize_t i = 0; i < j->nblocks; i++) {
        if (isnan(j->seg[i].m)) {
            /* a segment with a special value, or of -inf only (which another may
             * make a row of the kernels'): the whole row decides, on one thread */
            j->stream = 0;
            return some_rows(j, 0, 1);
        }
        m = j->seg[i].m > m ? j->seg[i].m : m;
    }
    if (j->bad) {
        *j->bad = 0;
    }
    j->m = m;
    j->phase = 1;
    on_threads(run_segments, j);
    Py_ssize_t k = 0;
    dd T = {0.0, 0.0};
    for (Py_ssize_t i = 0; i < j->nblocks; i++) { /* in order: the same bits always */
        k += j->seg[i].k;
        acc_dd(&T.hi, &T.lo, j->seg[i].sum.hi, j->seg[i].sum.lo);
    }
    T = two_sum(T.hi, T.lo);
    if (j->f64 && k == 1 && T.hi < 0x1p-960) {
        row_f64_tiny((const double *)j->x, (double *)j->out, j->n, m);
        return 0;
    }
    j->L = j->f64 ? bound_f64_sum(T, k, j->n) : bound_f32(T.hi + (double)(k - 1), j->n);
    j->phase = 2;
    on_threads(run_segments, j);
    int fmt = j->f64 ? F64 : F32;
    Py_ssize_t unsure = seg_unsure(j);
    if (unsure) {
        /* the slow path in segments on the threads too: the middle path's sums
         * (float32 rows), then the accurate ones where outputs are still open; each
         * combined in order, so the same L for any count of threads */
        stream_fence(); /* the first writes may have been non-temporal */
        stat_add(&slow_stat[fmt][ST_SLOW_ROWS], 1);
        stat_add(&slow_stat[fmt][ST_SLOW_ELEMS], (uint64_t)unsure);
        for (int phase = j->f64 ? PHASE_EXACT : PHASE_MEDIUM; unsure; phase++) {
            j->phase = phase;
            on_threads(run_segments, j);
            Py_ssize_t k2 = 0;
            dd T2 = {0.0, 0.0};
            for (Py_ssize_t i = 0; i < j->nblocks; i++) {
                k2 += j->seg[i].k;
                T2 = dd_add(T2, j->seg[i].sum);
            }
            j->L = phase == PHASE_MEDIUM ? bound_f64_sum(T2, k2, j->n)
                                         : exact_L_from(T2, k2, j->n);
            j->phase = 2;
            on_threads(run_segments, j);
            unsure = seg_unsure(j);
            if (phase == PHASE_EXACT) {
                stat_add(&slow_stat[fmt][ST_EXACT_ROWS], (uint64_t)!j->f64);
                stat_add(&slow_stat[fmt][ST_UNDECIDED], (uint64_t)unsure);
                break;
            }
        }
    }
    stat_add(&slow_stat[fmt][ST_ROWS], 1);
    return 0;
}

/* The rows over up to ``threads`` threads, as many as have per_thread elements each
 * (with 2**14: two threads from 2**15 elements, sixteen from 2**18):
 * blocks of rows, or, for one long row, segments of each pass. Returns the count of
 * rows left to the caller. */
static Py_ssize_t
rows_threads(row_job *j, int threads)
{
    Py_ssize_t total = j->nrows * j->n;
    Py_ssize_t worth = total / __atomic_load_n(&per_thread, __ATOMIC_RELAXED);
    j->nthreads = threads < 1 ? 1 : threads > MAX_THREADS ? MAX_THREADS : threads;
    if (worth < j->nthreads) {
        j->nthreads = worth < 1 ? 1 : (int)worth;
    }
    if (j->nthreads < 2) {
        return rows_one_thread(j);
    }
    size_t isize = j->f64 ? sizeof(double) : sizeof(float);
    size_t out_bytes = (size_t)total * out_size(j->f64, j->out_kind);
    j->stream = streams(j->f64, out_bytes / (size_t)j->nthreads);
    if (j->nrows == 1) {
        return long_row(j);
    }
    Py_ssize_t per = (Py_ssize_t)(BLOCK_BYTES / ((size_t)j->n * isize));
    Py_ssize_t want = 4 * (Py_ssize_t)j->nthreads; /* at least four blocks a thread */
    Py_ssize_t most = (j->nrows + want - 1) / want;
    j->per_block = per < 1 ? 1 : per > most ? most : per;
    j->nblocks = (j->nrows + j->per_block - 1) / j->per_block;
    return on_threads(run_rows, j);
}
