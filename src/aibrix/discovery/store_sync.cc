#include "aibrix/discovery/store_sync.h"

namespace aibrix::discovery {
namespace {

store::StoreWrite Upsert(K8sObject object) {
  if (auto* pod = std::get_if<store::PodObject>(&object)) return std::move(*pod);
  return std::move(std::get<store::ModelAdapterObject>(object));
}

store::StoreWrite Removal(Resource resource, const std::string& key) {
  const size_t slash = key.find('/');
  std::string ns = key.substr(0, slash);
  std::string name = slash == std::string::npos ? "" : key.substr(slash + 1);
  if (resource == Resource::kPods) return store::PodDeletion{std::move(ns), std::move(name)};
  return store::ModelAdapterDeletion{std::move(ns), std::move(name)};
}

}  // namespace

void StoreSync::OnList(Resource resource, std::vector<K8sObject> objects,
                       std::vector<std::string> deleted) {
  std::vector<store::StoreWrite> writes;
  writes.reserve(objects.size() + deleted.size());
  for (const std::string& key : deleted) writes.push_back(Removal(resource, key));
  for (K8sObject& object : objects) writes.push_back(Upsert(std::move(object)));
  store_.Apply(std::move(writes));
}

void StoreSync::OnEvents(Resource resource, std::vector<WatchEvent> events) {
  std::vector<store::StoreWrite> writes;
  writes.reserve(events.size());
  for (WatchEvent& event : events) {
    if (!event.object) continue;
    if (event.type == EventType::kDeleted) {
      writes.push_back(Removal(resource, ObjectKey(*event.object)));
    } else {
      writes.push_back(Upsert(std::move(*event.object)));
    }
  }
  store_.Apply(std::move(writes));
}

}  // namespace aibrix::discovery
