"""The machinery of the CuPy emulator (arrays, kernels, the C++ header, the device timeline)."""
