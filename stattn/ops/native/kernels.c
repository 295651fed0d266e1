/* stattn native CPU forward kernels (float32 in, float32 math, float32 out).
 *
 * Compiled at first use by stattn/ops/native/__init__.py with the head count and head dim fixed at
 * compile time (-DNUM_HEADS=H -DHEAD_DIM=D), the way a Triton constexpr specialises a kernel: with
 * trip counts of 4 or 8 known, every loop below vectorises without prologue/epilogue overhead.
 *
 * Both attention ops reduce to one routine on small contiguous blocks: the rows of one sequence (a
 * joint's frames, or a group's joints in one frame) are copied from the strided inputs into local
 * buffers, attended, and written back. Rows are `C = H * D` channels (a token's heads side by side).
 * The whole block (stattn_block_fwd, at the end) runs its row-wise steps around the same routine.
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

/* ------------------------------------------------------------------------------------ whole block
 * The local_block op: y = x1 + fc2(gelu(fc1(LN2(x1)))) with x1 = x + proj(attn(LN1(x))), on the
 * T = B * F * N token rows of x (contiguous [T][C]); weights are PyTorch's (Linear: [out][in]
 * row-major). At B = 1 a block is ~10 PyTorch calls of a few microseconds each around ~0.8 MFLOP of
 * arithmetic: one C call does the same arithmetic with the row-wise steps in cache. */
typedef float v8 __attribute__((vector_size(32)));

static inline v8 load8(const float *p) {
    v8 x;
    memcpy(&x, p, sizeof x);
    return x;
}

static inline float hsum8(v8 a) { return ((a[0] + a[4]) + (a[1] + a[5])) + ((a[2] + a[6]) + (a[3] + a[7])); }

static inline float sum(const float *restrict a, int64_t n) {
    v8 s = {};
    int64_t c = 0;
    for (; c + 8 <= n; c += 8) s += load8(a + c);
    float t = hsum8(s);
    for (; c < n; ++c) t += a[c];
    return t;
}

static inline float dot(const float *restrict a, const float *restrict b, int64_t n) {
    v8 s = {};
    int64_t c = 0;
    for (; c + 8 <= n; c += 8) s += load8(a + c) * load8(b + c);
    float t = hsum8(s);
    for (; c < n; ++c) t += a[c] * b[c];
    return t;
}

/* Lane shuffles with constant indices: clang and GCC >= 12 have __builtin_shufflevector, older GCC
 * only __builtin_shuffle (a mask vector). */
#if defined(__has_builtin)
#if __has_builtin(__builtin_shufflevector)
#define SHUFFLE8(a, b, ...) __builtin_shufflevector(a, b, __VA_ARGS__)
#endif
#endif
#ifndef SHUFFLE8
typedef int32_t vi8 __attribute__((vector_size(32)));
#define SHUFFLE8(a, b, ...) __builtin_shuffle(a, b, (vi8){__VA_ARGS__})
#endif

/* [sum(s[0]), ..., sum(s[7])]: eight horizontal sums in one transpose-and-add tree (7 adds), where
 * eight separate reductions would cost ~8 times as many instructions. */
static inline v8 hsum8x8(const v8 *s) {
    v8 t[4], u[2];
    for (int i = 0; i < 4; ++i) /* pairs of lanes: [s0 01, s1 01, s0 23, s1 23, ...] */
        t[i] = SHUFFLE8(s[2 * i], s[2 * i + 1], 0, 8, 2, 10, 4, 12, 6, 14) +
               SHUFFLE8(s[2 * i], s[2 * i + 1], 1, 9, 3, 11, 5, 13, 7, 15);
    for (int i = 0; i < 2; ++i) /* quads: [s0 0-3, s1 0-3, s2 0-3, s3 0-3, s0 4-7, ...] */
        u[i] = SHUFFLE8(t[2 * i], t[2 * i + 1], 0, 1, 8, 9, 4, 5, 12, 13) +
               SHUFFLE8(t[2 * i], t[2 * i + 1], 2, 3, 10, 11, 6, 7, 14, 15);
    return SHUFFLE8(u[0], u[1], 0, 1, 2, 3, 8, 9, 10, 11) + SHUFFLE8(u[0], u[1], 4, 5, 6, 7, 12, 13, 14, 15);
}

/* out[r][j] = in[r] . w[j] + bias[j] (+ add[r][j]) for r < rows, j < cout (bias, add: or NULL): eight
 * output channels at a time, eight accumulators sharing each load of the input row, reduced together. */
static void linear_rows(const float *restrict in, int64_t rows, int64_t cin, const float *restrict w,
                        const float *restrict bias, int64_t cout, const float *restrict add, float *restrict out) {
#pragma omp parallel for schedule(static) if (rows * cout * cin > 16 * PARALLEL_GRAIN)
    for (int64_t r = 0; r < rows; ++r) {
        const float *restrict a = in + r * cin;
        float *restrict o = out + r * cout;
        int64_t j = 0;
        for (; j + 8 <= cout; j += 8) {
            const float *wj = w + j * cin;
            v8 s[8] = {};
            int64_t c = 0;
            for (; c + 8 <= cin; c += 8) {
                const v8 x = load8(a + c);
                for (int64_t i = 0; i < 8; ++i) s[i] += x * load8(wj + i * cin + c);
            }
            v8 sum = hsum8x8(s);
            for (; c < cin; ++c)
                for (int64_t i = 0; i < 8; ++i) sum[i] += a[c] * wj[i * cin + c];
            if (bias) sum += load8(bias + j);
            if (add) sum += load8(add + r * cout + j);
            memcpy(o + j, &sum, sizeof sum);
        }
        for (; j < cout; ++j) {
            float t = dot(a, w + j * cin, cin);
            if (bias) t += bias[j];
            if (add) t += add[r * cout + j];
            o[j] = t;
        }
    }
}

