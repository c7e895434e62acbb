// MinGRU's and MinLSTM's recurrence over one chunk of steps, forward and backward, one call each
// (rnnkit/kernels/fused_min.py; the input projection and the weight gradients stay there, as GEMMs).
//
// Both are h_t = b_t + a_t h_{t-1} with coefficients from the projected input xp (B, c, G*H) only:
//   MinGRU  (xp = [k, hh]):     z = sigmoid(k), a = 1 - z, b = z g(hh);
//   MinLSTM (xp = [kf, ki, hh]): a = f / (f + i), b = i / (f + i) g(hh), f = sigmoid(kf), i = sigmoid(ki),
// with g(x) = max(x + 1/2, sigmoid(x)). MinLSTM's a is the reference's sigmoid(d), d = softplus(-ki) -
// softplus(-kf) = log f - log i, formed here without logarithms: r = i / f = exp(max(-kf, 0) - max(-ki, 0))
// (1 + e^-|kf|) / (1 + e^-|ki|), a = 1 / (1 + r), 1 - a = r / (1 + r) (exponent clamped to +-80: finite
// r, a off by at most e^-80). Backward, steps in reverse, lambda_t = dy_t + a_{t+1} lambda_{t+1}, then
//   MinGRU:  dk = (g - h_{t-1}) lambda z (1 - z), dhh = lambda z g'(hh);
//   MinLSTM: dd = a (1 - a) lambda (h_{t-1} - g), dkf = dd sigmoid(-kf), dki = -dd sigmoid(-ki),
//            dhh = lambda (1 - a) g'(hh);  g' = 1 where hh >= 0, else sigmoid'(hh).
//
// The torch-op version (chunked scan of precomputed coefficients) makes ~10-20 passes over (B, c, H)
// tensors per chunk and direction, each through memory; here every element is read and written once
// per pass, the coefficients recomputed from xp in registers. Each (row, block of units) is its own
// set of scalar recurrences: the blocks are split over torch's threads once per chunk and each walks
// time over its block, the state in a small local array (no barrier per step). A block is a whole row
// of units where that leaves every thread a task, so that a step reads each buffer's row as one
// contiguous run.
//
// xp is the projection without the bias (bias: (G*H,), zeros for none), added as each element is read.
// Layouts: xp, dxp contiguous (B, c, G*H); ys, d_ys (B, c, H) and h_in, lam, a_next (B, H) with unit
// stride in the last dimension (slices of (B, T, H) buffers are fine).
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <cstdint>

#if defined(__SSE__) || defined(__x86_64__)
#include <xmmintrin.h>
#define RNNKIT_MXCSR 1
#endif

#include "common.h"

