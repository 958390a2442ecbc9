// Status helpers missing from Debian's Abseil 20220623.
//
// Thread safety: macros only.
#pragma once

#include "absl/status/status.h"
#include "absl/status/statusor.h"

#define AIBRIX_CONCAT_INNER_(a, b) a##b
#define AIBRIX_CONCAT_(a, b) AIBRIX_CONCAT_INNER_(a, b)

// Returns the status of `expr` from the enclosing function when it is not OK.
#define RETURN_IF_ERROR(expr)                                         \
  do {                                                                \
    if (absl::Status aibrix_status_ = (expr); !aibrix_status_.ok()) { \
      return aibrix_status_;                                          \
    }                                                                 \
  } while (false)

// Evaluates `expr` (an absl::StatusOr<T>); on error returns its status, else moves the value
// into `lhs` (which may be a declaration: ASSIGN_OR_RETURN(auto x, Foo())).
#define ASSIGN_OR_RETURN(lhs, expr) \
  AIBRIX_ASSIGN_OR_RETURN_IMPL_(AIBRIX_CONCAT_(aibrix_statusor_, __LINE__), lhs, expr)
#define AIBRIX_ASSIGN_OR_RETURN_IMPL_(tmp, lhs, expr) \
  auto tmp = (expr);                                  \
  if (!tmp.ok()) return std::move(tmp).status();      \
  lhs = std::move(tmp).value()
