"""Builds kat_backbones and its compiled op library kat_backbones._C.

Install with ``pip install --no-build-isolation -e .``: the extension must compile against the torch that is already
installed (an isolated build would fetch another torch and produce an ABI-incompatible library).

Build knobs (environment variables):
    FORCE_CUDA=1            build the CUDA kernels even when torch cannot see a GPU (needs nvcc and a CUDA torch).
                            FORCE_CUDA=0 builds CPU only. Default: CUDA when torch has CUDA and nvcc is found.
    TORCH_CUDA_ARCH_LIST    CUDA architectures, e.g. "8.0;9.0". With no GPU visible torch cannot infer them;
                            the default is then "8.0;9.0" (A100, H100/H200).
    MAX_JOBS                parallel compile jobs (ninja).
    KAT_DEBUG=1             debug build (-O0 -g, device debug info).
    KAT_CPU_VEC             CPU vector ISA for the at::vec kernels: "avx2" (AVX2 + FMA) or "default" (SSE2).
                            Default: avx2 when the building x86-64 machine has it (the library is built where it runs,
                            as an editable install); set "default" to build a library for older CPUs.
"""

import glob
import os
import platform
import shutil

from setuptools import find_packages, setup

ROOT = os.path.dirname(os.path.abspath(__file__))


def _flag(name: str) -> str | None:
    value = os.environ.get(name)
    return None if value is None or value == "" else value


def _want_cuda() -> bool:
    import torch

    force = _flag("FORCE_CUDA")
    if force is not None:
        return force == "1"
    if torch.version.cuda is None:
        return False
    from torch.utils.cpp_extension import CUDA_HOME

    nvcc = os.path.join(CUDA_HOME, "bin", "nvcc") if CUDA_HOME else shutil.which("nvcc")
    return bool(nvcc and os.path.exists(nvcc))


def _cpu_vec_flags() -> list[str]:
    choice = _flag("KAT_CPU_VEC")
    if choice is None:
        try:
            with open("/proc/cpuinfo") as f:
                flags = f.read()
            has = all(f" {isa}" in flags for isa in ("avx2", "fma", "f16c"))
            choice = "avx2" if has and platform.machine() == "x86_64" else "default"
        except OSError:
            choice = "default"
    if choice == "avx2":
        return ["-mavx2", "-mfma", "-mf16c", "-DCPU_CAPABILITY_AVX2"]
    if choice != "default":
        raise ValueError(f"KAT_CPU_VEC must be 'avx2' or 'default', got {choice!r}")
    return []


def _extensions():
    import torch
    from torch.utils.cpp_extension import CppExtension, CUDAExtension

    debug = _flag("KAT_DEBUG") == "1"
    with_cuda = _want_cuda()
    sources = sorted(glob.glob(os.path.join("csrc", "*.cpp")) + glob.glob(os.path.join("csrc", "cpu", "*.cpp")))
    cxx = ["-O0", "-g"] if debug else ["-O3"]
    cxx += ["-std=c++17"] + _cpu_vec_flags()
    extra = {"cxx": cxx}
    if with_cuda:
        if not torch.cuda.is_available() and not _flag("TORCH_CUDA_ARCH_LIST"):
            os.environ["TORCH_CUDA_ARCH_LIST"] = "8.0;9.0"
        sources += sorted(glob.glob(os.path.join("csrc", "cuda", "*.cu")))
        extra["nvcc"] = (["-O0", "-G", "-g"] if debug else ["-O3", "-lineinfo"]) + ["-std=c++17"]
        ext_cls = CUDAExtension
    else:
        ext_cls = CppExtension
    backends = ["cpu"] + (["cuda (arch " + os.environ.get("TORCH_CUDA_ARCH_LIST", "auto") + ")"] if with_cuda else [])
    print(f"[kat_backbones] building kat_backbones._C with backends: {', '.join(backends)}; cpu flags {cxx}"
          f"{' (debug)' if debug else ''}; torch {torch.__version__}")
    return [ext_cls("kat_backbones._C", sources, extra_compile_args=extra)]


def _cmdclass():
    from torch.utils.cpp_extension import BuildExtension

    return {"build_ext": BuildExtension.with_options(use_ninja=True)}


setup(
    packages=find_packages(include=["kat_backbones", "kat_backbones.*"]),
    ext_modules=_extensions(),
    cmdclass=_cmdclass(),
)
