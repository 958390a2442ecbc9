// A mutex that both checkers understand: std::mutex underneath, so ThreadSanitizer sees
// every lock and unlock (Debian's Abseil is not built with TSan, so absl::Mutex is invisible
// to it), and Abseil's capability annotations on top, so clang's -Wthread-safety checks
// ABSL_GUARDED_BY members.
//
// Thread safety: it is a mutex.
#pragma once

#include <mutex>

#include "absl/base/thread_annotations.h"

namespace aibrix::common {

class ABSL_LOCKABLE Mutex {
 public:
  void Lock() ABSL_EXCLUSIVE_LOCK_FUNCTION() { mu_.lock(); }
  void Unlock() ABSL_UNLOCK_FUNCTION() { mu_.unlock(); }

 private:
  std::mutex mu_;
};

// Holds `mu` for the scope.
class ABSL_SCOPED_LOCKABLE MutexLock {
 public:
  explicit MutexLock(Mutex* mu) ABSL_EXCLUSIVE_LOCK_FUNCTION(mu) : mu_(mu) { mu_->Lock(); }
  ~MutexLock() ABSL_UNLOCK_FUNCTION() { mu_->Unlock(); }
  MutexLock(const MutexLock&) = delete;
  MutexLock& operator=(const MutexLock&) = delete;

 private:
  Mutex* const mu_;
};

}  // namespace aibrix::common
