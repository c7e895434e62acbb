// The IndRNN's whole recurrence, forward and backward, in one call each (rnnkit/kernels/fused_indrnn.py).
//
// h'_t = phi(xp_t + uv * h_{t-1}), h_t = h'_t + k_t (h_{t-1} - h'_t) (zoneout's keep mask k_t, torch.lerp's
// formula). Each hidden unit of each row is its own scalar recurrence, so the B*H elements are split
// over torch's threads once for the whole sequence and each thread walks time over its slice: one
// parallel region and no barrier per step (the Python loop makes 2 small ATen calls a step forward and 3
// backward). Lengths: the rows are sorted by length (longest first), `sizes[t]` rows run at step t, so
// element i = b*H + j runs while i < sizes[t] * H. Buffers are time-major (T, B, H) and contiguous.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cstdint>
#include <optional>
#include <vector>

#include "common.h"

namespace {

constexpr int64_t kGrain = 2048;  // elements per thread task at least

using rnnkit_cpp::lerp_;  // torch.lerp(a, b, w), its two-sided formula

template <typename S>
void fwd(const at::Tensor& xp, const at::Tensor& uv, const at::Tensor& h0, const std::optional<at::Tensor>& keep,
         const std::vector<int64_t>& sizes, bool relu, const at::Tensor& ys, const std::optional<at::Tensor>& act) {
  const int64_t T = xp.size(0), BH = xp.size(1) * xp.size(2), H = xp.size(2);
  const S* x = xp.data_ptr<S>();
  const S* u = uv.data_ptr<S>();
  const S* h0p = h0.data_ptr<S>();
  const S* kp = keep ? keep->data_ptr<S>() : nullptr;
  S* y = ys.data_ptr<S>();
  S* ap = act ? act->data_ptr<S>() : nullptr;
  at::parallel_for(0, BH, kGrain, [&](int64_t lo, int64_t hi) {
    for (int64_t t = 0; t < T; ++t) {
      const int64_t end = std::min(hi, sizes[t] * H);
      if (end <= lo) break;  // sizes never grow again
      const S* prev = t ? y + (t - 1) * BH : h0p;
      const S* xt = x + t * BH;
      S* yt = y + t * BH;
      if (kp == nullptr) {
#pragma omp simd
        for (int64_t i = lo; i < end; ++i) {
          const S a = xt[i] + u[i] * prev[i];
          yt[i] = relu ? std::max(a, S(0)) : rnnkit_cpp::tanh_(a);
        }
      } else {
        const S* kt = kp + t * BH;
        S* at_ = ap + t * BH;
        for (int64_t i = lo; i < end; ++i) {
          const S a0 = xt[i] + u[i] * prev[i];
          const S a = relu ? std::max(a0, S(0)) : rnnkit_cpp::tanh_(a0);
          at_[i] = a;
          yt[i] = lerp_(a, prev[i], kt[i]);
        }
      }
    }
  });
}

template <typename S>
void bwd(const at::Tensor& act, const at::Tensor& ys, const at::Tensor& h0, const at::Tensor& uv,
         const std::optional<at::Tensor>& keep, const at::Tensor& d_ys, const at::Tensor& d_hn,
         const std::vector<int64_t>& sizes, bool relu, const at::Tensor& dxp, const at::Tensor& dh,
         const at::Tensor& acc) {
  const int64_t T = ys.size(0), BH = ys.size(1) * ys.size(2), H = ys.size(2);
  const S* a = act.data_ptr<S>();
  const S* y = ys.data_ptr<S>();
  const S* h0p = h0.data_ptr<S>();
  const S* u = uv.data_ptr<S>();
  const S* kp = keep ? keep->data_ptr<S>() : nullptr;
  const S* gy = d_ys.data_ptr<S>();
  const S* ghn = d_hn.data_ptr<S>();
  S* dx = dxp.data_ptr<S>();
  S* carry = dh.data_ptr<S>();  // dL/dh_{t-1} of the running elements, then dh0
  S* su = acc.data_ptr<S>();    // per element: sum over steps of dxp * h_{t-1}
  at::parallel_for(0, BH, kGrain, [&](int64_t lo, int64_t hi) {
    for (int64_t t = T - 1; t >= 0; --t) {
      const int64_t end = std::min(hi, sizes[t] * H);
      if (end <= lo) continue;
      // elements whose last step this is start from d_hn; the others carry dL/dh_t from step t + 1
      const int64_t cont = t + 1 < T ? std::min(end, std::max(lo, sizes[t + 1] * H)) : lo;
      for (int64_t i = cont; i < end; ++i) carry[i] = ghn[i];
      const S* at_ = a + t * BH;
      const S* prev = t ? y + (t - 1) * BH : h0p;
      const S* gyt = gy + t * BH;
      const S* kt = kp ? kp + t * BH : nullptr;
      S* dxt = dx + t * BH;
#pragma omp simd
      for (int64_t i = lo; i < end; ++i) {
        const S g = carry[i] + gyt[i];
        const S k = kt ? kt[i] : S(0);
        const S d = relu ? (at_[i] > S(0) ? S(1) : S(0)) : S(1) - at_[i] * at_[i];
        const S da = g * d * (S(1) - k);
        dxt[i] = da;
        su[i] += da * prev[i];
        carry[i] = da * u[i] + g * k;
      }
    }
    for (int64_t i = std::max(lo, T ? sizes[0] * H : 0); i < hi; ++i) carry[i] = ghn[i];  // length-0 rows
  });
}

void indrnn_fwd(const at::Tensor& xp, const at::Tensor& uv, const at::Tensor& h0,
                const std::optional<at::Tensor>& keep,
                at::IntArrayRef sizes, bool relu, const at::Tensor& ys, const std::optional<at::Tensor>& act) {
  std::vector<int64_t> s(sizes.begin(), sizes.end());
  AT_DISPATCH_FLOATING_TYPES(xp.scalar_type(), "indrnn_fwd", [&] {
    fwd<scalar_t>(xp, uv, h0, keep, s, relu, ys, act);
  });
}

void indrnn_bwd(const at::Tensor& act, const at::Tensor& ys, const at::Tensor& h0, const at::Tensor& uv,
                const std::optional<at::Tensor>& keep, const at::Tensor& d_ys, const at::Tensor& d_hn,
                at::IntArrayRef sizes, bool relu, const at::Tensor& dxp, const at::Tensor& dh,
                const at::Tensor& acc) {
  std::vector<int64_t> s(sizes.begin(), sizes.end());
  AT_DISPATCH_FLOATING_TYPES(ys.scalar_type(), "indrnn_bwd", [&] {
    bwd<scalar_t>(act, ys, h0, uv, keep, d_ys, d_hn, s, relu, dxp, dh, acc);
  });
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(rnnkit_cpp, m) {
  m.def("indrnn_fwd(Tensor xp, Tensor uv, Tensor h0, Tensor? keep, int[] sizes, bool relu, Tensor(a!) ys, "
        "Tensor(b!)? act) -> ()");
  m.def("indrnn_bwd(Tensor act, Tensor ys, Tensor h0, Tensor uv, Tensor? keep, Tensor d_ys, Tensor d_hn, "
        "int[] sizes, bool relu, Tensor(a!) dxp, Tensor(b!) dh, Tensor(c!) acc) -> ()");
}

TORCH_LIBRARY_IMPL(rnnkit_cpp, CPU, m) {
  m.impl("indrnn_fwd", &indrnn_fwd);
  m.impl("indrnn_bwd", &indrnn_bwd);
}
