/* CPU kernels (float32) for R stacked copies of the MNIST-1D CNN of dmcore/models.py, the whole network,
 * forward and backward, called through ctypes:
 *
 *   three layers  h_l = relu(LayerNorm(conv1d(h_{l-1})) * gamma_l + beta_l)   (C channels, rows = positions)
 *   then          logits = W h_3 + b                                          (h_3 flattened row by row)
 *
 *   cnn_forward:  x (R or shared, B, L0, Cin0) -> logits (R, B, K), and where asked for the saved
 *                 activations: per layer the normalised rows n and their 1/std;
 *   cnn_backward: from dLoss/dlogits and the saved activations, every parameter's gradient.
 *
 * The parameters are read in PyTorch's layouts (the 14 tensors of models._CNN_PARAMS, each (R, ...)).
 *
 * Layout: the 8 lanes of a vector are 8 examples of one copy (a "group"), so every lane does useful work
 * whatever C is, and LayerNorm over the channels is plain vector arithmetic across C registers. A group
 * is carried through the whole network in one thread, its activations in small buffers that stay in
 * cache ([row][channel][8 examples]). The convolutions, their gradients and the linear layer are blocks
 * of 5 rows by 2 channels (or 2 channels by 5 rows) accumulated in 10 vector registers; each weight is a
 * broadcast scalar.
 *
 * Weight gradients are accumulated per lane (per example slot) over a copy's groups, then summed over the
 * 8 lanes in a fixed order; each copy's batch is split into NPARTS parts, at group boundaries, summed in
 * order. So a copy's result depends neither on the other copies nor on the number of threads.
 */
#define _POSIX_C_SOURCE 200112L
#include <math.h>
#include <omp.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define INLINE static inline __attribute__((always_inline))
#define V 8          /* examples per vector */
#define NL 3         /* convolution layers */
#define RB 5         /* rows per register block */
#define SLACK 16     /* spare zero rows before and after every activation buffer */
#define NPARTS 2     /* parts of a copy's batch, summed in a fixed order */
#define EPS 1e-5f    /* nn.LayerNorm's */

typedef float v8 __attribute__((vector_size(32), aligned(4), may_alias));   /* loads need no alignment */
typedef int32_t v8i __attribute__((vector_size(32), aligned(4), may_alias));

/* keeps v in a register: without it GCC may fold each use of a loaded vector into its own memory operand */
#define IN_REGISTER(v) __asm__("" : "+x"(v))

INLINE v8 ld(const float *p) { return *(const v8 *)p; }
INLINE void st(float *p, v8 v) { *(v8 *)p = v; }
INLINE v8 bc(float a) { return (v8){a, a, a, a, a, a, a, a}; }
INLINE v8 affine_relu(v8 n, v8 g, v8 b) { v8 a = n * g + b; return (v8)((v8i)a & (a > (v8){0})); }

typedef struct {
    int64_t k, s, pad, cin, lin, lout, blocks;   /* blocks: lout rounded up to RB */
    int64_t w, b, g, be;                         /* offsets of the parameters in a copy's flat gradient */
    int64_t sn, sr;                              /* offsets of n and 1/std in a group's saved activations */
} Layer;

typedef struct {
    int64_t L0, cin0, C, K, F;
    Layer ly[NL];
    int64_t lw, lb, nparam;                      /* linear weight and bias offsets; parameters per copy */
    int64_t ssize;                               /* saved floats per group */
    int64_t bufrows;                             /* rows of every activation buffer, slack included */
} Net;

/* spec = {L0, Cin0, C, K, k_0, s_0, pad_0, k_1, s_1, pad_1, k_2, s_2, pad_2}; models.py checks the limits */
static void setup(Net *net, const int64_t *spec) {
    net->L0 = spec[0]; net->cin0 = spec[1]; net->C = spec[2]; net->K = spec[3];
    int64_t C = net->C, p = 0, s = 0, lin = net->L0, cin = net->cin0, rows = net->L0;
    for (int l = 0; l < NL; ++l) {
        Layer *ly = &net->ly[l];
        ly->k = spec[4 + 3 * l]; ly->s = spec[5 + 3 * l]; ly->pad = spec[6 + 3 * l];
        ly->cin = cin; ly->lin = lin;
        ly->lout = (lin + 2 * ly->pad - ly->k) / ly->s + 1;
        ly->blocks = (ly->lout + RB - 1) / RB * RB;
        ly->w = p; p += C * cin * ly->k;
        ly->b = p; p += C;
        ly->g = p; p += C;
        ly->be = p; p += C;
        ly->sn = s; s += ly->lout * C * V;
        ly->sr = s; s += ly->lout * V;
        int64_t reach = ly->s * (ly->blocks - 1) + ly->k;      /* input rows a block may read, from -pad */
        if (reach > rows) rows = reach;
        if (ly->blocks > rows) rows = ly->blocks;
        lin = ly->lout; cin = C;
    }
    net->F = lin * C;
    net->lw = p; p += net->K * net->F;
    net->lb = p; p += net->K;
    net->nparam = p; net->ssize = s;
    net->bufrows = rows + 2 * SLACK;
}

