/* stattn native CPU forward kernels (float32 in, float32 math, float32 out).
 *
 * Compiled at first use by stattn/ops/native/__init__.py with the head count and head dim fixed at
 * compile time (-DNUM_HEADS=H -DHEAD_DIM=D), the way a Triton constexpr specialises a kernel: with
 * trip counts of 4 or 8 known, every loop below vectorises without prologue/epilogue overhead.
 *
 * Both ops reduce to one routine on small contiguous blocks: the rows of one sequence (a joint's
 * frames, or a group's joints in one frame) are copied from the strided inputs into local buffers,
 * attended, and written back. Rows are `C = H * D` channels (a token's heads side by side).
 *
 * Strides are in elements, for dims (B, F, N); a token's H * D channels must be contiguous.
 */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* Below this many output floats a call runs on one thread: waking a team costs more than the work
 * (the grain size torch's own parallel_for uses). */
#define PARALLEL_GRAIN 32768

#define H NUM_HEADS
#define D HEAD_DIM
#define C (NUM_HEADS * HEAD_DIM)

/* In-place exp(x) for x <= 0 (scores minus their row max; -inf = masked maps to 0):
 * 2^(x log2 e) = 2^n 2^r with n = round(x log2 e), r in [-0.5, 0.5] ln 2, and a degree-6 polynomial for
 * e^r (relative error < 2e-7). Below -87 (e^-87 ~ 1.6e-38, under the float32 normal range) the result
 * is exactly 0, selected, not computed: a masked key (-inf) then weighs exactly nothing, however large
 * its value (1.6e-38 x 3e38 would be 5). Written on GCC/clang vector types because the 2^n bit trick needs a
 * float<->int reinterpretation, which the auto-vectoriser refuses but a vector cast does for free;
 * libm's expf is not vectorised at all without -ffast-math. */
typedef float vfloat __attribute__((vector_size(64)));
typedef int32_t vint __attribute__((vector_size(64)));
#define LANES 16

static inline vfloat exp_nonpos_v(vfloat x) {
    const vint below = x < -87.f; /* lanes set to -1 where true */
    x = (vfloat)(((vint)x & ~below) | ((vint)((vfloat){} - 87.f) & below));
    const vfloat t = x * 1.44269504088896341f;
    const vint n = __builtin_convertvector(t - 0.5f, vint); /* truncation = round for t <= 0 */
    const vfloat r = (t - __builtin_convertvector(n, vfloat)) * 0.693147180559945309f;
    vfloat p = (vfloat){} + 1.f / 720.f;
    p = p * r + 1.f / 120.f;
    p = p * r + 1.f / 24.f;
    p = p * r + 1.f / 6.f;
    p = p * r + 0.5f;
    p = p * r + 1.f;
    p = p * r + 1.f;
    return (vfloat)((vint)(p * (vfloat)((n + 127) << 23)) & ~below);
}

static void exp_nonpos_inplace(float *s, int64_t count) {
    int64_t y = 0;
    for (; y + LANES <= count; y += LANES) {
        vfloat x;
        memcpy(&x, s + y, sizeof x);
        x = exp_nonpos_v(x);
        memcpy(s + y, &x, sizeof x);
    }
    if (y < count) { /* tail: pad a vector with zeros (exp 0 = 1, discarded) */
        vfloat x = {};
        memcpy(&x, s + y, sizeof(float) * (size_t)(count - y));
        x = exp_nonpos_v(x);
        memcpy(s + y, &x, sizeof(float) * (size_t)(count - y));
    }
}

/* out[x] = scale * sum_d in[x * D + d] for x < n: each head's dot product from its D products. */
static inline void head_sums(const float *restrict in, int64_t n, float *restrict out, float scale) {
    for (int64_t x = 0; x < n; ++x) {
        float a = 0.f;
        for (int64_t d = 0; d < D; ++d) a += in[x * D + d];
        out[x] = a * scale;
    }
}

typedef struct {
    float *prod, *w, *s, *mx, *den, *q, *k, *v, *o;
} scratch_t;

static int scratch_alloc(scratch_t *t, int64_t lq, int64_t lk) {
    const int64_t n = 4 * lq * C + 2 * lk * C + lk * lq * H + 2 * lq * H;
    float *base = (float *)malloc(sizeof(float) * (size_t)n);
    if (!base) return 1;
    t->prod = base;          /* [lq][C] */
    t->w = t->prod + lq * C; /* [lq][C] */
    t->o = t->w + lq * C;    /* [lq][C] */
    t->q = t->o + lq * C;    /* [lq][C] */
    t->k = t->q + lq * C;    /* [lk][C] */
    t->v = t->k + lk * C;    /* [lk][C] */
    t->s = t->v + lk * C;    /* [lk][lq][H] */
    t->mx = t->s + lk * lq * H;
    t->den = t->mx + lq * H;
    return 0;
}

/* o[i] = sum_j softmax_j(scale * q[i] . k[j]) v[j] per head, for allowed (i, j).
 * q: [lq][C], k, v: [lk][C] contiguous; allowed: [lq][lk] bytes or NULL (all); o: [lq][C]. */
static void attend_block(const float *restrict q, const float *restrict k, const float *restrict v,
                         float *restrict o, int64_t lq, int64_t lk, const unsigned char *allowed, float scale,
                         scratch_t *t) {
    const int64_t qh = lq * H, qc = lq * C;
    float *restrict s = t->s, *restrict mx = t->mx, *restrict den = t->den;
    for (int64_t j = 0; j < lk; ++j) {
        const float *restrict kj = k + j * C;
        float *restrict prod = t->prod;
        for (int64_t i = 0; i < lq; ++i)
            for (int64_t c = 0; c < C; ++c) prod[i * C + c] = q[i * C + c] * kj[c];
        float *restrict sj = s + j * qh;
        head_sums(prod, qh, sj, scale);
        if (allowed)
            for (int64_t i = 0; i < lq; ++i)
                if (!allowed[i * lk + j])
                    for (int64_t h = 0; h < H; ++h) sj[i * H + h] = -INFINITY;
    }
    for (int64_t x = 0; x < qh; ++x) mx[x] = -INFINITY, den[x] = 0.f;
    for (int64_t j = 0; j < lk; ++j)
        for (int64_t x = 0; x < qh; ++x) mx[x] = mx[x] > s[j * qh + x] ? mx[x] : s[j * qh + x]; /* NaN propagates */
    for (int64_t j = 0; j < lk; ++j)
        for (int64_t x = 0; x < qh; ++x) s[j * qh + x] -= mx[x];
    exp_nonpos_inplace(s, lk * qh);
    for (int64_t j = 0; j < lk; ++j)
        for (int64_t x = 0; x < qh; ++x) den[x] += s[j * qh + x];
    for (int64_t x = 0; x < qh; ++x) den[x] = 1.f / den[x];
    for (int64_t x = 0; x < qc; ++x) o[x] = 0.f;
    for (int64_t j = 0; j < lk; ++j) {
        const float *restrict sj = s + j * qh;
        const float *restrict vj = v + j * C;
        float *restrict w = t->w;
        for (int64_t x = 0; x < qh; ++x)
            for (int64_t d = 0; d < D; ++d) w[x * D + d] = sj[x] * den[x];
        for (int64_t i = 0; i < lq; ++i)
            for (int64_t c = 0; c < C; ++c) o[i * C + c] += w[i * C + c] * vj[c];
    }
}

/* Temporal attention for all B clips, split across OpenMP threads. qframes: the lq query frames;
 * allowed: [lq][F] or NULL. out: contiguous [B, lq, N, H, D]. Returns 0, or 1 if scratch memory could
 * not be allocated. Built with -fopenmp, this runs on torch's own OpenMP runtime (the soname
 * libgomp.so.1 torch loaded first), so it shares torch's threads instead of fighting them. */
int stattn_temporal_fwd(const float *q, const float *k, const float *v, float *out, int64_t B, int64_t F,
                        int64_t N, const int64_t *sq, const int64_t *sk, const int64_t *sv, const int64_t *qframes,
                        int64_t lq, const unsigned char *allowed, float scale) {
    int failed = 0;
#pragma omp parallel reduction(| : failed) if (B * lq * N * C > PARALLEL_GRAIN)
    {
        scratch_t t;
        if (scratch_alloc(&t, lq > F ? lq : F, F)) {
            failed = 1;
        } else {
#pragma omp for schedule(static)
            for (int64_t b = 0; b < B; ++b)
                for (int64_t n = 0; n < N; ++n) {
                    for (int64_t i = 0; i < lq; ++i)
                        memcpy(t.q + i * C, q + b * sq[0] + qframes[i] * sq[1] + n * sq[2], sizeof(float) * C);
                    for (int64_t f = 0; f < F; ++f) {
                        memcpy(t.k + f * C, k + b * sk[0] + f * sk[1] + n * sk[2], sizeof(float) * C);
                        memcpy(t.v + f * C, v + b * sv[0] + f * sv[1] + n * sv[2], sizeof(float) * C);
                    }
                    attend_block(t.q, t.k, t.v, t.o, lq, F, allowed, scale, &t);
                    for (int64_t i = 0; i < lq; ++i)
                        memcpy(out + ((b * lq + i) * N + n) * C, t.o + i * C, sizeof(float) * C);
                }
            free(t.prod);
        }
    }
    return failed;
}

/* Grouped attention for all B * F (clip, frame) pairs. members: the groups concatenated; starts /
 * sizes per group; max_size: the largest group. out: contiguous [B, F, N, H, D]. */
int stattn_grouped_fwd(const float *q, const float *k, const float *v, float *out, int64_t B, int64_t F,
                       int64_t N, const int64_t *sq, const int64_t *sk, const int64_t *sv, const int64_t *members,
                       const int64_t *starts, const int64_t *sizes, int64_t num_groups, int64_t max_size,
                       float scale) {
    int failed = 0;
#pragma omp parallel reduction(| : failed) if (B * F * N * C > PARALLEL_GRAIN)
    {
        scratch_t t;
        if (scratch_alloc(&t, max_size, max_size)) {
            failed = 1;
        } else {
#pragma omp for schedule(static)
            for (int64_t r = 0; r < B * F; ++r) {
                const int64_t b = r / F, f = r % F;
                const float *qb = q + b * sq[0] + f * sq[1], *kb = k + b * sk[0] + f * sk[1];
                const float *vb = v + b * sv[0] + f * sv[1];
                float *ob = out + r * N * C;
                for (int64_t g = 0; g < num_groups; ++g) {
                    const int64_t *m = members + starts[g], size = sizes[g];
                    if (size == 1) { /* softmax over one key is 1: the output is the value */
                        memcpy(ob + m[0] * C, vb + m[0] * sv[2], sizeof(float) * C);
                        continue;
                    }
                    for (int64_t i = 0; i < size; ++i) {
                        memcpy(t.q + i * C, qb + m[i] * sq[2], sizeof(float) * C);
                        memcpy(t.k + i * C, kb + m[i] * sk[2], sizeof(float) * C);
                        memcpy(t.v + i * C, vb + m[i] * sv[2], sizeof(float) * C);
                    }
                    attend_block(t.q, t.k, t.v, t.o, size, size, NULL, scale, &t);
                    for (int64_t i = 0; i < size; ++i) memcpy(ob + m[i] * C, t.o + i * C, sizeof(float) * C);
                }
            }
            free(t.prod);
        }
    }
    return failed;
}
