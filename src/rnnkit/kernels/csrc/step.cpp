// One streaming time step of a plain LSTM or GRU layer in one call (rnnkit/kernels/step.py).
//
// torch's own cell (`torch._VF.lstm_cell`, what nn.LSTMCell calls) runs two GEMMs (input and hidden
// side, each a threaded BLAS call with its own start-up cost) and a pointwise kernel: ~29-60 us at B=1,
// I=64, H=256 on the project's Xeon VMs, for 1.3 MB of weights. Here one parallel region does it all:
// the hidden units are split over torch's threads; for its units a thread forms the four (GRU: three)
// gate pre-activations as dot products of the weight rows with x and h (each row read once per step,
// from the thread's own cache when the weights stay there between steps), then runs the gates' math
// vectorised over its units. No intermediate tensor, no second pass over memory.
//
// Weights are the layer's parameters as they are (torch's layouts: LSTM gates (i, f, g, o), GRU (r, z,
// n); W_ih (G*H, I), W_hh (G*H, H)); biases are optional. Small batches only: each row of weights is
// reused from L1 for the batch's rows, but the multiply-adds grow with the batch (at B=8 torch's GEMM is
// faster). A stack of layers runs in one call. Bound with pybind11, not as a dispatcher op: the step
// needs no autograd, and a dispatcher call from Python costs ~1.3 us more (a tenth of the step).
//
// `lstm_step` / `gru_step` return None where they do not apply (a batch over kMaxBatch, a dtype other
// than float32/float64, a tensor not contiguous or not on the CPU, shapes that do not fit, or autograd
// wanted: grad mode on and something requiring a gradient); the caller then takes torch's cell.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <c10/core/GradMode.h>
#include <torch/csrc/autograd/python_variable.h>
#include <torch/csrc/utils/pybind.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <cstdint>
#include <initializer_list>
#include <type_traits>
#include <vector>

#if defined(__AVX2__) && defined(__FMA__)
#include <immintrin.h>
#define RNNKIT_AVX2 1
#if defined(__GNUC__) && defined(__x86_64__)
#define RNNKIT_AVX512 1  // per-function target below, chosen at run time (set_wide)
#endif
#endif

#include "common.h"

