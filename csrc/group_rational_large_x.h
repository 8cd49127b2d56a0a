// F(x) and its gradients for large |x|, shared by the CPU and CUDA kernels (scalar code, host and device).
//
// Horner in x overflows once |x|^k does (fp32, orders (5, 4): |x| >~ 1e8 makes P = Q = inf and F = inf/inf = NaN),
// although F is finite there: it tends to (a_m / |b_n|) sign(x)^m |x|^(m-n). Above large_x_threshold() the kernels
// evaluate P and Q in 1/x instead. With the effective orders m' (highest i with a_i != 0, 0 if none) and n' (highest
// j with b_j != 0, 0 if none), s = 1/|x| and t = 1/x = sign(x) s:
//
//   Ha = sum_{i<=m'} a_i t^(m'-i)           = P(x) / x^m'        (Horner in t, |t| < 1)
//   Hb = s^n' + sum_{j<=n'} |b_j| s^(n'-j)  = Q(x) / |x|^n'      (>= |b_n'| > 0, or 1 when n' = 0)
//   F  = sign(x)^m' |x|^(m'-n') Ha / Hb
//
// Every intermediate is bounded by the coefficients or moves monotonically towards the result, so nothing overflows
// or underflows unless F (or the gradient) itself does. The effective orders (not m, n) keep zero leading
// coefficients (identity init: P = x, b = 0) from scaling both Ha and Hb into underflow. x = +-inf gives the limit.
//
// Gradients (same convention as the main path, sign(0) = +1), with Da = P'(x) / x^(m'-1) and Db = Q'(x) / (sign(x)
// |x|^(n'-1)) also by Horner in t and s:
//   dF/dx   = (sign(x)^(m'-1) |x|^(m'-1-n') Da - F sign(x) s Db) / Hb
//   dF/da_i = x^i / Q = sign(x)^i |x|^(i-n') / Hb                  (all i <= m, zero coefficients included)
//   dF/db_j = -F sign(b_j) |x|^j / Q = -F sign(b_j) |x|^(j-n') / Hb
// The powers are walked outwards from the pivot i = n' (resp. j = n'), so each value only grows or shrinks towards
// its true size.
#pragma once

#include <cmath>

#if defined(__CUDACC__) || defined(__HIPCC__)
#define KAT_LARGE_X_FN __host__ __device__ __noinline__
#define KAT_LARGE_X_INLINE __host__ __device__ __forceinline__
#else
#define KAT_LARGE_X_FN __attribute__((noinline))
#define KAT_LARGE_X_INLINE inline
#endif

namespace kat_backbones {

// |x| above which the kernels switch to the evaluation in 1/x: 2^floor(E / (2k)), E the math type's largest binary
// exponent (128 for float, 1024 for double), k = max(m, n, 1). Below it |x|^k <= 2^(E/2), so Horner in x cannot
// overflow for coefficient sums up to ~2^(E/2 - 4) (float: ~1e18). Orders (5, 4): 4096 (float), 2^102 (double).
template <typename T>
KAT_LARGE_X_INLINE T large_x_threshold(int m, int n) {
  constexpr int kMaxExp = sizeof(T) == 8 ? 1024 : 128;
  const int k = m > n ? (m > 1 ? m : 1) : (n > 1 ? n : 1);
  return static_cast<T>(ldexp(1.0, kMaxExp / (2 * k)));
}

template <typename T>
struct LargeX {
  int me, ne;      // effective orders m', n'
  T ax, s, t, sg;  // |x|, 1/|x|, 1/x, sign(x) (sign(0) = +1; x is never 0 here)
  T hb, f;         // Hb and F

  // |x|^d for an integer d of either sign, by repeated multiplication (monotone, so no spurious overflow).
  KAT_LARGE_X_INLINE T pow_abs(T v, int d) const {
    for (; d > 0; --d) v *= ax;
    for (; d < 0; ++d) v *= s;
    return v;
  }

  KAT_LARGE_X_INLINE LargeX(T x, const T* a, int m, const T* babs, int n) {
    me = m;
    while (me > 0 && a[me] == T(0)) --me;
    ne = n;
    while (ne > 0 && babs[ne - 1] == T(0)) --ne;
    sg = x < T(0) ? T(-1) : T(1);
    ax = x * sg;
    s = T(1) / ax;
    t = s * sg;
    T ha = a[0];
    for (int i = 1; i <= me; ++i) ha = ha * t + a[i];
    hb = T(1);
    for (int j = 1; j <= ne; ++j) hb = hb * s + babs[j - 1];
    f = pow_abs(ha / hb, me - ne);
    if (me % 2 == 1) f *= sg;
  }
};

// F(x) for |x| above large_x_threshold(). a: a_0..a_m, babs: |b_1|..|b_n|.
template <typename T>
KAT_LARGE_X_FN T rational_large_x(T x, const T* a, int m, const T* babs, int n) {
  return LargeX<T>(x, a, m, babs, n).f;
}

// Backward for |x| above large_x_threshold(): returns g dF/dx and, when coef is not null, writes the coefficient
// contributions in the kernels' accumulator layout: coef[i] = g x^i / Q (i = 0..m), coef[m+1+j] = -g F |x|^(j+1) / Q
// (j = 0..n-1; the kernels multiply the sums by sign(b) afterwards).
template <typename T>
KAT_LARGE_X_FN T rational_large_x_backward(T g, T x, const T* a, int m, const T* babs, int n, T* coef) {
  const LargeX<T> L(x, a, m, babs, n);
  const T r = g / L.hb;
  T dx = T(0);
  if (L.me >= 1) {
    T da = a[1];
    for (int i = 2; i <= L.me; ++i) da = da * L.t + static_cast<T>(i) * a[i];
    dx = L.pow_abs(da, L.me - 1 - L.ne);
    if ((L.me - 1) % 2 == 1) dx *= L.sg;
  }
  if (L.ne >= 1) {
    T db = babs[0];
    for (int j = 2; j <= L.ne; ++j) db = db * L.s + static_cast<T>(j) * babs[j - 1];
    dx -= L.f * L.sg * L.s * db;
  }
  dx *= r;
  if (coef != nullptr) {
    // a_i: pivot i0 = min(n', m), value r sign^i0 |x|^(i0-n'); up by x, down by t.
    const int i0 = L.ne < m ? L.ne : m;
    T c0 = L.pow_abs(r, i0 - L.ne);
    if (i0 % 2 == 1) c0 *= L.sg;
    coef[i0] = c0;
    for (int i = i0 + 1; i <= m; ++i) coef[i] = coef[i - 1] * x;
    for (int i = i0 - 1; i >= 0; --i) coef[i] = coef[i + 1] * L.t;
    if (n >= 1) {
      // b_j: pivot j0 = max(n', 1), value -r F |x|^(j0-n'); up by |x|, down by s.
      const int j0 = L.ne > 1 ? L.ne : 1;
      T* cb = coef + m;  // cb[j] = contribution of b_j, j = 1..n
      cb[j0] = L.pow_abs(-r * L.f, j0 - L.ne);
      for (int j = j0 + 1; j <= n; ++j) cb[j] = cb[j - 1] * L.ax;
      for (int j = j0 - 1; j >= 1; --j) cb[j] = cb[j + 1] * L.s;
    }
  }
  return dx;
}

}  // namespace kat_backbones
