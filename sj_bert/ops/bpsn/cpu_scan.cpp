// BPSN on the CPU: the two leaky integrations as plain scans over time.
//
// Built by cpu.py with the system's C++ compiler into a small shared library (no torch
// headers, so it compiles in about a second) and called through ctypes. Layout, as the
// torch path sees it: x, v (and the gradients) are contiguous [T, R, P], time first, P
// parameter columns last, R = every other dimension; one neuron per (r, p), parameters
// per p; the mask is [T, B] bytes (or null), row r belonging to sample r / (R / B):
//
//     u[t]   = m[t] * x[t]
//     h_f[t] = lf * h_f[t-1] + u[t]        (t ascending,  h_f[-1] = 0)
//     h_b[t] = lb * h_b[t+1] + u[t]        (t descending, h_b[T]  = 0)
//     v[t]   = wf * h_f[t] + wb * h_b[t]   (bi: wf = alpha, wb = 1 - alpha; one direction: 1)
//     s[t]   = m[t] * (v[t] >= threshold)  (only where the caller asks: inference;
//              ternary spikes: minus m[t] * (-v[t] >= threshold), s in {-1, 0, 1})
//
// Each pass walks t once and, at every step, the neurons of its block in memory order, so
// their states stay in cache and the inner loop vectorises over p. Threads (OpenMP) take
// blocks of rows, or of columns when there are few rows.
//
// The backward pass gets g = dL/dv and returns dL/dx and, per neuron, the sums over time
// that make the parameter gradients (the caller reduces them over r):
//
//     dL/dx[t]   = m[t] * (wf * sum_{k >= t} lf^(k-t) g[k] + wb * sum_{k <= t} lb^(t-k) g[k])
//                  (each scan's adjoint runs the other way in time)
//     dL/dlf     = sum_t wf g[t] dh_f[t]/dlf,   dh_f[t]/dlf = h_f[t-1] + lf dh_f[t-1]/dlf
//     dL/dlb     = sum_t wb g[t] dh_b[t]/dlb,   dh_b[t]/dlb = h_b[t+1] + lb dh_b[t+1]/dlb
//     dL/dwf     = sum_t g[t] h_f[t],           dL/dwb = sum_t g[t] h_b[t]
//
// A tangent dh/dl runs in the same direction as its state, so the forward scan, its
// tangent and the backward scan's adjoint share one ascending pass; the backward scan,
// its tangent and the forward scan's adjoint one descending pass. Nothing is saved from
// the forward pass but x.

#include <algorithm>
#include <cstdint>
#include <vector>

