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
#include <string>
#include <string_view>

namespace aibrix::kvpublish {

class MsgpackWriter {
 public:
  explicit MsgpackWriter(std::string* out) : out_(out) {}

  void Nil() { Byte(0xc0); }
  void Bool(bool v) { Byte(v ? 0xc3 : 0xc2); }
  void Uint(uint64_t v) {
    if (v < 0x80) {
      Byte(static_cast<uint8_t>(v));
    } else if (v <= 0xff) {
      Tagged(0xcc, v, 1);
    } else if (v <= 0xffff) {
      Tagged(0xcd, v, 2);
    } else if (v <= 0xffffffffULL) {
      Tagged(0xce, v, 4);
    } else {
      Tagged(0xcf, v, 8);
    }
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
    buf[0] = static_cast<char>(tag);
    for (int i = 0; i < bytes; ++i) buf[1 + i] = static_cast<char>(v >> (8 * (bytes - 1 - i)));
    out_->append(buf, 1 + bytes);
  }

  std::string* out_;
};

}  // namespace aibrix::kvpublish