/* One thread's buffers, [row][channel][V], each with SLACK zero rows before row 0 */
typedef struct {
    float *x, *h[NL], *z, *dh, *m, *lg, *acc;
    int64_t rowsize[NL + 1];
} Work;

static int work_alloc(const Net *net, Work *w, int backward) {
    int64_t C = net->C, rows = net->bufrows;
    int64_t total = rows * net->cin0 * V + NL * rows * C * V + 2 * rows * C * V + 2 * rows * V + 32 * V
                    + (backward ? net->nparam * V : 0);
    float *base = NULL;   /* 64-byte aligned, and every row a multiple of 32 bytes: no load splits a cache line */
    if (posix_memalign((void **)&base, 64, (size_t)total * sizeof(float)) != 0) return 0;
    memset(base, 0, (size_t)total * sizeof(float));
    float *p = base;
    w->x = p + SLACK * net->cin0 * V; p += rows * net->cin0 * V;
    for (int l = 0; l < NL; ++l) { w->h[l] = p + SLACK * C * V; p += rows * C * V; }
    w->z = p + SLACK * C * V; p += rows * C * V;
    w->dh = p + SLACK * C * V; p += rows * C * V;
    w->m = p; p += 2 * rows * V;
    w->lg = p; p += 32 * V;
    w->acc = backward ? p : NULL;
    return 1;
}

static void work_free(const Net *net, Work *w) { free(w->x - SLACK * net->cin0 * V); }

/* the params of copy r: raw[i] + r * (size of parameter i) */
static void copy_params(const Net *net, const float *const *raw, int64_t r, const float *P[4 * NL + 2]) {
    int64_t C = net->C;
    for (int l = 0; l < NL; ++l) {
        const Layer *ly = &net->ly[l];
        P[4 * l] = raw[4 * l] + r * C * ly->cin * ly->k;
        for (int i = 1; i < 4; ++i) P[4 * l + i] = raw[4 * l + i] + r * C;
    }
    P[4 * NL] = raw[4 * NL] + r * net->K * net->F;
    P[4 * NL + 1] = raw[4 * NL + 1] + r * net->K;
}

/* ---- forward ---- */

/* z[row][co] = bias[co] + sum_{j, c} w[co, c, j] in[s row + j - pad][c], for rows < blocks (past lout: unused) */
static void conv_forward(const Net *net, const Layer *ly, const float *w, const float *bias, const float *in,
                         float *z) {
    int64_t C = net->C, cin = ly->cin, k = ly->k, step = ly->s * cin * V;
    for (int64_t r0 = 0; r0 < ly->blocks; r0 += RB)
        for (int64_t co0 = 0; co0 < C; co0 += 2) {
            int64_t co1 = co0 + 1 < C ? co0 + 1 : co0;          /* a lone last channel is computed twice */
            v8 acc[RB][2];
            for (int i = 0; i < RB; ++i) { acc[i][0] = bc(bias[co0]); acc[i][1] = bc(bias[co1]); }
            for (int64_t j = 0; j < k; ++j) {
                const float *row = in + ((ly->s * r0 + j - ly->pad) * cin) * V;
                const float *w0 = w + co0 * cin * k + j, *w1 = w + co1 * cin * k + j;
                for (int64_t c = 0; c < cin; ++c) {
                    v8 a = bc(w0[c * k]), b = bc(w1[c * k]);
                    IN_REGISTER(a); IN_REGISTER(b);
                    for (int i = 0; i < RB; ++i) {
                        v8 x = ld(row + i * step + c * V);
                        IN_REGISTER(x);
                        acc[i][0] += x * a; acc[i][1] += x * b;
                    }
                }
            }
            for (int i = 0; i < RB; ++i) {
                st(z + ((r0 + i) * C + co0) * V, acc[i][0]);
                if (co1 != co0) st(z + ((r0 + i) * C + co1) * V, acc[i][1]);
            }
        }
}