/* LayerNorm over each row's C channels (biased variance, as torch), then * w + b. */
static void layer_norm_rows(const float *restrict x, int64_t rows, const float *restrict w, const float *restrict b,
                            float eps, float *restrict out) {
#pragma omp parallel for schedule(static) if (rows * C > PARALLEL_GRAIN)
    for (int64_t r = 0; r < rows; ++r) {
        const float *restrict xr = x + r * C;
        float *restrict o = out + r * C;
        const float mean = sum(xr, C) / (float)C;
        for (int64_t c = 0; c < C; ++c) o[c] = xr[c] - mean;
        const float var = dot(o, o, C) / (float)C;
        const float inv = 1.f / sqrtf(var + eps);
        for (int64_t c = 0; c < C; ++c) o[c] = o[c] * inv * w[c] + b[c];
    }
}

/* In-place exact GELU, x / 2 (1 + erf(x / sqrt 2)), erf from Abramowitz & Stegun 7.1.26 (absolute
 * error < 1.5e-7): erf(z) = 1 - t (a1 + t (a2 + ... a5 t)) e^(-z^2), t = 1 / (1 + p z), z >= 0, and
 * erf(-z) = -erf(z). The exponent is never positive, so the softmax's exp serves; erf(+-inf) is exactly
 * +-1 and NaN stays NaN, so GELU(+inf) = +inf as the formula says (PyTorch's CPU kernel returns NaN:
 * non-finite either way, in the same place). */
static inline vfloat gelu_v(vfloat x) {
    const vfloat z = (vfloat)((vint)x & 0x7fffffff) * 0.70710678118654752f;
    const vfloat t = 1.f / (1.f + 0.3275911f * z);
    vfloat p = (vfloat){} + 1.061405429f;
    p = p * t - 1.453152027f;
    p = p * t + 1.421413741f;
    p = p * t - 0.284496736f;
    p = p * t + 0.254829592f;
    const vfloat erf_abs = 1.f - p * t * exp_nonpos_v(-(z * z));
    const vfloat erf = (vfloat)((vint)erf_abs | ((vint)x & (int32_t)0x80000000));
    return 0.5f * x * (1.f + erf);
}

static void gelu_inplace(float *s, int64_t count) {
#pragma omp parallel for schedule(static) if (count > PARALLEL_GRAIN)
    for (int64_t y = 0; y < count; y += LANES) {
        const int64_t n = count - y < LANES ? count - y : LANES;
        vfloat x = {};
        memcpy(&x, s + y, sizeof(float) * (size_t)n);
        x = gelu_v(x);
        memcpy(s + y, &x, sizeof(float) * (size_t)n);
    }
}

/* The block on x [B, F, N, C] -> y (both contiguous). w: the 12 weights in BlockWeights order (qkv
 * bias may be NULL); hidden: fc1's output channels. grouped == 0: temporal attention over the F
 * frames of each token (qframes = 0..F-1, allowed [F][F] or NULL); grouped == 1: attention within the
 * groups of each frame (members / starts / sizes as stattn_grouped_fwd). Returns 0, or 1 when scratch
 * memory could not be allocated. */
int stattn_block_fwd(const float *x, float *y, int64_t B, int64_t F, int64_t N, int64_t hidden,
                     const float *const *w, float eps1, float eps2, float scale, int64_t grouped,
                     const int64_t *qframes, const unsigned char *allowed, const int64_t *members,
                     const int64_t *starts, const int64_t *sizes, int64_t num_groups, int64_t max_size) {
    const int64_t T = B * F * N;
    if (T == 0) return 0; /* an empty batch (malloc(0) may return NULL) */
    float *buf = (float *)malloc(sizeof(float) * (size_t)(T * (6 * C + hidden)));
    if (!buf) return 1;
    float *h = buf, *qkv = h + T * C, *o = qkv + T * 3 * C, *x1 = o + T * C, *m = x1 + T * C;
    layer_norm_rows(x, T, w[0], w[1], eps1, h);
    linear_rows(h, T, C, w[2], w[3], 3 * C, NULL, qkv);
    const int64_t s[3] = {F * N * 3 * C, N * 3 * C, 3 * C}; /* q, k, v: views of the qkv rows */
    const int failed = grouped ? stattn_grouped_fwd(qkv, qkv + C, qkv + 2 * C, o, B, F, N, s, s, s, members, starts,
                                                    sizes, num_groups, max_size, scale)
                               : stattn_temporal_fwd(qkv, qkv + C, qkv + 2 * C, o, B, F, N, s, s, s, qframes, F,
                                                     allowed, scale);
    if (!failed) {
        linear_rows(o, T, C, w[4], w[5], C, x, x1);
        layer_norm_rows(x1, T, w[6], w[7], eps2, h);
        linear_rows(h, T, C, w[8], w[9], hidden, NULL, m);
        gelu_inplace(m, T * hidden);
        linear_rows(m, T, hidden, w[10], w[11], C, x1, y);
    }
    free(buf);
    return failed;
}
