/* One-pass CPU kernel for the EDF losses (float32), called from dmcore/losses.py through ctypes.
 *
 * Logits are laid out as (N, C, S): element (n, s) has its C logits at x[n*C*S + c*S + s]
 * (S = 1 for (N, C) inputs). For each element with label y, forward writes
 *
 *     buf[c] = exp(x_c - m) for c != y,  buf[y] = 0,  where m = max_{c != y} x_c,
 *     norm   = sum_{c != y} buf[c]  (>= 1, as the largest term is exp(0)),
 *     odds   = (1 - p) / p = norm exp(m - x_y),   p = 1 / (1 + odds)   (log p = -log1p(odds)),
 *
 * so that buf / norm is exactly the softmax over the other classes, and 1 - p is accurate as
 * p -> 1 (no subtraction from 1 anywhere). Special elements:
 *   ignored (target == ignore_index):           buf = 0, p = 0, odds = inf, norm = 1;
 *   a target outside [0, C) (not ignored):      buf = 0, p = -1 (caller raises);
 *   a NaN or +inf logit, or only -inf logits:   buf = 0, p = odds = NaN (caller raises);
 *   every other class -inf:                     buf = 0, p = 1, odds = 0, norm = 1.
 * Backward scales in place: buf[c] *= g k / norm (c != y), buf[y] = -g k (y in [0, C) only: the
 * caller may skip its checks, and a bad target must not write outside the row).
 *
 * exp_f32 is a vectorisable Cody-Waite reduction with a degree-6 polynomial (error below 2 ulp,
 * checked against float64 in the tests); arguments below -87.3 give 0, terms below 1e-38 of a sum
 * that is at least 1. Rows (S = 1) are vectorised over the classes, (N, C, S) blocks over S.
 */
#include <math.h>
#include <stdint.h>

#define BLOCK 256

#define LOG2E 1.44269504088896341f
#define LN2_HI 0.693359375f
#define LN2_LO -2.12194440e-4f
#define EXP_MIN -87.3f
#define EXP_MAX 88.7f

/* exp by Cody-Waite reduction, x = n ln2 + r, and a degree-6 polynomial for exp(r). Every step is
 * the one exp_v8 takes on a lane (the same fused multiply-adds), so an element's value does not
 * depend on whether it falls in a vector body or a scalar tail, that is on its position in the
 * batch: a run trained with others equals the run trained alone, bit for bit. */
static inline float exp_f32(float x) {
    float xc = fminf(fmaxf(x, EXP_MIN), EXP_MAX);
    float n = rintf(xc * LOG2E);
    float r = fmaf(-n, LN2_LO, fmaf(-n, LN2_HI, xc));
    float poly = 1.0f / 720.0f;
    poly = fmaf(poly, r, 1.0f / 120.0f);
    poly = fmaf(poly, r, 1.0f / 24.0f);
    poly = fmaf(poly, r, 1.0f / 6.0f);
    poly = fmaf(poly, r, 0.5f);
    poly = fmaf(poly, r, 1.0f);
    poly = fmaf(poly, r, 1.0f);
    union { int32_t i; float f; } two_n = {.i = ((int32_t)n + 127) << 23};
    return x < EXP_MIN ? 0.0f : poly * two_n.f;
}

#ifdef __AVX2__
#include <immintrin.h>
/* The same computation on eight lanes. */
static inline __m256 exp_v8(__m256 x) {
    __m256 xc = _mm256_min_ps(_mm256_max_ps(x, _mm256_set1_ps(EXP_MIN)), _mm256_set1_ps(EXP_MAX));
    __m256 n = _mm256_round_ps(_mm256_mul_ps(xc, _mm256_set1_ps(LOG2E)), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(LN2_LO), _mm256_fnmadd_ps(n, _mm256_set1_ps(LN2_HI), xc));
    __m256 poly = _mm256_set1_ps(1.0f / 720.0f);
    poly = _mm256_fmadd_ps(poly, r, _mm256_set1_ps(1.0f / 120.0f));
    poly = _mm256_fmadd_ps(poly, r, _mm256_set1_ps(1.0f / 24.0f));
    poly = _mm256_fmadd_ps(poly, r, _mm256_set1_ps(1.0f / 6.0f));
    poly = _mm256_fmadd_ps(poly, r, _mm256_set1_ps(0.5f));
    poly = _mm256_fmadd_ps(poly, r, _mm256_set1_ps(1.0f));
    poly = _mm256_fmadd_ps(poly, r, _mm256_set1_ps(1.0f));
    __m256i two_n = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
    __m256 result = _mm256_mul_ps(poly, _mm256_castsi256_ps(two_n));
    return _mm256_andnot_ps(_mm256_cmp_ps(x, _mm256_set1_ps(EXP_MIN), _CMP_LT_OQ), result);
}
#endif