/* LayerNorm over the C channels of each row, then the affine map and ReLU: z -> h; n and 1/std saved */
static void norm_forward(const Net *net, const Layer *ly, const float *gamma, const float *beta, const float *z,
                         float *h, float *sn, float *sr) {
    int64_t C = net->C;
    const float inv_c = 1.0f / (float)C;
    for (int64_t row = 0; row < ly->lout; ++row) {
        const float *zr = z + row * C * V;
        v8 sum[4] = {{0}, {0}, {0}, {0}}, sq[4] = {{0}, {0}, {0}, {0}};      /* 4 chains of additions, not 1 */
        for (int64_t c = 0; c < C; ++c) sum[c & 3] += ld(zr + c * V);
        v8 mean = ((sum[0] + sum[1]) + (sum[2] + sum[3])) * inv_c;
        for (int64_t c = 0; c < C; ++c) { v8 d = ld(zr + c * V) - mean; sq[c & 3] += d * d; }
        v8 var = ((sq[0] + sq[1]) + (sq[2] + sq[3])) * inv_c, rstd;
        for (int t = 0; t < V; ++t) rstd[t] = 1.0f / sqrtf(var[t] + EPS);
        for (int64_t c = 0; c < C; ++c) {
            v8 n = (ld(zr + c * V) - mean) * rstd;
            if (sn != NULL) st(sn + (row * C + c) * V, n);
            st(h + (row * C + c) * V, affine_relu(n, bc(gamma[c]), bc(beta[c])));
        }
        if (sr != NULL) st(sr + row * V, rstd);
    }
}

/* logits[k] = b[k] + sum_f W[k, f] h[f], f = row * C + c, K in blocks of 5 */
static void linear_forward(const Net *net, const float *W, const float *b, const float *h, float *lg) {
    int64_t K = net->K, F = net->F;
    for (int64_t k0 = 0; k0 < K; k0 += 5) {
        int64_t kk[5];
        for (int t = 0; t < 5; ++t) kk[t] = k0 + t < K ? k0 + t : k0;
        v8 acc[5];
        for (int t = 0; t < 5; ++t) acc[t] = bc(b[kk[t]]);
        for (int64_t f = 0; f < F; ++f) {
            v8 x = ld(h + f * V);
            IN_REGISTER(x);
            for (int t = 0; t < 5; ++t) acc[t] += x * bc(W[kk[t] * F + f]);
        }
        for (int t = 0; t < 5 && k0 + t < K; ++t) st(lg + (k0 + t) * V, acc[t]);
    }
}

/* the group's inputs, transposed to [row][c][V]; lanes past `count` are zeros */
static void load_inputs(const Net *net, const float *x, int count, Work *w) {
    int64_t n = net->L0 * net->cin0;
    for (int64_t i = 0; i < n; ++i) {
        v8 v = {0};
        for (int e = 0; e < count; ++e) v[e] = x[e * n + i];
        st(w->x + i * V, v);
    }
}

/* one group of `count` examples of a copy: logits (count, K); saved activations where not NULL */
static void group_forward(const Net *net, const float *const *P, const float *x, int count, Work *w,
                          float *logits, float *saved) {
    load_inputs(net, x, count, w);
    const float *in = w->x;
    for (int l = 0; l < NL; ++l) {
        const Layer *ly = &net->ly[l];
        conv_forward(net, ly, P[4 * l], P[4 * l + 1], in, w->z);
        norm_forward(net, ly, P[4 * l + 2], P[4 * l + 3], w->z, w->h[l], saved ? saved + ly->sn : NULL,
                     saved ? saved + ly->sr : NULL);
        in = w->h[l];
    }
    linear_forward(net, P[4 * NL], P[4 * NL + 1], in, w->lg);
    for (int e = 0; e < count; ++e)
        for (int64_t k = 0; k < net->K; ++k) logits[e * net->K + k] = w->lg[k * V + e];
}

/* ---- entry points ---- */

/* x: example b of copy r at x + r * x_run_stride + b * L0 * Cin0 (x_run_stride 0: every copy reads the same
 * inputs); raw: 14 parameter pointers; logits (R, B, K); saved (R, ceil(B / 8), ssize) or NULL.
 * Returns 0 when it cannot allocate its buffers. */
