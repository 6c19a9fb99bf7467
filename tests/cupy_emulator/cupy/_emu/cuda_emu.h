// cuda_emu.h -- run CUDA C++ kernels on the CPU (the CuPy emulator of threefactor's tests).
//
// Included (once) at the top of every translation unit the emulator builds with g++:
// * CUDA's qualifiers become nothing (__global__, __device__) or their host meaning
//   (__shared__ -> static: one instance per kernel, and blocks run one at a time);
//   `extern __shared__ T name[];` is rewritten by the Python side into a pointer to
//   this block's dynamic shared memory (::emu::dynamic_shared()).
// * threadIdx / blockIdx / blockDim / gridDim are read-only views of the running fiber
//   and block.  A block's threads are fibers on one OS thread: each runs (in thread order,
//   reversed, or shuffled each pass: THREEFACTOR_CUPY_EMULATOR_SCHEDULE) until it
//   waits at a barrier (__syncthreads, a warp shuffle, __syncwarp) or returns, then the
//   next one runs.  A barrier is released when every live thread (warp barrier: every
//   lane of the mask) waits at it; a thread that returned no longer counts.  Any other
//   state is a deadlock on a GPU too (a divergent barrier) and is reported as an error,
//   as is a shuffle whose mask names a lane that has exited or a missing source lane.
// * Warp shuffles exchange through a per-thread slot between two warp barriers.
// * Dynamic shared memory is filled with 0xFF bytes (NaN / -1) for every block and is
//   followed by a 16 KiB guard zone: a write past the launch's shared_mem is an error.
// * clock64() is a virtual 1 GHz clock that advances 65536 cycles per call; the cycles
//   a kernel spends are reported to Python, which adds them to the emulated device's
//   timeline (so a spinning kernel keeps the "device" busy without burning CPU).
// * emu::launch(&kernel, ...) unpacks CuPy-style argument buffers into the kernel's
//   parameter types; emu::signature() describes those types so that Python can reject
//   what would be garbage on a GPU (wrong count, a float for an int, int64 for int32).
// * CArray / Strided carry the arrays of an ElementwiseKernel (raw and broadcast ones).
//
// Not emulated: concurrent execution of threads (so no data race is ever observed --
// but a missing __syncthreads usually shows, since a thread runs until its next
// barrier before any other runs), the memory model, cooperative groups, textures.
#pragma once

#include <math.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include <type_traits>
#include <utility>

#define EMU_EXPORT extern "C" __attribute__((visibility("default")))

// ---- CUDA qualifiers and built-in types ---------------------------------------------
#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __noinline__ __attribute__((noinline))
#define __restrict__ __restrict
#define __shared__ static
#define __constant__ static
#define __launch_bounds__(...)
#define __align__(n) alignas(n)
#define warpSize 32

struct uint3 { unsigned int x, y, z; };
struct dim3 {
    unsigned int x, y, z;
    constexpr dim3(unsigned int x_ = 1, unsigned int y_ = 1, unsigned int z_ = 1) : x(x_), y(y_), z(z_) {}
};

#include "emu_fibers.h"
#include "emu_args.h"


// ---- CUDA device functions ---------------------------------------------------------------
#define __syncthreads() (::emu::wait(::emu::AT_SYNCTHREADS, "__syncthreads"))
inline void __syncwarp(unsigned mask = 0xffffffffu) { ::emu::warp_wait(mask, "__syncwarp"); }
inline void __threadfence() {}
inline void __threadfence_block() {}
[[noreturn]] inline void __trap() { EMU_FAIL("__trap() called"); }

template <class T>
inline T __shfl_sync(unsigned mask, T var, int src, int width = 32) {
    return ::emu::shuffle(mask, var, ::emu::SHFL_IDX, src, width, "__shfl_sync");
}
template <class T>
inline T __shfl_up_sync(unsigned mask, T var, unsigned delta, int width = 32) {
    return ::emu::shuffle(mask, var, ::emu::SHFL_UP, (int)delta, width, "__shfl_up_sync");
}
template <class T>
inline T __shfl_down_sync(unsigned mask, T var, unsigned delta, int width = 32) {
    return ::emu::shuffle(mask, var, ::emu::SHFL_DOWN, (int)delta, width, "__shfl_down_sync");
}
template <class T>
inline T __shfl_xor_sync(unsigned mask, T var, int lane_mask, int width = 32) {
    return ::emu::shuffle(mask, var, ::emu::SHFL_XOR, lane_mask, width, "__shfl_xor_sync");
}
inline unsigned __ballot_sync(unsigned mask, int pred) { return ::emu::warp_vote<unsigned>(mask, pred, "__ballot_sync", 0); }
inline int __any_sync(unsigned mask, int pred) { return ::emu::warp_vote<int>(mask, pred, "__any_sync", 1); }
inline int __all_sync(unsigned mask, int pred) { return ::emu::warp_vote<int>(mask, pred, "__all_sync", 2); }

inline long long clock64() { return ::emu::rt.clock += 65536; }

// One OS thread runs every fiber and a fiber never yields inside these: they are atomic.
template <class T> inline T atomicAdd(T* p, T v) { T old = *p; *p = old + v; return old; }
template <class T> inline T atomicSub(T* p, T v) { T old = *p; *p = old - v; return old; }
template <class T> inline T atomicExch(T* p, T v) { T old = *p; *p = v; return old; }
template <class T> inline T atomicMax(T* p, T v) { T old = *p; *p = old < v ? v : old; return old; }
template <class T> inline T atomicMin(T* p, T v) { T old = *p; *p = v < old ? v : old; return old; }
template <class T> inline T atomicCAS(T* p, T cmp, T v) { T old = *p; if (old == cmp) *p = v; return old; }
template <class T> inline T __ldg(const T* p) { return *p; }

template <class A, class B>
inline std::common_type_t<A, B> min(A a, B b) { return b < a ? b : a; }
template <class A, class B>
inline std::common_type_t<A, B> max(A a, B b) { return a < b ? b : a; }
inline float rsqrtf(float x) { return 1.0f / sqrtf(x); }
inline float rsqrt(float x) { return 1.0f / sqrtf(x); }
inline double rsqrt(double x) { return 1.0 / sqrt(x); }
inline float __expf(float x) { return expf(x); }
inline float __logf(float x) { return logf(x); }
inline float __powf(float x, float y) { return powf(x, y); }
inline float __fdividef(float x, float y) { return x / y; }
inline float __saturatef(float x) { return x < 0.0f ? 0.0f : (x > 1.0f ? 1.0f : x); }
