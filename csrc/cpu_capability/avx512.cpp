// Built by setup.py with -mavx512{f,bw,vl,dq} -mfma -DCPU_CAPABILITY=AVX512
// -DCPU_CAPABILITY_AVX512; run only when the CPU reports AVX512 (see cpu_step.cpp).
#include "../cpu_kernel_impl.h"
