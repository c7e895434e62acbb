// Shared by the C++ kernel sources: the gates' sigmoid and tanh, inlined so that they vectorise inside
// `omp simd` loops, torch.lerp's formula, and a layer norm's row moments.
#pragma once

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdint>

namespace rnnkit_cpp {

// The gates' sigmoid and tanh, inlined so that they vectorise inside the row loops (AVX2: 8 floats).
// float: Cephes' expf (range reduction by ln 2 in two parts, degree-5 polynomial, 2^n from the exponent
// bits; ~1 ulp) and tanhf (odd polynomial below 0.625, where the relative error matters: layer norm
// amplifies absolute errors near 0; 1 - 2 / (e^{2|x|} + 1) above). double: the C library's.
inline float exp_(float x) {
  x = std::min(std::max(x, -87.3f), 88.3f);
  const float n = std::floor(x * 1.44269504088896341f + 0.5f);
  x = x - n * 0.693359375f + n * 2.12194440e-4f;
  const float z = x * x;
  const float y = ((((((1.9875691500e-4f * x + 1.3981999507e-3f) * x + 8.3334519073e-3f) * x +
                     4.1665795894e-2f) * x + 1.6666665459e-1f) * x + 5.0000001201e-1f) * z + x) + 1.0f;
  return y * std::bit_cast<float>((static_cast<int32_t>(n) + 127) << 23);
}
inline double exp_(double x) { return std::exp(x); }
inline float sigmoid_(float x) { return 1.0f / (1.0f + exp_(-x)); }
inline double sigmoid_(double x) { return 1.0 / (1.0 + std::exp(-x)); }
inline float tanh_(float x) {
  const float a = std::fabs(x), z = x * x;
  const float small = ((((-5.70498872745e-3f * z + 2.06390887954e-2f) * z - 5.37397155531e-2f) * z +
                        1.33314422036e-1f) * z - 3.33332819422e-1f) * z * x + x;
  const float big = std::copysign(1.0f - 2.0f / (exp_(2.0f * a) + 1.0f), x);
  return a < 0.625f ? small : big;
}
inline double tanh_(double x) { return std::tanh(x); }

// torch.lerp(a, b, w) = a + w (b - a), computed as ATen's CPU kernel does (the form with the smaller
// weight), so that zoneout's mix equals the reference's bit for bit
template <typename S>
inline S lerp_(S a, S b, S w) {
  return std::abs(w) < S(0.5) ? a + w * (b - a) : b - (b - a) * (S(1) - w);
}

// Sums with 32 independent partial sums (4 AVX2 registers of floats), so that a reduction is not one
// long chain of dependent additions (4 cycles each): sum_k f(k) over k < n.
constexpr int64_t kLanes = 32;
template <typename S, typename F>
inline S lane_sum(int64_t n, F f) {
  S acc[kLanes] = {};
  int64_t k = 0;
  for (; k + kLanes <= n; k += kLanes)
#pragma omp simd
    for (int64_t j = 0; j < kLanes; ++j) acc[j] += f(k + j);
  S tail = 0;
  for (; k < n; ++k) tail += f(k);
  S total = 0;
  for (int64_t j = 0; j < kLanes; ++j) total += acc[j];
  return total + tail;
}

// Mean and 1 / sqrt(var + eps) of a row, two passes.
template <typename S>
inline void row_moments(const S* x, int64_t n, double eps, double& mean, double& rstd) {
  mean = static_cast<double>(lane_sum<S>(n, [&](int64_t k) { return x[k]; })) / n;
  const S m = static_cast<S>(mean);
  const S sq = lane_sum<S>(n, [&](int64_t k) { const S d = x[k] - m; return d * d; });
  rstd = 1.0 / std::sqrt(static_cast<double>(sq) / n + eps);
}

}  // namespace rnnkit_cpp