int cnn_forward(const float *x, int64_t x_run_stride, const float *const *raw, int64_t R, int64_t B,
                const int64_t *spec, float *logits, float *saved, int threads) {
    Net net;
    setup(&net, spec);
    int64_t groups = (B + V - 1) / V, failed = 0;
#pragma omp parallel num_threads(threads) reduction(+:failed)
    {
        Work w;
        int ok = work_alloc(&net, &w, 0);
        if (!ok) failed = 1;
#pragma omp for schedule(static)
        for (int64_t t = 0; t < R * groups; ++t) {
            if (!ok) continue;
            int64_t r = t / groups, b0 = t % groups * V;
            int count = B - b0 < V ? (int)(B - b0) : V;
            const float *P[4 * NL + 2];
            copy_params(&net, raw, r, P);
            group_forward(&net, P, x + r * x_run_stride + b0 * net.L0 * net.cin0, count, &w,
                          logits + (r * B + b0) * net.K, saved ? saved + t * net.ssize : NULL);
        }
        if (ok) work_free(&net, &w);
    }
    return failed == 0;
}

/* h of every layer from the saved n: relu(n gamma + beta) */
static void restore_activations(const Net *net, const float *const *P, const float *saved, Work *w) {
    int64_t C = net->C;
    for (int l = 0; l < NL; ++l) {
        const Layer *ly = &net->ly[l];
        for (int64_t row = 0; row < ly->lout; ++row)
            for (int64_t c = 0; c < C; ++c)
                st(w->h[l] + (row * C + c) * V,
                   affine_relu(ld(saved + ly->sn + (row * C + c) * V), bc(P[4 * l + 2][c]), bc(P[4 * l + 3][c])));
    }
}

/* the linear layer: its gradients (per lane) and dh = the gradient of the last layer's output */
static void linear_backward(const Net *net, const float *W, const float *h, const float *g, float *acc, float *dh) {
    int64_t K = net->K, F = net->F;
    for (int64_t k = 0; k < K; ++k) {
        v8 gk = ld(g + k * V);
        IN_REGISTER(gk);
        float *a = acc + (net->lw + k * F) * V;
        for (int64_t f = 0; f < F; ++f) st(a + f * V, ld(a + f * V) + gk * ld(h + f * V));
        st(acc + (net->lb + k) * V, ld(acc + (net->lb + k) * V) + gk);
    }
    for (int64_t f0 = 0; f0 < F; f0 += 5) {
        int64_t ff[5];
        for (int t = 0; t < 5; ++t) ff[t] = f0 + t < F ? f0 + t : f0;
        v8 d[5] = {{0}, {0}, {0}, {0}, {0}};
        for (int64_t k = 0; k < K; ++k) {
            v8 gk = ld(g + k * V);
            IN_REGISTER(gk);
            for (int t = 0; t < 5; ++t) d[t] += gk * bc(W[k * F + ff[t]]);
        }
        for (int t = 0; t < 5 && f0 + t < F; ++t) st(dh + (f0 + t) * V, d[t]);
    }
}

/* LayerNorm + ReLU backward of a layer: dh -> dz (rows past lout up to blocks: zeros), and the per-lane sums
 * for gamma, beta and the convolution bias */
static void norm_backward(const Net *net, const Layer *ly, const float *gamma, const float *beta,
                          const float *saved, const float *dh, float *dz, float *m, float *acc) {
    int64_t C = net->C;
    const float inv_c = 1.0f / (float)C;
    const float *sn = saved + ly->sn, *sr = saved + ly->sr;
    for (int64_t row = 0; row < ly->lout; ++row) {      /* ga = dh where the ReLU passed; the row's two means */
        v8 m1[2] = {{0}, {0}}, m2[2] = {{0}, {0}};
        for (int64_t c = 0; c < C; ++c) {
            v8 n = ld(sn + (row * C + c) * V), a = n * bc(gamma[c]) + bc(beta[c]);
            v8 ga = (v8)((v8i)ld(dh + (row * C + c) * V) & (a > (v8){0})), gn = ga * bc(gamma[c]);
            st(dz + (row * C + c) * V, ga);
            m1[c & 1] += gn;
            m2[c & 1] += gn * n;
        }
        st(m + 2 * row * V, (m1[0] + m1[1]) * inv_c);
        st(m + (2 * row + 1) * V, (m2[0] + m2[1]) * inv_c);
    }
    for (int64_t c = 0; c < C; ++c) {                   /* channel by channel: the sums stay in registers */
        v8 g = bc(gamma[c]), sg = {0}, sb = {0}, sd = {0};
        for (int64_t row = 0; row < ly->lout; ++row) {
            v8 n = ld(sn + (row * C + c) * V), ga = ld(dz + (row * C + c) * V), gn = ga * g;
            sg += ga * n;
            sb += ga;
            v8 d = ld(sr + row * V) * (gn - ld(m + 2 * row * V) - n * ld(m + (2 * row + 1) * V));
            st(dz + (row * C + c) * V, d);
            sd += d;
        }
        st(acc + (ly->g + c) * V, ld(acc + (ly->g + c) * V) + sg);
        st(acc + (ly->be + c) * V, ld(acc + (ly->be + c) * V) + sb);
        st(acc + (ly->b + c) * V, ld(acc + (ly->b + c) * V) + sd);
    }
    memset(dz + ly->lout * C * V, 0, sizeof(float) * (ly->blocks - ly->lout) * C * V);
}