namespace {

struct Block {
  int64_t r0, r1, p0, p1;
};

// The (row, column) ranges that threads take: rows when there are enough, else columns.
std::vector<Block> blocks(int64_t R, int64_t P, int threads) {
  std::vector<Block> out;
  int64_t n = std::max<int64_t>(1, threads);
  if (R >= n || P < 2 * n) {
    n = std::max<int64_t>(1, std::min(n, R));
    for (int64_t i = 0; i < n; ++i) out.push_back({R * i / n, R * (i + 1) / n, 0, P});
  } else {
    for (int64_t i = 0; i < n; ++i) out.push_back({0, R, P * i / n, P * (i + 1) / n});
  }
  return out;
}

struct Mask {
  const uint8_t* m;  // [T, batch] or null (every step real)
  int64_t batch, per_sample;
  bool on(int64_t t, int64_t r) const { return m == nullptr || m[t * batch + r / per_sample]; }
};

// One step of a scan over a row's columns: h = l * h + m * x; then v = w * h (first scan)
// or v += w * h (second scan).
template <typename real, bool accumulate>
inline void scan_step(real* __restrict h, real* __restrict v, const real* __restrict x, const real* __restrict l,
                      const real* __restrict w, bool on, int64_t p0, int64_t p1) {
  if (on) {
    for (int64_t p = p0; p < p1; ++p) {
      h[p] = l[p] * h[p] + x[p];
      v[p] = accumulate ? v[p] + w[p] * h[p] : w[p] * h[p];
    }
  } else {  // a padded step: the state only decays
    for (int64_t p = p0; p < p1; ++p) {
      h[p] = l[p] * h[p];
      v[p] = accumulate ? v[p] + w[p] * h[p] : w[p] * h[p];
    }
  }
}

template <typename real>
inline void fire_row(const real* __restrict v, real* __restrict s, const real* __restrict threshold, bool on,
                     bool ternary, int64_t p0, int64_t p1) {
  if (!on)
    for (int64_t p = p0; p < p1; ++p) s[p] = 0;
  else if (ternary)
    for (int64_t p = p0; p < p1; ++p) s[p] = real(v[p] >= threshold[p]) - real(-v[p] >= threshold[p]);
  else
    for (int64_t p = p0; p < p1; ++p) s[p] = v[p] >= threshold[p] ? real(1) : real(0);
}

template <typename real>
void forward_block(const real* x, real* v, real* spikes, const real* threshold, bool ternary, Mask mask, int64_t T,
                   int64_t R, int64_t P, const real* lf, const real* lb, const real* wf, const real* wb, bool fwd,
                   bool bwd, Block b) {
  const int64_t width = b.p1 - b.p0, stride = R * P;
  std::vector<real> state((b.r1 - b.r0) * width);
  if (fwd) {
    std::fill(state.begin(), state.end(), real(0));
    for (int64_t t = 0; t < T; ++t)
      for (int64_t r = b.r0; r < b.r1; ++r) {
        const int64_t base = t * stride + r * P;
        const bool on = mask.on(t, r);
        real* h = state.data() + (r - b.r0) * width - b.p0;
        scan_step<real, false>(h, v + base, x + base, lf, wf, on, b.p0, b.p1);
        if (!bwd && spikes) fire_row(v + base, spikes + base, threshold, on, ternary, b.p0, b.p1);
      }
  }
  if (bwd) {
    std::fill(state.begin(), state.end(), real(0));
    for (int64_t t = T - 1; t >= 0; --t)
      for (int64_t r = b.r0; r < b.r1; ++r) {
        const int64_t base = t * stride + r * P;
        const bool on = mask.on(t, r);
        real* h = state.data() + (r - b.r0) * width - b.p0;
        if (fwd)
          scan_step<real, true>(h, v + base, x + base, lb, wb, on, b.p0, b.p1);
        else
          scan_step<real, false>(h, v + base, x + base, lb, wb, on, b.p0, b.p1);
        if (spikes) fire_row(v + base, spikes + base, threshold, on, ternary, b.p0, b.p1);
      }
  }
}

// One pass of the backward over time, in the direction of the scan it recomputes: that
// scan's state h and tangent dh (decay l, weight w; sums into g_l and g_w), and the adjoint
// of the other scan (decay l2, weight w2), which runs this way in time. A null l: no scan
// this way; a null l2: no adjoint. first: this pass writes gx first; last: it masks gx.
template <typename real>
void backward_pass(const real* x, const real* g, real* gx, Mask mask, int64_t T, int64_t R, int64_t P, Block b,
                   bool ascending, const real* __restrict l, const real* __restrict w, real* __restrict g_l,
                   real* __restrict g_w, const real* __restrict l2, const real* __restrict w2, bool first,
                   bool last) {
  const int64_t width = b.p1 - b.p0, stride = R * P, n = (b.r1 - b.r0) * width;
  std::vector<real> hs(n), ts(n), as(n);  // per neuron: the state, its tangent, the adjoint
  if (l)
    for (int64_t r = b.r0; r < b.r1; ++r)
      for (int64_t p = b.p0; p < b.p1; ++p) g_l[r * P + p] = g_w[r * P + p] = 0;
  for (int64_t step = 0; step < T; ++step) {
    const int64_t t = ascending ? step : T - 1 - step;
    for (int64_t r = b.r0; r < b.r1; ++r) {
      const int64_t base = t * stride + r * P, off = (r - b.r0) * width - b.p0;
      const real on = mask.on(t, r) ? real(1) : real(0);
      const real* __restrict gt = g + base;
      real* __restrict out = gx + base;
      if (l) {
        real* __restrict h = hs.data() + off;
        real* __restrict dh = ts.data() + off;
        const real* __restrict xt = x + base;
        for (int64_t p = b.p0; p < b.p1; ++p) {
          dh[p] = h[p] + l[p] * dh[p];
          h[p] = l[p] * h[p] + on * xt[p];
          g_l[r * P + p] += w[p] * gt[p] * dh[p];
          g_w[r * P + p] += gt[p] * h[p];
        }
      }
      if (l2) {
        real* __restrict adj = as.data() + off;
        for (int64_t p = b.p0; p < b.p1; ++p) {
          adj[p] = l2[p] * adj[p] + w2[p] * gt[p];
          out[p] = first ? adj[p] : out[p] + adj[p];
        }
      }
      if (last)
        for (int64_t p = b.p0; p < b.p1; ++p) out[p] *= on;
    }
  }
}

// grads: [4, R, P] per-neuron sums for lf, lb, wf, wb (rows of a scan not run are untouched).
// Ascending: the forward scan and the backward scan's adjoint; descending: the reverse.
template <typename real>
void backward_block(const real* x, const real* g, real* gx, real* grads, Mask mask, int64_t T, int64_t R, int64_t P,
                    const real* lf, const real* lb, const real* wf, const real* wb, bool fwd, bool bwd, Block b) {
  const int64_t stride = R * P;
  real *g_lf = grads, *g_lb = grads + stride, *g_wf = grads + 2 * stride, *g_wb = grads + 3 * stride;
  backward_pass(x, g, gx, mask, T, R, P, b, true, fwd ? lf : nullptr, wf, g_lf, g_wf, bwd ? lb : nullptr, wb,
                true, false);
  backward_pass(x, g, gx, mask, T, R, P, b, false, bwd ? lb : nullptr, wb, g_lb, g_wb, fwd ? lf : nullptr, wf,
                !bwd, true);
}

template <typename real>
void forward(const real* x, const uint8_t* mask, int64_t batch, real* v, real* spikes, const real* threshold,
             int64_t T, int64_t R, int64_t P, const real* lf, const real* lb, const real* wf, const real* wb,
             int direction, int ternary, int threads) {
  const bool fwd = direction != 2, bwd = direction != 1;
  const Mask m{mask, batch, R / std::max<int64_t>(batch, 1)};
  const std::vector<Block> work = blocks(R, P, threads);
#pragma omp parallel for num_threads(threads) schedule(static) if (threads > 1)
  for (int64_t i = 0; i < (int64_t)work.size(); ++i)
    forward_block(x, v, spikes, threshold, ternary != 0, m, T, R, P, lf, lb, wf, wb, fwd, bwd, work[i]);
}

template <typename real>
void backward(const real* x, const uint8_t* mask, int64_t batch, const real* g, real* gx, real* grads, int64_t T,
              int64_t R, int64_t P, const real* lf, const real* lb, const real* wf, const real* wb, int direction,
              int threads) {
  const bool fwd = direction != 2, bwd = direction != 1;
  const Mask m{mask, batch, R / std::max<int64_t>(batch, 1)};
  const std::vector<Block> work = blocks(R, P, threads);
#pragma omp parallel for num_threads(threads) schedule(static) if (threads > 1)
  for (int64_t i = 0; i < (int64_t)work.size(); ++i)
    backward_block(x, g, gx, grads, m, T, R, P, lf, lb, wf, wb, fwd, bwd, work[i]);
}

}  // namespace

