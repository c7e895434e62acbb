// Zoneout's keep masks for a whole sequence in one call (rnnkit/cells/base.py: zoneout_keep).
//
// The fused kernels and the reference loop take zoneout's Bernoulli masks (T, parts, B, H) drawn before
// the recurrence. torch's `bernoulli_` and `uniform_` on the CPU fill them at ~4-7 ns an entry (28 ms for
// the speed suite's LSTM shape, T=256, 2 parts, B=32, H=256: a tenth of a training step). Here each (t, k)
// plane of B*H entries has its own xoshiro256** stream (Blackman & Vigna 2018), seeded from the call's seed
// and the plane's index through splitmix64, and an entry keeps (1) when 32 random bits fall below
// p * 2^32: exact to 2^-32 in p, the same masks whatever the thread count, ~1 ns an entry (4.1 ms at that
// shape on the twelfth session's AMD VM, 2 threads, float32).
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cstdint>
#include <vector>

namespace {

using at::Tensor;

inline uint64_t splitmix64(uint64_t& x) {
  uint64_t z = (x += 0x9e3779b97f4a7c15ULL);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

inline uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

struct Xoshiro256 {
  uint64_t s[4];
  explicit Xoshiro256(uint64_t seed) {
    for (auto& w : s) w = splitmix64(seed);
  }
  uint64_t next() {
    const uint64_t result = rotl(s[1] * 5, 7) * 9, t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return result;
  }
};

template <typename S>
void fill_plane(S* out, int64_t n, uint64_t threshold, uint64_t seed) {
  Xoshiro256 rng(seed);
  int64_t i = 0;
  for (; i + 2 <= n; i += 2) {
    const uint64_t r = rng.next();
    out[i] = static_cast<S>((r & 0xffffffffULL) < threshold);
    out[i + 1] = static_cast<S>((r >> 32) < threshold);
  }
  if (i < n) out[i] = static_cast<S>((rng.next() & 0xffffffffULL) < threshold);
}

// out (T, parts, B, H) contiguous float32/float64 on the CPU: out[t, k] ~ Bernoulli(rates[k]) (0 or 1;
// all 0 where rates[k] is 0). seed: any int64 (drawn from torch's generator by the caller).
void zoneout_masks(const Tensor& out, at::ArrayRef<double> rates, int64_t seed) {
  TORCH_CHECK(out.dim() == 4 && out.is_contiguous() && out.device().is_cpu(),
              "zoneout_masks: expected a contiguous 4-D CPU tensor (T, parts, B, H)");
  TORCH_CHECK(out.scalar_type() == at::kFloat || out.scalar_type() == at::kDouble,
              "zoneout_masks: expected float32 or float64, got ", out.scalar_type());
  const int64_t parts = out.size(1), plane = out.size(2) * out.size(3), planes = out.size(0) * parts;
  TORCH_CHECK(static_cast<int64_t>(rates.size()) == parts, "zoneout_masks: expected ", parts, " rates, got ",
              rates.size());
  std::vector<uint64_t> threshold(parts);
  for (int64_t k = 0; k < parts; ++k) {
    TORCH_CHECK(rates[k] >= 0.0 && rates[k] < 1.0, "zoneout_masks: rates must be in [0, 1), got ", rates[k]);
    threshold[k] = static_cast<uint64_t>(rates[k] * 4294967296.0);  // p * 2^32 < 2^32
  }
  uint64_t mix = static_cast<uint64_t>(seed);
  const uint64_t base = splitmix64(mix);
  AT_DISPATCH_FLOATING_TYPES(out.scalar_type(), "zoneout_masks", [&] {
    scalar_t* data = out.data_ptr<scalar_t>();
    at::parallel_for(0, planes, std::max<int64_t>(1, 65536 / std::max<int64_t>(plane, 1)), [&](int64_t p0, int64_t p1) {
      for (int64_t p = p0; p < p1; ++p) {
        uint64_t s = base ^ (static_cast<uint64_t>(p) * 0xd1b54a32d192ed03ULL);
        fill_plane<scalar_t>(data + p * plane, plane, threshold[p % parts], splitmix64(s));
      }
    });
  });
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(rnnkit_cpp, m) {
  m.def("zoneout_masks(Tensor(a!) out, float[] rates, int seed) -> ()");
}

TORCH_LIBRARY_IMPL(rnnkit_cpp, CPU, m) {
  m.impl("zoneout_masks", &zoneout_masks);
}
