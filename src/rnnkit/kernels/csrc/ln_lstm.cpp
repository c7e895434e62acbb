// The per-step loops of the fused layer-norm LSTM (rnnkit/kernels/fused_lstm.py) in C++, and (at the
// end) those of the LSTM without layer norm: plain under recurrent dropout or zoneout, or with peepholes.
//
// The Python loops issue ~20 small ATen calls per time step, each with its Python and dispatcher
// cost (a quarter of a training step in docs/performance.md's profile). These two ops run a whole
// chunk of steps: per step one GEMM (at::mm_out, or oneDNN's matmul on a prepacked weight where the
// caller measured it faster: 2.2-2.6x on the AMD VM, slower on the Xeon) and one pass over each row for everything else
// (the two layer norms, the gates' sigmoid/tanh, the cell update and the output), the rows split
// over torch's threads. The backward needs no transcendental function (products of saved values).
//
// Layout and meaning are those of fused_lstm.py: gates (g, i, f, o); time-major chunks of the
// kernel's saved buffers. Lengths run as there: the batch sorted by decreasing length, step t computes
// the running prefix of sizes[t] rows (buffers of the rows that do not run stay zero). An optional
// recurrent-dropout mask multiplies h_{t-1} before the GEMM. Zoneout: an optional keep mask (chunk, 2, B,
// H) mixes each new h_t and c_t with the previous ones, lerp(new, old, keep) as the reference does; the
// cell state before that mix (which the cell norm and the backward need) goes to `cn`, the mixed one
// to `cs` as without zoneout.
// Reductions over a row use 32 partial sums (vectorised, not one dependent chain); the gains'
// gradients are summed over rows and steps in double.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/library.h>

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdint>
#include <initializer_list>
#include <utility>
#include <vector>

#include "common.h"

