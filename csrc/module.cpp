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

namespace {

PyObject* cpu_capability(PyObject*, PyObject*) {
  const std::string name = tmsgd::cpu::capability_name();
  return PyUnicode_FromString(name.c_str());
}

PyMethodDef methods[] = {
    {"cpu_capability", cpu_capability, METH_NOARGS,
     "The instruction set of the CPU kernel in use: AVX512, AVX2 or DEFAULT."},
    {"same_state_objects", tmsgd::same_state_objects, METH_VARARGS,
     "Whether each param's state dict holds, in order, the objects whose ids are given."},
    {"layout_fingerprint", tmsgd::layout_fingerprint, METH_O,
     "A hash of the tensors' addresses, dtypes, devices, sizes and strides."},
    {"all_strided", tmsgd::all_strided, METH_O,
     "Whether every tensor of a tuple has the strided layout."},
    {nullptr, nullptr, 0, nullptr}};

PyModuleDef module_def = {PyModuleDef_HEAD_INIT, "_C", nullptr, -1, methods};

}  // namespace

extern "C" PyMODINIT_FUNC PyInit__C(void) {
  return PyModule_Create(&module_def);
}
