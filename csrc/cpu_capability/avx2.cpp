// Built by setup.py with -mavx2 -mfma -mf16c -DCPU_CAPABILITY=AVX2 -DCPU_CAPABILITY_AVX2;
// run only when the CPU reports AVX2 (see cpu_step.cpp).
#include "../cpu_kernel_impl.h"
