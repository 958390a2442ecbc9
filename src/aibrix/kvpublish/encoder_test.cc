#include "aibrix/kvpublish/encoder.h"

#include <gtest/gtest.h>

#include "aibrix/kvpublish/msgpack_writer.h"
#include "tests/kvevents/event_equal.h"
#include "tests/kvevents/vector_util.h"

namespace aibrix::kvpublish {
namespace {

using kvevents::testing::FromHex;
using kvevents::testing::KvVectorNames;
using kvevents::testing::ToHex;
using kvevents::testing::VectorBatch;
using kvevents::testing::VectorPayload;

WireFormat FormatOfVector(const std::string& name) {
  auto f = ParseWireFormat(name.substr(0, 2));
  EXPECT_TRUE(f.ok()) << name;
  return f.value_or(WireFormat::kMap);
}

TEST(EncoderTest, ReproducesEveryVectorByteForByte) {
  const auto names = KvVectorNames();
  ASSERT_GE(names.size(), 17u);
  for (const auto& name : names) {
    SCOPED_TRACE(name);
    const kv::EventBatch batch = VectorBatch(name);
    std::string expected = VectorPayload(name);
    HashEncoding hashes = HashEncoding::kInt;
    if (name.find("bytes_hashes") != std::string::npos) {
      hashes = HashEncoding::kBytes32;
      // The decoded form keeps only the last 8 bytes of a digest; the encoder writes zeros in
      // front. Zero the first 24 bytes of every 32-byte bin in the expectation.
      for (size_t pos = 0; (pos = expected.find("\xc4\x20", pos)) != std::string::npos; pos += 34) {
        std::fill(expected.begin() + pos + 2, expected.begin() + pos + 26, '\0');
      }
    }
    EXPECT_EQ(ToHex(EncodeBatch(batch, FormatOfVector(name), hashes)), ToHex(expected));
  }
}

TEST(EncoderTest, ParsesFormatNames) {
  EXPECT_EQ(ParseWireFormat("0.9.0").value(), WireFormat::kV0_9_0);
  EXPECT_EQ(ParseWireFormat("v0.9.1").value(), WireFormat::kV0_9_1);
  EXPECT_EQ(ParseWireFormat("medium").value(), WireFormat::kMedium);
  EXPECT_EQ(ParseWireFormat("lora-name").value(), WireFormat::kLoraName);
  EXPECT_EQ(ParseWireFormat("extra_keys").value(), WireFormat::kExtraKeys);
  EXPECT_EQ(ParseWireFormat("Group-Idx").value(), WireFormat::kGroupIdx);
  EXPECT_EQ(ParseWireFormat("spec-kind").value(), WireFormat::kSpecKind);
  EXPECT_EQ(ParseWireFormat("map").value(), WireFormat::kMap);
  EXPECT_EQ(ParseWireFormat("m1").value(), WireFormat::kMap);
  EXPECT_FALSE(ParseWireFormat("0.8").ok());
  EXPECT_FALSE(ParseWireFormat("").ok());
  for (auto f :
       {WireFormat::kV0_9_0, WireFormat::kV0_9_1, WireFormat::kMedium, WireFormat::kLoraName,
        WireFormat::kExtraKeys, WireFormat::kGroupIdx, WireFormat::kSpecKind, WireFormat::kMap}) {
    EXPECT_EQ(ParseWireFormat(WireFormatName(f)).value(), f);
  }
}

TEST(EncoderTest, SignedHashesOnlyInOldEras) {
  kv::EventBatch b;
  b.ts = 1.5;
  kv::BlockRemoved r;
  r.block_hashes = {~uint64_t{0}};
  b.events.push_back(r);
  // 0.9.x: -1 as negative fixint; later: uint64 cf ff*8.
  EXPECT_EQ(ToHex(EncodeBatch(b, WireFormat::kV0_9_0)),
            "92cb3ff8000000000000"
            "91"
            "92ac426c6f636b52656d6f766564"
            "91ff");
  EXPECT_NE(ToHex(EncodeBatch(b, WireFormat::kMedium)).find("cfffffffffffffffff"),
            std::string::npos);
}

TEST(EncoderTest, MapEraOmitsUnsetOptionalKeys) {
  kv::EventBatch b;
  kv::BlockRemoved r;
  r.block_hashes = {7};
  b.events.push_back(r);
  const std::string bytes = EncodeBatch(b, WireFormat::kMap);
  EXPECT_EQ(bytes.find("group_idx"), std::string::npos);
  EXPECT_NE(bytes.find("medium"), std::string::npos);
  // The batch ends with nil for an unknown data_parallel_rank.
  EXPECT_EQ(static_cast<unsigned char>(bytes.back()), 0xc0);
}

TEST(MsgpackWriterTest, UintArrayEncodesAsArrayOfUints) {
  const std::vector<uint32_t> edges = {0,     1,      0x7f,       0x80,      0xff,
                                       0x100, 0xffff, 0x10000,    0xfffffff, 0xffffffff,
                                       50000, 151643, 0x7fffffff, 42,        0x81};
  for (const size_t n : {size_t{0}, size_t{1}, size_t{15}, size_t{16}, size_t{0xffff},
                         size_t{0x10000}, size_t{70000}}) {
    std::vector<uint32_t> values(n);
    for (size_t i = 0; i < n; ++i) values[i] = edges[(i * 7 + n) % edges.size()];
    std::string one_by_one = "prefix";
    MsgpackWriter a(&one_by_one);
    a.Array(values.size());
    for (const uint32_t v : values) a.Uint(v);
    std::string in_place = "prefix";
    MsgpackWriter(&in_place).UintArray(values);
    EXPECT_EQ(in_place, one_by_one) << n << " values";
  }
}

}  // namespace
}  // namespace aibrix::kvpublish