namespace {

using at::Tensor;

void check(const Tensor& t, const Tensor& like, const char* name) {
  TORCH_CHECK(t.is_contiguous(), "rnnkit_cpp: ", name, " must be contiguous");
  TORCH_CHECK(t.scalar_type() == like.scalar_type(), "rnnkit_cpp: ", name, " has the wrong dtype");
  TORCH_CHECK(t.device().is_cpu(), "rnnkit_cpp: ", name, " must be on the CPU");
}

void check_all(const Tensor& like, std::initializer_list<std::pair<const Tensor*, const char*>> named) {
  for (const auto& [t, name] : named) check(*t, like, name);
}

void check_rows(at::IntArrayRef sizes, int64_t C, int64_t B) {
  TORCH_CHECK(static_cast<int64_t>(sizes.size()) == C, "rnnkit_cpp: sizes must give the rows of each step");
  for (int64_t t = 0; t < C; ++t)
    TORCH_CHECK(sizes[t] >= 0 && sizes[t] <= B && (t == 0 || sizes[t] <= sizes[t - 1]),
                "rnnkit_cpp: sizes must be non-increasing and within the batch");
}

// out = x @ W^T by oneDNN's matmul on `packed` (torch.ops.mkldnn._reorder_linear_weight(W, rows)) when
// given, else out = x @ w_t (w_t = W^T, contiguous) by at::mm_out. The same call torch's Python code
// makes (mkldnn::_linear_pointwise), through the dispatcher; its result is copied into `out`.
void gemm_out(Tensor& out, const Tensor& x, const Tensor& w_t, const std::optional<Tensor>& packed) {
  if (!packed.has_value()) {
    at::mm_out(out, x, w_t);
    return;
  }
  static const auto op = c10::Dispatcher::singleton()
                             .findSchemaOrThrow("mkldnn::_linear_pointwise", "")
                             .typed<Tensor(const Tensor&, const Tensor&, const std::optional<Tensor>&,
                                           c10::string_view, c10::List<std::optional<c10::Scalar>>,
                                           std::optional<c10::string_view>)>();
  out.copy_(op.call(x, *packed, std::nullopt, "none", c10::List<std::optional<c10::Scalar>>(), std::nullopt));
}

using rnnkit_cpp::exp_;
using rnnkit_cpp::sigmoid_;
using rnnkit_cpp::tanh_;
using rnnkit_cpp::lane_sum;
using rnnkit_cpp::row_moments;
using rnnkit_cpp::lerp_;

// Rows per task: a step splits over threads only with >= 16K gate entries per task (at B=32, 4H=1024:
// two tasks of 16 rows; measured 136 against 152 us per forward step on one task, Xeon VM, 2 threads).
inline int64_t grain(int64_t G) { return std::max<int64_t>(1, 16384 / std::max<int64_t>(G, 1)); }

// h_{t-1} of the step's B running rows, multiplied by the recurrent-dropout mask into hin[t] when there is one
// (W_hh sees the masked state; zoneout keeps the unmasked one).
inline Tensor step_input(const Tensor& h_prev, const std::optional<Tensor>& mask, const std::optional<Tensor>& hin,
                         int64_t t, int64_t B) {
  if (!mask.has_value()) return h_prev;
  Tensor h_in = (*hin)[t].narrow(0, 0, B);
  at::mul_out(h_in, h_prev, mask->narrow(0, 0, B));
  return h_in;
}

// zoneout's mix of one row: h_t = lerp(h_t, h_{t-1}, k_h), c_t = lerp(c_t before the mix, c_{t-1}, k_c)
template <typename S>
inline void zoneout_row(S* y, const S* h_old, const S* kh, S* c, const S* c_new, const S* c_old, const S* kc,
                        int64_t H) {
#pragma omp simd
  for (int64_t k = 0; k < H; ++k) {
    y[k] = lerp_(y[k], h_old[k], kh[k]);
    c[k] = lerp_(c_new[k], c_old[k], kc[k]);
  }
}

// Backward: the rows whose last step is this one (sizes B > arrived) start their state gradients:
// dh = d_hn + dy_t, dc = d_cn. Returns the new count of arrived rows.
inline int64_t arrive(const Tensor& dh, const Tensor& dc, const Tensor& d_hn, const Tensor& d_cn, const Tensor& dy_t,
                      int64_t B, int64_t arrived) {
  if (B <= arrived) return arrived;
  const int64_t n = B - arrived;
  dh.narrow(0, arrived, n).copy_(d_hn.narrow(0, arrived, n));
  dh.narrow(0, arrived, n).add_(dy_t.narrow(0, arrived, n));
  dc.narrow(0, arrived, n).copy_(d_cn.narrow(0, arrived, n));
  return B;
}

// Backward: dh_{t-1} of the B running rows = (g W_hh) m + zh + dy_{t-1}, g the gradient at W_hh h_{t-1}
// (packed: oneDNN's layout of W_hh^T), zh zoneout's k_h dh_t, dy_{t-1} the output gradient of step j - 1
// (d_prev, the chunk before's last one, at j = 0)
inline void previous_h_grad(const Tensor& dh, const Tensor& g, const Tensor& w_hh, const std::optional<Tensor>& packed,
                            const std::optional<Tensor>& mask, const Tensor& zh, const Tensor& d_ys,
                            const std::optional<Tensor>& d_prev, int64_t j, int64_t B) {
  Tensor out = dh.narrow(0, 0, B);
  gemm_out(out, g.narrow(0, 0, B), w_hh, packed);
  if (mask.has_value()) out.mul_(mask->narrow(0, 0, B));
  if (zh.defined()) out.add_(zh.narrow(0, 0, B));
  if (j > 0)
    out.add_(d_ys[j - 1].narrow(0, 0, B));
  else if (d_prev.has_value())
    out.add_(d_prev->narrow(0, 0, B));
}

template <typename S>
void fwd_chunk(const Tensor& xa, const Tensor& h0, const Tensor& w_t, const Tensor& ln_w, const Tensor& lnc_w,
               const Tensor& lnc_b, double eps, at::IntArrayRef sizes, const std::optional<Tensor>& mask,
               const std::optional<Tensor>& hin, const Tensor& ys, const Tensor& cs, const Tensor& act,
               const Tensor& tc, const Tensor& hp, const Tensor& stats, const Tensor& cstats,
               const std::optional<Tensor>& keep, const std::optional<Tensor>& cn_pre,
               const std::optional<Tensor>& packed) {
  const int64_t C = xa.size(0), Bn = xa.size(1), G = xa.size(2), H = G / 4;
  const S* lw = ln_w.data_ptr<S>();
  const S* cw = lnc_w.data_ptr<S>();
  const S* cb = lnc_b.data_ptr<S>();
  for (int64_t t = 0; t < C; ++t) {
    const int64_t B = sizes[t];  // the running rows
    if (B == 0) continue;
    Tensor hp_t = hp[t].narrow(0, 0, B), act_t = act[t].narrow(0, 0, B), tc_t = tc[t].narrow(0, 0, B);
    Tensor h_prev = (t == 0 ? h0 : ys[t - 1]).narrow(0, 0, B);
    const S* hold = h_prev.data_ptr<S>();  // h_{t-1} itself (zoneout keeps it, not the masked one)
    gemm_out(hp_t, step_input(h_prev, mask, hin, t, B), w_t, packed);  // W_hh h_{t-1}, before its norm
    const S* hpp = hp_t.data_ptr<S>();
    const S* xap = xa[t].data_ptr<S>();
    S* ap = act_t.data_ptr<S>();
    S* st = stats[t].data_ptr<S>();
    const S* cp = cs[t].data_ptr<S>();
    S* cz = cs[t + 1].data_ptr<S>();                              // c_t
    S* cn = keep.has_value() ? (*cn_pre)[t].data_ptr<S>() : cz;  // c_t before zoneout's mix
    const S* kp = keep.has_value() ? (*keep)[t].data_ptr<S>() : nullptr;  // (2, B, H): h's, c's
    S* tp = tc_t.data_ptr<S>();
    S* cst = cstats[t].data_ptr<S>();
    S* y = ys[t].data_ptr<S>();
    at::parallel_for(0, B, grain(G), [&](int64_t r0, int64_t r1) {
      for (int64_t r = r0; r < r1; ++r) {  // one pass over the row: norms, gates, cell, output
        const S* x = hpp + r * G;
        const S* a = xap + r * G;
        S* p = ap + r * G;
        double mean, rstd;
        row_moments(x, G, eps, mean, rstd);  // pre = LN_hh(W_hh h) + (LN_ih(W_ih x) + b)
        S m = static_cast<S>(mean), rs = static_cast<S>(rstd);
        st[2 * r] = m;
        st[2 * r + 1] = rs;
#pragma omp simd
        for (int64_t k = 0; k < H; ++k) p[k] = tanh_(((x[k] - m) * rs * lw[k] + a[k]));
#pragma omp simd
        for (int64_t k = H; k < G; ++k) p[k] = sigmoid_(((x[k] - m) * rs * lw[k] + a[k]));
        const S *g = p, *i = p + H, *f = p + 2 * H, *o = p + 3 * H;
        const S* c0 = cp + r * H;
        S* c1 = cn + r * H;
#pragma omp simd
        for (int64_t k = 0; k < H; ++k) c1[k] = f[k] * c0[k] + i[k] * g[k];  // c_t = f c_{t-1} + i g
        row_moments(c1, H, eps, mean, rstd);
        m = static_cast<S>(mean);
        rs = static_cast<S>(rstd);
        cst[2 * r] = m;
        cst[2 * r + 1] = rs;
        S* u = tp + r * H;
        S* yr = y + r * H;
#pragma omp simd
        for (int64_t k = 0; k < H; ++k) {  // h_t = o tanh(LN_c(c_t))
          const S tk = tanh_((c1[k] - m) * rs * cw[k] + cb[k]);
          u[k] = tk;
          yr[k] = o[k] * tk;
        }
        if (kp != nullptr)  // zoneout
          zoneout_row(yr, hold + r * H, kp + r * H, cz + r * H, c1, c0, kp + (Bn + r) * H, H);
      }
    });
  }
}

// zoneout's keep mask (chunk, 2, B, H) and the buffer of c_t before its mix (chunk, B, H): both or neither
void check_zoneout(const std::optional<Tensor>& keep, const std::optional<Tensor>& cn, const Tensor& like, int64_t C,
                   int64_t B, int64_t H) {
  TORCH_CHECK(keep.has_value() == cn.has_value(), "rnnkit_cpp: keep and cn go together");
  if (!keep.has_value()) return;
  check(*keep, like, "keep");
  check(*cn, like, "cn");
  TORCH_CHECK(keep->sizes() == at::IntArrayRef({C, 2, B, H}) && cn->sizes() == at::IntArrayRef({C, B, H}),
              "rnnkit_cpp: keep must be (chunk, 2, B, H) and cn (chunk, B, H)");
}

// The arguments both forward ops share: W_hh^T (or its packing), the running rows, mask/hin, zoneout's buffers
void check_step_args(const Tensor& xa, const Tensor& w_t, at::IntArrayRef sizes, const std::optional<Tensor>& mask,
                     const std::optional<Tensor>& hin, const std::optional<Tensor>& keep,
                     const std::optional<Tensor>& cn, const std::optional<Tensor>& packed) {
  const int64_t C = xa.size(0), B = xa.size(1), H = xa.size(2) / 4;
  if (packed.has_value()) {  // the GEMM uses the packing: w_t may be a view (W_hh.t()), not a copy
    TORCH_CHECK(w_t.scalar_type() == xa.scalar_type() && w_t.device().is_cpu(), "rnnkit_cpp: w_t has the wrong dtype");
  } else {
    check(w_t, xa, "w_t");
  }
  check_rows(sizes, C, B);
  TORCH_CHECK(mask.has_value() == hin.has_value(), "rnnkit_cpp: mask and hin go together");
  if (mask.has_value()) {
    check(*mask, xa, "mask");
    check(*hin, xa, "hin");
    TORCH_CHECK(mask->sizes() == at::IntArrayRef({B, H}) && hin->sizes() == at::IntArrayRef({C, B, H}),
                "rnnkit_cpp: mask must be (B, H) and hin (chunk, B, H)");
  }
  check_zoneout(keep, cn, xa, C, B, H);
}

void ln_lstm_fwd_chunk(const Tensor& xa, const Tensor& h0, const Tensor& w_t, const Tensor& ln_w,
                       const Tensor& lnc_w, const Tensor& lnc_b, double eps, at::IntArrayRef sizes,
                       const std::optional<Tensor>& mask, const std::optional<Tensor>& hin, const Tensor& ys,
                       const Tensor& cs, const Tensor& act, const Tensor& tc, const Tensor& hp, const Tensor& stats,
                       const Tensor& cstats, const std::optional<Tensor>& keep, const std::optional<Tensor>& cn,
                       const std::optional<Tensor>& packed) {
  TORCH_CHECK(xa.dim() == 3 && xa.size(2) % 4 == 0, "rnnkit_cpp: xa must be (chunk, B, 4H)");
  const int64_t C = xa.size(0), B = xa.size(1), H = xa.size(2) / 4;
  check_all(xa, {{&xa, "xa"}, {&h0, "h0"}, {&ln_w, "ln_w"}, {&lnc_w, "lnc_w"}, {&lnc_b, "lnc_b"}, {&ys, "ys"},
                 {&cs, "cs"}, {&act, "act"}, {&tc, "tc"}, {&hp, "hp"}, {&stats, "stats"}, {&cstats, "cstats"}});
  check_step_args(xa, w_t, sizes, mask, hin, keep, cn, packed);
  TORCH_CHECK(h0.sizes() == at::IntArrayRef({B, H}) && w_t.sizes() == at::IntArrayRef({H, 4 * H}) &&
                  ys.sizes() == at::IntArrayRef({C, B, H}) && cs.sizes() == at::IntArrayRef({C + 1, B, H}) &&
                  act.sizes() == xa.sizes() && hp.sizes() == xa.sizes() && tc.sizes() == ys.sizes() &&
                  stats.sizes() == at::IntArrayRef({C, B, 2}) && cstats.sizes() == stats.sizes() &&
                  ln_w.numel() == 4 * H && lnc_w.numel() == H && lnc_b.numel() == H,
              "rnnkit_cpp: ln_lstm_fwd_chunk got inconsistent shapes");
  AT_DISPATCH_FLOATING_TYPES(xa.scalar_type(), "ln_lstm_fwd_chunk", [&] {
    fwd_chunk<scalar_t>(xa, h0, w_t, ln_w, lnc_w, lnc_b, eps, sizes, mask, hin, ys, cs, act, tc, hp, stats,
                        cstats, keep, cn, packed);
  });
}

// Backward of a chunk, steps in reverse. dh/dc (B, H) carry the state gradients of the rows that have
// arrived: `arrived` rows at the chunk's end (those still running after it); a row arrives at its last
// step with d_hn + its output gradient and d_cn. dpre = d(pre-activations) and dhp = d(W_hh h_{t-1}) are
// written per step (rows that do not run are left alone: the caller zeroes them); the gains' gradients
// are added to the double accumulators dgam (4H), dgcw, dgcb (H).
template <typename S>
void bwd_chunk(const Tensor& act, const Tensor& tc, const Tensor& cs, const Tensor& hp, const Tensor& stats,
               const Tensor& cstats, const Tensor& ln_w, const Tensor& lnc_w, const Tensor& w_hh,
               const Tensor& d_ys, const std::optional<Tensor>& d_prev, const Tensor& d_hn, const Tensor& d_cn,
               at::IntArrayRef sizes, int64_t arrived, const std::optional<Tensor>& mask, bool need_first,
               const Tensor& dh, const Tensor& dc, const Tensor& dpre, const Tensor& dhp, const Tensor& dgam,
               const Tensor& dgcw, const Tensor& dgcb, const std::optional<Tensor>& keep,
               const std::optional<Tensor>& cn_pre, const std::optional<Tensor>& packed) {
  const int64_t C = act.size(0), Bn = act.size(1), G = act.size(2), H = G / 4;
  const S* lw = ln_w.data_ptr<S>();
  const S* cw = lnc_w.data_ptr<S>();
  const int nt = at::get_num_threads();
  // per-thread partial sums of the gains' gradients (rows split over threads)
  std::vector<double> part(static_cast<size_t>(nt) * (G + 2 * H), 0.0);
  S* dhp_ = dh.data_ptr<S>();
  S* dcp = dc.data_ptr<S>();
  // zoneout: the part of dh_t that goes straight to h_{t-1} (k_h dh_t), added after the GEMM overwrites dh
  Tensor zh = keep.has_value() ? at::empty({Bn, H}, dh.options()) : Tensor();
  S* zhp = keep.has_value() ? zh.data_ptr<S>() : nullptr;
  for (int64_t j = C - 1; j >= 0; --j) {
    const int64_t B = sizes[j];
    if (B == 0) continue;
    arrived = arrive(dh, dc, d_hn, d_cn, d_ys[j], B, arrived);  // rows whose last step this is
    const S* ap = act[j].data_ptr<S>();
    const S* tp = tc[j].data_ptr<S>();
    const S* c0p = cs[j].data_ptr<S>();
    const S* c1p = (keep.has_value() ? (*cn_pre)[j] : cs[j + 1]).data_ptr<S>();  // c_t before zoneout
    const S* kp = keep.has_value() ? (*keep)[j].data_ptr<S>() : nullptr;
    const S* hpp = hp[j].data_ptr<S>();
    const S* st = stats[j].data_ptr<S>();
    const S* cst = cstats[j].data_ptr<S>();
    S* dp = dpre[j].data_ptr<S>();
    S* dq = dhp[j].data_ptr<S>();
    at::parallel_for(0, B, grain(G), [&](int64_t r0, int64_t r1) {
      const int tid = at::get_thread_num();
      double* pg = part.data() + static_cast<size_t>(tid) * (G + 2 * H);
      double *pw = pg + G, *pb = pw + H;
      std::vector<S> buf(4 * H + 2 * G);
      S *du = buf.data(), *xc = du + H, *dxc = xc + H, *xh = dxc + H, *dxh = xh + G, *zc = dxh + G;
      for (int64_t r = r0; r < r1; ++r) {
        const S* g = ap + r * G;
        const S *i = g + H, *f = g + 2 * H, *o = g + 3 * H;
        const S* tr = tp + r * H;
        const S* c0 = c0p + r * H;
        const S* c1 = c1p + r * H;
        S* dhr = dhp_ + r * H;
        S* dcr = dcp + r * H;
        S* dpr = dp + r * G;
        if (kp != nullptr) {  // zoneout: k dh_t, k dc_t go to the previous state, (1 - k) to the new one
          const S* kh = kp + r * H;
          const S* kc = kp + (Bn + r) * H;
          S* zr = zhp + r * H;
#pragma omp simd
          for (int64_t k = 0; k < H; ++k) {
            zr[k] = dhr[k] * kh[k];
            dhr[k] *= S(1) - kh[k];
            zc[k] = dcr[k] * kc[k];
            dcr[k] *= S(1) - kc[k];
          }
        }
        // output gate and d u, u = LN_c(c_t)
        const S mc = cst[2 * r], rc = cst[2 * r + 1];
#pragma omp simd
        for (int64_t k = 0; k < H; ++k) {
          const S ok = o[k], tk = tr[k], d = dhr[k];
          dpr[3 * H + k] = d * tk * ok * (1 - ok);
          du[k] = d * ok * (1 - tk * tk);
          xc[k] = (c1[k] - mc) * rc;
          dxc[k] = du[k] * cw[k];
          pw[k] += du[k] * xc[k];
          pb[k] += du[k];
        }
        // layer norm of c_t, backward: dc_t = rstd (dxh - mean(dxh) - xh mean(dxh xh)), dxh = du w
        const S a1 = lane_sum<S>(H, [&](int64_t k) { return dxc[k]; }) / H;
        const S a2 = lane_sum<S>(H, [&](int64_t k) { return dxc[k] * xc[k]; }) / H;
#pragma omp simd
        for (int64_t k = 0; k < H; ++k) {
          const S dct = rc * (dxc[k] - a1 - xc[k] * a2) + dcr[k];
          const S gk = g[k], ik = i[k], fk = f[k];
          dpr[k] = dct * ik * (1 - gk * gk);
          dpr[H + k] = dct * gk * ik * (1 - ik);
          dpr[2 * H + k] = dct * c0[k] * fk * (1 - fk);
          dcr[k] = dct * fk;  // dc_{t-1}
        }
        if (kp != nullptr) {
#pragma omp simd
          for (int64_t k = 0; k < H; ++k) dcr[k] += zc[k];
        }
        // layer norm of W_hh h_{t-1} (gain only), backward
        const S* x = hpp + r * G;
        const S m = st[2 * r], rs = st[2 * r + 1];
#pragma omp simd
        for (int64_t k = 0; k < G; ++k) {
          xh[k] = (x[k] - m) * rs;
          dxh[k] = dpr[k] * lw[k];
          pg[k] += dpr[k] * xh[k];
        }
        const S b1 = lane_sum<S>(G, [&](int64_t k) { return dxh[k]; }) / G;
        const S b2 = lane_sum<S>(G, [&](int64_t k) { return dxh[k] * xh[k]; }) / G;
        S* dqr = dq + r * G;
#pragma omp simd
        for (int64_t k = 0; k < G; ++k) dqr[k] = rs * (dxh[k] - b1 - xh[k] * b2);
      }
    });
    if (j > 0 || need_first) previous_h_grad(dh, dhp[j], w_hh, packed, mask, zh, d_ys, d_prev, j, B);
  }
  double* ag = dgam.data_ptr<double>();
  double* aw = dgcw.data_ptr<double>();
  double* ab = dgcb.data_ptr<double>();
  for (int tid = 0; tid < nt; ++tid) {
    const double* pg = part.data() + static_cast<size_t>(tid) * (G + 2 * H);
    for (int64_t k = 0; k < G; ++k) ag[k] += pg[k];
    for (int64_t k = 0; k < H; ++k) aw[k] += pg[G + k];
    for (int64_t k = 0; k < H; ++k) ab[k] += pg[G + H + k];
  }
}

void ln_lstm_bwd_chunk(const Tensor& act, const Tensor& tc, const Tensor& cs, const Tensor& hp,
                       const Tensor& stats, const Tensor& cstats, const Tensor& ln_w, const Tensor& lnc_w,
                       const Tensor& w_hh, const Tensor& d_ys, const std::optional<Tensor>& d_prev,
                       const Tensor& d_hn, const Tensor& d_cn, at::IntArrayRef sizes, int64_t arrived,
                       const std::optional<Tensor>& mask, bool need_first, const Tensor& dh, const Tensor& dc,
                       const Tensor& dpre, const Tensor& dhp, const Tensor& dgam, const Tensor& dgcw,
                       const Tensor& dgcb, const std::optional<Tensor>& keep, const std::optional<Tensor>& cn,
                       const std::optional<Tensor>& packed) {
  TORCH_CHECK(act.dim() == 3 && act.size(2) % 4 == 0, "rnnkit_cpp: act must be (chunk, B, 4H)");
  const int64_t C = act.size(0), B = act.size(1), H = act.size(2) / 4;
  check_all(act, {{&act, "act"}, {&tc, "tc"}, {&cs, "cs"}, {&hp, "hp"}, {&stats, "stats"}, {&cstats, "cstats"},
                  {&ln_w, "ln_w"}, {&lnc_w, "lnc_w"}, {&w_hh, "w_hh"}, {&d_ys, "d_ys"}, {&d_hn, "d_hn"},
                  {&d_cn, "d_cn"}, {&dh, "dh"}, {&dc, "dc"}, {&dpre, "dpre"}, {&dhp, "dhp"}});
  if (d_prev.has_value()) check(*d_prev, act, "d_prev");
  if (mask.has_value()) check(*mask, act, "mask");
  check_rows(sizes, C, B);
  check_zoneout(keep, cn, act, C, B, H);
  TORCH_CHECK(arrived >= 0 && arrived <= B, "rnnkit_cpp: arrived must be within the batch");
  for (const Tensor* t : {&dgam, &dgcw, &dgcb})
    TORCH_CHECK(t->is_contiguous() && t->scalar_type() == at::kDouble, "rnnkit_cpp: accumulators must be double");
  TORCH_CHECK(tc.sizes() == at::IntArrayRef({C, B, H}) && cs.sizes() == at::IntArrayRef({C + 1, B, H}) &&
                  hp.sizes() == act.sizes() && dpre.sizes() == act.sizes() && dhp.sizes() == act.sizes() &&
                  stats.sizes() == at::IntArrayRef({C, B, 2}) && cstats.sizes() == stats.sizes() &&
                  w_hh.sizes() == at::IntArrayRef({4 * H, H}) && d_ys.sizes() == tc.sizes() &&
                  dh.sizes() == at::IntArrayRef({B, H}) && dc.sizes() == dh.sizes() && d_hn.sizes() == dh.sizes() &&
                  d_cn.sizes() == dh.sizes() && (!d_prev.has_value() || d_prev->sizes() == dh.sizes()) &&
                  (!mask.has_value() || mask->sizes() == dh.sizes()) && ln_w.numel() == 4 * H &&
                  lnc_w.numel() == H && dgam.numel() == 4 * H && dgcw.numel() == H && dgcb.numel() == H,
              "rnnkit_cpp: ln_lstm_bwd_chunk got inconsistent shapes");
  AT_DISPATCH_FLOATING_TYPES(act.scalar_type(), "ln_lstm_bwd_chunk", [&] {
    bwd_chunk<scalar_t>(act, tc, cs, hp, stats, cstats, ln_w, lnc_w, w_hh, d_ys, d_prev, d_hn, d_cn, sizes, arrived,
                        mask, need_first, dh, dc, dpre, dhp, dgam, dgcw, dgcb, keep, cn, packed);
  });
}

// -- the LSTM without layer norm (plain or with peepholes) under recurrent dropout or zoneout --------
//
// fused_lstm.py's sigmoid form: the g block of the weights (and so of xa and the GEMM's output) is scaled
// by 2 and g = 2 sigmoid(2a) - 1 = tanh(a); c's tanh is tanh_. Peepholes `peep` (3, H): p_i, p_f act on
// c_{t-1}, p_o on c_t. The GEMM writes W_hh h_{t-1} into the step's act rows, which the row pass turns
// into the activations in place (no pre-activation buffer: the backward needs none).
template <typename S>
void plain_fwd_chunk(const Tensor& xa, const Tensor& h0, const Tensor& w_t, const std::optional<Tensor>& peep,
                     at::IntArrayRef sizes, const std::optional<Tensor>& mask, const std::optional<Tensor>& hin,
                     const Tensor& ys, const Tensor& cs, const Tensor& act, const Tensor& tc,
                     const std::optional<Tensor>& keep, const std::optional<Tensor>& cn_pre,
                     const std::optional<Tensor>& packed) {
  const int64_t C = xa.size(0), Bn = xa.size(1), G = xa.size(2), H = G / 4;
  const S* pp = peep.has_value() ? peep->data_ptr<S>() : nullptr;  // p_i, p_f, p_o
  const int64_t sig_end = pp != nullptr ? 3 * H : G;  // with peepholes o waits for c_t
  for (int64_t t = 0; t < C; ++t) {
    const int64_t B = sizes[t];
    if (B == 0) continue;
    Tensor act_t = act[t].narrow(0, 0, B);
    Tensor h_prev = (t == 0 ? h0 : ys[t - 1]).narrow(0, 0, B);
    const S* hold = h_prev.data_ptr<S>();
    gemm_out(act_t, step_input(h_prev, mask, hin, t, B), w_t, packed);  // W_hh h_{t-1}
    const S* xap = xa[t].data_ptr<S>();
    S* ap = act_t.data_ptr<S>();
    const S* cp = cs[t].data_ptr<S>();
    S* cz = cs[t + 1].data_ptr<S>();
    S* cn = keep.has_value() ? (*cn_pre)[t].data_ptr<S>() : cz;
    const S* kp = keep.has_value() ? (*keep)[t].data_ptr<S>() : nullptr;
    S* tp = tc[t].data_ptr<S>();
    S* y = ys[t].data_ptr<S>();
    at::parallel_for(0, B, grain(G), [&](int64_t r0, int64_t r1) {
      for (int64_t r = r0; r < r1; ++r) {
        S* p = ap + r * G;
        const S* a = xap + r * G;
        const S* c0 = cp + r * H;
        if (pp != nullptr) {
#pragma omp simd
          for (int64_t k = 0; k < H; ++k) {
            p[H + k] += pp[k] * c0[k];
            p[2 * H + k] += pp[H + k] * c0[k];
          }
        }
#pragma omp simd
        for (int64_t k = 0; k < H; ++k) p[k] = S(2) * sigmoid_(p[k] + a[k]) - S(1);  // g = tanh(a_g)
#pragma omp simd
        for (int64_t k = H; k < sig_end; ++k) p[k] = sigmoid_(p[k] + a[k]);
        const S *g = p, *i = p + H, *f = p + 2 * H;
        S* o = p + 3 * H;
        S* c1 = cn + r * H;
#pragma omp simd
        for (int64_t k = 0; k < H; ++k) c1[k] = f[k] * c0[k] + i[k] * g[k];
        if (pp != nullptr) {
          const S* po = pp + 2 * H;
#pragma omp simd
          for (int64_t k = 0; k < H; ++k) o[k] = sigmoid_(o[k] + a[3 * H + k] + po[k] * c1[k]);
        }
        S* u = tp + r * H;
        S* yr = y + r * H;
#pragma omp simd
        for (int64_t k = 0; k < H; ++k) {
          const S tk = tanh_(c1[k]);
          u[k] = tk;
          yr[k] = o[k] * tk;
        }
        if (kp != nullptr)  // zoneout
          zoneout_row(yr, hold + r * H, kp + r * H, cz + r * H, c1, c0, kp + (Bn + r) * H, H);
      }
    });
  }
}

void check_peep(const std::optional<Tensor>& peep, const Tensor& like, int64_t H) {
  if (!peep.has_value()) return;
  check(*peep, like, "peep");
  TORCH_CHECK(peep->sizes() == at::IntArrayRef({3, H}), "rnnkit_cpp: peep must be (3, H)");
}

void lstm_fwd_chunk(const Tensor& xa, const Tensor& h0, const Tensor& w_t, const std::optional<Tensor>& peep,
                    at::IntArrayRef sizes, const std::optional<Tensor>& mask, const std::optional<Tensor>& hin,
                    const Tensor& ys, const Tensor& cs, const Tensor& act, const Tensor& tc,
                    const std::optional<Tensor>& keep, const std::optional<Tensor>& cn,
                    const std::optional<Tensor>& packed) {
  TORCH_CHECK(xa.dim() == 3 && xa.size(2) % 4 == 0, "rnnkit_cpp: xa must be (chunk, B, 4H)");
  const int64_t C = xa.size(0), B = xa.size(1), H = xa.size(2) / 4;
  check_all(xa, {{&xa, "xa"}, {&h0, "h0"}, {&ys, "ys"}, {&cs, "cs"}, {&act, "act"}, {&tc, "tc"}});
  check_step_args(xa, w_t, sizes, mask, hin, keep, cn, packed);
  check_peep(peep, xa, H);
  TORCH_CHECK(h0.sizes() == at::IntArrayRef({B, H}) && w_t.sizes() == at::IntArrayRef({H, 4 * H}) &&
                  ys.sizes() == at::IntArrayRef({C, B, H}) && cs.sizes() == at::IntArrayRef({C + 1, B, H}) &&
                  act.sizes() == xa.sizes() && tc.sizes() == ys.sizes(),
              "rnnkit_cpp: lstm_fwd_chunk got inconsistent shapes");
  AT_DISPATCH_FLOATING_TYPES(xa.scalar_type(), "lstm_fwd_chunk", [&] {
    plain_fwd_chunk<scalar_t>(xa, h0, w_t, peep, sizes, mask, hin, ys, cs, act, tc, keep, cn, packed);
  });
}

// Backward of a chunk of the LSTM without layer norm, steps in reverse (dh, dc, arrived, dpre as in
// bwd_chunk; d(W_hh h_{t-1}) is dpre itself). The g block's gradient is halved (the sigmoid form).
template <typename S>
void plain_bwd_chunk(const Tensor& act, const Tensor& tc, const Tensor& cs, const Tensor& w_hh,
                     const std::optional<Tensor>& peep, const Tensor& d_ys, const std::optional<Tensor>& d_prev,
                     const Tensor& d_hn, const Tensor& d_cn, at::IntArrayRef sizes, int64_t arrived,
                     const std::optional<Tensor>& mask, bool need_first, const Tensor& dh, const Tensor& dc,
                     const Tensor& dpre, const std::optional<Tensor>& keep, const std::optional<Tensor>& packed) {
  const int64_t C = act.size(0), Bn = act.size(1), G = act.size(2), H = G / 4;
  const S* pp = peep.has_value() ? peep->data_ptr<S>() : nullptr;
  S* dhp_ = dh.data_ptr<S>();
  S* dcp = dc.data_ptr<S>();
  Tensor zh = keep.has_value() ? at::empty({Bn, H}, dh.options()) : Tensor();
  S* zhp = keep.has_value() ? zh.data_ptr<S>() : nullptr;
  for (int64_t j = C - 1; j >= 0; --j) {
    const int64_t B = sizes[j];
    if (B == 0) continue;
    arrived = arrive(dh, dc, d_hn, d_cn, d_ys[j], B, arrived);  // rows whose last step this is
    const S* ap = act[j].data_ptr<S>();
    const S* tp = tc[j].data_ptr<S>();
    const S* c0p = cs[j].data_ptr<S>();
    const S* kp = keep.has_value() ? (*keep)[j].data_ptr<S>() : nullptr;
    S* dp = dpre[j].data_ptr<S>();
    at::parallel_for(0, B, grain(G), [&](int64_t r0, int64_t r1) {
      for (int64_t r = r0; r < r1; ++r) {
        const S* g = ap + r * G;
        const S *i = g + H, *f = g + 2 * H, *o = g + 3 * H;
        const S* tr = tp + r * H;
        const S* c0 = c0p + r * H;
        S* dhr = dhp_ + r * H;
        S* dcr = dcp + r * H;
        S* dpr = dp + r * G;
        if (kp != nullptr) {  // zoneout: k_h dh_t goes straight to h_{t-1} (added after the GEMM)
          const S* kh = kp + r * H;
          S* zr = zhp + r * H;
#pragma omp simd
          for (int64_t k = 0; k < H; ++k) {
            zr[k] = dhr[k] * kh[k];
            dhr[k] *= S(1) - kh[k];
          }
        }
        const S* kc = kp != nullptr ? kp + (Bn + r) * H : nullptr;  // and k_c dc_t to c_{t-1}
#pragma omp simd
        for (int64_t k = 0; k < H; ++k) {
          const S ok = o[k], tk = tr[k], d = dhr[k];
          const S dao = d * tk * ok * (1 - ok);
          const S kcv = kc != nullptr ? kc[k] : S(0);
          const S dcin = dcr[k];
          S dct = d * ok * (1 - tk * tk) + dcin * (S(1) - kcv);
          if (pp != nullptr) dct += pp[2 * H + k] * dao;
          const S gk = g[k], ik = i[k], fk = f[k];
          const S dai = dct * gk * ik * (1 - ik), daf = dct * c0[k] * fk * (1 - fk);
          dpr[k] = dct * ik * (1 - gk * gk) * S(0.5);
          dpr[H + k] = dai;
          dpr[2 * H + k] = daf;
          dpr[3 * H + k] = dao;
          S dcp_ = dct * fk + dcin * kcv;  // dc_{t-1}; zoneout's k_c dc_t goes straight through
          if (pp != nullptr) dcp_ += pp[k] * dai + pp[H + k] * daf;
          dcr[k] = dcp_;
        }
      }
    });
    if (j > 0 || need_first) previous_h_grad(dh, dpre[j], w_hh, packed, mask, zh, d_ys, d_prev, j, B);
  }
}

void lstm_bwd_chunk(const Tensor& act, const Tensor& tc, const Tensor& cs, const Tensor& w_hh,
                    const std::optional<Tensor>& peep, const Tensor& d_ys, const std::optional<Tensor>& d_prev,
                    const Tensor& d_hn, const Tensor& d_cn, at::IntArrayRef sizes, int64_t arrived,
                    const std::optional<Tensor>& mask, bool need_first, const Tensor& dh, const Tensor& dc,
                    const Tensor& dpre, const std::optional<Tensor>& keep, const std::optional<Tensor>& packed) {
  TORCH_CHECK(act.dim() == 3 && act.size(2) % 4 == 0, "rnnkit_cpp: act must be (chunk, B, 4H)");
  const int64_t C = act.size(0), B = act.size(1), H = act.size(2) / 4;
  check_all(act, {{&act, "act"}, {&tc, "tc"}, {&cs, "cs"}, {&w_hh, "w_hh"}, {&d_ys, "d_ys"}, {&d_hn, "d_hn"},
                  {&d_cn, "d_cn"}, {&dh, "dh"}, {&dc, "dc"}, {&dpre, "dpre"}});
  if (d_prev.has_value()) check(*d_prev, act, "d_prev");
  if (mask.has_value()) check(*mask, act, "mask");
  if (keep.has_value()) {
    check(*keep, act, "keep");
    TORCH_CHECK(keep->sizes() == at::IntArrayRef({C, 2, B, H}), "rnnkit_cpp: keep must be (chunk, 2, B, H)");
  }
  check_peep(peep, act, H);
  check_rows(sizes, C, B);
  TORCH_CHECK(arrived >= 0 && arrived <= B, "rnnkit_cpp: arrived must be within the batch");
  TORCH_CHECK(tc.sizes() == at::IntArrayRef({C, B, H}) && cs.sizes() == at::IntArrayRef({C + 1, B, H}) &&
                  dpre.sizes() == act.sizes() && w_hh.sizes() == at::IntArrayRef({4 * H, H}) &&
                  d_ys.sizes() == tc.sizes() && dh.sizes() == at::IntArrayRef({B, H}) && dc.sizes() == dh.sizes() &&
                  d_hn.sizes() == dh.sizes() && d_cn.sizes() == dh.sizes() &&
                  (!d_prev.has_value() || d_prev->sizes() == dh.sizes()) &&
                  (!mask.has_value() || mask->sizes() == dh.sizes()),
              "rnnkit_cpp: lstm_bwd_chunk got inconsistent shapes");
  AT_DISPATCH_FLOATING_TYPES(act.scalar_type(), "lstm_bwd_chunk", [&] {
    plain_bwd_chunk<scalar_t>(act, tc, cs, w_hh, peep, d_ys, d_prev, d_hn, d_cn, sizes, arrived, mask, need_first,
                              dh, dc, dpre, keep, packed);
  });
}

}  // namespace

