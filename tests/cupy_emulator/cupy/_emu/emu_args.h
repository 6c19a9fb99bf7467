// emu_args.h -- part of cuda_emu.h: kernel arguments, launches, ElementwiseKernel arrays.
// (Included by cuda_emu.h only; see there for what is emulated.)
#pragma once

namespace emu {

// ---- kernel arguments --------------------------------------------------------------------
template <class T>
constexpr const char* scalar_name() {
    using U = std::remove_cv_t<T>;
    if constexpr (std::is_same_v<U, float>) return "float32";
    else if constexpr (std::is_same_v<U, double>) return "float64";
    else if constexpr (std::is_same_v<U, bool>) return "bool";
    else if constexpr (std::is_void_v<U>) return "void";
    else if constexpr (std::is_integral_v<U>) {
        if constexpr (std::is_signed_v<U>) {
            if constexpr (sizeof(U) == 1) return "int8";
            else if constexpr (sizeof(U) == 2) return "int16";
            else if constexpr (sizeof(U) == 4) return "int32";
            else return "int64";
        } else {
            if constexpr (sizeof(U) == 1) return "uint8";
            else if constexpr (sizeof(U) == 2) return "uint16";
            else if constexpr (sizeof(U) == 4) return "uint32";
            else return "uint64";
        }
    } else return "other";
}

template <class T>
inline void describe(char* buf, size_t cap) {
    size_t len = strlen(buf);
    if constexpr (std::is_pointer_v<T>) {
        using P = std::remove_pointer_t<T>;
        snprintf(buf + len, cap - len, "%sptr:%s:%d", len ? "," : "", scalar_name<P>(),
                 (int)std::is_const_v<P>);
    } else {
        snprintf(buf + len, cap - len, "%sval:%s:%d", len ? "," : "", scalar_name<T>(), (int)sizeof(T));
    }
}

template <class... A>
inline const char* signature(void (*)(A...)) {
    static char buf[4096];
    buf[0] = 0;
    (describe<std::remove_cv_t<A>>(buf, sizeof buf), ...);
    return buf;
}

template <class... A>
struct Call {
    void (*f)(A...);
    void** args;
    template <size_t... I>
    void go(std::index_sequence<I...>) {
        f(*static_cast<std::remove_cv_t<std::remove_reference_t<A>>*>(args[I])...);
    }
    static void run(void* p) { static_cast<Call*>(p)->go(std::index_sequence_for<A...>{}); }
};

template <class... A>
inline int launch(void (*f)(A...), const LaunchConfig* cfg, void** args, char* err, int errlen,
                  long long* clock_out) {
    Call<A...> call{f, args};
    return run_grid(&Call<A...>::run, &call, cfg, err, errlen, clock_out);
}

// ---- ElementwiseKernel arrays --------------------------------------------------------------
struct ArrayDesc {
    char* data;
    long long ndim, size, contiguous;
    long long shape[32];
    long long strides[32];   // bytes
};

struct Errors {
    long long first_bad = -1;
    const char* name = "";
    long long size = 0;
};
inline Errors elementwise_errors;

inline ptrdiff_t offset_of(const ArrayDesc& d, ptrdiff_t i, size_t itemsize) {
    if (d.contiguous) return i * (ptrdiff_t)itemsize;
    ptrdiff_t off = 0;
    for (long long k = d.ndim - 1; k >= 0; --k) {
        off += (i % d.shape[k]) * d.strides[k];
        i /= d.shape[k];
    }
    return off;
}

// A `raw` parameter: indexed by its own C-order index, like CuPy's CArray (bounds-checked).
template <class T>
struct CArray {
    ArrayDesc d;
    const char* name;
    T& operator[](ptrdiff_t i) const {
        if (i < 0 || i >= d.size) {
            static T dummy;
            if (elementwise_errors.first_bad < 0) {
                elementwise_errors.first_bad = i;
                elementwise_errors.name = name;
                elementwise_errors.size = d.size;
            }
            return dummy;
        }
        return *reinterpret_cast<T*>(d.data + offset_of(d, i, sizeof(T)));
    }
    ptrdiff_t size() const { return d.size; }
    T* data() const { return reinterpret_cast<T*>(d.data); }
};

// A non-raw array parameter, already broadcast to the loop shape: element i of the loop.
template <class T>
struct Strided {
    ArrayDesc d;
    T& operator[](ptrdiff_t i) const { return *reinterpret_cast<T*>(d.data + offset_of(d, i, sizeof(T))); }
};

struct Indexer {
    ptrdiff_t size_, i_ = 0;
    ptrdiff_t size() const { return size_; }
    void set(ptrdiff_t i) { i_ = i; }
    ptrdiff_t get() const { return i_; }
};

}  // namespace emu