namespace {

using at::Tensor;
using rnnkit_cpp::sigmoid_;
using rnnkit_cpp::tanh_;

#ifdef RNNKIT_AVX2
// The four sums of a, b, c, d's 8 lanes in one register: [sum a, sum b, sum c, sum d].
inline __m128 hsum4(__m256 a, __m256 b, __m256 c, __m256 d) {
  const __m256 abcd = _mm256_hadd_ps(_mm256_hadd_ps(a, b), _mm256_hadd_ps(c, d));
  return _mm_add_ps(_mm256_castps256_ps128(abcd), _mm256_extractf128_ps(abcd, 1));
}
#endif

// Dot products of N (<= 4) weight rows with one vector, plus optionally N more rows with a second
// vector into the same sums (one horizontal reduction for both): out[g] = w[g] . v + w2[g] . v2.
template <int N, typename S>
inline void dotn(const S* const* w, const S* v, int64_t n, S* out, const S* const* w2 = nullptr,
                 const S* v2 = nullptr, int64_t n2 = 0) {
#ifdef RNNKIT_AVX2
  if constexpr (std::is_same_v<S, float>) {  // two accumulators per row: 2N FMA chains in flight
    __m256 a[4], b[4];
    for (int g = 0; g < 4; ++g) a[g] = b[g] = _mm256_setzero_ps();
    float s[4] = {};
    for (int part = 0; part < 2; ++part) {
      const float* const* wp = part == 0 ? w : w2;
      const float* vp = part == 0 ? v : v2;
      const int64_t m = part == 0 ? n : n2;
      int64_t k = 0;
      for (; k + 16 <= m; k += 16) {
        const __m256 v0 = _mm256_loadu_ps(vp + k), v1 = _mm256_loadu_ps(vp + k + 8);
        for (int g = 0; g < N; ++g) {
          a[g] = _mm256_fmadd_ps(_mm256_loadu_ps(wp[g] + k), v0, a[g]);
          b[g] = _mm256_fmadd_ps(_mm256_loadu_ps(wp[g] + k + 8), v1, b[g]);
        }
      }
      for (; k < m; ++k)
        for (int g = 0; g < N; ++g) s[g] += wp[g][k] * vp[k];
    }
    float t[4];
    _mm_storeu_ps(t, hsum4(_mm256_add_ps(a[0], b[0]), _mm256_add_ps(a[1], b[1]), _mm256_add_ps(a[2], b[2]),
                           _mm256_add_ps(a[3], b[3])));
    for (int g = 0; g < N; ++g) out[g] = t[g] + s[g];
    return;
  }
#endif
  for (int g = 0; g < N; ++g) {
    S acc[8] = {};
    S s = 0;
    for (int part = 0; part < 2; ++part) {
      const S* wg = part == 0 ? w[g] : (w2 ? w2[g] : nullptr);
      const S* vp = part == 0 ? v : v2;
      const int64_t m = part == 0 ? n : n2;
      int64_t k = 0;
      for (; k + 8 <= m; k += 8)
#pragma omp simd
        for (int l = 0; l < 8; ++l) acc[l] += wg[k + l] * vp[k + l];
      for (; k < m; ++k) s += wg[k] * vp[k];
    }
    for (int l = 0; l < 8; ++l) s += acc[l];
    out[g] = s;
  }
}

constexpr int64_t kMaxBatch = 4;

// A task's gate sums: on the stack up to 16 KB (4 gates x batch x units <= 4096 floats), else on the
// heap (a malloc per task and step showed in the profile: glibc's arena lock).
template <typename S>
struct Scratch {
  static constexpr int64_t kStack = 16384 / sizeof(S);
  S stack[kStack];
  std::vector<S> heap;
  S* data;
  explicit Scratch(int64_t n) : data(n <= kStack ? stack : (heap.resize(n), heap.data())) {}
};

// Units per task: a step splits over threads only with >= 32K multiply-adds per task.
inline int64_t grain(int64_t per_unit) { return std::max<int64_t>(1, 32768 / std::max<int64_t>(per_unit, 1)); }

// pre[b * (j1 - j0) + j - j0] = W_i[j] . x_b + W_h[j] . h_b for the rows j0 <= j < j1 of one gate's
// blocks W_i (rows of I) and W_h (rows of H): 4 neighbouring rows at a time (8 FMA chains), both sides
// into one sum. Bound by reading the weights from L2: 5.7-6.1 us per thread for 655 KB at B=1, I=64,
// H=256 (timed inside the step) on one Xeon VM, ~11 us on another (~60 GB/s, 2 x 32-byte loads per
// cache line); the four gates' rows of a unit side by side, 2 rows per pass, separate passes per side,
// software prefetch and a 4-row AVX-512 loop all measured the same or slower. An 8-row AVX-512 loop on
// 64-byte-aligned rows is faster: gate_sums_wide.
template <typename S>
inline void gate_sums(const S* Wi, const S* Wh, const S* x, const S* h, int64_t B, int64_t I, int64_t H,
                      int64_t j0, int64_t j1, S* pre) {
  const int64_t U = j1 - j0;
  int64_t j = j0;
  for (; j + 4 <= j1; j += 4) {
    const S* ri[4] = {Wi + j * I, Wi + (j + 1) * I, Wi + (j + 2) * I, Wi + (j + 3) * I};
    const S* rh[4] = {Wh + j * H, Wh + (j + 1) * H, Wh + (j + 2) * H, Wh + (j + 3) * H};
    for (int64_t b = 0; b < B; ++b) dotn<4, S>(ri, x + b * I, I, pre + b * U + j - j0, rh, h + b * H, H);
  }
  for (; j < j1; ++j) {
    const S* ri[1] = {Wi + j * I};
    const S* rh[1] = {Wh + j * H};
    for (int64_t b = 0; b < B; ++b) dotn<1, S>(ri, x + b * I, I, pre + b * U + j - j0, rh, h + b * H, H);
  }
}

#ifdef RNNKIT_AVX512
// The float gate sums with AVX-512 where the CPU has it and torch uses it (torch's CPU capability AVX512;
// `_cpp` calls set_wide): 8 rows at a time, one 16-float register per row, the row tails by masked loads.
// Rows of torch's weights start 64-byte aligned (rows of I or H floats, I and H multiples of 16), so a load
// is one cache line: reading a thread's 655 KB of weights from L2 at B=1, I=64, H=256 measured ~95 GB/s on
// the Xeon VM against ~60 GB/s for the AVX2 loop above (2 x 8-float loads per line).
bool g_wide = false;

#define RNNKIT_WIDE __attribute__((target("avx512f,avx2,fma")))

// [sum a[0], ..., sum a[7]] of eight 16-float registers, in one 8-float register.
RNNKIT_WIDE inline __m256 hsum8(const __m512* a) {
  __m256 r[8];
  for (int g = 0; g < 8; ++g)
    r[g] = _mm256_add_ps(_mm512_castps512_ps256(a[g]),
                         _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(a[g]), 1)));
  const __m256 s0 = _mm256_hadd_ps(_mm256_hadd_ps(r[0], r[1]), _mm256_hadd_ps(r[2], r[3]));
  const __m256 s1 = _mm256_hadd_ps(_mm256_hadd_ps(r[4], r[5]), _mm256_hadd_ps(r[6], r[7]));
  return _mm256_add_ps(_mm256_permute2f128_ps(s0, s1, 0x20), _mm256_permute2f128_ps(s0, s1, 0x31));
}