TORCH_LIBRARY(rnnkit_cpp, m) {
  m.def("ln_lstm_fwd_chunk(Tensor xa, Tensor h0, Tensor w_t, Tensor ln_w, Tensor lnc_w, Tensor lnc_b, float eps, "
        "int[] sizes, Tensor? mask, Tensor(h!)? hin, Tensor(a!) ys, Tensor(b!) cs, Tensor(c!) act, Tensor(d!) tc, "
        "Tensor(e!) hp, Tensor(f!) stats, Tensor(g!) cstats, Tensor? keep=None, Tensor(i!)? cn=None, "
        "Tensor? packed=None) -> ()");
  m.def("ln_lstm_bwd_chunk(Tensor act, Tensor tc, Tensor cs, Tensor hp, Tensor stats, Tensor cstats, "
        "Tensor ln_w, Tensor lnc_w, Tensor w_hh, Tensor d_ys, Tensor? d_prev, Tensor d_hn, Tensor d_cn, int[] sizes, "
        "int arrived, Tensor? mask, bool need_first, Tensor(a!) dh, "
        "Tensor(b!) dc, Tensor(c!) dpre, Tensor(d!) dhp, Tensor(e!) dgam, Tensor(f!) dgcw, Tensor(g!) dgcb, "
        "Tensor? keep=None, Tensor? cn=None, Tensor? packed=None) -> ()");
  m.def("lstm_fwd_chunk(Tensor xa, Tensor h0, Tensor w_t, Tensor? peep, int[] sizes, Tensor? mask, Tensor(h!)? hin, "
        "Tensor(a!) ys, Tensor(b!) cs, Tensor(c!) act, Tensor(d!) tc, Tensor? keep=None, Tensor(i!)? cn=None, "
        "Tensor? packed=None) -> ()");
  m.def("lstm_bwd_chunk(Tensor act, Tensor tc, Tensor cs, Tensor w_hh, Tensor? peep, Tensor d_ys, Tensor? d_prev, "
        "Tensor d_hn, Tensor d_cn, int[] sizes, int arrived, Tensor? mask, bool need_first, Tensor(a!) dh, "
        "Tensor(b!) dc, Tensor(c!) dpre, Tensor? keep=None, Tensor? packed=None) -> ()");
}

TORCH_LIBRARY_IMPL(rnnkit_cpp, CPU, m) {
  m.impl("ln_lstm_fwd_chunk", &ln_lstm_fwd_chunk);
  m.impl("ln_lstm_bwd_chunk", &ln_lstm_bwd_chunk);
  m.impl("lstm_fwd_chunk", &lstm_fwd_chunk);
  m.impl("lstm_bwd_chunk", &lstm_bwd_chunk);
}

// A oneDNN-packed weight is an MkldnnCPU tensor, which makes the dispatcher look for that backend's kernel
TORCH_LIBRARY_IMPL(rnnkit_cpp, MkldnnCPU, m) {
  m.impl("ln_lstm_fwd_chunk", &ln_lstm_fwd_chunk);
  m.impl("ln_lstm_bwd_chunk", &ln_lstm_bwd_chunk);
  m.impl("lstm_fwd_chunk", &lstm_fwd_chunk);
  m.impl("lstm_bwd_chunk", &lstm_bwd_chunk);
}
