// A minimal msgpack writer that emits the smallest encoding of every value, exactly as
// msgspec and python-msgpack do (../shared/protocols/README.md §1.5): ints in the smallest
// unsigned form when non-negative and the smallest signed form when negative, floats always
// as float64 (cb), str as fixstr/str8/16/32, bytes as bin8/16/32.
//
// msgpack-cxx's packer is not used here because it packs integral doubles as integers,
// which would change a vLLM `ts` of 1760000000.0 on the wire.
//
// Thread safety: a writer is a plain value; use one per thread.
#pragma once

#include <cstdint>
#include <cstring>
#include <span>
#include <string>
#include <string_view>

namespace aibrix::kvpublish {

class MsgpackWriter {
 public:
  explicit MsgpackWriter(std::string* out) : out_(out) {}

  void Nil() { Byte(0xc0); }
  void Bool(bool v) { Byte(v ? 0xc3 : 0xc2); }
  void Uint(uint64_t v) {
    char buf[9];
    out_->append(buf, PutUint(buf, v) - buf);
  }
  // Array(values.size()), then Uint(v) for each value: sized first and written in place (one
  // resize instead of an append per value; token arrays are most of a BlockStored).
  void UintArray(std::span<const uint32_t> values) {
    Array(values.size());
    size_t bytes = 0;
    for (const uint32_t v : values) bytes += UintBytes(v);
    const size_t at = out_->size();
    out_->resize(at + bytes);
    char* p = out_->data() + at;
    for (const uint32_t v : values) p = PutUint(p, v);
  }
  void Int(int64_t v) {
    if (v >= 0) return Uint(static_cast<uint64_t>(v));
    const auto u = static_cast<uint64_t>(v);
    if (v >= -32) {
      Byte(static_cast<uint8_t>(0xe0 | (v + 32)));
    } else if (v >= INT8_MIN) {
      Tagged(0xd0, u, 1);
    } else if (v >= INT16_MIN) {
      Tagged(0xd1, u, 2);
    } else if (v >= INT32_MIN) {
      Tagged(0xd2, u, 4);
    } else {
      Tagged(0xd3, u, 8);
    }
  }
  void Double(double v) {
    uint64_t bits;
    std::memcpy(&bits, &v, sizeof bits);
    Tagged(0xcb, bits, 8);
  }
  void Str(std::string_view s) {
    const size_t n = s.size();
    if (n < 32) {
      Byte(static_cast<uint8_t>(0xa0 | n));
    } else if (n <= 0xff) {
      Tagged(0xd9, n, 1);
    } else if (n <= 0xffff) {
      Tagged(0xda, n, 2);
    } else {
      Tagged(0xdb, n, 4);
    }
    out_->append(s);
  }
  void Bin(std::string_view s) {
    const size_t n = s.size();
    if (n <= 0xff) {
      Tagged(0xc4, n, 1);
    } else if (n <= 0xffff) {
      Tagged(0xc5, n, 2);
    } else {
      Tagged(0xc6, n, 4);
    }
    out_->append(s);
  }
  void Array(size_t n) {
    if (n < 16) {
      Byte(static_cast<uint8_t>(0x90 | n));
    } else if (n <= 0xffff) {
      Tagged(0xdc, n, 2);
    } else {
      Tagged(0xdd, n, 4);
    }
  }
  void Map(size_t n) {
    if (n < 16) {
      Byte(static_cast<uint8_t>(0x80 | n));
    } else if (n <= 0xffff) {
      Tagged(0xde, n, 2);
    } else {
      Tagged(0xdf, n, 4);
    }
  }

 private:
  void Byte(uint8_t b) { out_->push_back(static_cast<char>(b)); }
  // The type byte, then the low `bytes` bytes of v big-endian: one append.
  void Tagged(uint8_t tag, uint64_t v, int bytes) {
    char buf[9];
    out_->append(buf, PutTagged(buf, tag, v, bytes) - buf);
  }
  static char* PutTagged(char* p, uint8_t tag, uint64_t v, int bytes) {
    *p++ = static_cast<char>(tag);
    for (int i = 0; i < bytes; ++i) *p++ = static_cast<char>(v >> (8 * (bytes - 1 - i)));
    return p;
  }
  // Uint's smallest encoding at `p`; returns the end.
  static char* PutUint(char* p, uint64_t v) {
    if (v < 0x80) {
      *p = static_cast<char>(v);
      return p + 1;
    }
    if (v <= 0xff) return PutTagged(p, 0xcc, v, 1);
    if (v <= 0xffff) return PutTagged(p, 0xcd, v, 2);
    if (v <= 0xffffffffULL) return PutTagged(p, 0xce, v, 4);
    return PutTagged(p, 0xcf, v, 8);
  }
  static size_t UintBytes(uint64_t v) {
    if (v < 0x80) return 1;
    if (v <= 0xff) return 2;
    if (v <= 0xffff) return 3;
    return v <= 0xffffffffULL ? 5 : 9;
  }

  std::string* out_;
};

}  // namespace aibrix::kvpublish