/* v[l] = exp(v[l]) for l < len: eight lanes at a time where the CPU has AVX2. */
static inline void exp_inplace(float *v, int len) {
    int l = 0;
#ifdef __AVX2__
    for (; l + 8 <= len; l += 8) _mm256_storeu_ps(v + l, exp_v8(_mm256_loadu_ps(v + l)));
#endif
    for (; l < len; ++l) v[l] = exp_f32(v[l]);
}

/* Outputs of one element from its others' max m, their sum (>= 1), its label logit and state;
 * returns 1 when the element's buffer entries must be zeroed. With d = x_y - m and e = exp(-|d|),
 * p and 1 - p come from sums of positive terms on either side of d = 0, so both are accurate. */
static inline int finish(int ignored, float bad, float m, float sum, float xy,
                         float *p, float *odds, float *norm) {
    if (ignored) {
        *p = 0.0f; *odds = INFINITY; *norm = 1.0f;
        return 1;
    }
    if (bad > 0.0f || (m == -INFINITY && xy == -INFINITY)) {
        *p = NAN; *odds = NAN; *norm = 1.0f;
        return 1;
    }
    if (m == -INFINITY) {  /* no other class: p = 1, direction -e_y / 2 */
        *p = 1.0f; *odds = 0.0f; *norm = 1.0f;
        return 1;
    }
    float d = xy - m;
    float e = exp_f32(-fabsf(d));
    if (d <= 0.0f) {                   /* e = exp(d) <= 1 <= sum */
        float total = e + sum;
        *p = e / total; *odds = sum / e;
    } else {                           /* e = exp(-d): odds = sum e */
        float r = sum * e;
        *p = 1.0f / (1.0f + r); *odds = r;
    }
    *norm = sum;
    return 0;
}

static void forward_row(const float *x, int C, int y, int ignored, float *buf,
                        float *p, float *odds, float *norm) {
    float m = -INFINITY, bad = 0.0f, sum = 0.0f;
#pragma omp simd reduction(max:m) reduction(+:bad)
    for (int c = 0; c < C; ++c) {
        float v = x[c];
        bad += (v != v || v == INFINITY) ? 1.0f : 0.0f;
        float other = c == y ? -INFINITY : v;
        m = other > m ? other : m;
    }
#pragma omp simd
    for (int c = 0; c < C; ++c) buf[c] = x[c] - m;
    exp_inplace(buf, C);
    if (y >= 0) buf[y] = 0.0f;
#pragma omp simd reduction(+:sum)
    for (int c = 0; c < C; ++c) sum += buf[c];
    float xy = ignored ? 0.0f : x[y];
    if (finish(ignored, bad, m, sum, xy, p, odds, norm))
        for (int c = 0; c < C; ++c) buf[c] = 0.0f;
}

static void forward_block(const float *x, const int64_t *target, int C, int64_t S, int len,
                          int64_t ignore_index, float *buf, float *p, float *odds, float *norm) {
    float m[BLOCK], bad[BLOCK], sum[BLOCK];
    int y[BLOCK];
    int invalid[BLOCK];
    for (int l = 0; l < len; ++l) {
        m[l] = -INFINITY; bad[l] = 0.0f; sum[l] = 0.0f;
        invalid[l] = target[l] != ignore_index && (target[l] < 0 || target[l] >= C);
        y[l] = target[l] == ignore_index || invalid[l] ? -1 : (int)target[l];
    }
    for (int c = 0; c < C; ++c) {
        const float *xc = x + c * S;
#pragma omp simd
        for (int l = 0; l < len; ++l) {
            float v = xc[l];
            bad[l] += (v != v || v == INFINITY) ? 1.0f : 0.0f;
            float other = c == y[l] ? -INFINITY : v;
            m[l] = other > m[l] ? other : m[l];
        }
    }
    for (int c = 0; c < C; ++c) {
        const float *restrict xc = x + c * S;
        float *restrict bc = buf + c * S;
#pragma omp simd
        for (int l = 0; l < len; ++l) bc[l] = xc[l] - m[l];
        exp_inplace(bc, len);
#pragma omp simd
        for (int l = 0; l < len; ++l) {
            bc[l] = c == y[l] ? 0.0f : bc[l];
            sum[l] += bc[l];
        }
    }
    float xy[BLOCK], e[BLOCK];
    for (int l = 0; l < len; ++l) xy[l] = y[l] < 0 ? 0.0f : x[y[l] * S + l];
#pragma omp simd
    for (int l = 0; l < len; ++l) e[l] = -fabsf(xy[l] - m[l]);
    exp_inplace(e, len);
#pragma omp simd
    for (int l = 0; l < len; ++l) {    /* the common case of finish(), on all lanes */
        float d = xy[l] - m[l], r = sum[l] * e[l], total = e[l] + sum[l];
        p[l] = d <= 0.0f ? e[l] / total : 1.0f / (1.0f + r);
        odds[l] = d <= 0.0f ? sum[l] / e[l] : r;
        norm[l] = sum[l];
    }
    for (int l = 0; l < len; ++l) {    /* the special elements, rare */
        if (invalid[l]) {
            for (int c = 0; c < C; ++c) buf[c * S + l] = 0.0f;
            p[l] = -1.0f; odds[l] = 0.0f; norm[l] = 1.0f;
        } else if (y[l] < 0 || bad[l] > 0.0f || m[l] == -INFINITY) {
            if (finish(y[l] < 0, bad[l], m[l], sum[l], xy[l], p + l, odds + l, norm + l))
                for (int c = 0; c < C; ++c) buf[c * S + l] = 0.0f;
        }
    }
}

