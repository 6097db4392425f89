// Enums declared from lists of X(enumerator, "python name", value): the C++
// enum and the names Python reads (fusedlr/_layout.py, written at build time
// by csrc/layout_writer.cpp from these lists) come from one list.
#pragma once

#define FUSEDLR_ENUMERATOR(name, python_name, value) name = value,
// The number of entries of a list.
#define FUSEDLR_PLUS_ONE(name, python_name, value) +1
#define FUSEDLR_COUNT(list) (0 list(FUSEDLR_PLUS_ONE))
