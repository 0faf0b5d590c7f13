// pflex_mac: the data-plane request MAC (docs/PROTOCOL.md §1.2), HMAC-SHA256 truncated to 16 bytes,
// over the 64 header bytes of every SDS request.
//
// Node's crypto.createHmac costs several microseconds per call (a context, a key import, a digest
// object), which was a fifth of an SDS's CPU on 4 KiB reads and a tenth of the SDC's. Here the key's
// inner and outer SHA-256 states (after key XOR ipad / opad) are computed once per key and kept in a
// plain byte buffer; each MAC copies them and hashes the header and the inner digest: three SHA-256
// block compressions, no allocation. The SHA-256 is OpenSSL's (the one Node is built with, through
// the headers node-gyp provides), so its assembly and SHA extensions are used where the CPU has them.
//
// Errors: wrong argument types or sizes throw TypeError / RangeError; nothing here can crash the process.

#define OPENSSL_SUPPRESS_DEPRECATED  // SHA256_Init/Update/Final: the low-level calls the state copies need
#include <napi.h>
#include <openssl/sha.h>

#include <cstdint>
#include <cstring>

namespace {

constexpr size_t kBlockBytes = SHA256_CBLOCK;          // 64
constexpr size_t kDigestBytes = SHA256_DIGEST_LENGTH;  // 32
constexpr size_t kTagBytesMax = kDigestBytes;
constexpr size_t kMessageBytesMax = 1024;  // request headers are 64 bytes; anything larger is a caller bug

struct KeyState {
  SHA256_CTX inner;
  SHA256_CTX outer;
};

Napi::Uint8Array BytesArgument(const Napi::CallbackInfo& info, size_t index, const char* name) {
  if (info.Length() <= index || !info[index].IsTypedArray() || info[index].As<Napi::TypedArray>().TypedArrayType() != napi_uint8_array) {
    throw Napi::TypeError::New(info.Env(), std::string(name) + " must be a Buffer or Uint8Array");
  }
  return info[index].As<Napi::Uint8Array>();
}

// keyState(key) -> Buffer holding the precomputed inner/outer states.
Napi::Value KeyStateOf(const Napi::CallbackInfo& info) {
  Napi::Uint8Array key = BytesArgument(info, 0, "key");
  uint8_t block[kBlockBytes] = {0};
  if (key.ByteLength() > kBlockBytes) {
    SHA256(key.Data(), key.ByteLength(), block);  // HMAC: longer keys are hashed first
  } else {
    memcpy(block, key.Data(), key.ByteLength());
  }
  Napi::Buffer<uint8_t> out = Napi::Buffer<uint8_t>::New(info.Env(), sizeof(KeyState));
  KeyState state;
  uint8_t pad[kBlockBytes];
  for (size_t i = 0; i < kBlockBytes; i += 1) pad[i] = block[i] ^ 0x36;
  SHA256_Init(&state.inner);
  SHA256_Update(&state.inner, pad, kBlockBytes);
  for (size_t i = 0; i < kBlockBytes; i += 1) pad[i] = block[i] ^ 0x5c;
  SHA256_Init(&state.outer);
  SHA256_Update(&state.outer, pad, kBlockBytes);
  memcpy(out.Data(), &state, sizeof(KeyState));
  return out;
}

void Mac(const KeyState& key, const uint8_t* message, size_t messageBytes, uint8_t digest[kDigestBytes]) {
  SHA256_CTX ctx = key.inner;
  SHA256_Update(&ctx, message, messageBytes);
  SHA256_Final(digest, &ctx);
  ctx = key.outer;
  SHA256_Update(&ctx, digest, kDigestBytes);
  SHA256_Final(digest, &ctx);
}

struct MacArguments {
  KeyState key;
  const uint8_t* message;
  size_t messageBytes;
  uint8_t* tag;
  size_t tagBytes;
};

// (keyState, buffer, messageBytes, tagOffset, tagBytes): the message is buffer[0, messageBytes),
// the tag lives at buffer[tagOffset, tagOffset + tagBytes) (a request header carries its own MAC).
MacArguments ParseMacArguments(const Napi::CallbackInfo& info) {
  Napi::Uint8Array state = BytesArgument(info, 0, "keyState");
  if (state.ByteLength() != sizeof(KeyState)) throw Napi::RangeError::New(info.Env(), "keyState is not a key state");
  Napi::Uint8Array buffer = BytesArgument(info, 1, "buffer");
  for (size_t i = 2; i <= 4; i += 1) {
    if (info.Length() <= i || !info[i].IsNumber()) throw Napi::TypeError::New(info.Env(), "messageBytes, tagOffset and tagBytes must be numbers");
  }
  const int64_t messageBytes = info[2].As<Napi::Number>().Int64Value();
  const int64_t tagOffset = info[3].As<Napi::Number>().Int64Value();
  const int64_t tagBytes = info[4].As<Napi::Number>().Int64Value();
  const int64_t length = static_cast<int64_t>(buffer.ByteLength());
  if (messageBytes < 0 || messageBytes > static_cast<int64_t>(kMessageBytesMax) || messageBytes > length) {
    throw Napi::RangeError::New(info.Env(), "messageBytes out of range");
  }
  if (tagBytes <= 0 || tagBytes > static_cast<int64_t>(kTagBytesMax) || tagOffset < 0 || tagOffset + tagBytes > length) {
    throw Napi::RangeError::New(info.Env(), "tag out of range");
  }
  MacArguments parsed;
  memcpy(&parsed.key, state.Data(), sizeof(KeyState));
  parsed.message = buffer.Data();
  parsed.messageBytes = static_cast<size_t>(messageBytes);
  parsed.tag = buffer.Data() + tagOffset;
  parsed.tagBytes = static_cast<size_t>(tagBytes);
  return parsed;
}

// sign(keyState, buffer, messageBytes, tagOffset, tagBytes): writes the tag.
Napi::Value Sign(const Napi::CallbackInfo& info) {
  MacArguments args = ParseMacArguments(info);
  uint8_t digest[kDigestBytes];
  Mac(args.key, args.message, args.messageBytes, digest);
  memcpy(args.tag, digest, args.tagBytes);
  return info.Env().Undefined();
}

// verify(keyState, buffer, messageBytes, tagOffset, tagBytes) -> boolean, in constant time.
Napi::Value Verify(const Napi::CallbackInfo& info) {
  MacArguments args = ParseMacArguments(info);
  uint8_t digest[kDigestBytes];
  Mac(args.key, args.message, args.messageBytes, digest);
  uint8_t difference = 0;
  for (size_t i = 0; i < args.tagBytes; i += 1) difference |= static_cast<uint8_t>(digest[i] ^ args.tag[i]);
  return Napi::Boolean::New(info.Env(), difference == 0);
}

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  exports.Set("keyState", Napi::Function::New(env, KeyStateOf, "keyState"));
  exports.Set("sign", Napi::Function::New(env, Sign, "sign"));
  exports.Set("verify", Napi::Function::New(env, Verify, "verify"));
  return exports;
}

}  // namespace

NODE_API_MODULE(pflex_mac, Init)
