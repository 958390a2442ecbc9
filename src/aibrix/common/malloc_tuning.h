// The service's glibc malloc settings, part of server::ApplyProcessSettings (aibrix-cache's
// main and the benchmarks that run the service) and applied by the benchmarks that measure
// its hot paths alone (so they measure what the service runs).
//
// - Buffers from 1 MiB up (request bodies of up to --max-body-bytes) are mapped and
//   unmapped: a fixed threshold, because glibc's adaptive one would keep freed 8 MiB bodies
//   in the heap; the resident size returns to its idle level after a burst. Below it, from
//   the heap: a threshold of 256 KiB mapped and faulted in every answer of a few hundred KiB
//   afresh (GET /cache/pods with 1,000 pods, a 128k-token body). Measured with fleet-bench
//   --phase hostile (a saturated machine): /cache/pods answered 204-228 times in 5 s, p99
//   54-56 ms, with 256 KiB; 303-307 times, p99 29-35 ms, with 1 MiB.
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
