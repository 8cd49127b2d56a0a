// CUDA kernels of the group-rational op.
//
// Grid: (chunks, G). Block (c, g) handles chunk c of group g's virtual index space (see group_rational.h), so each
// thread keeps one group's coefficients in registers (read from the coefficient tensors: no per-call packed copy).
// 16-byte vector loads/stores where the span and the pointers allow, fp32 math for float16/bfloat16 (float64 for
// float64), int64 indexing. Coefficient gradients use a deterministic two-stage reduction: every block writes its
// partial sums (warp shuffles, then warps in order) to a workspace, and a second kernel (one block per coefficient)
// adds them in a fixed order. No atomics anywhere.
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include <algorithm>
#include <array>

#include "../group_rational.h"
#include "../group_rational_large_x.h"

namespace kat_backbones {
namespace {

constexpr int kThreads = 256;
constexpr int kWarps = kThreads / 32;
constexpr int kMaxK = 2 * kMaxOrder + 1;  // m + 1 + n at most

template <typename T, int VEC>
struct alignas(sizeof(T) * VEC) Pack {
  T v[VEC];
};

template <typename T>
__device__ __forceinline__ T absv(T v) {
  return v < T(0) ? -v : v;
}

// Coefficients of one group in registers: c[0..m] = a_i, c[m+1..m+n] = |b_j|, read straight from the numerator
// (row g, or row 0 when shared) and denominator (row g) tensors: no packed copy is made per call.
template <int M_, int N_, typename T>
struct GroupCoeffs {
  static constexpr int kK = (M_ >= 0 && N_ >= 0) ? M_ + 1 + N_ : kMaxK;
  T c[kK];
  int m, n;
  __device__ __forceinline__ GroupCoeffs(const T* __restrict__ num, const T* __restrict__ den, bool shared,
                                         int64_t g, int m_rt, int n_rt) {
    m = M_ >= 0 ? M_ : m_rt;
    n = N_ >= 0 ? N_ : n_rt;
    const T* a = num + (shared ? 0 : g * (m + 1));
    const T* b = den + g * n;
#pragma unroll
    for (int k = 0; k < kK; ++k) c[k] = k <= m ? a[k] : (k <= m + n ? absv(b[k - m - 1]) : T(0));
  }
  __device__ __forceinline__ void pq(T x, T ax, T& p, T& q) const {
    p = c[m];
#pragma unroll
    for (int i = kK - 1; i >= 0; --i)
      if (i < m) p = fma(p, x, c[i]);
    if (n == 0) {
      q = T(1);
      return;
    }
    q = c[m + n];
#pragma unroll
    for (int j = kK - 1; j >= 0; --j)
      if (j < n - 1) q = fma(q, ax, c[m + 1 + j]);
    q = fma(q, ax, T(1));
  }
};

__device__ __forceinline__ int64_t piece_offset(int64_t v, int64_t span, int64_t groups, int64_t g) {
  return ((v / span) * groups + g) * span + v % span;
}

template <typename scalar_t, int VEC, int M_, int N_>
__global__ void __launch_bounds__(kThreads) group_rational_fwd_kernel(
    const scalar_t* __restrict__ x, scalar_t* __restrict__ y, const at::opmath_type<scalar_t>* __restrict__ num,
    const at::opmath_type<scalar_t>* __restrict__ den, bool shared, int64_t span, int64_t groups,
    int64_t group_numel, int64_t chunk, int m, int n) {
  using T = at::opmath_type<scalar_t>;
  using P = Pack<scalar_t, VEC>;
  constexpr int kK = GroupCoeffs<M_, N_, T>::kK;
  const int64_t g = blockIdx.y;
  const GroupCoeffs<M_, N_, T> cf(num, den, shared, g, m, n);
  // Large |x|: evaluation in 1/x (group_rational_large_x.h), on a copy of the register coefficients made only in
  // that (rare) branch, so that cf.c stays in registers.
  const T big = large_x_threshold<T>(cf.m, cf.n);
  const int64_t lo = static_cast<int64_t>(blockIdx.x) * chunk;
  const int64_t hi = ::min(lo + chunk, group_numel);
  for (int64_t v = lo + static_cast<int64_t>(threadIdx.x) * VEC; v < hi; v += static_cast<int64_t>(kThreads) * VEC) {
    const int64_t off = piece_offset(v, span, groups, g);
    const P in = *reinterpret_cast<const P*>(x + off);
    P out;
#pragma unroll
    for (int k = 0; k < VEC; ++k) {
      const T xv = static_cast<T>(in.v[k]);
      const T ax = absv(xv);
      T p, q;
      cf.pq(xv, ax, p, q);
      T f = p / q;
      if (ax > big) {
        T row[kK];
#pragma unroll
        for (int k = 0; k < kK; ++k) row[k] = cf.c[k];
        f = rational_large_x(xv, row, cf.m, row + cf.m + 1, cf.n);
      }
      out.v[k] = static_cast<scalar_t>(f);
    }
    *reinterpret_cast<P*>(y + off) = out;
  }
}

template <typename scalar_t, int VEC, int M_, int N_, bool kDx, bool kCoef>
__global__ void __launch_bounds__(kThreads) group_rational_bwd_kernel(
    const scalar_t* __restrict__ grad, const scalar_t* __restrict__ x, scalar_t* __restrict__ dx,
    const at::opmath_type<scalar_t>* __restrict__ num, const at::opmath_type<scalar_t>* __restrict__ den,
    bool shared, at::opmath_type<scalar_t>* __restrict__ partial, int64_t span, int64_t groups, int64_t group_numel,
    int64_t chunk, int m, int n) {
  using T = at::opmath_type<scalar_t>;
  using P = Pack<scalar_t, VEC>;
  constexpr int kK = GroupCoeffs<M_, N_, T>::kK;
  const int64_t g = blockIdx.y;
  const GroupCoeffs<M_, N_, T> cf(num, den, shared, g, m, n);
  const int M = cf.m, N = cf.n, K = M + 1 + N;
  const T big = large_x_threshold<T>(M, N);
  T acc[kK];
#pragma unroll
  for (int k = 0; k < kK; ++k) acc[k] = T(0);

  const int64_t lo = static_cast<int64_t>(blockIdx.x) * chunk;
  const int64_t hi = ::min(lo + chunk, group_numel);
  for (int64_t v = lo + static_cast<int64_t>(threadIdx.x) * VEC; v < hi; v += static_cast<int64_t>(kThreads) * VEC) {
    const int64_t off = piece_offset(v, span, groups, g);
    const P gin = *reinterpret_cast<const P*>(grad + off);
    const P xin = *reinterpret_cast<const P*>(x + off);
    P dout;
#pragma unroll
    for (int e = 0; e < VEC; ++e) {
      const T xv = static_cast<T>(xin.v[e]);
      const T ax = absv(xv);
      if (ax > big) {  // evaluation in 1/x (group_rational_large_x.h); practically never taken
        T row[kK];
#pragma unroll
        for (int k = 0; k < kK; ++k) row[k] = cf.c[k];
        T coef[kMaxK];
        const T d = rational_large_x_backward(static_cast<T>(gin.v[e]), xv, row, M, row + M + 1, N,
                                              kCoef ? coef : nullptr);
        if constexpr (kDx) dout.v[e] = static_cast<scalar_t>(d);
        if constexpr (kCoef) {
#pragma unroll
          for (int k = 0; k < kK; ++k)
            if (k < K) acc[k] += coef[k];
        }
        continue;
      }
      T p, q;
      cf.pq(xv, ax, p, q);
      const T r = static_cast<T>(gin.v[e]) / q;
      const T f = p / q;
      if constexpr (kDx) {
        T dp = T(0), dq = T(0);
#pragma unroll
        for (int i = kK - 1; i >= 1; --i)
          if (i <= M) dp = fma(dp, xv, static_cast<T>(i) * cf.c[i]);
#pragma unroll
        for (int j = kK - 1; j >= 1; --j)
          if (j <= N) dq = fma(dq, ax, static_cast<T>(j) * cf.c[M + j]);
        const T sgn = xv < T(0) ? T(-1) : T(1);
        dout.v[e] = static_cast<scalar_t>(r * (dp - f * sgn * dq));
      }
      if constexpr (kCoef) {
        T pw = r;
#pragma unroll
        for (int i = 0; i < kK; ++i) {
          if (i <= M) acc[i] += pw;
          pw *= xv;
        }
        T pb = -r * f;
#pragma unroll
        for (int j = 0; j < kK; ++j) {
          pb *= ax;
          if (j < N) acc[M + 1 + j] += pb;
        }
      }
    }
    if constexpr (kDx) *reinterpret_cast<P*>(dx + off) = dout;
  }

  if constexpr (kCoef) {
    // Stage 1: block partials. Warp shuffles, then the warps' sums in warp order: fixed, deterministic.
    __shared__ T warp_sums[kWarps][kMaxK];
    const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
#pragma unroll
    for (int k = 0; k < kK; ++k) {
      T s = acc[k];
#pragma unroll
      for (int o = 16; o > 0; o /= 2) s += __shfl_down_sync(0xffffffffu, s, o);
      if (lane == 0 && k < K) warp_sums[warp][k] = s;
    }
    __syncthreads();
    if (threadIdx.x < K) {
      T s = T(0);
#pragma unroll
      for (int w = 0; w < kWarps; ++w) s += warp_sums[w][threadIdx.x];
      partial[(g * gridDim.x + blockIdx.x) * K + threadIdx.x] = s;
    }
  }
}

// Stage 2: one block per output coefficient. Thread t adds the partials t, t + blockDim, ... (in double), then the
// threads' sums are combined by a fixed shared-memory tree: the order never depends on timing, so the result is
// deterministic. (One thread per coefficient walking all chunks serially was the backward pass's bottleneck on
// large inputs: ~25K dependent loads per coefficient at 64x1024x3072.)
constexpr int kReduceThreads = 256;

template <typename T, typename coef_t>
__global__ void __launch_bounds__(kReduceThreads) group_rational_coef_reduce_kernel(
    const T* __restrict__ partial, const coef_t* __restrict__ den, coef_t* __restrict__ dnum,
    coef_t* __restrict__ dden, int64_t groups, int64_t chunks, int m, int n, bool shared) {
  const int K = m + 1 + n;
  const int64_t n_num = (shared ? 1 : groups) * (m + 1);
  const int64_t t = blockIdx.x;
  int64_t g0, g1, k;
  if (t < n_num) {
    const int64_t row = t / (m + 1);
    k = t % (m + 1);
    g0 = shared ? 0 : row;
    g1 = shared ? groups : row + 1;
  } else {
    const int64_t u = t - n_num;
    g0 = u / n;
    g1 = g0 + 1;
    k = m + 1 + u % n;
  }
  // Partials of groups g0..g1-1 are consecutive rows (g * chunks + c) of the (G * chunks, K) workspace.
  const int64_t first = g0 * chunks, count = (g1 - g0) * chunks;
  double s = 0.0;
  for (int64_t i = threadIdx.x; i < count; i += kReduceThreads) s += static_cast<double>(partial[(first + i) * K + k]);
  __shared__ double buf[kReduceThreads];
  buf[threadIdx.x] = s;
  __syncthreads();
#pragma unroll
  for (int o = kReduceThreads / 2; o > 0; o /= 2) {
    if (threadIdx.x < o) buf[threadIdx.x] += buf[threadIdx.x + o];
    __syncthreads();
  }
  if (threadIdx.x != 0) return;
  if (t < n_num) {
    dnum[t] = static_cast<coef_t>(buf[0]);
  } else {
    const int64_t u = t - n_num;
    const double b = static_cast<double>(den[u]);
    dden[u] = static_cast<coef_t>(b < 0 ? -buf[0] : buf[0]);
  }
}

// A coefficient tensor as the kernels read it: contiguous, in math precision. A no-op (no copy, no kernel) in the
// usual cases (float32 coefficients for float32 / float16 / bfloat16 x, float64 for float64 x).
at::Tensor math_coeffs(const at::Tensor& t, at::ScalarType math) { return t.to(math).contiguous(); }

template <typename scalar_t>
int vec_width(const RationalLayout& l, std::initializer_list<const void*> ptrs) {
  constexpr int kVec = 16 / sizeof(scalar_t);
  if (l.span % kVec != 0) return 1;
  for (const void* p : ptrs)
    if (p != nullptr && reinterpret_cast<uintptr_t>(p) % 16 != 0) return 1;
  return kVec;
}

template <typename Fn>
void dispatch_orders(const RationalLayout& l, Fn&& fn) {
  if (l.m == 5 && l.n == 4)
    fn(std::integral_constant<int, 5>{}, std::integral_constant<int, 4>{});
  else
    fn(std::integral_constant<int, -1>{}, std::integral_constant<int, -1>{});
}

// Two widths only (keeps the number of kernel instantiations, and the build time, down): 16-byte vectors or scalar.
template <typename scalar_t, typename Fn>
void dispatch_vec(int vec, Fn&& fn) {
  if (vec > 1)
    fn(std::integral_constant<int, 16 / sizeof(scalar_t)>{});
  else
    fn(std::integral_constant<int, 1>{});
}

dim3 grid_for(const RationalLayout& l, int64_t chunk) {
  TORCH_CHECK(l.groups <= 65535, "group_rational (CUDA): at most 65535 groups are supported, got ", l.groups);
  const int64_t chunks = (l.group_numel() + chunk - 1) / chunk;
  TORCH_CHECK(chunks <= INT32_MAX, "group_rational (CUDA): tensor too large");
  return dim3(static_cast<unsigned>(chunks), static_cast<unsigned>(l.groups));
}

at::Tensor group_rational_fwd_cuda(const at::Tensor& x_in, const at::Tensor& num_in, const at::Tensor& den_in,
                                   int64_t channel_dim) {
  const RationalLayout l = check_and_layout(x_in, num_in, den_in, channel_dim);
  const at::cuda::OptionalCUDAGuard guard(x_in.device());
  const at::Tensor x = x_in.contiguous();
  at::Tensor y = at::empty_like(x, at::MemoryFormat::Contiguous);
  if (l.numel == 0) return y;
  const int64_t chunk = reduction_chunk(l);
  const dim3 grid = grid_for(l, chunk);
  auto stream = at::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "group_rational_fwd_cuda", [&] {
    using T = at::opmath_type<scalar_t>;
    const at::Tensor num = math_coeffs(num_in, c10::CppTypeToScalarType<T>::value);
    const at::Tensor den = math_coeffs(den_in, c10::CppTypeToScalarType<T>::value);
    const int vec = vec_width<scalar_t>(l, {x.const_data_ptr(), y.const_data_ptr()});
    dispatch_orders(l, [&](auto M, auto N) {
      dispatch_vec<scalar_t>(vec, [&](auto V) {
        {
          group_rational_fwd_kernel<scalar_t, decltype(V)::value, decltype(M)::value, decltype(N)::value>
              <<<grid, kThreads, 0, stream>>>(x.const_data_ptr<scalar_t>(), y.mutable_data_ptr<scalar_t>(),
                                              num.const_data_ptr<T>(), den.const_data_ptr<T>(), l.shared_numerator,
                                              l.span, l.groups, l.group_numel(), chunk, l.m, l.n);
          C10_CUDA_KERNEL_LAUNCH_CHECK();
        }
      });
    });
  });
  return y;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> group_rational_bwd_cuda(const at::Tensor& grad_in,
                                                                       const at::Tensor& x_in,
                                                                       const at::Tensor& num_in,
                                                                       const at::Tensor& den_in, int64_t channel_dim,
                                                                       std::array<bool, 3> mask) {
  const RationalLayout l = check_and_layout(x_in, num_in, den_in, channel_dim);
  TORCH_CHECK(grad_in.sizes() == x_in.sizes(), "group_rational_bwd: grad_out must have x's shape ", x_in.sizes(),
              ", got ", grad_in.sizes());
  TORCH_CHECK(grad_in.scalar_type() == x_in.scalar_type(), "group_rational_bwd: grad_out must have x's dtype ",
              x_in.scalar_type(), ", got ", grad_in.scalar_type());
  const at::cuda::OptionalCUDAGuard guard(x_in.device());
  const at::Tensor x = x_in.contiguous(), grad = grad_in.contiguous();
  const at::Tensor num = num_in.contiguous(), den = den_in.contiguous();
  const bool need_coef = mask[1] || mask[2];
  at::Tensor dx = mask[0] ? at::empty_like(x, at::MemoryFormat::Contiguous) : at::empty({0}, x.options());
  at::Tensor dnum = mask[1] ? at::zeros_like(num) : at::empty({0}, num.options());
  at::Tensor dden = mask[2] ? at::zeros_like(den) : at::empty({0}, den.options());
  if (l.numel == 0 || !(mask[0] || need_coef)) return {dx, dnum, dden};
  at::Tensor dnum_buf = mask[1] ? dnum : at::zeros_like(num);
  at::Tensor dden_buf = mask[2] ? dden : at::zeros_like(den);

  const int64_t chunk = reduction_chunk(l);
  const dim3 grid = grid_for(l, chunk);
  const int K = l.m + 1 + l.n;
  auto stream = at::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "group_rational_bwd_cuda", [&] {
    using T = at::opmath_type<scalar_t>;
    const at::ScalarType math = c10::CppTypeToScalarType<T>::value;
    const at::Tensor num_m = math_coeffs(num, math), den_m = math_coeffs(den, math);
    at::Tensor partial = need_coef ? at::empty({static_cast<int64_t>(grid.x) * grid.y * K}, x.options().dtype(math))
                                   : at::empty({0}, x.options().dtype(math));
    const int vec = vec_width<scalar_t>(l, {x.const_data_ptr(), grad.const_data_ptr(),
                                            mask[0] ? dx.const_data_ptr() : nullptr});
    dispatch_orders(l, [&](auto M, auto N) {
      dispatch_vec<scalar_t>(vec, [&](auto V) {
        constexpr int kV = decltype(V)::value, kM = decltype(M)::value, kN = decltype(N)::value;
        {
          auto launch = [&](auto kernel) {
            kernel<<<grid, kThreads, 0, stream>>>(grad.const_data_ptr<scalar_t>(), x.const_data_ptr<scalar_t>(),
                                                  mask[0] ? dx.mutable_data_ptr<scalar_t>() : nullptr,
                                                  num_m.const_data_ptr<T>(), den_m.const_data_ptr<T>(),
                                                  l.shared_numerator,
                                                  need_coef ? partial.mutable_data_ptr<T>() : nullptr, l.span,
                                                  l.groups, l.group_numel(), chunk, l.m, l.n);
            C10_CUDA_KERNEL_LAUNCH_CHECK();
          };
          if (mask[0] && need_coef)
            launch(group_rational_bwd_kernel<scalar_t, kV, kM, kN, true, true>);
          else if (mask[0])
            launch(group_rational_bwd_kernel<scalar_t, kV, kM, kN, true, false>);
          else
            launch(group_rational_bwd_kernel<scalar_t, kV, kM, kN, false, true>);
        }
      });
    });
    if (need_coef) {
      const int64_t total = (l.shared_numerator ? 1 : l.groups) * (l.m + 1) + l.groups * l.n;
      TORCH_CHECK(total <= INT32_MAX, "group_rational (CUDA): too many coefficients");
      auto reduce = [&](auto coef_tag) {
        using coef_t = decltype(coef_tag);
        group_rational_coef_reduce_kernel<T, coef_t><<<static_cast<unsigned>(total), kReduceThreads, 0, stream>>>(
            partial.const_data_ptr<T>(), den.const_data_ptr<coef_t>(), dnum_buf.mutable_data_ptr<coef_t>(),
            dden_buf.mutable_data_ptr<coef_t>(), l.groups, grid.x, l.m, l.n, l.shared_numerator);
        C10_CUDA_KERNEL_LAUNCH_CHECK();
      };
      if (num.scalar_type() == x.scalar_type())
        reduce(scalar_t{});
      else
        reduce(float{});
    }
  });
  return {dx, dnum, dden};
}

}  // namespace

TORCH_LIBRARY_IMPL(kat_backbones, CUDA, m) {
  m.impl("group_rational_fwd", &group_rational_fwd_cuda);
  m.impl("group_rational_bwd", &group_rational_bwd_cuda);
}

}  // namespace kat_backbones
