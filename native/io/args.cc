#include "args.h"

#include <limits.h>

#include <cassert>
#include <cmath>
#include <cstdio>

#include "io_limits.h"

namespace pflex_io {

std::string FormatNumber(double value) {
  char text[32];
  snprintf(text, sizeof(text), "%.17g", value);
  return text;
}

double ArgInteger(const Napi::CallbackInfo& info, size_t index, const char* name, double min,
                  double max) {
  assert(min <= max && max <= kSafeIntegerMax);
  Napi::Value value = info[index];
  if (!value.IsNumber()) {
    throw Napi::TypeError::New(info.Env(), std::string(name) + " must be a number");
  }
  double number = value.As<Napi::Number>().DoubleValue();
  if (!std::isfinite(number) || std::trunc(number) != number || number < min || number > max) {
    throw Napi::RangeError::New(info.Env(), std::string(name) + " must be an integer in [" +
                                                FormatNumber(min) + ", " + FormatNumber(max) +
                                                "] (got " + FormatNumber(number) + ")");
  }
  return number;
}

int ArgFd(const Napi::CallbackInfo& info, size_t index) {
  return static_cast<int>(ArgInteger(info, index, "fd", 0, INT_MAX));
}

Bytes ArgBytes(const Napi::CallbackInfo& info, size_t index, const char* name) {
  Napi::Value value = info[index];
  if (!value.IsTypedArray() || value.As<Napi::TypedArray>().TypedArrayType() != napi_uint8_array) {
    throw Napi::TypeError::New(info.Env(), std::string(name) + " must be a Buffer or Uint8Array");
  }
  Napi::Uint8Array array = value.As<Napi::Uint8Array>();
  return Bytes{array, array.Data(), array.ElementLength()};
}

Bytes ArgIoBuffer(const Napi::CallbackInfo& info, size_t index) {
  Bytes bytes = ArgBytes(info, index, "buffer");
  if (bytes.length == 0 || bytes.length > kIoBytesMax) {
    throw Napi::RangeError::New(info.Env(), "buffer length must be in [1, " +
                                                std::to_string(kIoBytesMax) + "] bytes (got " +
                                                std::to_string(bytes.length) + ")");
  }
  assert(bytes.data != nullptr);
  return bytes;
}

ByteRange ArgByteRange(const Napi::CallbackInfo& info, size_t offset_index) {
  const double offset = ArgInteger(info, offset_index, "offsetBytes", 0, kSafeIntegerMax);
  const double length = ArgInteger(info, offset_index + 1, "lengthBytes", 1, kSafeIntegerMax);
  if (offset + length > kSafeIntegerMax) {
    throw Napi::RangeError::New(info.Env(), "offsetBytes + lengthBytes must not exceed " +
                                                FormatNumber(kSafeIntegerMax));
  }
  return ByteRange{static_cast<uint64_t>(offset), static_cast<uint64_t>(length)};
}

bool OptionalBool(Napi::Env env, Napi::Object options, const char* key) {
  Napi::Value value = options.Get(key);
  if (value.IsUndefined()) return false;
  if (!value.IsBoolean()) {
    throw Napi::TypeError::New(env, std::string("flags.") + key + " must be a boolean");
  }
  return value.As<Napi::Boolean>().Value();
}

}  // namespace pflex_io