/* weight gradient, per lane: dW[co, c, j] += sum_row dz[row][co] in[s row + j - pad][c]; 5 channels by 2
 * (c, j) pairs in registers */
static void weight_backward(const Net *net, const Layer *ly, const float *in, const float *dz, float *acc) {
    int64_t C = net->C, cin = ly->cin, k = ly->k, pairs = cin * k, step = ly->s * cin * V;
    float *gw = acc + ly->w * V;
    for (int64_t p0 = 0; p0 < pairs; p0 += 2) {
        int64_t pp[2], off[2];
        for (int i = 0; i < 2; ++i) {
            pp[i] = p0 + i < pairs ? p0 + i : p0;               /* p = c * k + j, as in the weight's layout */
            off[i] = ((pp[i] % k - ly->pad) * cin + pp[i] / k) * V;
        }
        for (int64_t co0 = 0; co0 < C; co0 += 5) {
            int64_t cc[5];
            for (int t = 0; t < 5; ++t) cc[t] = co0 + t < C ? co0 + t : co0;
            v8 a[5][2];
            for (int t = 0; t < 5; ++t)
                for (int i = 0; i < 2; ++i) a[t][i] = ld(gw + (cc[t] * pairs + pp[i]) * V);
            for (int64_t row = 0; row < ly->lout; ++row) {
                v8 x0 = ld(in + row * step + off[0]), x1 = ld(in + row * step + off[1]);
                IN_REGISTER(x0); IN_REGISTER(x1);
                for (int t = 0; t < 5; ++t) {
                    v8 d = ld(dz + (row * C + cc[t]) * V);
                    IN_REGISTER(d);
                    a[t][0] += d * x0; a[t][1] += d * x1;
                }
            }
            /* a repeated channel or pair holds the same sum as the original: storing it again is harmless */
            for (int t = 4; t >= 0; --t)
                for (int i = 1; i >= 0; --i) st(gw + (cc[t] * pairs + pp[i]) * V, a[t][i]);
        }
    }
}

/* input gradient: dh[s row + j - pad][c] = sum_co dz[row][co] w[co, c, j]; 5 rows by 2 channels in registers */
static void input_backward(const Net *net, const Layer *ly, const float *w, const float *dz, float *dh) {
    int64_t C = net->C, cin = ly->cin, k = ly->k;
    int64_t first = -ly->pad, last = ly->s * (ly->blocks - 1) + k - ly->pad;     /* rows written: [first, last) */
    if (last < ly->lin) last = ly->lin;                                          /* and every input row */
    memset(dh + first * cin * V, 0, sizeof(float) * (last - first) * cin * V);
    for (int64_t r0 = 0; r0 < ly->blocks; r0 += RB)
        for (int64_t j = 0; j < k; ++j)
            for (int64_t c0 = 0; c0 < cin; c0 += 2) {
                int64_t c1 = c0 + 1 < cin ? c0 + 1 : c0;
                v8 a[RB][2];
                for (int i = 0; i < RB; ++i) a[i][0] = a[i][1] = (v8){0};
                for (int64_t co = 0; co < C; ++co) {
                    v8 w0 = bc(w[(co * cin + c0) * k + j]), w1 = bc(w[(co * cin + c1) * k + j]);
                    IN_REGISTER(w0); IN_REGISTER(w1);
                    for (int i = 0; i < RB; ++i) {
                        v8 d = ld(dz + ((r0 + i) * C + co) * V);
                        IN_REGISTER(d);
                        a[i][0] += d * w0; a[i][1] += d * w1;
                    }
                }
                for (int i = 0; i < RB; ++i) {
                    float *row = dh + ((ly->s * (r0 + i) + j - ly->pad) * cin) * V;
                    st(row + c0 * V, ld(row + c0 * V) + a[i][0]);
                    if (c1 != c0) st(row + c1 * V, ld(row + c1 * V) + a[i][1]);
                }
            }
}