/* (N, C) rows with few classes: vectorising over C wastes the lanes, so tiles of TILE rows are
 * transposed into (C, TILE) scratch and handled like (N, C, S) blocks, vectorised over the rows. */
#define TILE 64
#define FEW_CLASSES 64

static void forward_tile(const float *x, const int64_t *target, int C, int rows, int64_t ignore_index,
                         float *buf, float *p, float *odds, float *norm) {
    float xt[FEW_CLASSES * TILE], bt[FEW_CLASSES * TILE];
    for (int r = 0; r < rows; ++r)
        for (int c = 0; c < C; ++c) xt[c * TILE + r] = x[r * C + c];
    forward_block(xt, target, C, TILE, rows, ignore_index, bt, p, odds, norm);
    for (int r = 0; r < rows; ++r)
        for (int c = 0; c < C; ++c) buf[r * C + c] = bt[c * TILE + r];
}

void edf_forward_f32(const float *x, const int64_t *target, int64_t N, int64_t C, int64_t S,
                     int64_t ignore_index, float *buf, float *p, float *odds,
                     float *norm, int threads) {
    if (S == 1 && C < FEW_CLASSES) {
        int64_t tiles = (N + TILE - 1) / TILE;
#pragma omp parallel for num_threads(threads) schedule(static)
        for (int64_t i = 0; i < tiles; ++i) {
            int64_t n0 = i * TILE;
            int rows = (int)(N - n0 < TILE ? N - n0 : TILE);
            forward_tile(x + n0 * C, target + n0, (int)C, rows, ignore_index, buf + n0 * C, p + n0, odds + n0, norm + n0);
        }
        return;
    }
    if (S == 1) {
#pragma omp parallel for num_threads(threads) schedule(static)
        for (int64_t n = 0; n < N; ++n) {
            int64_t y = target[n];
            int ignored = y == ignore_index;
            if (!ignored && (y < 0 || y >= C)) {
                for (int64_t c = 0; c < C; ++c) buf[n * C + c] = 0.0f;
                p[n] = -1.0f; odds[n] = 0.0f; norm[n] = 1.0f;
                continue;
            }
            forward_row(x + n * C, (int)C, ignored ? -1 : (int)y, ignored, buf + n * C,
                        p + n, odds + n, norm + n);
        }
        return;
    }
    int64_t blocks = (S + BLOCK - 1) / BLOCK;
#pragma omp parallel for num_threads(threads) schedule(static)
    for (int64_t i = 0; i < N * blocks; ++i) {
        int64_t n = i / blocks, s0 = (i % blocks) * BLOCK;
        int len = (int)(S - s0 < BLOCK ? S - s0 : BLOCK);
        int64_t at = n * C * S + s0, e = n * S + s0;
        forward_block(x + at, target + e, (int)C, S, len, ignore_index, buf + at, p + e,
                      odds + e, norm + e);
    }
}

void edf_scale_f32(float *buf, const int64_t *target, int64_t N, int64_t C, int64_t S,
                   int64_t ignore_index, const float *k, const float *norm, float g, int threads) {
    /* buf[c] *= g k / norm (c != y), buf[y] = -g k */
    if (S == 1) {
#pragma omp parallel for num_threads(threads) schedule(static)
        for (int64_t n = 0; n < N; ++n) {
            float scale = g * k[n] / norm[n], *row = buf + n * C;
#pragma omp simd
            for (int64_t c = 0; c < C; ++c) row[c] *= scale;
            if (target[n] != ignore_index && target[n] >= 0 && target[n] < C) row[target[n]] = -g * k[n];
        }
        return;
    }
#pragma omp parallel for num_threads(threads) schedule(static)
    for (int64_t n = 0; n < N; ++n) {
        float *block = buf + n * C * S, scale[BLOCK];
        for (int64_t s0 = 0; s0 < S; s0 += BLOCK) {
            int64_t len = S - s0 < BLOCK ? S - s0 : BLOCK;
            const float *kn = k + n * S + s0, *nn = norm + n * S + s0;
#pragma omp simd
            for (int64_t s = 0; s < len; ++s) scale[s] = g * kn[s] / nn[s];
            for (int64_t c = 0; c < C; ++c) {
                float *bc = block + c * S + s0;
#pragma omp simd
                for (int64_t s = 0; s < len; ++s) bc[s] *= scale[s];
            }
            for (int64_t s = 0; s < len; ++s) {
                int64_t y = target[n * S + s0 + s];
                if (y != ignore_index && y >= 0 && y < C) block[y * S + s0 + s] = -g * kn[s];
            }
        }
    }
}
