// Shared declarations of the group-rational op (kat_backbones::group_rational_fwd / _bwd).
//
// THE formula (the same in every backend: these kernels, kat_backbones/ops/reference.py and the coefficient fitting),
// orders m (numerator) and n (denominator):
//   P(x) = a0 + a1 x + ... + am x^m
//   Q(x) = 1 + |b1| |x| + |b2| |x|^2 + ... + |bn| |x|^n          (Q >= 1: no poles)
//   F(x) = P(x) / Q(x)
// Gradients (sign(0) = +1):
//   dF/dx   = P'(x)/Q - P(x) Q'(x)/Q^2,  Q'(x) = sign(x) (|b1| + 2|b2||x| + ... + n|bn||x|^(n-1))
//   dF/da_i = x^i / Q
//   dF/db_j = -(P/Q^2) sign(b_j) |x|^j
//
// Layout: x is viewed as (outer, C, inner) around `channel_dim`; C is split into G contiguous groups of
// C/G channels, so for every (outer index, group) the elements form ONE contiguous span of L = (C/G) * inner
// elements. Work is cut into fixed-size chunks that depend only on the shape: the CUDA kernels walk one group's spans
// as a virtual index space of outer * L elements (reduction_chunk), the CPU kernels walk the flat tensor in memory
// order. Coefficient gradients are reduced per chunk and the chunk partials summed in a fixed order, which makes them
// bitwise deterministic whatever the thread count.
#pragma once

#include <torch/types.h>

#include <array>
#include <cstdint>
#include <tuple>

namespace kat_backbones {

constexpr int kMaxOrder = 16;  // largest numerator / denominator order the kernels accept

struct RationalLayout {
  int64_t outer = 0;       // product of dims before channel_dim
  int64_t channels = 0;    // C
  int64_t inner = 0;       // product of dims after channel_dim
  int64_t groups = 0;      // G
  int64_t span = 0;        // L = (C / G) * inner: contiguous elements sharing one group's coefficients
  int64_t numel = 0;
  int m = 0;               // numerator order (numerator has m + 1 columns)
  int n = 0;               // denominator order
  bool shared_numerator = true;  // numerator has one row shared by all groups

  // Elements of group g in the virtual index space (outer * span).
  int64_t group_numel() const { return outer * span; }
};

// Validates the arguments (names each one in its error) and returns the layout.
RationalLayout check_and_layout(const at::Tensor& x, const at::Tensor& numerator, const at::Tensor& denominator,
                                int64_t channel_dim);

// Fixed chunk size (elements of one group's virtual index space) for the deterministic coefficient reduction.
// Depends only on the shape, never on the machine.
int64_t reduction_chunk(const RationalLayout& layout);

// Backend kernels. x, grad_out are contiguous; numerator/denominator contiguous. Returned tensors are contiguous.
at::Tensor group_rational_fwd_cpu(const at::Tensor& x, const at::Tensor& numerator, const at::Tensor& denominator,
                                  int64_t channel_dim);
std::tuple<at::Tensor, at::Tensor, at::Tensor> group_rational_bwd_cpu(const at::Tensor& grad_out, const at::Tensor& x,
                                                                      const at::Tensor& numerator,
                                                                      const at::Tensor& denominator,
                                                                      int64_t channel_dim,
                                                                      std::array<bool, 3> output_mask);

}  // namespace kat_backbones
