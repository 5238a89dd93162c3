// The CPU kernel for any x86-64 / other CPU: no instruction-set flags (ATen's DEFAULT
// Vectorized), plus the scalar paths for dtype pairs that have no SIMD path.
#define CPU_CAPABILITY DEFAULT
#define TMSGD_SCALAR_PATHS
#include "cpu_kernel_impl.h"
