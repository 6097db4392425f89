// FUSEDLR_HD: a function compiled for the host and, under nvcc, for the device,
// so the CPU backend and the CUDA kernels run the same source.
#pragma once

#if defined(__CUDACC__)
#define FUSEDLR_HD __host__ __device__ inline
// a function kept out of line on the device: the fp64 schedule evaluator, so
// the registers it needs do not weigh on the kernels' element loops
#define FUSEDLR_HD_OUT_OF_LINE __host__ __device__ __noinline__ inline
#else
#define FUSEDLR_HD inline
#define FUSEDLR_HD_OUT_OF_LINE inline
#endif

// FUSEDLR_HD, and always inlined: the per-element conversions and updates.
// A call left in a CPU element loop keeps it from vectorising (GCC gave up
// inlining the fp16 conversions into the larger loops: 5-10x slower).
#if defined(__CUDACC__)
#define FUSEDLR_HD_ELEMENT __host__ __device__ __forceinline__
#elif defined(__GNUC__)
#define FUSEDLR_HD_ELEMENT inline __attribute__((always_inline))
#else
#define FUSEDLR_HD_ELEMENT inline
#endif
