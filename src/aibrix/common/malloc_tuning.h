// The service's glibc malloc settings, applied by aibrix-cache's main and by the benchmarks
// that measure its hot paths (so they measure what the service runs).
//
// - Buffers from 256 KiB up (request bodies of up to --max-body-bytes) are mapped and
//   unmapped: a fixed threshold, because glibc's adaptive one would keep freed 8 MiB bodies
//   in the heap; the resident size returns to its idle level after a burst.
// - Up to 8 MiB of free memory stays at the top of each heap instead of being returned at
//   once: the metrics scraper and the request path allocate and free a few hundred KiB per
//   operation, and returning it every time made each operation fault its pages back in
//   (measured: most of the scraper's CPU). Everything larger is mapped anyway.
//
// Thread safety: call first thing in main(), before any thread starts.
#pragma once

namespace aibrix::common {

void TuneMalloc();

}  // namespace aibrix::common