// out[g] = w[g] . v + w2[g] . v2 for N <= 8 rows (dotn's contract, float).
template <int N>
RNNKIT_WIDE inline void dotn_wide(const float* const* w, const float* v, int64_t n, float* out,
                                  const float* const* w2, const float* v2, int64_t n2) {
  __m512 a[8];
  for (int g = 0; g < 8; ++g) a[g] = _mm512_setzero_ps();
  for (int part = 0; part < 2; ++part) {
    const float* const* wp = part == 0 ? w : w2;
    const float* vp = part == 0 ? v : v2;
    const int64_t m = part == 0 ? n : n2;
    if (wp == nullptr) continue;
    int64_t k = 0;
    for (; k + 16 <= m; k += 16) {
      const __m512 v0 = _mm512_loadu_ps(vp + k);
      for (int g = 0; g < N; ++g) a[g] = _mm512_fmadd_ps(_mm512_loadu_ps(wp[g] + k), v0, a[g]);
    }
    if (k < m) {
      const __mmask16 mask = static_cast<__mmask16>((1u << (m - k)) - 1);
      const __m512 v0 = _mm512_maskz_loadu_ps(mask, vp + k);
      for (int g = 0; g < N; ++g) a[g] = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(mask, wp[g] + k), v0, a[g]);
    }
  }
  if constexpr (N == 8) {
    _mm256_storeu_ps(out, hsum8(a));
  } else {
    for (int g = 0; g < N; ++g) out[g] = _mm512_reduce_add_ps(a[g]);
  }
}

// gate_sums (below) for float with dotn_wide: 8 rows at a time, then one by one.
RNNKIT_WIDE void gate_sums_wide(const float* Wi, const float* Wh, const float* x, const float* h, int64_t B,
                                int64_t I, int64_t H, int64_t j0, int64_t j1, float* pre) {
  const int64_t U = j1 - j0;
  int64_t j = j0;
  for (; j + 8 <= j1; j += 8) {
    const float *ri[8], *rh[8];
    for (int g = 0; g < 8; ++g) ri[g] = Wi + (j + g) * I, rh[g] = Wh + (j + g) * H;
    for (int64_t b = 0; b < B; ++b) dotn_wide<8>(ri, x + b * I, I, pre + b * U + j - j0, rh, h + b * H, H);
  }
  for (; j < j1; ++j) {
    const float* ri[1] = {Wi + j * I};
    const float* rh[1] = {Wh + j * H};
    for (int64_t b = 0; b < B; ++b) dotn_wide<1>(ri, x + b * I, I, pre + b * U + j - j0, rh, h + b * H, H);
  }
}

// gru_sums (below) for float with dotn_wide: 8 units at a time, then one by one.
RNNKIT_WIDE void gru_sums_wide(const float* wi, const float* wh, const float* xp, const float* hp, int64_t B,
                               int64_t I, int64_t H, int64_t j0, int64_t j1, float* pre) {
  const int64_t U = j1 - j0;
  int64_t j = j0;
  const float *ri[3][8], *rh[3][8];
  for (; j < j1; j += 8) {
    const int64_t n = std::min<int64_t>(8, j1 - j);
    for (int q = 0; q < 3; ++q)
      for (int64_t g = 0; g < n; ++g) ri[q][g] = wi + (q * H + j + g) * I, rh[q][g] = wh + (q * H + j + g) * H;
    for (int64_t b = 0; b < B; ++b) {
      const float *x = xp + b * I, *h = hp + b * H;
      float* p = pre + b * U + j - j0;
      if (n == 8) {
        dotn_wide<8>(ri[0], x, I, p, rh[0], h, H);
        dotn_wide<8>(ri[1], x, I, p + B * U, rh[1], h, H);
        dotn_wide<8>(ri[2], x, I, p + 2 * B * U, nullptr, nullptr, 0);
        dotn_wide<8>(rh[2], h, H, p + 3 * B * U, nullptr, nullptr, 0);
      } else {
        for (int64_t g = 0; g < n; ++g) {
          dotn_wide<1>(&ri[0][g], x, I, p + g, &rh[0][g], h, H);
          dotn_wide<1>(&ri[1][g], x, I, p + B * U + g, &rh[1][g], h, H);
          dotn_wide<1>(&ri[2][g], x, I, p + 2 * B * U + g, nullptr, nullptr, 0);
          dotn_wide<1>(&rh[2][g], h, H, p + 3 * B * U + g, nullptr, nullptr, 0);
        }
      }
    }
  }
}
#endif

