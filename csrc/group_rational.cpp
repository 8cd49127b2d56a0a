// Schemas of the group-rational op (the one TORCH_LIBRARY block), argument checks shared by every backend, and the
// autocast kernel. Backend kernels live in cpu/ and cuda/ and register themselves with TORCH_LIBRARY_IMPL.
#include "group_rational.h"

#include <ATen/autocast_mode.h>
#include <Python.h>
#include <torch/library.h>

#include <algorithm>

// `import kat_backbones._C` loads this library, whose static initialisers register the ops. No pybind11 surface.
extern "C" {
PyObject* PyInit__C(void) {
  static struct PyModuleDef module_def = {PyModuleDef_HEAD_INIT, "_C", nullptr, -1, nullptr};
  return PyModule_Create(&module_def);
}
}

namespace kat_backbones {

RationalLayout check_and_layout(const at::Tensor& x, const at::Tensor& numerator, const at::Tensor& denominator,
                                int64_t channel_dim) {
  TORCH_CHECK(at::isFloatingType(x.scalar_type()), "group_rational: x must be a floating-point tensor "
              "(float16, bfloat16, float32 or float64), got ", x.scalar_type());
  TORCH_CHECK(numerator.dim() == 2, "group_rational: numerator must be 2-D (1 or G, m+1), got shape ",
              numerator.sizes());
  TORCH_CHECK(denominator.dim() == 2, "group_rational: denominator must be 2-D (G, n), got shape ",
              denominator.sizes());
  TORCH_CHECK(numerator.scalar_type() == denominator.scalar_type(), "group_rational: numerator and denominator must "
              "have the same dtype, got ", numerator.scalar_type(), " and ", denominator.scalar_type());
  const bool reduced = x.scalar_type() == at::kHalf || x.scalar_type() == at::kBFloat16;
  TORCH_CHECK(numerator.scalar_type() == x.scalar_type() || (reduced && numerator.scalar_type() == at::kFloat),
              "group_rational: numerator/denominator dtype must equal x's dtype (", x.scalar_type(),
              ") or be float32 for a float16/bfloat16 x, got ", numerator.scalar_type());
  TORCH_CHECK(numerator.device() == x.device(), "group_rational: numerator must be on x's device (", x.device(),
              "), got ", numerator.device());
  TORCH_CHECK(denominator.device() == x.device(), "group_rational: denominator must be on x's device (", x.device(),
              "), got ", denominator.device());
  TORCH_CHECK(x.dim() >= 1, "group_rational: x must have at least one dimension (the channels)");
  const int64_t dim = c10::maybe_wrap_dim(channel_dim, x.dim());

  RationalLayout l;
  l.groups = denominator.size(0);
  l.n = static_cast<int>(denominator.size(1));
  l.m = static_cast<int>(numerator.size(1)) - 1;
  TORCH_CHECK(l.groups >= 1, "group_rational: denominator must have at least one row (G >= 1)");
  TORCH_CHECK(l.m >= 0 && l.m <= kMaxOrder, "group_rational: numerator must have 1 to ", kMaxOrder + 1,
              " columns (m + 1), got ", numerator.size(1));
  TORCH_CHECK(l.n >= 0 && l.n <= kMaxOrder, "group_rational: denominator must have 0 to ", kMaxOrder,
              " columns (n), got ", denominator.size(1));
  TORCH_CHECK(numerator.size(0) == 1 || numerator.size(0) == l.groups, "group_rational: numerator must have 1 row "
              "(shared) or G = ", l.groups, " rows (one per group), got ", numerator.size(0));
  l.shared_numerator = numerator.size(0) == 1;
  l.channels = x.size(dim);
  TORCH_CHECK(l.channels % l.groups == 0, "group_rational: the number of groups G = ", l.groups,
              " (denominator rows) must divide the channels of x along channel_dim=", channel_dim, " (", l.channels,
              ")");
  l.outer = 1;
  for (int64_t d = 0; d < dim; ++d) l.outer *= x.size(d);
  l.inner = 1;
  for (int64_t d = dim + 1; d < x.dim(); ++d) l.inner *= x.size(d);
  l.span = (l.channels / l.groups) * l.inner;
  l.numel = x.numel();
  return l;
}

int64_t reduction_chunk(const RationalLayout& layout) {
  // About 8K elements per chunk; fewer chunks (but at least 1K elements) when a group has few elements.
  const int64_t per_group = std::max<int64_t>(layout.group_numel(), 1);
  return std::min<int64_t>(8192, std::max<int64_t>(1024, per_group));
}

namespace {

// Autocast: the op always computes in fp32 (float64 for float64 x) and returns x's dtype. x is never cast;
// float16/bfloat16 coefficients are promoted to float32 so reduced-precision models keep fp32 coefficient math.
at::Tensor group_rational_fwd_autocast(const at::Tensor& x, const at::Tensor& numerator,
                                       const at::Tensor& denominator, int64_t channel_dim) {
  c10::impl::ExcludeDispatchKeyGuard no_autocast(c10::autocast_dispatch_keyset);
  auto promote = [&](const at::Tensor& t) {
    const bool reduced = t.scalar_type() == at::kHalf || t.scalar_type() == at::kBFloat16;
    return reduced && x.scalar_type() != at::kDouble ? t.to(at::kFloat) : t;
  };
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("kat_backbones::group_rational_fwd", "")
                       .typed<at::Tensor(const at::Tensor&, const at::Tensor&, const at::Tensor&, int64_t)>();
  return op.call(x, promote(numerator), promote(denominator), channel_dim);
}

}  // namespace

TORCH_LIBRARY(kat_backbones, m) {
  m.def("group_rational_fwd(Tensor x, Tensor numerator, Tensor denominator, int channel_dim) -> Tensor");
  m.def(
      "group_rational_bwd(Tensor grad_out, Tensor x, Tensor numerator, Tensor denominator, int channel_dim, "
      "bool[3] output_mask) -> (Tensor, Tensor, Tensor)");
}

TORCH_LIBRARY_IMPL(kat_backbones, AutocastCPU, m) { m.impl("group_rational_fwd", &group_rational_fwd_autocast); }
TORCH_LIBRARY_IMPL(kat_backbones, AutocastCUDA, m) { m.impl("group_rational_fwd", &group_rational_fwd_autocast); }

}  // namespace kat_backbones