namespace {

using at::Tensor;
using rnnkit_cpp::exp_;
using rnnkit_cpp::sigmoid_;

constexpr int64_t kMaxBlock = 1024;  // units per task at most (the state's local arrays)

// Units per task: whole rows (up to kMaxBlock) unless that leaves a thread idle; a multiple of 16.
inline int64_t block_size(int64_t B, int64_t H) {
  int64_t nb = (H + kMaxBlock - 1) / kMaxBlock;
  const int64_t threads = at::get_num_threads();
  if (B * nb < threads) nb = std::min<int64_t>((threads + B - 1) / B, (H + 15) / 16);
  return std::min<int64_t>(kMaxBlock, ((H + nb - 1) / nb + 15) / 16 * 16);
}

// Tasks per thread at least: a chunk's recurrence splits over threads only with >= 16K elements per task.
inline int64_t grain(int64_t c, int64_t blk) { return std::max<int64_t>(1, 16384 / std::max<int64_t>(c * blk, 1)); }

// Subnormal operands flushed to zero (MXCSR's FTZ and DAZ) while a thread runs a backward pass, the
// caller's setting restored after. MinGRU's backward vector loop ran 5x slower without (10 against 1.9
// ns per element on the Xeon VM, with constant inputs as well as random ones: not the data, which holds
// no subnormal value, nor any intermediate the loop stores; the assisted operands were not found).
// Results can differ from the unflushed arithmetic only where a value is below 1.2e-38 (float32).
struct FlushSubnormals {
#ifdef RNNKIT_MXCSR
  unsigned int saved = _mm_getcsr();
  FlushSubnormals() { _mm_setcsr(saved | 0x8040); }
  ~FlushSubnormals() { _mm_setcsr(saved); }
#endif
};

template <typename S>
inline S g_(S x) { return std::max(x + S(0.5), sigmoid_(x)); }

template <typename S>
inline S g_prime_times(S v, S x, S s) { return x >= S(0) ? v : v * ((S(1) - s) * s); }  // v g'(x), s = sigmoid(x)

// The coefficients (a, b) of unit u from row pointers k (xp + j0) and bb (bias + j0), and the backward:
// the gradients of the unit's projection into dk (dxp + j0) given lambda and h_{t-1}; returns a.
struct Gru {
  static constexpr int kGates = 2;
  template <typename S>
  static inline void coef(const S* k, const S* bb, int64_t H, int64_t u, S& a, S& b) {
    const S z = sigmoid_(k[u] + bb[u]);
    a = S(1) - z;
    b = z * g_(k[H + u] + bb[H + u]);
  }
  template <typename S>
  static inline S grad(const S* k, const S* bb, int64_t H, int64_t u, S lt, S hp, S* dk) {
    const S z = sigmoid_(k[u] + bb[u]), x = k[H + u] + bb[H + u], s = sigmoid_(x);
    dk[u] = (std::max(x + S(0.5), s) - hp) * lt * ((S(1) - z) * z);
    dk[H + u] = g_prime_times(z * lt, x, s);
    return S(1) - z;
  }
};

struct Lstm {
  static constexpr int kGates = 3;
  // a and 1 - a from the two gates' pre-activations (module comment)
  template <typename S>
  static inline void split(S kf, S ki, S& a, S& om) {
    const S e = std::min(std::max(std::max(-kf, S(0)) - std::max(-ki, S(0)), S(-80)), S(80));
    const S r = exp_(e) * (S(1) + exp_(-std::fabs(kf))) / (S(1) + exp_(-std::fabs(ki)));
    a = S(1) / (S(1) + r);
    om = r * a;
  }
  template <typename S>
  static inline void coef(const S* k, const S* bb, int64_t H, int64_t u, S& a, S& b) {
    S om;
    split(k[u] + bb[u], k[H + u] + bb[H + u], a, om);
    b = om * g_(k[2 * H + u] + bb[2 * H + u]);
  }
  template <typename S>
  static inline S grad(const S* k, const S* bb, int64_t H, int64_t u, S lt, S hp, S* dk) {
    const S kf = k[u] + bb[u], ki = k[H + u] + bb[H + u], x = k[2 * H + u] + bb[2 * H + u], s = sigmoid_(x);
    S a, om;
    split(kf, ki, a, om);
    const S dd = a * om * lt * (hp - std::max(x + S(0.5), s));
    dk[u] = dd * sigmoid_(-kf);
    dk[H + u] = -dd * sigmoid_(-ki);
    dk[2 * H + u] = g_prime_times(om * lt, x, s);
    return a;
  }
};

void check(const Tensor& xp, int G, const Tensor& ys, const Tensor& h_in) {
  TORCH_CHECK(xp.dim() == 3 && xp.is_contiguous() && xp.size(2) % G == 0, "min_rnn: xp must be (B, c, G*H)");
  const int64_t B = xp.size(0), c = xp.size(1), H = xp.size(2) / G;
  TORCH_CHECK(ys.dim() == 3 && ys.size(0) == B && ys.size(1) == c && ys.size(2) == H && ys.stride(2) == 1,
              "min_rnn: ys must be (B, c, H) with unit stride in H");
  TORCH_CHECK(h_in.dim() == 2 && h_in.size(0) == B && h_in.size(1) == H && h_in.stride(1) == 1,
              "min_rnn: h_in must be (B, H)");
  TORCH_CHECK(ys.scalar_type() == xp.scalar_type() && h_in.scalar_type() == xp.scalar_type(),
              "min_rnn: mixed dtypes");
}

void check_bias(const Tensor& xp, const Tensor& bias) {
  TORCH_CHECK(bias.dim() == 1 && bias.size(0) == xp.size(2) && bias.is_contiguous() &&
              bias.scalar_type() == xp.scalar_type(), "min_rnn: bias must be (G*H,) like xp");
}

template <typename S, typename Kind>
void fwd(const Tensor& xp, const Tensor& bias, const Tensor& h_in, const Tensor& ys) {
  constexpr int G = Kind::kGates;
  const int64_t B = xp.size(0), c = xp.size(1), H = xp.size(2) / G, blk = block_size(B, H), nb = (H + blk - 1) / blk;
  const S* x = xp.data_ptr<S>();
  const S* bp = bias.data_ptr<S>();
  const S* h0 = h_in.data_ptr<S>();
  S* y = ys.data_ptr<S>();
  const int64_t ys0 = ys.stride(0), ys1 = ys.stride(1), h0s = h_in.stride(0);
  at::parallel_for(0, B * nb, grain(c, blk), [&](int64_t lo, int64_t hi) {
    const FlushSubnormals flush;
    S h[kMaxBlock];
    for (int64_t task = lo; task < hi; ++task) {
      const int64_t b = task / nb, j0 = (task % nb) * blk, U = std::min(blk, H - j0);
      for (int64_t u = 0; u < U; ++u) h[u] = h0[b * h0s + j0 + u];
      for (int64_t t = 0; t < c; ++t) {
        const S* k = x + (b * c + t) * G * H + j0;
        S* yt = y + b * ys0 + t * ys1 + j0;
#pragma omp simd
        for (int64_t u = 0; u < U; ++u) {
          S a, bv;
          Kind::coef(k, bp + j0, H, u, a, bv);
          const S hn = bv + a * h[u];
          h[u] = hn;
          yt[u] = hn;
        }
      }
    }
  });
}

// lam (in: lambda of the step after the chunk; out: lambda of its first step) and a_next (in: a of the
// step after the chunk, 1 past the end; out: a of its first step) are updated in place.
template <typename S, typename Kind>
void bwd(const Tensor& xp, const Tensor& bias, const Tensor& ys, const Tensor& h_in, const Tensor& d_ys,
         const Tensor& lam, const Tensor& a_next, const Tensor& dxp) {
  constexpr int G = Kind::kGates;
  const int64_t B = xp.size(0), c = xp.size(1), H = xp.size(2) / G, blk = block_size(B, H), nb = (H + blk - 1) / blk;
  const S* x = xp.data_ptr<S>();
  const S* bp = bias.data_ptr<S>();
  const S* y = ys.data_ptr<S>();
  const S* h0 = h_in.data_ptr<S>();
  const S* dy = d_ys.data_ptr<S>();
  S* lp = lam.data_ptr<S>();
  S* ap = a_next.data_ptr<S>();
  S* dx = dxp.data_ptr<S>();
  const int64_t ys0 = ys.stride(0), ys1 = ys.stride(1), dy0 = d_ys.stride(0), dy1 = d_ys.stride(1);
  const int64_t h0s = h_in.stride(0), ls = lam.stride(0), as = a_next.stride(0);
  at::parallel_for(0, B * nb, grain(c, blk), [&](int64_t lo, int64_t hi) {
    const FlushSubnormals flush;
    S l[kMaxBlock], an[kMaxBlock];
    for (int64_t task = lo; task < hi; ++task) {
      const int64_t b = task / nb, j0 = (task % nb) * blk, U = std::min(blk, H - j0);
      for (int64_t u = 0; u < U; ++u) {
        l[u] = lp[b * ls + j0 + u];
        an[u] = ap[b * as + j0 + u];
      }
      for (int64_t t = c - 1; t >= 0; --t) {
        const S* k = x + (b * c + t) * G * H + j0;
        const S* d = dy + b * dy0 + t * dy1 + j0;
        const S* hp = t ? y + b * ys0 + (t - 1) * ys1 + j0 : h0 + b * h0s + j0;
        S* dk = dx + (b * c + t) * G * H + j0;
#pragma omp simd
        for (int64_t u = 0; u < U; ++u) {
          const S lt = d[u] + an[u] * l[u];
          l[u] = lt;
          an[u] = Kind::grad(k, bp + j0, H, u, lt, hp[u], dk);
        }
      }
      for (int64_t u = 0; u < U; ++u) {
        lp[b * ls + j0 + u] = l[u];
        ap[b * as + j0 + u] = an[u];
      }
    }
  });
}

template <typename Kind>
void min_fwd(const Tensor& xp, const Tensor& bias, const Tensor& h_in, const Tensor& ys) {
  check(xp, Kind::kGates, ys, h_in);
  check_bias(xp, bias);
  AT_DISPATCH_FLOATING_TYPES(xp.scalar_type(), "min_rnn_fwd", [&] { fwd<scalar_t, Kind>(xp, bias, h_in, ys); });
}

template <typename Kind>
void min_bwd(const Tensor& xp, const Tensor& bias, const Tensor& ys, const Tensor& h_in, const Tensor& d_ys,
             const Tensor& lam, const Tensor& a_next, const Tensor& dxp) {
  check(xp, Kind::kGates, ys, h_in);
  check(xp, Kind::kGates, d_ys, lam);
  check(xp, Kind::kGates, ys, a_next);
  check_bias(xp, bias);
  TORCH_CHECK(dxp.sizes() == xp.sizes() && dxp.is_contiguous() && dxp.scalar_type() == xp.scalar_type(),
              "min_rnn: dxp must be like xp");
  AT_DISPATCH_FLOATING_TYPES(xp.scalar_type(), "min_rnn_bwd", [&] {
    bwd<scalar_t, Kind>(xp, bias, ys, h_in, d_ys, lam, a_next, dxp);
  });
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(rnnkit_cpp, m) {
  m.def("min_gru_fwd(Tensor xp, Tensor bias, Tensor h_in, Tensor(a!) ys) -> ()");
  m.def("min_gru_bwd(Tensor xp, Tensor bias, Tensor ys, Tensor h_in, Tensor d_ys, Tensor(a!) lam, "
        "Tensor(b!) a_next, Tensor(c!) dxp) -> ()");
  m.def("min_lstm_fwd(Tensor xp, Tensor bias, Tensor h_in, Tensor(a!) ys) -> ()");
  m.def("min_lstm_bwd(Tensor xp, Tensor bias, Tensor ys, Tensor h_in, Tensor d_ys, Tensor(a!) lam, "
        "Tensor(b!) a_next, Tensor(c!) dxp) -> ()");
}

TORCH_LIBRARY_IMPL(rnnkit_cpp, CPU, m) {
  m.impl("min_gru_fwd", &min_fwd<Gru>);
  m.impl("min_gru_bwd", &min_bwd<Gru>);
  m.impl("min_lstm_fwd", &min_fwd<Lstm>);
  m.impl("min_lstm_bwd", &min_bwd<Lstm>);
}