// out[b * ld + j] = W[j] . v_b for the rows j0 <= j < j1 of W (rows of K): the layer-norm cells' sums,
// input and hidden side apart (each side is normalised on its own), 4 rows at a time.
template <typename S>
inline void row_sums(const S* W, const S* v, int64_t B, int64_t K, int64_t j0, int64_t j1, S* out, int64_t ld) {
  int64_t j = j0;
  for (; j + 4 <= j1; j += 4) {
    const S* r[4] = {W + j * K, W + (j + 1) * K, W + (j + 2) * K, W + (j + 3) * K};
    for (int64_t b = 0; b < B; ++b) dotn<4, S>(r, v + b * K, K, out + b * ld + j);
  }
  for (; j < j1; ++j) {
    const S* r[1] = {W + j * K};
    for (int64_t b = 0; b < B; ++b) dotn<1, S>(r, v + b * K, K, out + b * ld + j);
  }
}

#ifdef RNNKIT_AVX512
// row_sums for float with dotn_wide: 8 rows at a time, then one by one.
RNNKIT_WIDE void row_sums_wide(const float* W, const float* v, int64_t B, int64_t K, int64_t j0, int64_t j1,
                               float* out, int64_t ld) {
  int64_t j = j0;
  for (; j + 8 <= j1; j += 8) {
    const float* r[8];
    for (int g = 0; g < 8; ++g) r[g] = W + (j + g) * K;
    for (int64_t b = 0; b < B; ++b) dotn_wide<8>(r, v + b * K, K, out + b * ld + j, nullptr, nullptr, 0);
  }
  for (; j < j1; ++j) {
    const float* r[1] = {W + j * K};
    for (int64_t b = 0; b < B; ++b) dotn_wide<1>(r, v + b * K, K, out + b * ld + j, nullptr, nullptr, 0);
  }
}
#endif

// A row's mean and 1 / sqrt(var + eps) in the step's dtype (row_moments of common.h, the C++ loops' own).
template <typename S>
inline void moments(const S* a, int64_t n, double eps, S& mean, S& rstd) {
  double m, r;
  rnnkit_cpp::row_moments(a, n, eps, m, r);
  mean = static_cast<S>(m);
  rstd = static_cast<S>(r);
}

// p[u] += a[u] (+ b[u] where b is given).
template <typename S>
inline void add_biases(S* p, const S* a, const S* b, int64_t n) {
  if (b != nullptr) {
#pragma omp simd
    for (int64_t u = 0; u < n; ++u) p[u] += a[u] + b[u];
  } else {
#pragma omp simd
    for (int64_t u = 0; u < n; ++u) p[u] += a[u];
  }
}

// One LSTM layer: x (B, I), h, c, h1, c1 (B, H); w_ih (4H, I), w_hh (4H, H); bi, bh (4H) or null.
template <typename S>
void lstm_layer(const S* xp, const S* hp, const S* cp, const S* wi, const S* wh, const S* bi, const S* bh,
                int64_t B, int64_t I, int64_t H, S* ho, S* co) {
  at::parallel_for(0, H, grain(4 * (I + H) * B), [&](int64_t j0, int64_t j1) {
    const int64_t U = j1 - j0;
    Scratch<S> scratch(4 * B * U);  // [gate][row][unit]
    S* pre = scratch.data;
    for (int g = 0; g < 4; ++g) {
#ifdef RNNKIT_AVX512
      if constexpr (std::is_same_v<S, float>)
        if (g_wide) {
          gate_sums_wide(wi + g * H * I, wh + g * H * H, xp, hp, B, I, H, j0, j1, pre + g * B * U);
          continue;
        }
#endif
      gate_sums<S>(wi + g * H * I, wh + g * H * H, xp, hp, B, I, H, j0, j1, pre + g * B * U);
    }
    if (bi != nullptr)  // a separate pass: a condition inside the gates' loop kept it from vectorising
      for (int g = 0; g < 4; ++g)
        for (int64_t b = 0; b < B; ++b) add_biases(pre + (g * B + b) * U, bi + g * H + j0, bh + g * H + j0, U);
    for (int64_t b = 0; b < B; ++b) {
      const S *pi = pre + b * U, *pf = pre + (B + b) * U, *pg = pre + (2 * B + b) * U, *po = pre + (3 * B + b) * U;
      const S* c0 = cp + b * H + j0;
      S *c_out = co + b * H + j0, *h_out = ho + b * H + j0;
#pragma omp simd
      for (int64_t u = 0; u < U; ++u) {
        const S cn = sigmoid_(pf[u]) * c0[u] + sigmoid_(pi[u]) * tanh_(pg[u]);
        c_out[u] = cn;
        h_out[u] = sigmoid_(po[u]) * tanh_(cn);
      }
    }
  });
}

