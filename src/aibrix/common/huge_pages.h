// Transparent huge pages for the heap.
//
// The prefix index keeps hundreds of megabytes in hash tables probed at random: on 4 KiB
// pages nearly every probe also walks the page tables (measured: removes +20-30 %, stores
// +5-15 %, query p99 -25 % with 2 MiB pages). Linux hands out huge pages for anonymous
// memory either for everything (THP mode "always") or for ranges marked with
// madvise(MADV_HUGEPAGE) ("madvise", the usual default). glibc's malloc marks its heap
// when the tunable glibc.malloc.hugetlb=1 is set, and tunables are read only when a program
// starts, so a program that wants them re-executes itself once with the tunable added.
#pragma once

#include <string>

namespace aibrix::common {

// The kernel's transparent-huge-page mode: "always", "madvise" or "never" (empty when
// unknown).
std::string TransparentHugePageMode();

// When the kernel's THP mode is "madvise" and neither GLIBC_TUNABLES nor AIBRIX_HUGEPAGES=0
// says otherwise, re-executes this program (same pid, arguments and environment plus
// GLIBC_TUNABLES=glibc.malloc.hugetlb=1). Returns when nothing is to be done or the exec
// failed. Call first thing in main(), before any thread starts.
void UseHugePagesForMalloc(char** argv);

}  // namespace aibrix::common
