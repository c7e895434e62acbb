// Shared by the C++ kernel sources: the gates' sigmoid and tanh, inlined so that they vectorise inside
// `omp simd` loops.
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

}  // namespace rnnkit_cpp