// The GRU's sums for units j0 <= j < j1 (gru_layer's layout [r, z, n_x, n_h][row][unit]): r and z over
// both sides, n's two sides apart; the three gates' rows of a unit per pass.
template <typename S>
inline void gru_sums(const S* wi, const S* wh, const S* xp, const S* hp, int64_t B, int64_t I, int64_t H,
                     int64_t j0, int64_t j1, S* pre) {
  const int64_t U = j1 - j0;
  for (int64_t j = j0; j < j1; ++j) {
    const S* ri[3] = {wi + j * I, wi + (H + j) * I, wi + (2 * H + j) * I};
    const S* rh[3] = {wh + j * H, wh + (H + j) * H, wh + (2 * H + j) * H};
    for (int64_t b = 0; b < B; ++b) {
      S sx[3], sh[3];
      dotn<3, S>(ri, xp + b * I, I, sx);
      dotn<3, S>(rh, hp + b * H, H, sh);
      pre[b * U + (j - j0)] = sx[0] + sh[0];
      pre[(B + b) * U + (j - j0)] = sx[1] + sh[1];
      pre[(2 * B + b) * U + (j - j0)] = sx[2];
      pre[(3 * B + b) * U + (j - j0)] = sh[2];
    }
  }
}

// One GRU layer (torch's cell): r = s(W_ir x + b_ir + W_hr h + b_hr), z likewise, n = tanh(W_in x + b_in +
// r (W_hn h + b_hn)), h' = n + z (h - n). The four sums per unit: r, z (both sides), n's two sides.
template <typename S>
void gru_layer(const S* xp, const S* hp, const S* wi, const S* wh, const S* bi, const S* bh, int64_t B, int64_t I,
               int64_t H, S* ho) {
  at::parallel_for(0, H, grain(3 * (I + H) * B), [&](int64_t j0, int64_t j1) {
    const int64_t U = j1 - j0;
    Scratch<S> scratch(4 * B * U);  // [r, z, n_x, n_h][row][unit]
    S* pre = scratch.data;
#ifdef RNNKIT_AVX512
    if constexpr (std::is_same_v<S, float>) {
      if (g_wide)
        gru_sums_wide(wi, wh, xp, hp, B, I, H, j0, j1, pre);
      else
        gru_sums<S>(wi, wh, xp, hp, B, I, H, j0, j1, pre);
    } else
#endif
      gru_sums<S>(wi, wh, xp, hp, B, I, H, j0, j1, pre);
    if (bi != nullptr)
      for (int64_t b = 0; b < B; ++b) {
        add_biases(pre + b * U, bi + j0, bh + j0, U);                                  // r
        add_biases(pre + (B + b) * U, bi + H + j0, bh + H + j0, U);                    // z
        add_biases(pre + (2 * B + b) * U, bi + 2 * H + j0, static_cast<const S*>(nullptr), U);  // n, x side
        add_biases(pre + (3 * B + b) * U, bh + 2 * H + j0, static_cast<const S*>(nullptr), U);  // n, h side
      }
    for (int64_t b = 0; b < B; ++b) {
      const S *pr = pre + b * U, *pz = pre + (B + b) * U, *pnx = pre + (2 * B + b) * U, *pnh = pre + (3 * B + b) * U;
      const S* h0 = hp + b * H + j0;
      S* h_out = ho + b * H + j0;
#pragma omp simd
      for (int64_t u = 0; u < U; ++u) {
        const S n = tanh_(pnx[u] + sigmoid_(pr[u]) * pnh[u]);
        h_out[u] = n + sigmoid_(pz[u]) * (h0[u] - n);
      }
    }
  });
}

