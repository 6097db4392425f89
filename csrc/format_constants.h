// Exposes the packed-schedule constants of schedule_format.h to Python, so the
// packer never repeats them.
#pragma once
#include <pybind11/pybind11.h>

#include "fusedlr/schedule_format.h"

namespace fusedlr {

inline void export_format_constants(pybind11::module_& m) {
  namespace py = pybind11;
  py::dict kinds;
  kinds["CONSTANT"] = int(kConstant);
  kinds["ANNEAL"] = int(kAnneal);
  kinds["STEP"] = int(kStep);
  kinds["PIECEWISE"] = int(kPiecewise);
  kinds["EXPONENTIAL"] = int(kExponential);
  kinds["POLYNOMIAL"] = int(kPolynomial);
  kinds["COSINE"] = int(kCosine);
  kinds["COSINE_RESTARTS"] = int(kCosineRestarts);
  kinds["INVERSE_SQRT"] = int(kInverseSqrt);
  kinds["INVERSE_TIME"] = int(kInverseTime);
  kinds["ONE_CYCLE"] = int(kOneCycle);
  kinds["CYCLIC"] = int(kCyclic);
  kinds["RANGE_TEST"] = int(kRangeTest);
  kinds["PLATEAU"] = int(kPlateau);
  kinds["SEQUENTIAL"] = int(kSequential);
  kinds["CHAIN"] = int(kChain);
  kinds["PER_GROUP"] = int(kPerGroup);
  m.attr("NODE_KINDS") = kinds;

  py::dict shapes;
  shapes["linear"] = int(kShapeLinear);
  shapes["cosine"] = int(kShapeCosine);
  shapes["exponential"] = int(kShapeGeometric);
  shapes["sqrt"] = int(kShapeSqrt);
  shapes["1-sqrt"] = int(kShapeOneMinusSqrt);
  m.attr("ANNEAL_SHAPES") = shapes;

  py::dict cyclic;
  cyclic["triangular"] = int(kTriangular);
  cyclic["triangular2"] = int(kTriangular2);
  cyclic["exp_range"] = int(kExpRange);
  m.attr("CYCLIC_MODES") = cyclic;

  py::dict range_modes;
  range_modes["exponential"] = int(kRangeExponential);
  range_modes["linear"] = int(kRangeLinear);
  m.attr("RANGE_TEST_MODES") = range_modes;

  py::dict one_cycle;
  one_cycle["cos"] = int(kAnnealCos);
  one_cycle["linear"] = int(kAnnealLinear);
  m.attr("ONE_CYCLE_ANNEAL") = one_cycle;

  m.attr("NODE_HEADER") = int(kNodeHeader);
}

}  // namespace fusedlr
