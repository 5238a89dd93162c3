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

namespace {

PyObject* cpu_capability(PyObject*, PyObject*) {
  const std::string name = tmsgd::cpu::capability_name();
  return PyUnicode_FromString(name.c_str());
}

PyMethodDef methods[] = {
    {"cpu_capability", cpu_capability, METH_NOARGS,
     "The instruction set of the CPU kernel in use: AVX512, AVX2 or DEFAULT."},
    {nullptr, nullptr, 0, nullptr}};

PyModuleDef module_def = {PyModuleDef_HEAD_INIT, "_C", nullptr, -1, methods};

}  // namespace

extern "C" PyMODINIT_FUNC PyInit__C(void) {
  return PyModule_Create(&module_def);
}
