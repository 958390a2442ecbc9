#include "aibrix/common/malloc_tuning.h"

#include <malloc.h>

namespace aibrix::common {

void TuneMalloc() {
  mallopt(M_MMAP_THRESHOLD, 1 << 20);
  mallopt(M_TRIM_THRESHOLD, 8 << 20);
}

}  // namespace aibrix::common
