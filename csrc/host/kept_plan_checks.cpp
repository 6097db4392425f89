// Module fusedlr._C_host: the per-step checks of a kept step plan, against
// libtorch, so an eager step's host time barely grows with the number of
// tensors (Python needs a few µs per tensor for the same reads).
//
// Optional: built only when torch's headers are importable at build time, and
// loaded only by the torch it was built against (fusedlr/_native.py). Without
// it, fusedlr/optim/buckets.py and step_plan.py run the same checks in Python.
// Every check here mirrors one there; a failed check answers False and the
// Python path decides (and raises the clear error).
#include <torch/csrc/Dtype.h>
#include <torch/csrc/autograd/python_variable.h>

#include <cstdint>
#include <vector>

namespace py = pybind11;

#ifndef FUSEDLR_TORCH_VERSION
#define FUSEDLR_TORCH_VERSION ""
#endif

namespace {

const at::Tensor& tensor_of(PyObject* obj, const char* what) {
  if (!THPVariable_Check(obj)) throw py::type_error(std::string(what) + " is not a tensor");
  return THPVariable_Unpack(obj);
}

std::uintptr_t address_of(const at::Tensor& t) { return reinterpret_cast<std::uintptr_t>(t.data_ptr()); }

// Attribute names, interned once and never released: a py::str released by a
// static destructor after the interpreter has finalized would crash at exit.
PyObject* name(const char* text) { return PyUnicode_InternFromString(text); }

// A param of a type libtorch reads as Python does: a subclass may override
// .grad (__torch_function__), which libtorch does not see.
bool plain_tensor(PyObject* obj) {
  PyObject* type = reinterpret_cast<PyObject*>(Py_TYPE(obj));
  return type == THPVariableClass || type == ParameterClass;
}

// What Entry.reuse compares a plain entry (a contiguous plain tensor param
// updated in place) against: read from the entry when the plan was built.
// The Python objects are borrowed: the caller's ``held`` list keeps them
// alive, where the garbage collector sees the references (this object's
// would be hidden from it, and a cycle through them never freed).
struct KeptEntry {
  PyObject *entry, *param, *step, *state;  // the Entry, its param, its step count and state dict
  std::uintptr_t ptr;
  std::vector<int64_t> shape;
  at::ScalarType dtype;
  int64_t device_index;
  struct Watched { PyObject *key, *tensor; std::uintptr_t ptr; };
  std::vector<Watched> watched;
};

// Entry.reuse's checks on every plain entry of a bucket, but for the state
// dict of each param (StepPlan checks the whole state mapping); on success
// each entry takes its param's new grad (Entry.grad, Entry.grad_ptr).
class PlainEntryChecks {
 public:
  PlainEntryChecks(const py::list& entries, py::list held) {
    auto borrow = [&held](py::object obj) { held.append(obj); return obj.ptr(); };
    for (py::handle e : entries) {
      KeptEntry k;
      k.entry = borrow(py::reinterpret_borrow<py::object>(e));
      k.param = borrow(e.attr("param"));
      if (!plain_tensor(k.param)) throw py::type_error("Entry.param is not a torch.Tensor or torch.nn.Parameter");
      k.step = borrow(e.attr("step"));
      tensor_of(k.step, "Entry.step");
      k.state = borrow(e.attr("state"));
      if (!PyDict_Check(k.state)) throw py::type_error("Entry.state is not a dict");
      if (e.attr("grad_type").ptr() != THPVariableClass) throw py::type_error("Entry.grad_type is not torch.Tensor");
      k.ptr = e.attr("ptr").cast<std::uintptr_t>();
      for (py::handle size : e.attr("shape")) k.shape.push_back(size.cast<int64_t>());
      py::object dtype = e.attr("dtype");
      if (!THPDtype_Check(dtype.ptr())) throw py::type_error("Entry.dtype is not a torch.dtype");
      k.dtype = reinterpret_cast<THPDtype*>(dtype.ptr())->scalar_type;
      k.device_index = e.attr("device_index").cast<int64_t>();
      for (py::handle w : e.attr("watched")) {
        auto item = w.cast<py::tuple>();  // (key, tensor, data_ptr)
        tensor_of(item[1].ptr(), "a watched state tensor");
        k.watched.push_back({borrow(item[0]), borrow(item[1]), item[2].cast<std::uintptr_t>()});
      }
      kept_.push_back(std::move(k));
    }
  }