// One layer-normalised LSTM (G = 4) or GRU (G = 3) layer (rnnkit/cells/layernorm.py): the G*H sums of
// each side in one parallel region over the rows, then per batch row (serially: the norms need the
// whole row, and the ~G*H pointwise values cost a microsecond or two) both sides' norms, the gates,
// and for the LSTM the cell's norm. gi, gh: the sides' gains (G*H); gc, bc: the cell norm's (H);
// px, ph: scratch of B*G*H each.
template <typename S>
void ln_layer(int G, const S* xp, const S* hp, const S* cp, const S* wi, const S* wh, const S* bi, const S* bh,
              const S* gi, const S* gh, const S* gc, const S* bc, double eps, int64_t B, int64_t I, int64_t H,
              S* ho, S* co, S* px, S* ph) {
  const int64_t N = G * H;
  at::parallel_for(0, N, grain((I + H) * B), [&](int64_t j0, int64_t j1) {
#ifdef RNNKIT_AVX512
    if constexpr (std::is_same_v<S, float>)
      if (g_wide) {
        row_sums_wide(wi, xp, B, I, j0, j1, px, N);
        row_sums_wide(wh, hp, B, H, j0, j1, ph, N);
        return;
      }
#endif
    row_sums<S>(wi, xp, B, I, j0, j1, px, N);
    row_sums<S>(wh, hp, B, H, j0, j1, ph, N);
  });
  for (int64_t b = 0; b < B; ++b) {
    S *ax = px + b * N, *ah = ph + b * N, mx, rx, mh, rh;
    moments(ax, N, eps, mx, rx);
    moments(ah, N, eps, mh, rh);
    const S* h0 = hp + b * H;
    S* h_out = ho + b * H;
    if (G == 4) {  // torch's gate order (i, f, g, o); both sides and both biases into ax
#pragma omp simd
      for (int64_t u = 0; u < N; ++u) ax[u] = gi[u] * (ax[u] - mx) * rx + gh[u] * (ah[u] - mh) * rh;
      if (bi != nullptr) add_biases(ax, bi, bh, N);
      const S* c0 = cp + b * H;
      S* c_out = co + b * H;
#pragma omp simd
      for (int64_t u = 0; u < H; ++u)
        c_out[u] = sigmoid_(ax[H + u]) * c0[u] + sigmoid_(ax[u]) * tanh_(ax[2 * H + u]);
      S mc, rc;
      moments(c_out, H, eps, mc, rc);
#pragma omp simd
      for (int64_t u = 0; u < H; ++u)
        h_out[u] = sigmoid_(ax[3 * H + u]) * tanh_(gc[u] * (c_out[u] - mc) * rc + bc[u]);
    } else {  // (r, z, n): each side normalised, then its own bias
#pragma omp simd
      for (int64_t u = 0; u < N; ++u) {
        ax[u] = gi[u] * (ax[u] - mx) * rx;
        ah[u] = gh[u] * (ah[u] - mh) * rh;
      }
      if (bi != nullptr) {
        add_biases(ax, bi, static_cast<const S*>(nullptr), N);
        add_biases(ah, bh, static_cast<const S*>(nullptr), N);
      }
#pragma omp simd
      for (int64_t u = 0; u < H; ++u) {
        const S n = tanh_(ax[2 * H + u] + sigmoid_(ax[u] + ah[u]) * ah[2 * H + u]);
        h_out[u] = n + sigmoid_(ax[H + u] + ah[H + u]) * (h0[u] - n);
      }
    }
  }
}

bool usable(const Tensor& t, at::ScalarType dtype) {
  return t.defined() && t.scalar_type() == dtype && t.device().is_cpu() && t.is_contiguous() &&
         t.layout() == at::kStrided;
}