// direction: 0 bi, 1 forward, 2 backward (DIRECTION_CODES in _host.py). mask: [T, batch]
// bytes or null. spikes: null for v only, else also fire with threshold [P] (ternary: {-1, 0, 1}).
#define BPSN_CPU_ENTRY_POINTS(real, tag)                                                                        \
  void bpsn_cpu_forward_##tag(const real* x, const uint8_t* mask, int64_t batch, real* v, real* spikes,          \
                              const real* threshold, int64_t T, int64_t R, int64_t P, const real* lf,            \
                              const real* lb, const real* wf, const real* wb, int direction, int ternary,        \
                              int threads) {                                                                     \
    forward(x, mask, batch, v, spikes, threshold, T, R, P, lf, lb, wf, wb, direction, ternary, threads);        \
  }                                                                                                              \
  void bpsn_cpu_backward_##tag(const real* x, const uint8_t* mask, int64_t batch, const real* g, real* gx,        \
                               real* grads, int64_t T, int64_t R, int64_t P, const real* lf, const real* lb,      \
                               const real* wf, const real* wb, int direction, int threads) {                     \
    backward(x, mask, batch, g, gx, grads, T, R, P, lf, lb, wf, wb, direction, threads);                        \
  }

extern "C" {
BPSN_CPU_ENTRY_POINTS(float, f32)
BPSN_CPU_ENTRY_POINTS(double, f64)
}