  bool still_describe() const {
    static PyObject* const grad_name = name("grad");
    static PyObject* const grad_ptr_name = name("grad_ptr");
    std::vector<py::object> grads;
    grads.reserve(kept_.size());
    try {
      for (const KeptEntry& k : kept_) {
        const at::Tensor& param = THPVariable_Unpack(k.param);
        const at::Tensor& grad = param.grad();
        if (!grad.defined()) return false;
        auto grad_obj = py::reinterpret_steal<py::object>(THPVariable_Wrap(grad));
        if (!grad_obj) throw py::error_already_set();
        if (Py_TYPE(grad_obj.ptr()) != reinterpret_cast<PyTypeObject*>(THPVariableClass) ||
            !describes(k, param, grad))
          return false;
        grads.push_back(std::move(grad_obj));
      }
    } catch (const c10::Error&) {
      return false;  // the Python path re-reads it and says what is wrong
    }
    for (size_t i = 0; i < kept_.size(); ++i) {
      auto ptr = py::int_(address_of(THPVariable_Unpack(grads[i].ptr())));
      if (PyObject_SetAttr(kept_[i].entry, grad_name, grads[i].ptr()) != 0 ||
          PyObject_SetAttr(kept_[i].entry, grad_ptr_name, ptr.ptr()) != 0)
        throw py::error_already_set();
    }
    return true;
  }

 private:
  static bool describes(const KeptEntry& k, const at::Tensor& param, const at::Tensor& grad) {
    static PyObject* const step_version_name = name("step_version");
    const at::Tensor& step = THPVariable_Unpack(k.step);
    if (step.is_inference()) return false;  // keeps no version: Entry.reuse decides
    auto step_version = py::reinterpret_steal<py::object>(PyObject_GetAttr(k.entry, step_version_name));
    if (!step_version) throw py::error_already_set();
    if (static_cast<int64_t>(step._version()) != step_version.cast<int64_t>()) return false;
    const c10::IntArrayRef shape(k.shape);
    if (address_of(param) != k.ptr || param.scalar_type() != k.dtype || param.sizes() != shape ||
        !param.is_contiguous())
      return false;
    if (grad.scalar_type() != k.dtype || grad.sizes() != shape || grad.layout() != c10::kStrided ||
        grad.get_device() != k.device_index || !grad.is_contiguous())
      return false;
    for (const auto& w : k.watched) {
      PyObject* now = PyDict_GetItemWithError(k.state, w.key);
      if (now == nullptr && PyErr_Occurred()) throw py::error_already_set();
      if (now != w.tensor || address_of(THPVariable_Unpack(now)) != w.ptr) return false;
    }
    return true;
  }

  std::vector<KeptEntry> kept_;
};

// The same objects, in the same order: the keys (or values) of a dict, or the
// items of any other iterable (StepPlan.same_params_and_state).
bool same_objects_as(py::handle now, const py::list& kept, bool dict_values) {
  const Py_ssize_t n = PyList_GET_SIZE(kept.ptr());
  if (PyDict_Check(now.ptr())) {
    if (PyDict_GET_SIZE(now.ptr()) != n) return false;
    Py_ssize_t pos = 0, i = 0;
    PyObject *key, *value;
    while (PyDict_Next(now.ptr(), &pos, &key, &value))
      if ((dict_values ? value : key) != PyList_GET_ITEM(kept.ptr(), i++)) return false;
    return true;
  }
  if (dict_values) throw py::type_error("same_values: expected a dict");
  py::object items = py::reinterpret_steal<py::object>(PySequence_Fast(now.ptr(), "expected an iterable"));
  if (!items) throw py::error_already_set();
  if (PySequence_Fast_GET_SIZE(items.ptr()) != n) return false;
  PyObject** item = PySequence_Fast_ITEMS(items.ptr());
  for (Py_ssize_t i = 0; i < n; ++i)
    if (item[i] != PyList_GET_ITEM(kept.ptr(), i)) return false;
  return true;
}

bool none_has_grad(const py::list& params) {
  static PyObject* const grad_name = name("grad");
  for (py::handle p : params) {
    if (plain_tensor(p.ptr())) {
      if (THPVariable_Unpack(p.ptr()).grad().defined()) return false;
    } else if (!p.attr(py::handle(grad_name)).is_none()) {  // through the subclass's own .grad
      return false;
    }
  }
  return true;
}

}  // namespace

PYBIND11_MODULE(_C_host, m) {
  m.doc() = "fusedlr host path: the per-step checks of a kept step plan, against libtorch";
  m.attr("TORCH_VERSION_AT_BUILD") = FUSEDLR_TORCH_VERSION;
  py::class_<PlainEntryChecks>(m, "PlainEntryChecks")
      .def(py::init<const py::list&, py::list>(), py::arg("entries"), py::arg("held"),
           "Read what each plain Entry was built from, appending the objects it keeps to ``held``, which "
           "must outlive it (TypeError: an entry this module cannot check)")
      .def("still_describe", &PlainEntryChecks::still_describe,
           "Entry.reuse's checks on every entry (but its state dict); True: each took its param's new grad");
  m.def("same_objects", [](py::handle now, const py::list& kept) { return same_objects_as(now, kept, false); },
        py::arg("now"), py::arg("kept"),
        "Are the items of ``now`` (the keys of a dict) the objects of ``kept``, in order?");
  m.def("same_values", [](const py::dict& now, const py::list& kept) { return same_objects_as(now, kept, true); },
        py::arg("now"), py::arg("kept"), "Are the values of a dict the objects of ``kept``, in order?");
  m.def("none_has_grad", &none_has_grad, py::arg("params"), "Is every param's grad None?");
}