// A stack of L layers: x (B, I); states (L, B, H); weights per layer w_ih, w_hh[, b_ih, b_hh] (`bias`).
// Returns None (module doc) or (y (B, H), new state): the LSTM's state as state_type(h, c) (the caller's
// LSTMState, a tuple subclass), each part (L, B, H); y is a copy of the last layer's h.
py::object stack_step(int G, const Tensor& x, const std::vector<Tensor>& states, const std::vector<Tensor>& w,
                      bool bias, const py::object& state_type, bool ln = false, double eps = 0.0,
                      const double* zone = nullptr) {
  // per layer: w_ih, w_hh[, b_ih, b_hh][, gain_ih, gain_hh[, gain_c, bias_c]] (the cells' parameter order)
  const int64_t nb = bias ? 4 : 2, per = nb + (ln ? (G == 4 ? 4 : 2) : 0);
  const at::ScalarType dt = x.scalar_type();
  if ((dt != at::kFloat && dt != at::kDouble) || !usable(x, dt) || x.dim() != 2 || x.size(0) > kMaxBatch ||
      w.empty() || static_cast<int64_t>(w.size()) % per != 0)
    return py::none();
  const int64_t L = static_cast<int64_t>(w.size()) / per, B = x.size(0), H = w[1].dim() == 2 ? w[1].size(1) : -1;
  const bool grad = c10::GradMode::is_enabled();
  for (const Tensor& t : states)
    if (!usable(t, dt) || t.dim() != 3 || t.size(0) != L || t.size(1) != B || t.size(2) != H ||
        (grad && t.requires_grad()))
      return py::none();
  if (grad && x.requires_grad()) return py::none();
  for (int64_t k = 0; k < L; ++k) {
    const int64_t I = k == 0 ? x.size(1) : H;
    const Tensor &wi = w[k * per], &wh = w[k * per + 1];
    if (!usable(wi, dt) || !usable(wh, dt) || wi.sizes() != at::IntArrayRef({G * H, I}) ||
        wh.sizes() != at::IntArrayRef({G * H, H}))
      return py::none();
    for (int64_t q = 0; q < per; ++q)
      if (grad && w[k * per + q].requires_grad()) return py::none();
    for (int64_t q = 2; q < per; ++q)  // biases and the sides' gains G*H values, the cell norm's H
      if (!usable(w[k * per + q], dt) || w[k * per + q].numel() != (q < nb + 2 ? G * H : H)) return py::none();
  }
  std::vector<Tensor> out;
  for (size_t s = 0; s < states.size(); ++s) out.push_back(at::empty({L, B, H}, x.options()));
  {
    // the GIL stays held: the step already uses all of torch's threads, and releasing it measured ~0.5 us
    AT_DISPATCH_FLOATING_TYPES(dt, "rnnkit_step", [&] {
      using S = scalar_t;
      const S* in = x.data_ptr<S>();
      for (int64_t k = 0; k < L; ++k) {
        const int64_t I = k == 0 ? x.size(1) : H, off = k * B * H;
        const S *wi = w[k * per].data_ptr<S>(), *wh = w[k * per + 1].data_ptr<S>();
        const S* bi = bias ? w[k * per + 2].data_ptr<S>() : nullptr;
        const S* bh = bias ? w[k * per + 3].data_ptr<S>() : nullptr;
        S* ho = out[0].data_ptr<S>() + off;
        if (ln) {
          const S* g[4] = {};  // gain_ih, gain_hh[, gain_c, bias_c]
          for (int64_t q = nb; q < per; ++q) g[q - nb] = w[k * per + q].data_ptr<S>();
          const int64_t N = G * H;
          static thread_local std::vector<S> scratch;  // both sides' sums; grown once, no malloc per step
          if (static_cast<int64_t>(scratch.size()) < 2 * B * N) scratch.resize(2 * B * N);
          ln_layer<S>(G, in, states[0].data_ptr<S>() + off, G == 4 ? states[1].data_ptr<S>() + off : nullptr, wi, wh,
                      bi, bh, g[0], g[1], g[2], g[3], eps, B, I, H, ho,
                      G == 4 ? out[1].data_ptr<S>() + off : nullptr, scratch.data(), scratch.data() + B * N);
        } else if (G == 4)
          lstm_layer<S>(in, states[0].data_ptr<S>() + off, states[1].data_ptr<S>() + off, wi, wh, bi, bh, B, I, H, ho,
                        out[1].data_ptr<S>() + off);
        else
          gru_layer<S>(in, states[0].data_ptr<S>() + off, wi, wh, bi, bh, B, I, H, ho);
        // zoneout's expectation (evaluation mode): each state part lerp(new, old, p), as torch.lerp computes
        // it, before the next layer reads h
        for (size_t part = 0; zone != nullptr && part < states.size(); ++part) {
          const S p = static_cast<S>(zone[part]);
          if (p <= 0) continue;
          S* o = out[part].data_ptr<S>() + off;
          const S* old = states[part].data_ptr<S>() + off;
          for (int64_t i = 0; i < B * H; ++i) o[i] = rnnkit_cpp::lerp_(o[i], old[i], p);
        }
        in = ho;
      }
    });
  }
  // y: a copy of the last layer's h (B * H values), not a view of it: select() through the dispatcher cost
  // more than allocating and copying (~0.5 us of the step at H=8)
  Tensor yt = at::empty({B, H}, x.options());
  const int64_t bytes = B * H * x.element_size();
  std::memcpy(yt.data_ptr(), static_cast<const char*>(out[0].data_ptr()) + (L - 1) * bytes, bytes);
  py::object y = py::cast(yt);
  if (G == 4) {
    // state_type(h, c) without the Python call of the named tuple's __new__ (~0.4 us): what tuple's own
    // __new__ does for a subclass, the items set in place
    PyTypeObject* tp = reinterpret_cast<PyTypeObject*>(state_type.ptr());
    py::object h = py::cast(out[0]), c = py::cast(out[1]);
    PyObject* st = tp->tp_alloc(tp, 2);
    if (st == nullptr) throw py::error_already_set();
    PyTuple_SET_ITEM(st, 0, h.release().ptr());
    PyTuple_SET_ITEM(st, 1, c.release().ptr());
    return py::make_tuple(y, py::reinterpret_steal<py::object>(st));
  }
  return py::make_tuple(y, py::cast(out[0]));
}

// The Python entry points take handles and check them here: anything that is not a tensor where one is
// expected is None too (a pybind11 TypeError would format every argument, weights included).
bool tensors(std::initializer_list<py::handle> objs, std::vector<Tensor>& out) {
  for (py::handle o : objs) {
    if (!THPVariable_Check(o.ptr())) return false;
    out.push_back(THPVariable_Unpack(o.ptr()));
  }
  return true;
}

bool tensor_seq(py::handle seq, std::vector<Tensor>& out) {
  if (!PyTuple_Check(seq.ptr())) return false;
  for (py::handle o : py::reinterpret_borrow<py::tuple>(seq)) {
    if (!THPVariable_Check(o.ptr())) return false;
    out.push_back(THPVariable_Unpack(o.ptr()));
  }
  return true;
}

