// Arguments from JavaScript, validated before any syscall: a mistake throws Napi::TypeError or
// Napi::RangeError (no input may crash the process).
#ifndef PFLEX_IO_ARGS_H_
#define PFLEX_IO_ARGS_H_

#include <napi.h>

#include <cstddef>
#include <cstdint>
#include <string>

namespace pflex_io {

// %.17g: the shortest text that reads back as the same double.
std::string FormatNumber(double value);

// info[index] as an integer in [min, max] (max <= Number.MAX_SAFE_INTEGER).
double ArgInteger(const Napi::CallbackInfo& info, size_t index, const char* name, double min,
                  double max);

// info[index] as a descriptor in [0, INT_MAX].
int ArgFd(const Napi::CallbackInfo& info, size_t index);

struct Bytes {
  Napi::Object object;
  uint8_t* data;
  size_t length;
};

// A Buffer or Uint8Array, possibly a subarray: its data pointer already includes the byte offset.
Bytes ArgBytes(const Napi::CallbackInfo& info, size_t index, const char* name);

// ArgBytes named "buffer", 1 .. kIoBytesMax bytes long.
Bytes ArgIoBuffer(const Napi::CallbackInfo& info, size_t index);

struct ByteRange {
  uint64_t offset;
  uint64_t length;
};

// offsetBytes (>= 0) at info[offset_index] and lengthBytes (>= 1) right after it; the range's end
// must be a safe integer too.
ByteRange ArgByteRange(const Napi::CallbackInfo& info, size_t offset_index);

// options[key]: false when undefined, else it must be a boolean.
bool OptionalBool(Napi::Env env, Napi::Object options, const char* key);

inline bool IsNullish(const Napi::Value& value) { return value.IsUndefined() || value.IsNull(); }

}  // namespace pflex_io

#endif  // PFLEX_IO_ARGS_H_
