// MinGRU's recurrence over one chunk of steps, forward and backward, one call each
// (rnnkit/kernels/fused_min.py; the input projection and the weight gradients stay there, as GEMMs).
//
// With the projected input xp = [k, hh] (B, c, 2H): z = sigmoid(k), g = max(hh + 1/2, sigmoid(hh)),
// h_t = z g + (1 - z) h_{t-1}. Backward, steps in reverse, lambda_t = dy_t + (1 - z_{t+1}) lambda_{t+1},
// dk = (g - h_{t-1}) lambda z (1 - z), dhh = lambda z (1 where hh >= 0, else sigmoid'(hh)).
//
// The torch-op version (chunked scan of precomputed coefficients) makes ~10 passes over (B, c, H)
// tensors per chunk and direction, each through memory; here every element is read and written once
// per pass, the coefficients recomputed from xp in registers. Each (row, block of units) is its own
// set of scalar recurrences: the blocks are split over torch's threads once per chunk and each walks
// time over its block, the state in a small local array (no barrier per step). A block is a whole row
// of units where that leaves every thread a task, so that a step reads each buffer's row as one
// contiguous run.
//
// xp is the projection without the bias (bias: (2H,), zeros for none), added as each element is read.
// Layouts: xp, dxp contiguous (B, c, 2H); ys, d_ys (B, c, H) and h_in, lam, a_next (B, H) with unit
// stride in the last dimension (slices of (B, T, H) buffers are fine).
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cstdint>

#if defined(__SSE__) || defined(__x86_64__)
#include <xmmintrin.h>
#define RNNKIT_MXCSR 1
#endif

#include "common.h"

namespace {

using at::Tensor;
using rnnkit_cpp::sigmoid_;

constexpr int64_t kMaxBlock = 1024;  // units per task at most (the state's local arrays)

// Units per task: whole rows (up to kMaxBlock) unless that leaves a thread idle; a multiple of 16.
inline int64_t block_size(int64_t B, int64_t H) {
  int64_t nb = (H + kMaxBlock - 1) / kMaxBlock;
  const int64_t threads = at::get_num_threads();
  if (B * nb < threads) nb = std::min<int64_t>((threads + B - 1) / B, (H + 15) / 16);
  return std::min<int64_t>(kMaxBlock, ((H + nb - 1) / nb + 15) / 16 * 16);
}

// Subnormal operands flushed to zero (MXCSR's FTZ and DAZ) while a thread runs the backward pass, the
// caller's setting restored after. The backward's vector loop ran 5x slower without (10 against 1.9 ns
// per element on the Xeon VM, with constant inputs as well as random ones: not the data, which holds no
// subnormal value, nor any intermediate the loop stores; the assisted operands were not found). Results
// can differ from the unflushed arithmetic only where a value is below 1.2e-38 (float32).
struct FlushSubnormals {
#ifdef RNNKIT_MXCSR
  unsigned int saved = _mm_getcsr();
  FlushSubnormals() { _mm_setcsr(saved | 0x8040); }
  ~FlushSubnormals() { _mm_setcsr(saved); }
#endif
};

// Tasks per thread at least: a chunk's recurrence splits over threads only with >= 16K elements per task.
inline int64_t grain(int64_t c, int64_t blk) { return std::max<int64_t>(1, 16384 / std::max<int64_t>(c * blk, 1)); }

void check(const Tensor& xp, const Tensor& ys, const Tensor& h_in) {
  TORCH_CHECK(xp.dim() == 3 && xp.is_contiguous() && xp.size(2) % 2 == 0, "min_gru: xp must be (B, c, 2H)");
  const int64_t B = xp.size(0), c = xp.size(1), H = xp.size(2) / 2;
  TORCH_CHECK(ys.dim() == 3 && ys.size(0) == B && ys.size(1) == c && ys.size(2) == H && ys.stride(2) == 1,
              "min_gru: ys must be (B, c, H) with unit stride in H");
  TORCH_CHECK(h_in.dim() == 2 && h_in.size(0) == B && h_in.size(1) == H && h_in.stride(1) == 1,
              "min_gru: h_in must be (B, H)");
  TORCH_CHECK(ys.scalar_type() == xp.scalar_type() && h_in.scalar_type() == xp.scalar_type(),
              "min_gru: mixed dtypes");
}

template <typename S>
void fwd(const Tensor& xp, const Tensor& bias, const Tensor& h_in, const Tensor& ys) {
  const int64_t B = xp.size(0), c = xp.size(1), H = xp.size(2) / 2, blk = block_size(B, H), nb = (H + blk - 1) / blk;
  const S* x = xp.data_ptr<S>();
  const S* bp = bias.data_ptr<S>();
  const S* h0 = h_in.data_ptr<S>();
  S* y = ys.data_ptr<S>();
  const int64_t ys0 = ys.stride(0), ys1 = ys.stride(1), h0s = h_in.stride(0);
  at::parallel_for(0, B * nb, grain(c, blk), [&](int64_t lo, int64_t hi) {
    S h[kMaxBlock];
    for (int64_t task = lo; task < hi; ++task) {
      const int64_t b = task / nb, j0 = (task % nb) * blk, U = std::min(blk, H - j0);
      for (int64_t u = 0; u < U; ++u) h[u] = h0[b * h0s + j0 + u];
      const S *bk = bp + j0, *bh = bp + H + j0;
      for (int64_t t = 0; t < c; ++t) {
        const S* k = x + (b * c + t) * 2 * H + j0;
        const S* hh = k + H;
        S* yt = y + b * ys0 + t * ys1 + j0;
#pragma omp simd
        for (int64_t u = 0; u < U; ++u) {
          const S z = sigmoid_(k[u] + bk[u]), a = hh[u] + bh[u];
          const S g = std::max(a + S(0.5), sigmoid_(a));
          const S hn = z * g + (S(1) - z) * h[u];
          h[u] = hn;
          yt[u] = hn;
        }
      }
    }
  });
}

// lam (in: lambda of the step after the chunk; out: lambda of its first step) and a_next (in: 1 - z of
// the step after the chunk, 1 past the end; out: 1 - z of its first step) are updated in place.
template <typename S>
void bwd(const Tensor& xp, const Tensor& bias, const Tensor& ys, const Tensor& h_in, const Tensor& d_ys,
         const Tensor& lam, const Tensor& a_next, const Tensor& dxp) {
  const int64_t B = xp.size(0), c = xp.size(1), H = xp.size(2) / 2, blk = block_size(B, H), nb = (H + blk - 1) / blk;
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
      const S *bk = bp + j0, *bh = bp + H + j0;
      for (int64_t t = c - 1; t >= 0; --t) {
        const S* k = x + (b * c + t) * 2 * H + j0;
        const S* hh = k + H;
        const S* d = dy + b * dy0 + t * dy1 + j0;
        const S* hp = t ? y + b * ys0 + (t - 1) * ys1 + j0 : h0 + b * h0s + j0;
        S* dk = dx + (b * c + t) * 2 * H + j0;
        S* dh = dk + H;
#pragma omp simd
        for (int64_t u = 0; u < U; ++u) {
          const S lt = d[u] + an[u] * l[u];
          const S a = hh[u] + bh[u], z = sigmoid_(k[u] + bk[u]), s = sigmoid_(a);
          const S g = std::max(a + S(0.5), s);
          dk[u] = (g - hp[u]) * lt * ((S(1) - z) * z);
          const S zl = z * lt;
          dh[u] = a >= S(0) ? zl : zl * ((S(1) - s) * s);
          l[u] = lt;
          an[u] = S(1) - z;
        }
      }
      for (int64_t u = 0; u < U; ++u) {
        lp[b * ls + j0 + u] = l[u];
        ap[b * as + j0 + u] = an[u];
      }
    }
  });
}

