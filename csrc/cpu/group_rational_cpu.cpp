// CPU kernels of the group-rational op: vectorised with ATen's at::vec, threaded with at::parallel_for, fp32 math
// for float16/bfloat16 (float64 math for float64), deterministic chunked reduction of the coefficient gradients.
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <ATen/cpu/vec/vec.h>
#include <torch/library.h>

#include <algorithm>
#include <array>
#include <type_traits>
#include <vector>

#include "../group_rational.h"
#include "../group_rational_large_x.h"

namespace kat_backbones {
namespace {

using at::vec::Vectorized;

// Coefficients of one group in math precision. babs holds |b_j| (index 0 = b1); dnum/dden the derivative
// coefficients i*a_i and j*|b_j| used by the backward pass.
template <typename T>
struct Coeffs {
  int m = 0, n = 0;
  T a[kMaxOrder + 1];
  T babs[kMaxOrder];
  T da[kMaxOrder + 1];   // da[i] = (i + 1) a_{i+1}, i < m
  T dbabs[kMaxOrder];    // dbabs[j] = (j + 1) |b_{j+1}|, j < n
  T big;                 // |x| above which F is evaluated in 1/x (group_rational_large_x.h)
};

template <typename T, typename coef_t>
Coeffs<T> load_coeffs(const coef_t* num_row, const coef_t* den_row, int m, int n) {
  Coeffs<T> c;
  c.m = m;
  c.n = n;
  for (int i = 0; i <= m; ++i) c.a[i] = static_cast<T>(num_row[i]);
  for (int j = 0; j < n; ++j) c.babs[j] = std::abs(static_cast<T>(den_row[j]));
  for (int i = 0; i < m; ++i) c.da[i] = static_cast<T>(i + 1) * c.a[i + 1];
  for (int j = 0; j < n; ++j) c.dbabs[j] = static_cast<T>(j + 1) * c.babs[j];
  c.big = large_x_threshold<T>(m, n);
  return c;
}

// Order accessors: a compile-time order for the (5, 4) fast path (loops unroll), else the runtime one.
template <int kOrder>
inline int order(int runtime) { return kOrder >= 0 ? kOrder : runtime; }

// P(x) and Q(x) for a vector of x (Horner).
template <int M_, int N_, typename T>
inline void eval_pq(const Vectorized<T>& x, const Vectorized<T>& ax, const Coeffs<T>& c, Vectorized<T>& p,
                    Vectorized<T>& q) {
  const int m = order<M_>(c.m), n = order<N_>(c.n);
  p = Vectorized<T>(c.a[m]);
  for (int i = m - 1; i >= 0; --i) p = at::vec::fmadd(p, x, Vectorized<T>(c.a[i]));
  if (n == 0) {
    q = Vectorized<T>(T(1));
    return;
  }
  q = Vectorized<T>(c.babs[n - 1]);
  for (int j = n - 2; j >= 0; --j) q = at::vec::fmadd(q, ax, Vectorized<T>(c.babs[j]));
  q = at::vec::fmadd(q, ax, Vectorized<T>(T(1)));
}

// Large |x| (above Coeffs::big, see group_rational_large_x.h) is handled in two passes per work item: the fast pass
// only tracks max |x| (one vector max per vector); an item where it exceeds the threshold (practically never) is
// recomputed by the checked pass, which sends the affected lanes through the scalar evaluation in 1/x.

// Bit per lane of ax above big.
template <typename T>
inline int large_lanes(const Vectorized<T>& ax, T big) {
  constexpr int kAll = (1 << Vectorized<T>::size()) - 1;
  return kAll & ~(ax > Vectorized<T>(big)).zero_mask();
}

// amax = max(amax, ax) lane-wise; a NaN in ax leaves amax unchanged (NaN needs no large-|x| path).
template <typename T>
inline void track_max(Vectorized<T>& amax, const Vectorized<T>& ax) {
  amax = at::vec::clamp_min(amax, ax);
}

// Recomputes the large-|x| lanes of f (scalar).
template <typename T>
__attribute__((noinline)) Vectorized<T> fix_large_forward(const Vectorized<T>& x, const Vectorized<T>& f, int lanes,
                                                          const Coeffs<T>& c) {
  T xs[Vectorized<T>::size()], fs[Vectorized<T>::size()];
  x.store(xs);
  f.store(fs);
  for (int v = 0; v < Vectorized<T>::size(); ++v)
    if (lanes >> v & 1) fs[v] = rational_large_x(xs[v], c.a, c.m, c.babs, c.n);
  return Vectorized<T>::loadu(fs);
}

template <int M_, int N_, bool kChecked, typename T>
inline Vectorized<T> forward_vec(const Vectorized<T>& xv, const Coeffs<T>& c, Vectorized<T>& amax) {
  const Vectorized<T> ax = xv.abs();
  Vectorized<T> p, q;
  eval_pq<M_, N_>(xv, ax, c, p, q);
  const Vectorized<T> f = p / q;
  if constexpr (kChecked) {
    const int lanes = large_lanes(ax, c.big);
    return lanes == 0 ? f : fix_large_forward(xv, f, lanes, c);
  } else {
    track_max(amax, ax);
    return f;
  }
}

template <int M_, int N_, bool kChecked, typename T>
void forward_span(const T* x, T* y, int64_t len, const Coeffs<T>& c, Vectorized<T>& amax_out) {
  using V = Vectorized<T>;
  V amax = amax_out;  // a local copy: stores to y could alias the caller's vector and force a reload per iteration
  int64_t i = 0;
  for (; i + V::size() <= len; i += V::size()) forward_vec<M_, N_, kChecked>(V::loadu(x + i), c, amax).store(y + i);
  if (i < len) {
    const int rest = static_cast<int>(len - i);
    forward_vec<M_, N_, kChecked>(V::loadu(x + i, rest), c, amax).store(y + i, rest);
  }
  amax_out = amax;
}

// Accumulators of the coefficient gradients: acc[0..m] for a_i (before sign handling), acc[m+1..m+n] for the
// |b_j| part (multiplied by sign(b_j) after the reduction).
template <typename T>
using Acc = std::array<Vectorized<T>, 2 * kMaxOrder + 1>;

template <int M_, int N_, bool kDx, bool kCoef, typename T>
inline void backward_vec(const Vectorized<T>& g, const Vectorized<T>& x, const Coeffs<T>& c, Vectorized<T>* dx,
                         Acc<T>& acc) {
  using V = Vectorized<T>;
  const int m = order<M_>(c.m), n = order<N_>(c.n);
  const V ax = x.abs();
  V p, q;
  eval_pq<M_, N_>(x, ax, c, p, q);
  const V r = g / q;      // g / Q
  const V f = p / q;      // F
  if constexpr (kDx) {
    // dP/dx
    V dp(m >= 1 ? c.da[m - 1] : T(0));
    for (int i = m - 2; i >= 0; --i) dp = at::vec::fmadd(dp, x, V(c.da[i]));
    // d|Q|/d|x|, then Q' = sign(x) * that, sign(0) = +1
    V dq(n >= 1 ? c.dbabs[n - 1] : T(0));
    for (int j = n - 2; j >= 0; --j) dq = at::vec::fmadd(dq, ax, V(c.dbabs[j]));
    const V sgn = V::blendv(V(T(1)), V(T(-1)), x < V(T(0)));
    *dx = r * (dp - f * (sgn * dq));
  }
  if constexpr (kCoef) {
    V pw = r;  // g x^i / Q
    acc[0] = acc[0] + pw;
    for (int i = 1; i <= m; ++i) {
      pw = pw * x;
      acc[i] = acc[i] + pw;
    }
    V pb = V(T(0)) - r * f;  // -g P / Q^2 |x|^j
    for (int j = 0; j < n; ++j) {
      pb = pb * ax;
      acc[m + 1 + j] = acc[m + 1 + j] + pb;
    }
  }
}

// backward_vec for a vector with large-|x| lanes: those lanes go through the scalar evaluation in 1/x; the vector
// code sees them as g = 0, x = 0, which adds exactly zero to the accumulators.
template <int M_, int N_, bool kDx, bool kCoef, typename T>
__attribute__((noinline)) void backward_vec_large(const Vectorized<T>& g, const Vectorized<T>& x, int lanes,
                                                  const Coeffs<T>& c, Vectorized<T>* dx, Acc<T>& acc) {
  using V = Vectorized<T>;
  constexpr int W = V::size();
  const V zero(T(0));
  const V large = x.abs() > V(c.big);
  backward_vec<M_, N_, kDx, kCoef>(V::blendv(g, zero, large), V::blendv(x, zero, large), c, dx, acc);
  T gs[W], xs[W], ds[W], coef[2 * kMaxOrder + 1];
  T extra[2 * kMaxOrder + 1][W];
  g.store(gs);
  x.store(xs);
  if constexpr (kDx) dx->store(ds);
  const int K = c.m + 1 + c.n;
  for (int k = 0; k < K; ++k)
    for (int v = 0; v < W; ++v) extra[k][v] = T(0);
  for (int v = 0; v < W; ++v) {
    if (!(lanes >> v & 1)) continue;
    ds[v] = rational_large_x_backward(gs[v], xs[v], c.a, c.m, c.babs, c.n, kCoef ? coef : nullptr);
    if constexpr (kCoef) {
      for (int k = 0; k < K; ++k) extra[k][v] = coef[k];
    }
  }
  if constexpr (kDx) *dx = V::loadu(ds);
  if constexpr (kCoef) {
    for (int k = 0; k < K; ++k) acc[k] = acc[k] + V::loadu(extra[k]);
  }
}

template <int M_, int N_, bool kDx, bool kCoef, bool kChecked, typename T>
inline void backward_any(const Vectorized<T>& g, const Vectorized<T>& x, const Coeffs<T>& c, Vectorized<T>* dx,
                         Acc<T>& acc, Vectorized<T>& amax) {
  if constexpr (kChecked) {
    const int lanes = large_lanes(x.abs(), c.big);
    if (lanes != 0) {
      backward_vec_large<M_, N_, kDx, kCoef>(g, x, lanes, c, dx, acc);
      return;
    }
  } else {
    track_max(amax, x.abs());
  }
  backward_vec<M_, N_, kDx, kCoef>(g, x, c, dx, acc);
}

template <int M_, int N_, bool kDx, bool kCoef, bool kChecked, typename T>
void backward_span(const T* g, const T* x, T* dx, int64_t len, const Coeffs<T>& c, Acc<T>& acc,
                   Vectorized<T>& amax_out) {
  using V = Vectorized<T>;
  V amax = amax_out;  // local copy (see forward_span)
  int64_t i = 0;
  V d;
  for (; i + V::size() <= len; i += V::size()) {
    backward_any<M_, N_, kDx, kCoef, kChecked>(V::loadu(g + i), V::loadu(x + i), c, &d, acc, amax);
    if constexpr (kDx) d.store(dx + i);
  }
  if (i < len) {
    // Tail: unused lanes load g = 0 and x = 0, so they add exactly zero to the accumulators.
    const int rest = static_cast<int>(len - i);
    backward_any<M_, N_, kDx, kCoef, kChecked>(V::loadu(g + i, rest), V::loadu(x + i, rest), c, &d, acc, amax);
    if constexpr (kDx) d.store(dx + i, rest);
  }
  amax_out = amax;
}

// Tile size for converting float16/bfloat16 to fp32 math.
constexpr int64_t kTile = 256;

template <typename scalar_t>
using math_t = at::opmath_type<scalar_t>;

// CPU work decomposition: the flat tensor is cut into fixed-size items walked in memory order (streaming, good for
// prefetching and first-touch page faults). An item is a sequence of pieces, each a run of elements of one span,
// hence of one group. The item size depends only on the shape, never on the thread count.
int64_t cpu_item_size(const RationalLayout& l) {
  constexpr int64_t kMinItem = 16384, kMaxItems = 512;
  return std::max<int64_t>(kMinItem, (l.numel + kMaxItems - 1) / kMaxItems);
}

// Calls fn(group, offset, length) for each piece of the flat range [lo, hi).
template <typename Fn>
inline void for_each_piece(const RationalLayout& l, int64_t lo, int64_t hi, Fn&& fn) {
  int64_t seg = lo / l.span, off = lo % l.span;
  while (lo < hi) {
    const int64_t len = std::min(l.span - off, hi - lo);
    fn(seg % l.groups, lo, len);
    lo += len;
    ++seg;
    off = 0;
  }
}

template <typename T, typename coef_t>
std::vector<Coeffs<T>> load_all_coeffs(const coef_t* np, const coef_t* dp, const RationalLayout& l) {
  std::vector<Coeffs<T>> coeffs(l.groups);
  for (int64_t g = 0; g < l.groups; ++g)
    coeffs[g] = load_coeffs<T>(np + (l.shared_numerator ? 0 : g * (l.m + 1)), dp + g * l.n, l.m, l.n);
  return coeffs;
}

template <typename scalar_t, typename coef_t, int M_, int N_>
void forward_impl(const at::Tensor& x, const at::Tensor& num, const at::Tensor& den, at::Tensor& y,
                  const RationalLayout& l) {
  using T = math_t<scalar_t>;
  const scalar_t* xp = x.const_data_ptr<scalar_t>();
  scalar_t* yp = y.mutable_data_ptr<scalar_t>();
  const auto coeffs = load_all_coeffs<T>(num.const_data_ptr<coef_t>(), den.const_data_ptr<coef_t>(), l);
  const int64_t item = cpu_item_size(l);
  const int64_t items = (l.numel + item - 1) / item;
  const T big = coeffs[0].big;  // the same for every group (it depends on the orders only)
  at::parallel_for(0, items, 1, [&](int64_t begin, int64_t end) {
    for (int64_t it = begin; it < end; ++it) {
      Vectorized<T> amax(T(0));
      auto pass = [&](auto checked) {
        constexpr bool kChecked = decltype(checked)::value;
        for_each_piece(l, it * item, std::min(l.numel, (it + 1) * item), [&](int64_t g, int64_t off, int64_t len) {
          if constexpr (std::is_same_v<scalar_t, T>) {
            forward_span<M_, N_, kChecked>(xp + off, yp + off, len, coeffs[g], amax);
          } else {
            T tx[kTile], ty[kTile];
            for (int64_t s = 0; s < len; s += kTile) {
              const int64_t k = std::min(kTile, len - s);
              for (int64_t i = 0; i < k; ++i) tx[i] = static_cast<T>(xp[off + s + i]);
              forward_span<M_, N_, kChecked>(tx, ty, k, coeffs[g], amax);
              for (int64_t i = 0; i < k; ++i) yp[off + s + i] = static_cast<scalar_t>(ty[i]);
            }
          }
        });
      };
      pass(std::false_type{});
      if (large_lanes(amax, big) != 0) pass(std::true_type{});
    }
  });
}

template <typename scalar_t, typename coef_t, int M_, int N_, bool kDx, bool kCoef>
void backward_impl(const at::Tensor& grad, const at::Tensor& x, const at::Tensor& num, const at::Tensor& den,
                   at::Tensor& dx, at::Tensor& dnum, at::Tensor& dden, const RationalLayout& l) {
  using T = math_t<scalar_t>;
  using V = Vectorized<T>;
  const scalar_t* gp = grad.const_data_ptr<scalar_t>();
  const scalar_t* xp = x.const_data_ptr<scalar_t>();
  scalar_t* dxp = kDx ? dx.mutable_data_ptr<scalar_t>() : nullptr;
  const coef_t* dp = den.const_data_ptr<coef_t>();
  const auto coeffs = load_all_coeffs<T>(num.const_data_ptr<coef_t>(), dp, l);

  const int K = l.m + 1 + l.n;
  const int64_t item = cpu_item_size(l);
  const int64_t items = (l.numel + item - 1) / item;
  const int64_t G = l.groups;
  const T big = coeffs[0].big;
  // Partial sums per (item, group, coefficient) in double, combined below in item order: deterministic.
  std::vector<double> partial(kCoef ? items * G * K : 0, 0.0);

  at::parallel_for(0, items, 1, [&](int64_t begin, int64_t end) {
    std::vector<Acc<T>> acc(kCoef ? G : 0);
    std::vector<char> touched(kCoef ? G : 0);
    Acc<T> scratch;  // accumulator target when no coefficient gradient is wanted (never touched then)
    for (int64_t it = begin; it < end; ++it) {
      V amax(T(0));
      auto pass = [&](auto checked) {
        constexpr bool kChecked = decltype(checked)::value;
        if constexpr (kCoef) std::fill(touched.begin(), touched.end(), 0);
        for_each_piece(l, it * item, std::min(l.numel, (it + 1) * item), [&](int64_t g, int64_t off, int64_t len) {
          Acc<T>& ar = kCoef ? acc[g] : scratch;
          if constexpr (kCoef) {
            if (!touched[g]) {
              for (int k = 0; k < K; ++k) ar[k] = V(T(0));
              touched[g] = 1;
            }
          }
          if constexpr (std::is_same_v<scalar_t, T>) {
            backward_span<M_, N_, kDx, kCoef, kChecked>(gp + off, xp + off, kDx ? dxp + off : nullptr, len, coeffs[g],
                                                        ar, amax);
          } else {
            T tg[kTile], tx[kTile], td[kTile];
            for (int64_t s = 0; s < len; s += kTile) {
              const int64_t k = std::min(kTile, len - s);
              for (int64_t i = 0; i < k; ++i) tg[i] = static_cast<T>(gp[off + s + i]);
              for (int64_t i = 0; i < k; ++i) tx[i] = static_cast<T>(xp[off + s + i]);
              backward_span<M_, N_, kDx, kCoef, kChecked>(tg, tx, td, k, coeffs[g], ar, amax);
              if constexpr (kDx) {
                for (int64_t i = 0; i < k; ++i) dxp[off + s + i] = static_cast<scalar_t>(td[i]);
              }
            }
          }
        });
      };
      pass(std::false_type{});
      // Large |x| in this item: redo it with the checked pass (accumulators restart, dx is overwritten).
      if (large_lanes(amax, big) != 0) pass(std::true_type{});
      if constexpr (kCoef) {
        T lanes[V::size()];
        for (int64_t g = 0; g < G; ++g) {
          if (!touched[g]) continue;
          double* row = partial.data() + (it * G + g) * K;
          for (int k = 0; k < K; ++k) {
            acc[g][k].store(lanes);
            double sum = 0;
            for (int v = 0; v < V::size(); ++v) sum += static_cast<double>(lanes[v]);
            row[k] = sum;
          }
        }
      }
    }
  });

  if constexpr (kCoef) {
    // Second, ordered pass: per group, item partials summed in item order.
    std::vector<double> per(G * K, 0.0);
    for (int64_t it = 0; it < items; ++it)
      for (int64_t g = 0; g < G; ++g)
        for (int k = 0; k < K; ++k) per[g * K + k] += partial[(it * G + g) * K + k];
    auto na = dnum.accessor<coef_t, 2>();
    auto nb = dden.accessor<coef_t, 2>();
    for (int64_t g = 0; g < G; ++g) {
      for (int i = 0; i <= l.m && !l.shared_numerator; ++i) na[g][i] = static_cast<coef_t>(per[g * K + i]);
      for (int j = 0; j < l.n; ++j) {
        const double b = static_cast<double>(dp[g * l.n + j]);
        nb[g][j] = static_cast<coef_t>((b < 0 ? -1.0 : 1.0) * per[g * K + l.m + 1 + j]);
      }
    }
    if (l.shared_numerator) {
      // The shared row's gradient: the groups' sums, added in group order in double before rounding.
      for (int i = 0; i <= l.m; ++i) {
        double sum = 0;
        for (int64_t g = 0; g < G; ++g) sum += per[g * K + i];
        na[0][i] = static_cast<coef_t>(sum);
      }
    }
  }
}

// Dispatches dtypes and the (5, 4) fast path.
template <typename Fn>
void dispatch_orders(const RationalLayout& l, Fn&& fn) {
  if (l.m == 5 && l.n == 4) {
    fn(std::integral_constant<int, 5>{}, std::integral_constant<int, 4>{});
  } else {
    fn(std::integral_constant<int, -1>{}, std::integral_constant<int, -1>{});
  }
}

#define KAT_DISPATCH_COEF(x_type, coef_type, ...)                                     \
  [&] {                                                                              \
    if ((coef_type) == at::kFloat && (x_type) != at::kFloat) {                      \
      using coef_t = float;                                                          \
      return __VA_ARGS__();                                                          \
    } else {                                                                         \
      using coef_t = scalar_t;                                                       \
      return __VA_ARGS__();                                                          \
    }                                                                                \
  }()

}  // namespace

at::Tensor group_rational_fwd_cpu(const at::Tensor& x_in, const at::Tensor& num_in, const at::Tensor& den_in,
                                  int64_t channel_dim) {
  const RationalLayout l = check_and_layout(x_in, num_in, den_in, channel_dim);
  const at::Tensor x = x_in.contiguous(), num = num_in.contiguous(), den = den_in.contiguous();
  at::Tensor y = at::empty_like(x, at::MemoryFormat::Contiguous);
  if (l.numel == 0) return y;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "group_rational_fwd_cpu", [&] {
    KAT_DISPATCH_COEF(x.scalar_type(), num.scalar_type(), [&] {
      dispatch_orders(l, [&](auto M, auto N) { forward_impl<scalar_t, coef_t, decltype(M)::value, decltype(N)::value>(x, num, den, y, l); });
    });
  });
  return y;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> group_rational_bwd_cpu(const at::Tensor& grad_in, const at::Tensor& x_in,
                                                                      const at::Tensor& num_in,
                                                                      const at::Tensor& den_in, int64_t channel_dim,
                                                                      std::array<bool, 3> mask) {
  const RationalLayout l = check_and_layout(x_in, num_in, den_in, channel_dim);
  TORCH_CHECK(grad_in.sizes() == x_in.sizes(), "group_rational_bwd: grad_out must have x's shape ", x_in.sizes(),
              ", got ", grad_in.sizes());
  TORCH_CHECK(grad_in.scalar_type() == x_in.scalar_type(), "group_rational_bwd: grad_out must have x's dtype ",
              x_in.scalar_type(), ", got ", grad_in.scalar_type());
  const at::Tensor x = x_in.contiguous(), num = num_in.contiguous(), den = den_in.contiguous();
  const at::Tensor grad = grad_in.contiguous();
  const bool need_coef = mask[1] || mask[2];
  at::Tensor dx = mask[0] ? at::empty_like(x, at::MemoryFormat::Contiguous) : at::empty({0}, x.options());
  at::Tensor dnum = mask[1] ? at::zeros_like(num) : at::empty({0}, num.options());
  at::Tensor dden = mask[2] ? at::zeros_like(den) : at::empty({0}, den.options());
  if (l.numel == 0 || !(mask[0] || need_coef)) return {dx, dnum, dden};
  // The kernel writes both coefficient gradients; scratch tensors stand in for an unrequested one.
  at::Tensor dnum_buf = mask[1] ? dnum : at::zeros_like(num);
  at::Tensor dden_buf = mask[2] ? dden : at::zeros_like(den);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "group_rational_bwd_cpu", [&] {
    KAT_DISPATCH_COEF(x.scalar_type(), num.scalar_type(), [&] {
      dispatch_orders(l, [&](auto M, auto N) {
        if (mask[0] && need_coef)
          backward_impl<scalar_t, coef_t, decltype(M)::value, decltype(N)::value, true, true>(grad, x, num, den, dx, dnum_buf, dden_buf, l);
        else if (mask[0])
          backward_impl<scalar_t, coef_t, decltype(M)::value, decltype(N)::value, true, false>(grad, x, num, den, dx, dnum_buf, dden_buf, l);
        else
          backward_impl<scalar_t, coef_t, decltype(M)::value, decltype(N)::value, false, true>(grad, x, num, den, dx, dnum_buf, dden_buf, l);
      });
    });
  });
  return {dx, dnum, dden};
}

TORCH_LIBRARY_IMPL(kat_backbones, CPU, m) {
  m.impl("group_rational_fwd", &group_rational_fwd_cpu);
  m.impl("group_rational_bwd", &group_rational_bwd_cpu);
}

}  // namespace kat_backbones