// The entry points of the plain cells (lstm_step, gru_step) and of the layer-normalised ones (ln_*: per
// layer also the gains ln_ih, ln_hh and for the LSTM ln_c's weight and bias; eps is the norms' epsilon).
py::object lstm_entry(py::handle x, py::handle h, py::handle c, py::handle w, py::handle bias,
                      const py::object& state_type, bool ln, double eps, double zh, double zc) {
  std::vector<Tensor> in, states, weights;
  const int with_bias = PyObject_IsTrue(bias.ptr());
  if (with_bias < 0) throw py::error_already_set();
  if (!tensors({x}, in) || !tensors({h, c}, states) || !tensor_seq(w, weights)) return py::none();
  // the state's type: a tuple subclass (stack_step builds it as tuple's __new__ would)
  if (!PyType_Check(state_type.ptr()) ||
      !PyType_IsSubtype(reinterpret_cast<PyTypeObject*>(state_type.ptr()), &PyTuple_Type))
    return py::none();
  if (!(zh >= 0 && zh < 1 && zc >= 0 && zc < 1)) return py::none();
  const double zone[2] = {zh, zc};
  return stack_step(4, in[0], states, weights, with_bias == 1, state_type, ln, eps, zone);
}

py::object gru_entry(py::handle x, py::handle h, py::handle w, py::handle bias, bool ln, double eps, double zh) {
  std::vector<Tensor> in, states, weights;
  const int with_bias = PyObject_IsTrue(bias.ptr());
  if (with_bias < 0) throw py::error_already_set();
  if (!tensors({x}, in) || !tensors({h}, states) || !tensor_seq(w, weights)) return py::none();
  if (!(zh >= 0 && zh < 1)) return py::none();
  const double zone[1] = {zh};
  return stack_step(3, in[0], states, weights, with_bias == 1, py::none(), ln, eps, zone);
}

// zh, zc: zoneout's rates for h and c in evaluation mode (its expectation; 0: none)
py::object lstm_step(py::handle x, py::handle h, py::handle c, py::handle w, py::handle bias,
                     const py::object& state_type, double zh, double zc) {
  return lstm_entry(x, h, c, w, bias, state_type, false, 0.0, zh, zc);
}

py::object gru_step(py::handle x, py::handle h, py::handle w, py::handle bias, double zh) {
  return gru_entry(x, h, w, bias, false, 0.0, zh);
}

py::object ln_lstm_step(py::handle x, py::handle h, py::handle c, py::handle w, py::handle bias, double eps,
                        const py::object& state_type, double zh, double zc) {
  return lstm_entry(x, h, c, w, bias, state_type, true, eps, zh, zc);
}

py::object ln_gru_step(py::handle x, py::handle h, py::handle w, py::handle bias, double eps, double zh) {
  return gru_entry(x, h, w, bias, true, eps, zh);
}

}  // namespace

// set_wide(on): use the AVX-512 gate sums where `on` and the CPU (and OS) has AVX-512F; returns whether
// they are used now. wide(): whether they are.
bool set_wide(bool on) {
#ifdef RNNKIT_AVX512
  g_wide = on && __builtin_cpu_supports("avx512f");
  return g_wide;
#else
  (void)on;
  return false;
#endif
}

bool wide() {
#ifdef RNNKIT_AVX512
  return g_wide;
#else
  return false;
#endif
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("lstm_step", &lstm_step, "One LSTM step of a layer stack, or None where it does not apply", py::arg("x"),
        py::arg("h"), py::arg("c"), py::arg("w"), py::arg("bias"), py::arg("state_type"), py::arg("zh") = 0.0,
        py::arg("zc") = 0.0);
  m.def("gru_step", &gru_step, "One GRU step of a layer stack, or None where it does not apply", py::arg("x"),
        py::arg("h"), py::arg("w"), py::arg("bias"), py::arg("zh") = 0.0);
  m.def("ln_lstm_step", &ln_lstm_step, "One layer-norm LSTM step of a layer stack, or None where it does not apply",
        py::arg("x"), py::arg("h"), py::arg("c"), py::arg("w"), py::arg("bias"), py::arg("eps"),
        py::arg("state_type"), py::arg("zh") = 0.0, py::arg("zc") = 0.0);
  m.def("ln_gru_step", &ln_gru_step, "One layer-norm GRU step of a layer stack, or None where it does not apply",
        py::arg("x"), py::arg("h"), py::arg("w"), py::arg("bias"), py::arg("eps"), py::arg("zh") = 0.0);
  m.def("set_wide", &set_wide, "Use the AVX-512 gate sums (where the CPU has them); returns whether they are used");
  m.def("wide", &wide, "Whether the AVX-512 gate sums are used");
}
