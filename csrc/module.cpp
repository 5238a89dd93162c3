// The Python module tmsgd_kernels._C. Importing it loads this library, whose static initializers
// register the CPU / CUDA implementations of the op tmsgd_kernels::tmsgd_step (its schema is
// defined in Python, tmsgd_kernels/ops.py, which is imported before this module is loaded). It
// also reports which CPU kernel the CPU implementation runs (cpu_step.cpp). Plain CPython API, no
// pybind11: it keeps the compile short.
#include <Python.h>

#include <string>

namespace tmsgd::cpu {
std::string capability_name();
}

namespace tmsgd {
// plan_checks.cpp
PyObject* same_state_objects(PyObject*, PyObject* args);
PyObject* layout_fingerprint(PyObject*, PyObject* tensors);
PyObject* all_strided(PyObject*, PyObject* tensors);
}

#ifdef TMSGD_WITH_CUDA
#include "cuda_table.h"
#endif

namespace {

PyObject* cpu_capability(PyObject*, PyObject*) {
  const std::string name = tmsgd::cpu::capability_name();
  return PyUnicode_FromString(name.c_str());
}

#ifdef TMSGD_WITH_CUDA
// cuda_kernel_resources(param_dtype, history_dtype, momentum) -> (registers, local bytes,
// resident blocks per SM) of that step kernel on the current device; dtypes by torch's names.
PyObject* cuda_kernel_resources(PyObject*, PyObject* args) {
  const char* param = nullptr;
  const char* history = nullptr;
  int momentum = 0;
  if (!PyArg_ParseTuple(args, "ssp", &param, &history, &momentum)) {
    return nullptr;
  }
  using tmsgd::cuda::Dtype;
  auto dtype = [](const std::string& name, Dtype* out) {
    if (name == "float32") *out = Dtype::kFloat;
    else if (name == "float64") *out = Dtype::kDouble;
    else if (name == "float16") *out = Dtype::kHalf;
    else if (name == "bfloat16") *out = Dtype::kBFloat16;
    else return false;
    return true;
  };
  Dtype p{}, h{};
  if (!dtype(param, &p) || !dtype(history, &h)) {
    PyErr_SetString(PyExc_ValueError, "dtypes: float32, float64, float16 or bfloat16");
    return nullptr;
  }
  try {
    const auto r = tmsgd::cuda::step_kernel_resources(p, h, momentum != 0);
    return Py_BuildValue("(iLi)", r.registers, static_cast<long long>(r.local_bytes),
                         r.resident_blocks);
  } catch (const std::exception& error) {
    PyErr_SetString(PyExc_RuntimeError, error.what());
    return nullptr;
  }
}
#endif

PyMethodDef methods[] = {
    {"cpu_capability", cpu_capability, METH_NOARGS,
     "The instruction set of the CPU kernel in use: AVX512, AVX2 or DEFAULT."},
    {"same_state_objects", tmsgd::same_state_objects, METH_VARARGS,
     "Whether each param's state dict holds, in order, the objects whose ids are given."},
    {"layout_fingerprint", tmsgd::layout_fingerprint, METH_O,
     "A hash of the tensors' addresses, dtypes, devices, sizes and strides."},
    {"all_strided", tmsgd::all_strided, METH_O,
     "Whether every tensor of a tuple has the strided layout."},
#ifdef TMSGD_WITH_CUDA
    {"cuda_kernel_resources", cuda_kernel_resources, METH_VARARGS,
     "(registers, local bytes, resident blocks per SM) of a CUDA step kernel."},
#endif
    {nullptr, nullptr, 0, nullptr}};

PyModuleDef module_def = {PyModuleDef_HEAD_INIT, "_C", nullptr, -1, methods};

}  // namespace

extern "C" PyMODINIT_FUNC PyInit__C(void) {
  return PyModule_Create(&module_def);
}
