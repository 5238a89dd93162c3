// The emulated device's settings and launch record as ops, for the tests:
//
//   tmsgd_emulation::configure(int multiprocessors, str block_order, int seed) -> ()
//       block_order: "in order", "reversed" or "shuffled" (seeded by `seed`)
//   tmsgd_emulation::resident_blocks() -> int
//       what the occupancy query answers for every kernel (emulated_device.h)
//   tmsgd_emulation::take_launches() -> (str[] kernels, Tensor numbers)
//       the launches since the last call: each kernel's parameter types, and per launch the
//       int64 row (grid x, y, z, block x, y, z, shared bytes, parameter bytes, device,
//       on the current stream, ran)
#include <ATen/ops/empty.h>
#include <torch/library.h>

#include <string>
#include <vector>

#include "emulated_device.h"

namespace tmsgd::emulation {

namespace {

void configure_op(int64_t multiprocessors, const std::string& block_order, int64_t seed) {
  BlockOrder order;
  if (block_order == "in order") {
    order = BlockOrder::kInOrder;
  } else if (block_order == "reversed") {
    order = BlockOrder::kReversed;
  } else if (block_order == "shuffled") {
    order = BlockOrder::kShuffled;
  } else {
    TORCH_CHECK(false, "configure: block_order must be 'in order', 'reversed' or 'shuffled', got '",
                block_order, "'");
  }
  TORCH_CHECK(multiprocessors <= (1 << 20), "configure: ", multiprocessors,
              " multiprocessors is more than any GPU has");
  configure(static_cast<int>(multiprocessors), order, static_cast<uint64_t>(seed));
}

int64_t resident_blocks_op() { return kResidentBlocks; }

std::tuple<std::vector<std::string>, at::Tensor> take_launches_op() {
  const std::vector<LaunchRecord> launches = take_launches();
  constexpr int kColumns = 11;
  at::Tensor numbers = at::empty({int64_t(launches.size()), kColumns}, at::kLong);
  std::vector<std::string> kernels;
  int64_t* row = numbers.data_ptr<int64_t>();
  for (const LaunchRecord& l : launches) {
    kernels.push_back(l.kernel);
    const int64_t values[kColumns] = {l.grid[0], l.grid[1], l.grid[2],  l.block[0],
                                      l.block[1], l.block[2], int64_t(l.shared),
                                      int64_t(l.parameter_bytes), l.device, l.current_stream,
                                      l.ran};
    std::copy(values, values + kColumns, row);
    row += kColumns;
  }
  return {kernels, numbers};
}

}  // namespace

}  // namespace tmsgd::emulation

TORCH_LIBRARY_FRAGMENT(tmsgd_emulation, m) {
  m.def("configure(int multiprocessors, str block_order, int seed) -> ()",
        &tmsgd::emulation::configure_op);
  m.def("resident_blocks() -> int", &tmsgd::emulation::resident_blocks_op);
  m.def("take_launches() -> (str[] kernels, Tensor numbers)",
        &tmsgd::emulation::take_launches_op);
}
