// emu_fibers.h -- part of cuda_emu.h: a block's threads as fibers, barriers, warp shuffles.
// (Included by cuda_emu.h only; see there for what is emulated.)
#pragma once

namespace emu {

enum State : int { RUNNABLE = 0, AT_SYNCTHREADS = 1, AT_WARP = 2, DONE = 3 };

struct Thread {
    void* sp;                 // saved stack pointer while suspended
    uint3 idx;                // threadIdx
    int lane, warp, state;
    unsigned mask;            // the mask of the warp barrier it waits at
    const char* op;           // what it waits in (for messages)
    alignas(16) unsigned char slot[16];   // the value it offers to a shuffle
};

struct LaunchConfig {
    unsigned int grid[3], block[3];
    unsigned long long shared_bytes;
    long long schedule;       // order of the threads in a pass: 0 forward, 1 reverse, 2 shuffled
    long long clock;          // clock64() at the start
};

struct Runtime {
    Thread* threads = nullptr;
    int capacity = 0, nthreads = 0;
    unsigned char* stacks = nullptr;
    size_t stack_bytes = 64 * 1024, mapped = 0;
    Thread* cur = nullptr;
    void* sched_sp = nullptr;
    uint3 block_idx{0, 0, 0};
    dim3 block_dim, grid_dim;
    unsigned char* dyn_shared = nullptr;
    size_t dyn_capacity = 0, dyn_size = 0;
    bool failed = false;
    char message[1024] = {0};
    long long clock = 0;
    void (*body)(void*) = nullptr;
    void* body_ctx = nullptr;
    uint32_t mxcsr = 0x1f80;
    uint16_t fpucw = 0x037f;
};
inline Runtime rt;

}  // namespace emu

#define threadIdx (static_cast<const uint3&>(::emu::rt.cur->idx))
#define blockIdx (static_cast<const uint3&>(::emu::rt.block_idx))
#define blockDim (static_cast<const dim3&>(::emu::rt.block_dim))
#define gridDim (static_cast<const dim3&>(::emu::rt.grid_dim))

// ---- fibers: a minimal x86-64 context switch (callee-saved registers, mxcsr, x87 cw) ----
#if !defined(__x86_64__)
#error "the CuPy emulator's fibers are written for x86-64"
#endif
extern "C" void emu_switch_context(void** save_sp, void* load_sp) __attribute__((visibility("hidden")));
asm(R"(
    .text
    .p2align 4
    .globl emu_switch_context
    .hidden emu_switch_context
    .type emu_switch_context, @function
emu_switch_context:
    pushq %rbp
    pushq %rbx
    pushq %r12
    pushq %r13
    pushq %r14
    pushq %r15
    subq $16, %rsp
    stmxcsr 8(%rsp)
    fnstcw (%rsp)
    movq %rsp, (%rdi)
    movq %rsi, %rsp
    ldmxcsr 8(%rsp)
    fldcw (%rsp)
    addq $16, %rsp
    popq %r15
    popq %r14
    popq %r13
    popq %r12
    popq %rbx
    popq %rbp
    ret
    .size emu_switch_context, .-emu_switch_context
)");

