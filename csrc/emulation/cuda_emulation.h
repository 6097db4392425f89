// Stand-ins for the CUDA built-ins the kernels use (kernels.cuh), so the same
// kernel source compiles for the CPU with a C++20 host compiler. A launch runs
// its blocks in turn; a block's threads are host threads that meet at a
// barrier for __syncthreads (a thread that returns leaves the barrier, as an
// exited GPU thread does); __shared__ variables are statics, one block using
// them at a time; atomics go through std::atomic_ref. Races between the threads
// of a block are real races here, so ThreadSanitizer finds them.
#pragma once
#include <atomic>
#include <barrier>
#include <cstdint>
#include <mutex>
#include <thread>
#include <vector>

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __noinline__
#define __launch_bounds__(...)
#define __shared__ static

struct dim3 {
  unsigned int x = 0, y = 1, z = 1;
};

struct alignas(16) uint4 {
  unsigned int x, y, z, w;
};

struct alignas(8) uint2 {
  unsigned int x, y;
};

namespace fusedlr_emulation {

inline thread_local dim3 thread_index, block_index;
inline dim3 block_dim, grid_dim;
inline std::barrier<>* block_barrier = nullptr;
inline std::mutex one_launch_at_a_time;

// Runs kernel() as `grid` blocks of `block` threads.
template <typename Kernel>
void launch(unsigned int grid, unsigned int block, Kernel kernel) {
  std::lock_guard<std::mutex> lock(one_launch_at_a_time);
  grid_dim = dim3{grid, 1, 1};
  block_dim = dim3{block, 1, 1};
  for (unsigned int b = 0; b < grid; ++b) {
    std::barrier<> barrier(block);
    block_barrier = &barrier;
    std::vector<std::thread> threads;
    threads.reserve(block);
    for (unsigned int t = 0; t < block; ++t) {
      threads.emplace_back([&kernel, &barrier, b, t] {
        thread_index = dim3{t, 1, 1};
        block_index = dim3{b, 1, 1};
        kernel();
        barrier.arrive_and_drop();
      });
    }
    for (std::thread& thread : threads) thread.join();
    block_barrier = nullptr;
  }
}

}  // namespace fusedlr_emulation

#define threadIdx (::fusedlr_emulation::thread_index)
#define blockIdx (::fusedlr_emulation::block_index)
#define blockDim (::fusedlr_emulation::block_dim)
#define gridDim (::fusedlr_emulation::grid_dim)

inline void __syncthreads() { fusedlr_emulation::block_barrier->arrive_and_wait(); }
// Blocks run one after another here, so what a fence orders between blocks is
// ordered already; ThreadSanitizer does not model fences and warns about them.
#if defined(__SANITIZE_THREAD__)
inline void __threadfence() {}
#else
inline void __threadfence() { std::atomic_thread_fence(std::memory_order_seq_cst); }
#endif
inline unsigned int atomicAdd(unsigned int* address, unsigned int value) {
  return std::atomic_ref<unsigned int>(*address).fetch_add(value);
}
inline uint4 __ldcs(const uint4* address) { return *address; }
inline void __stcs(uint4* address, uint4 value) { *address = value; }
inline uint2 __ldcs(const uint2* address) { return *address; }
inline void __stcs(uint2* address, uint2 value) { *address = value; }