/* one group of `count` examples: adds its per-lane gradients to w->acc */
static void group_backward(const Net *net, const float *const *P, const float *x, const float *saved,
                           const float *glogits, int count, Work *w) {
    load_inputs(net, x, count, w);
    restore_activations(net, P, saved, w);
    for (int64_t k = 0; k < net->K; ++k) {
        v8 v = {0};
        for (int e = 0; e < count; ++e) v[e] = glogits[e * net->K + k];
        st(w->lg + k * V, v);
    }
    linear_backward(net, P[4 * NL], w->h[NL - 1], w->lg, w->acc, w->dh);
    for (int l = NL - 1; l >= 0; --l) {
        const Layer *ly = &net->ly[l];
        norm_backward(net, ly, P[4 * l + 2], P[4 * l + 3], saved, w->dh, w->z, w->m, w->acc);
        weight_backward(net, ly, l == 0 ? w->x : w->h[l - 1], w->z, w->acc);
        if (l > 0) input_backward(net, ly, P[4 * l], w->z, w->dh);
    }
}

/* gpart: scratch (R, NPARTS, nparam); grads: 14 pointers, laid out as raw. Returns 0 when it cannot allocate. */
int cnn_backward(const float *x, int64_t x_run_stride, const float *const *raw, const float *saved,
                 const float *glogits, int64_t R, int64_t B, const int64_t *spec, float *gpart, float *const *grads,
                 int threads) {
    Net net;
    setup(&net, spec);
    int64_t groups = (B + V - 1) / V, np = net.nparam, failed = 0;
#pragma omp parallel num_threads(threads) reduction(+:failed)
    {
        Work w;
        int ok = work_alloc(&net, &w, 1);
        if (!ok) failed = 1;
#pragma omp for schedule(static)
        for (int64_t item = 0; item < R * NPARTS; ++item) {
            if (!ok) continue;
            int64_t r = item / NPARTS, part = item % NPARTS;
            int64_t g0 = groups * part / NPARTS, g1 = groups * (part + 1) / NPARTS;
            const float *P[4 * NL + 2];
            copy_params(&net, raw, r, P);
            memset(w.acc, 0, sizeof(float) * np * V);
            for (int64_t g = g0; g < g1; ++g) {
                int64_t b0 = g * V;
                int count = B - b0 < V ? (int)(B - b0) : V;
                group_backward(&net, P, x + r * x_run_stride + b0 * net.L0 * net.cin0,
                               saved + (r * groups + g) * net.ssize, glogits + (r * B + b0) * net.K, count, &w);
            }
            float *out = gpart + item * np;
            for (int64_t i = 0; i < np; ++i) {
                v8 a = ld(w.acc + i * V);
                out[i] = ((a[0] + a[1]) + (a[2] + a[3])) + ((a[4] + a[5]) + (a[6] + a[7]));
            }
        }
        if (ok) work_free(&net, &w);
#pragma omp barrier
        /* each copy: its parts in order, into the 14 gradient tensors */
#pragma omp for schedule(static)
        for (int64_t r = 0; r < R; ++r) {
            const float *parts = gpart + r * NPARTS * np;
            int64_t sizes[4 * NL + 2], i = 0;
            for (int l = 0; l < NL; ++l) {
                sizes[4 * l] = net.C * net.ly[l].cin * net.ly[l].k;
                for (int t = 1; t < 4; ++t) sizes[4 * l + t] = net.C;
            }
            sizes[4 * NL] = net.K * net.F;
            sizes[4 * NL + 1] = net.K;
            for (int t = 0; t < 4 * NL + 2; ++t)
                for (int64_t e = 0; e < sizes[t]; ++e, ++i) {
                    float s = parts[i];
                    for (int p = 1; p < NPARTS; ++p) s += parts[p * np + i];
                    grads[t][r * sizes[t] + e] = s;
                }
        }
    }
    return failed == 0;
}

/* for the caller: {saved floats per group of 8 examples, parameters per copy, examples per group, NPARTS,
 * SLACK} */
void cnn_sizes(const int64_t *spec, int64_t *out) {
    Net net;
    setup(&net, spec);
    out[0] = net.ssize; out[1] = net.nparam; out[2] = V; out[3] = NPARTS; out[4] = SLACK;
}