void check_bias(const Tensor& xp, const Tensor& bias) {
  TORCH_CHECK(bias.dim() == 1 && bias.size(0) == xp.size(2) && bias.is_contiguous() &&
              bias.scalar_type() == xp.scalar_type(), "min_gru: bias must be (2H,) like xp");
}

void min_gru_fwd(const Tensor& xp, const Tensor& bias, const Tensor& h_in, const Tensor& ys) {
  check(xp, ys, h_in);
  check_bias(xp, bias);
  AT_DISPATCH_FLOATING_TYPES(xp.scalar_type(), "min_gru_fwd", [&] { fwd<scalar_t>(xp, bias, h_in, ys); });
}

void min_gru_bwd(const Tensor& xp, const Tensor& bias, const Tensor& ys, const Tensor& h_in, const Tensor& d_ys,
                 const Tensor& lam, const Tensor& a_next, const Tensor& dxp) {
  check(xp, ys, h_in);
  check(xp, d_ys, lam);
  check(xp, ys, a_next);
  check_bias(xp, bias);
  TORCH_CHECK(dxp.sizes() == xp.sizes() && dxp.is_contiguous() && dxp.scalar_type() == xp.scalar_type(),
              "min_gru: dxp must be like xp");
  AT_DISPATCH_FLOATING_TYPES(xp.scalar_type(), "min_gru_bwd", [&] {
    bwd<scalar_t>(xp, bias, ys, h_in, d_ys, lam, a_next, dxp);
  });
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(rnnkit_cpp, m) {
  m.def("min_gru_fwd(Tensor xp, Tensor bias, Tensor h_in, Tensor(a!) ys) -> ()");
  m.def("min_gru_bwd(Tensor xp, Tensor bias, Tensor ys, Tensor h_in, Tensor d_ys, Tensor(a!) lam, Tensor(b!) a_next, "
        "Tensor(c!) dxp) -> ()");
}

TORCH_LIBRARY_IMPL(rnnkit_cpp, CPU, m) {
  m.impl("min_gru_fwd", &min_gru_fwd);
  m.impl("min_gru_bwd", &min_gru_bwd);
}
