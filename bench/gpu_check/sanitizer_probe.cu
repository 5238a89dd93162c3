// The compute-sanitizer probe of bench/gpu_check/run.py: `sanitizer_probe clean` writes every
// element of a buffer, `sanitizer_probe overflow` one element past its end. Where
// compute-sanitizer works on the machine, memcheck passes the first and reports the second; a
// machine where it cannot attach to the device fails the probe, and the sanitizer stages that
// follow are skipped instead of reading as kernel bugs.
#include <cuda_runtime.h>

#include <cstdio>
#include <cstring>

__global__ void fill(int* data, int n) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i < n) {
    data[i] = i;
  }
}

int main(int argc, char** argv) {
  const bool overflow = argc > 1 && std::strcmp(argv[1], "overflow") == 0;
  constexpr int kElements = 256;
  int* data = nullptr;
  if (cudaMalloc(&data, kElements * sizeof(int)) != cudaSuccess) {
    std::puts("sanitizer_probe: cudaMalloc failed");
    return 2;
  }
  fill<<<2, kElements>>>(data, overflow ? kElements + 1 : kElements);
  const cudaError_t error = cudaDeviceSynchronize();
  std::printf("sanitizer_probe %s: %s\n", overflow ? "overflow" : "clean",
              cudaGetErrorString(error));
  cudaFree(data);
  return error == cudaSuccess ? 0 : 3;
}