namespace emu {

inline void set_message(const char* fmt, ...) {
    if (rt.failed) return;   // keep the first error
    rt.failed = true;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(rt.message, sizeof rt.message, fmt, ap);
    va_end(ap);
}

// An error inside a fiber: record it and leave for good (the scheduler stops the block).
[[noreturn]] inline void fiber_fail() {
    Thread* t = rt.cur;
    emu_switch_context(&t->sp, rt.sched_sp);
    __builtin_unreachable();
}

#define EMU_FAIL(...) do { ::emu::set_message(__VA_ARGS__); ::emu::fiber_fail(); } while (0)

[[noreturn]] inline void fiber_entry() {
    rt.body(rt.body_ctx);
    rt.cur->state = DONE;
    emu_switch_context(&rt.cur->sp, rt.sched_sp);
    __builtin_unreachable();
}

inline bool reserve_threads(int n) {
    if (n <= rt.capacity) return true;
    size_t page = (size_t)sysconf(_SC_PAGESIZE);
    size_t bytes = (size_t)n * rt.stack_bytes;
    void* mem = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (mem == MAP_FAILED) return false;
    for (int i = 0; i < n; ++i)   // a guard page at the low end of each stack: overflow faults
        mprotect((unsigned char*)mem + (size_t)i * rt.stack_bytes, page, PROT_NONE);
    Thread* threads = (Thread*)aligned_alloc(64, ((sizeof(Thread) * n + 63) / 64) * 64);
    if (!threads) { munmap(mem, bytes); return false; }
    if (rt.stacks) munmap(rt.stacks, rt.mapped);
    free(rt.threads);
    rt.stacks = (unsigned char*)mem;
    rt.mapped = bytes;
    rt.threads = threads;
    rt.capacity = n;
    return true;
}

inline void start_fiber(Thread* t, int i) {
    unsigned char* top = rt.stacks + (size_t)(i + 1) * rt.stack_bytes;    // 16-byte aligned
    uint64_t* ret = (uint64_t*)(top - 16);      // the "return address" the first switch pops
    ret[0] = (uint64_t)(void*)&fiber_entry;
    ret[1] = 0;
    for (int k = 1; k <= 6; ++k) ret[-k] = 0;   // rbp rbx r12 r13 r14 r15
    unsigned char* sp = (unsigned char*)(ret - 6) - 16;
    memcpy(sp + 8, &rt.mxcsr, 4);
    memcpy(sp, &rt.fpucw, 2);
    t->sp = sp;
}

inline void wait(int state, const char* op) {
    Thread* t = rt.cur;
    t->state = state;
    t->op = op;
    emu_switch_context(&t->sp, rt.sched_sp);
}

inline const char* state_name(const Thread& t) {
    switch (t.state) {
        case AT_SYNCTHREADS: return "__syncthreads";
        case AT_WARP: return t.op;
        case DONE: return "exited";
        default: return "running";
    }
}

// Nothing is runnable: release one barrier, or report why none can be released.
inline bool release() {
    const int n = rt.nthreads;
    int live = 0, at_sync = 0;
    bool released = false;
    for (int i = 0; i < n; ++i) {
        const Thread& t = rt.threads[i];
        if (t.state != DONE) ++live;
        if (t.state == AT_SYNCTHREADS) ++at_sync;
    }
    for (int w = 0; w * 32 < n; ++w) {
        Thread* lanes = rt.threads + w * 32;
        const int count = n - w * 32 < 32 ? n - w * 32 : 32;
        for (int l = 0; l < count; ++l) {
            if (lanes[l].state != AT_WARP) continue;
            const unsigned m = lanes[l].mask;
            bool ready = true;
            for (int k = 0; k < 32 && ready; ++k) {
                if (!(m & (1u << k))) continue;
                if (k >= count) {
                    set_message("%s with mask 0x%08x in warp %d of a block of %d threads: lane %d does not exist",
                                lanes[l].op, m, w, n, k);
                    return false;
                }
                const Thread& o = lanes[k];
                if (o.state == DONE) {
                    set_message("%s with mask 0x%08x (warp %d, thread %u): lane %d has already exited",
                                lanes[l].op, m, w, lanes[l].idx.x, k);
                    return false;
                }
                if (o.state == AT_WARP && o.mask != m) {
                    set_message("warp %d: lane %d waits in %s with mask 0x%08x, lane %d in %s with mask 0x%08x",
                                w, l, lanes[l].op, m, k, o.op, o.mask);
                    return false;
                }
                if (o.state != AT_WARP) ready = false;
            }
            if (ready) {
                for (int k = 0; k < 32; ++k)
                    if (m & (1u << k)) lanes[k].state = RUNNABLE;
                released = true;
            }
        }
    }
    if (released) return true;
    if (at_sync == live) {
        for (int i = 0; i < n; ++i)
            if (rt.threads[i].state == AT_SYNCTHREADS) rt.threads[i].state = RUNNABLE;
        return true;
    }
    for (int i = 0; i < n; ++i) {
        const Thread& t = rt.threads[i];
        if (t.state == AT_SYNCTHREADS) continue;
        if (t.state == DONE) continue;
        set_message("deadlock (divergent barrier) in block (%u,%u,%u): %d of %d live threads wait at "
                    "__syncthreads while thread (%u,%u,%u) waits in %s",
                    rt.block_idx.x, rt.block_idx.y, rt.block_idx.z, at_sync, live,
                    t.idx.x, t.idx.y, t.idx.z, state_name(t));
        return false;
    }
    set_message("scheduler: no barrier to release");
    return false;
}

// Dynamic shared memory is followed by a guard zone: a write past the launch's shared_mem fails.
constexpr size_t SHARED_GUARD = 16 * 1024;

constexpr uint32_t SHARED_GUARD_WORD = 0x7fa5a5a5u;   // a float32 signalling NaN: even += changes it

inline void fill_shared() {
    memset(rt.dyn_shared, 0xff, rt.dyn_size);             // uninitialised: NaN / -1
    for (size_t k = rt.dyn_size; k + 4 <= rt.dyn_capacity; k += 4)
        memcpy(rt.dyn_shared + k, &SHARED_GUARD_WORD, 4);
}

inline bool shared_guard_intact() {
    for (size_t k = rt.dyn_size; k < rt.dyn_size + SHARED_GUARD; ++k) {
        if (rt.dyn_shared[k] != ((const unsigned char*)&SHARED_GUARD_WORD)[(k - rt.dyn_size) % 4]) {
            set_message("block (%u,%u,%u) wrote byte %zu of dynamic shared memory, past the %zu bytes "
                        "of the launch's shared_mem", rt.block_idx.x, rt.block_idx.y, rt.block_idx.z,
                        k, rt.dyn_size);
            return false;
        }
    }
    return true;
}

inline bool run_block(int schedule) {
    const int n = rt.nthreads;
    static int order[1024];
    static uint64_t seed = 0x9e3779b97f4a7c15ull;
    for (int i = 0; i < n; ++i) order[i] = schedule == 1 ? n - 1 - i : i;
    const unsigned bx = rt.block_dim.x, by = rt.block_dim.y;
    for (int i = 0; i < n; ++i) {
        Thread* t = rt.threads + i;
        t->idx = uint3{(unsigned)i % bx, ((unsigned)i / bx) % by, (unsigned)i / (bx * by)};
        t->lane = i % 32;
        t->warp = i / 32;
        t->state = RUNNABLE;
        t->mask = 0;
        t->op = "";
        start_fiber(t, i);
    }
    fill_shared();
    for (;;) {
        bool ran = false;
        if (schedule == 2) {
            for (int i = n - 1; i > 0; --i) {          // Fisher-Yates with xorshift64
                seed ^= seed << 13; seed ^= seed >> 7; seed ^= seed << 17;
                const int j = (int)(seed % (uint64_t)(i + 1));
                const int tmp = order[i]; order[i] = order[j]; order[j] = tmp;
            }
        }
        for (int k = 0; k < n; ++k) {
            Thread* t = rt.threads + order[k];
            if (t->state != RUNNABLE) continue;
            rt.cur = t;
            emu_switch_context(&rt.sched_sp, t->sp);
            rt.cur = nullptr;
            if (rt.failed) return false;
            ran = true;
        }
        if (ran) continue;
        bool all_done = true;
        for (int i = 0; i < n && all_done; ++i) all_done = rt.threads[i].state == DONE;
        if (all_done) return shared_guard_intact();
        if (!release()) return false;
    }
}

inline int run_grid(void (*body)(void*), void* ctx, const LaunchConfig* cfg, char* err, int errlen,
                    long long* clock_out) {
    rt.failed = false;
    rt.message[0] = 0;
    rt.clock = cfg->clock;
    rt.body = body;
    rt.body_ctx = ctx;
    rt.block_dim = dim3(cfg->block[0], cfg->block[1], cfg->block[2]);
    rt.grid_dim = dim3(cfg->grid[0], cfg->grid[1], cfg->grid[2]);
    rt.nthreads = (int)(cfg->block[0] * cfg->block[1] * cfg->block[2]);
    uint32_t mx;
    uint16_t cw;
    asm volatile("stmxcsr %0" : "=m"(mx));
    asm volatile("fnstcw %0" : "=m"(cw));
    rt.mxcsr = mx;
    rt.fpucw = cw;
    int status = 0;
    if (!reserve_threads(rt.nthreads)) {
        set_message("cannot map stacks for %d threads", rt.nthreads);
        status = 1;
    }
    const size_t shared = (size_t)cfg->shared_bytes;
    rt.dyn_size = shared;
    if (status == 0 && (shared + SHARED_GUARD > rt.dyn_capacity || !rt.dyn_shared)) {
        free(rt.dyn_shared);
        rt.dyn_capacity = (shared + SHARED_GUARD + 63) / 64 * 64;
        rt.dyn_shared = (unsigned char*)aligned_alloc(64, rt.dyn_capacity);
    }
    for (unsigned z = 0; status == 0 && z < cfg->grid[2]; ++z)
        for (unsigned y = 0; status == 0 && y < cfg->grid[1]; ++y)
            for (unsigned x = 0; status == 0 && x < cfg->grid[0]; ++x) {
                rt.block_idx = uint3{x, y, z};
                if (!run_block((int)cfg->schedule)) status = 1;
            }
    *clock_out = rt.clock;
    if (status != 0 && err && errlen > 0) snprintf(err, (size_t)errlen, "%s", rt.message);
    return status;
}

inline unsigned char* dynamic_shared() { return rt.dyn_shared; }

// ---- warp-level primitives -------------------------------------------------------------
inline void warp_wait(unsigned mask, const char* op) {
    Thread* t = rt.cur;
    if (!(mask & (1u << t->lane)))
        EMU_FAIL("%s: thread (%u,%u,%u) (lane %d) calls it with mask 0x%08x that does not name its own lane",
                 op, t->idx.x, t->idx.y, t->idx.z, t->lane, mask);
    t->mask = mask;
    wait(AT_WARP, op);
}

enum ShuffleKind { SHFL_IDX, SHFL_UP, SHFL_DOWN, SHFL_XOR };

template <class T>
inline T shuffle(unsigned mask, T var, int kind, int arg, int width, const char* op) {
    static_assert(sizeof(T) <= 16 && std::is_trivially_copyable<T>::value, "shuffle of an unsupported type");
    Thread* t = rt.cur;
    if (width <= 0 || width > 32 || (width & (width - 1)))
        EMU_FAIL("%s: width %d is not a power of two in [1, 32]", op, width);
    memcpy(t->slot, &var, sizeof(T));
    warp_wait(mask, op);
    const int lane = t->lane, seg = lane & ~(width - 1);
    int src = lane;
    switch (kind) {
        case SHFL_IDX: src = seg + (arg & (width - 1)); break;
        case SHFL_UP: src = (lane - seg) - arg >= 0 ? lane - arg : lane; break;
        case SHFL_DOWN: src = (lane - seg) + arg < width ? lane + arg : lane; break;
        default: src = lane ^ arg; if ((src & ~(width - 1)) > seg) src = lane; break;
    }
    if (src < 0 || src >= 32 || !(mask & (1u << src)))
        EMU_FAIL("%s: lane %d reads lane %d, which is not in the mask 0x%08x (undefined on a GPU)",
                 op, lane, src, mask);
    T out;
    memcpy(&out, rt.threads[t->warp * 32 + src].slot, sizeof(T));
    warp_wait(mask, op);      // nobody overwrites a slot before every lane has read
    return out;
}

template <class T>
inline T warp_vote(unsigned mask, int pred, const char* op, int how) {
    Thread* t = rt.cur;
    unsigned v = pred != 0;
    memcpy(t->slot, &v, sizeof v);
    warp_wait(mask, op);
    unsigned ballot = 0;
    for (int k = 0; k < 32; ++k) {
        if (!(mask & (1u << k))) continue;
        unsigned p;
        memcpy(&p, rt.threads[t->warp * 32 + k].slot, sizeof p);
        if (p) ballot |= 1u << k;
    }
    warp_wait(mask, op);
    if (how == 0) return (T)ballot;
    if (how == 1) return (T)(ballot != 0);
    return (T)(ballot == mask);
}

}  // namespace emu
