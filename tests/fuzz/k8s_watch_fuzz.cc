// libFuzzer target for the Kubernetes watch path: bytes of a watch response body, cut into
// chunks at boundaries the input chooses, through the line assembler, the JSON decoder and
// StoreSync into a Store; the whole input also goes through the LIST decoder. Beyond "no
// crash", checked: lines handed out are within the cap and contain no newline, and the Store
// stays consistent (every model's pods are cached pods that map that model, its ready list
// is exactly its ready pods, every cached pod mapping a model is in that model's list).
// Seed corpus: tests/testdata/k8s.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>
#include <vector>

#include "aibrix/discovery/k8s_decoder.h"
#include "aibrix/discovery/line_assembler.h"
#include "aibrix/discovery/store_sync.h"
#include "aibrix/store/store.h"

namespace {

using namespace aibrix;

void CheckConsistent(const store::Store& store) {
  store::SnapshotRef snap = store.snapshot();
  size_t memberships = 0;
  snap->models.ForEach([&](const store::ModelPodsRef& model) {
    if (model->pods.empty()) std::abort();
    size_t ready = 0;
    for (size_t i = 0; i < model->pods.size(); ++i) {
      const store::PodRef& pod = model->pods[i];
      const store::PodRef* cached = snap->pods.Find(pod->key);
      if (cached == nullptr || cached->get() != pod.get()) std::abort();
      if (!std::binary_search(pod->models.begin(), pod->models.end(), model->model)) std::abort();
      if (i > 0 && !(model->pods[i - 1]->key < pod->key)) std::abort();
      if (pod->ready) {
        if (ready >= model->ready.size() || model->ready[ready++] != pod) std::abort();
      }
    }
    if (ready != model->ready.size()) std::abort();
    memberships += model->pods.size();
  });
  size_t mapped = 0;
  snap->pods.ForEach([&](const store::PodRef& pod) { mapped += pod->models.size(); });
  if (mapped != memberships) std::abort();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 2) return 0;
  // Byte 0: the resource and the largest chunk; byte 1: the line cap (small, so cut-offs
  // happen); the rest is the body.
  const discovery::Resource resource =
      (data[0] & 1) ? discovery::Resource::kModelAdapters : discovery::Resource::kPods;
  const size_t max_chunk = 1 + (data[0] >> 1);
  const size_t max_line = 64 + size_t{data[1]} * 64;
  const std::string_view body(reinterpret_cast<const char*>(data) + 2, size - 2);

  store::Store store;
  discovery::StoreSync sync(store);
  discovery::K8sDecoder decoder(resource);
  discovery::LineAssembler lines(max_line);
  size_t at = 0;
  size_t step = 0;
  while (at < body.size()) {
    const size_t chunk = std::min(body.size() - at, 1 + (step++ * 7919 + at) % max_chunk);
    std::vector<discovery::WatchEvent> batch;
    std::string_view rest = body.substr(at, chunk);
    while (!rest.empty()) {
      const auto fed = lines.Feed(rest, [&](std::string_view line) {
        if (line.size() > max_line || line.find('\n') != std::string_view::npos) std::abort();
        auto event = decoder.DecodeEvent(line);
        if (event.ok() && event->object) batch.push_back(std::move(*event));
        return true;
      });
      rest.remove_prefix(fed.consumed);  // after a cut-off line, resume with the next
    }
    if (!batch.empty()) sync.OnEvents(resource, std::move(batch));
    at += chunk;
  }
  CheckConsistent(store);

  std::string padded(body);
  padded.append(discovery::kJsonPadding, '\0');
  auto page = decoder.DecodeList(std::string_view(padded.data(), body.size()));
  if (page.ok()) {
    sync.OnList(resource, std::move(page->items), {});
    CheckConsistent(store);
  }
  return 0;
}
