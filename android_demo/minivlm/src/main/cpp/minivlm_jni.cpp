// JNI bridge between ai.minivlm.Native (Kotlin) and the MiniVLM native core's C ABI
// (sdk/native/include/minivlm/minivlm.h).
//
// Rules this file keeps so that no Kotlin input can crash the process:
// - every array length is checked against the size the config implies before a pointer reaches the core;
// - arrays are copied in and out with Get/Set<Type>ArrayRegion (no pinned memory while Kotlin code runs in
//   the caption callback);
// - every non-OK status becomes ai.minivlm.MiniVlmException(status, mvlm_last_error()), and a Kotlin
//   exception thrown inside the caption callback propagates unchanged;
// - text crosses as UTF-8 byte arrays (JNI's modified UTF-8 cannot carry every string, and a user's bad
//   bytes must reach the core's own UTF-8 check).
// Built for Android by minivlm/src/main/cpp/CMakeLists.txt, and for the JVM golden test by
// tests/apps/test_android_jvm.py against the JDK's jni.h.

#include <jni.h>

#include <cstdint>
#include <cstring>
#include <limits>
#include <new>
#include <string>
#include <vector>

#include "minivlm/minivlm.h"

namespace {

jclass g_exception_class = nullptr;   // ai/minivlm/MiniVlmException
jmethodID g_exception_ctor = nullptr; // (ILjava/lang/String;)V
jclass g_string_class = nullptr;
jmethodID g_string_from_bytes = nullptr; // String(byte[], String charsetName)
jclass g_byte_buffer_class = nullptr;
jclass g_callback_class = nullptr;    // ai/minivlm/NativeStepCallback
jmethodID g_callback_on_step = nullptr;

constexpr mvlm_status kBridgeInvalid = MVLM_INVALID_ARGUMENT;

jstring new_utf8_string(JNIEnv* env, const char* data, size_t length) {
  jbyteArray bytes = env->NewByteArray(static_cast<jsize>(length));
  if (bytes == nullptr) return nullptr;
  env->SetByteArrayRegion(bytes, 0, static_cast<jsize>(length), reinterpret_cast<const jbyte*>(data));
  jstring charset = env->NewStringUTF("UTF-8");
  auto* out = static_cast<jstring>(env->NewObject(g_string_class, g_string_from_bytes, bytes, charset));
  env->DeleteLocalRef(bytes);
  env->DeleteLocalRef(charset);
  return out;
}

void throw_error(JNIEnv* env, mvlm_status status, const std::string& message) {
  if (env->ExceptionCheck()) return; // keep the first (e.g. a Kotlin exception from the callback)
  jstring text = new_utf8_string(env, message.data(), message.size());
  if (text == nullptr) return; // OutOfMemoryError pending
  auto* ex = static_cast<jthrowable>(env->NewObject(g_exception_class, g_exception_ctor, static_cast<jint>(status), text));
  if (ex != nullptr) env->Throw(ex);
}

// Throws for a non-OK status; returns true when the caller should go on.
bool ok(JNIEnv* env, mvlm_status status) {
  if (status == MVLM_OK) return true;
  throw_error(env, status, std::string(mvlm_status_name(status)) + ": " + mvlm_last_error());
  return false;
}

bool fail(JNIEnv* env, const std::string& message) {
  throw_error(env, kBridgeInvalid, message);
  return false;
}

template <typename H>
H* handle(JNIEnv* env, jlong value, const char* what) {
  if (value == 0) {
    fail(env, std::string(what) + " handle is 0 (closed or never opened)");
    return nullptr;
  }
  return reinterpret_cast<H*>(static_cast<intptr_t>(value));
}

jlong to_handle(const void* p) { return static_cast<jlong>(reinterpret_cast<intptr_t>(p)); }

// --- array copies --------------------------------------------------------------------------------------

bool read(JNIEnv* env, jfloatArray a, std::vector<float>& out, const char* what) {
  if (a == nullptr) return fail(env, std::string(what) + " is null");
  out.resize(static_cast<size_t>(env->GetArrayLength(a)));
  env->GetFloatArrayRegion(a, 0, static_cast<jsize>(out.size()), out.data());
  return !env->ExceptionCheck();
}
bool read(JNIEnv* env, jlongArray a, std::vector<int64_t>& out, const char* what) {
  if (a == nullptr) return fail(env, std::string(what) + " is null");
  out.resize(static_cast<size_t>(env->GetArrayLength(a)));
  env->GetLongArrayRegion(a, 0, static_cast<jsize>(out.size()), reinterpret_cast<jlong*>(out.data()));
  return !env->ExceptionCheck();
}
bool read(JNIEnv* env, jdoubleArray a, std::vector<double>& out, const char* what) {
  if (a == nullptr) return fail(env, std::string(what) + " is null");
  out.resize(static_cast<size_t>(env->GetArrayLength(a)));
  env->GetDoubleArrayRegion(a, 0, static_cast<jsize>(out.size()), out.data());
  return !env->ExceptionCheck();
}
bool read(JNIEnv* env, jbyteArray a, std::vector<uint8_t>& out, const char* what) {
  if (a == nullptr) return fail(env, std::string(what) + " is null");
  out.resize(static_cast<size_t>(env->GetArrayLength(a)));
  env->GetByteArrayRegion(a, 0, static_cast<jsize>(out.size()), reinterpret_cast<jbyte*>(out.data()));
  return !env->ExceptionCheck();
}

void write(JNIEnv* env, jfloatArray a, const std::vector<float>& v) {
  env->SetFloatArrayRegion(a, 0, static_cast<jsize>(v.size()), v.data());
}
void write(JNIEnv* env, jlongArray a, const std::vector<int64_t>& v) {
  env->SetLongArrayRegion(a, 0, static_cast<jsize>(v.size()), reinterpret_cast<const jlong*>(v.data()));
}
void write(JNIEnv* env, jbyteArray a, const std::vector<uint8_t>& v) {
  env->SetByteArrayRegion(a, 0, static_cast<jsize>(v.size()), reinterpret_cast<const jbyte*>(v.data()));
}

jsize length(JNIEnv* env, jarray a) { return a == nullptr ? -1 : env->GetArrayLength(a); }

// An output array must have exactly `need` elements (a mismatch is a caller bug worth naming).
bool check_out(JNIEnv* env, jarray a, size_t need, const char* what) {
  if (a == nullptr) return fail(env, std::string(what) + " is null");
  if (static_cast<size_t>(env->GetArrayLength(a)) != need) {
    return fail(env, std::string(what) + " has " + std::to_string(env->GetArrayLength(a)) + " elements, expected " +
                         std::to_string(need));
  }
  return true;
}

bool check_size(JNIEnv* env, size_t have, size_t need, const char* what) {
  if (have == need) return true;
  return fail(env, std::string(what) + " has " + std::to_string(have) + " elements, expected " + std::to_string(need));
}

jlongArray new_long_array(JNIEnv* env, const int64_t* data, size_t n) {
  jlongArray out = env->NewLongArray(static_cast<jsize>(n));
  if (out != nullptr) env->SetLongArrayRegion(out, 0, static_cast<jsize>(n), reinterpret_cast<const jlong*>(data));
  return out;
}

jbyteArray new_byte_array(JNIEnv* env, const char* data, size_t n) {
  jbyteArray out = env->NewByteArray(static_cast<jsize>(n));
  if (out != nullptr) env->SetByteArrayRegion(out, 0, static_cast<jsize>(n), reinterpret_cast<const jbyte*>(data));
  return out;
}

// Strings whose size is only known after the call: retry once with the reported length.
template <typename F>
bool fetch_string(JNIEnv* env, F call, std::string& out) {
  std::vector<char> buffer(256);
  size_t len = 0;
  mvlm_status s = call(buffer.data(), buffer.size(), &len);
  if (s == MVLM_BUFFER_TOO_SMALL) {
    buffer.assign(len + 1, '\0');
    s = call(buffer.data(), buffer.size(), &len);
  }
  if (!ok(env, s)) return false;
  out.assign(buffer.data(), len);
  return true;
}

size_t bytes_per_pixel(jint format) {
  switch (format) {
    case MVLM_PIXELS_RGB8:
    case MVLM_PIXELS_BGR8: return 3;
    case MVLM_PIXELS_RGBA8:
    case MVLM_PIXELS_BGRA8: return 4;
    default: return 0;
  }
}

// --- caption callback ----------------------------------------------------------------------------------

struct StepContext {
  JNIEnv* env;
  jobject callback;
  const mvlm_config* config;
};

int32_t run_step(void* user_data, const mvlm_step_request* r) {
  auto* ctx = static_cast<StepContext*>(user_data);
  JNIEnv* env = ctx->env;
  const mvlm_config& c = *ctx->config;
  const size_t n = static_cast<size_t>(r->num_beams), t = static_cast<size_t>(r->step);
  const size_t layers = c.num_layers, heads = c.num_heads, d = c.head_dim, C = c.max_text_len;
  const size_t P = static_cast<size_t>(c.max_tags_len) + c.max_regions, V = c.vocab_size;
  struct View { const void* data; size_t bytes; };
  const View views[12] = {
      {r->history, n * t * 8},
      {r->token_ids, n * 2 * 8},
      {r->position_ids, n * 2 * 8},
      {r->prefix_keys, layers * n * heads * P * d * 4},
      {r->prefix_values, layers * n * heads * P * d * 4},
      {r->prefix_mask, n * P * 4},
      {r->cache_keys, layers * n * heads * C * d * 4},
      {r->cache_values, layers * n * heads * C * d * 4},
      {r->cache_mask, n * C * 4},
      {r->mask_logits, n * V * 4},
      {r->new_keys, layers * n * heads * d * 4},
      {r->new_values, layers * n * heads * d * 4},
  };
  if (env->PushLocalFrame(16) != 0) return 1;
  jobjectArray buffers = env->NewObjectArray(12, g_byte_buffer_class, nullptr);
  for (int i = 0; buffers != nullptr && i < 12; ++i) {
    // The core's arrays, viewed in place: Kotlin wraps the nine inputs read-only and fills the three outputs.
    jobject b = env->NewDirectByteBuffer(const_cast<void*>(views[i].data), static_cast<jlong>(views[i].bytes));
    if (b == nullptr) break;
    env->SetObjectArrayElement(buffers, i, b);
  }
  if (!env->ExceptionCheck() && buffers != nullptr) {
    env->CallVoidMethod(ctx->callback, g_callback_on_step, static_cast<jint>(r->step), static_cast<jint>(r->num_beams),
                        buffers);
  }
  const bool failed = env->ExceptionCheck() || buffers == nullptr;
  env->PopLocalFrame(nullptr); // keeps a pending exception
  return failed ? 1 : 0;
}

}  // namespace

extern "C" {

JNIEXPORT jint JNICALL JNI_OnLoad(JavaVM* vm, void*) {
  JNIEnv* env = nullptr;
  if (vm->GetEnv(reinterpret_cast<void**>(&env), JNI_VERSION_1_6) != JNI_OK) return JNI_ERR;
  auto global = [env](const char* name) -> jclass {
    jclass local = env->FindClass(name);
    if (local == nullptr) return nullptr;
    auto* g = static_cast<jclass>(env->NewGlobalRef(local));
    env->DeleteLocalRef(local);
    return g;
  };
  g_exception_class = global("ai/minivlm/MiniVlmException");
  g_string_class = global("java/lang/String");
  g_byte_buffer_class = global("java/nio/ByteBuffer");
  g_callback_class = global("ai/minivlm/NativeStepCallback");
  if (!g_exception_class || !g_string_class || !g_byte_buffer_class || !g_callback_class) return JNI_ERR;
  g_exception_ctor = env->GetMethodID(g_exception_class, "<init>", "(ILjava/lang/String;)V");
  g_string_from_bytes = env->GetMethodID(g_string_class, "<init>", "([BLjava/lang/String;)V");
  g_callback_on_step = env->GetMethodID(g_callback_class, "onStep", "(II[Ljava/nio/ByteBuffer;)V");
  if (!g_exception_ctor || !g_string_from_bytes || !g_callback_on_step) return JNI_ERR;
  return JNI_VERSION_1_6;
}

#define MVLM_JNI(ret, name) JNIEXPORT ret JNICALL Java_ai_minivlm_Native_##name

MVLM_JNI(jint, apiVersion)(JNIEnv*, jclass) { return mvlm_api_version(); }

MVLM_JNI(jstring, statusName)(JNIEnv* env, jclass, jint status) { return env->NewStringUTF(mvlm_status_name(status)); }

// --- manifest and config ---------------------------------------------------------------------------------

MVLM_JNI(jlong, manifestLoad)(JNIEnv* env, jclass, jstring path) {
  if (path == nullptr) return fail(env, "manifest path is null"), 0;
  const char* p = env->GetStringUTFChars(path, nullptr);
  if (p == nullptr) return 0;
  mvlm_manifest* m = nullptr;
  mvlm_status s = mvlm_manifest_load(p, &m);
  env->ReleaseStringUTFChars(path, p);
  return ok(env, s) ? to_handle(m) : 0;
}

MVLM_JNI(jlong, manifestParse)(JNIEnv* env, jclass, jbyteArray text, jstring folder) {
  std::vector<uint8_t> bytes;
  if (!read(env, text, bytes, "manifest text")) return 0;
  const char* f = folder == nullptr ? nullptr : env->GetStringUTFChars(folder, nullptr);
  static const char empty = '\0';
  mvlm_manifest* m = nullptr;
  mvlm_status s = mvlm_manifest_parse(bytes.empty() ? &empty : reinterpret_cast<const char*>(bytes.data()), bytes.size(),
                                      f, &m);
  if (f != nullptr) env->ReleaseStringUTFChars(folder, f);
  return ok(env, s) ? to_handle(m) : 0;
}

MVLM_JNI(void, manifestFree)(JNIEnv*, jclass, jlong m) {
  mvlm_manifest_free(reinterpret_cast<mvlm_manifest*>(static_cast<intptr_t>(m)));
}

MVLM_JNI(jstring, manifestFile)(JNIEnv* env, jclass, jlong h, jstring which) {
  auto* m = handle<mvlm_manifest>(env, h, "manifest");
  if (m == nullptr) return nullptr;
  if (which == nullptr) return fail(env, "file name is null"), nullptr;
  const char* w = env->GetStringUTFChars(which, nullptr);
  if (w == nullptr) return nullptr;
  std::string path;
  bool good = fetch_string(env, [&](char* b, size_t cap, size_t* len) { return mvlm_manifest_file(m, w, b, cap, len); }, path);
  env->ReleaseStringUTFChars(which, w);
  return good ? new_utf8_string(env, path.data(), path.size()) : nullptr;
}

MVLM_JNI(jobjectArray, manifestClassNames)(JNIEnv* env, jclass, jlong h) {
  auto* m = handle<mvlm_manifest>(env, h, "manifest");
  if (m == nullptr) return nullptr;
  int32_t count = 0;
  if (!ok(env, mvlm_manifest_num_classes(m, &count))) return nullptr;
  jobjectArray out = env->NewObjectArray(count, g_string_class, nullptr);
  for (int32_t i = 0; out != nullptr && i < count; ++i) {
    std::string name;
    if (!fetch_string(env, [&](char* b, size_t cap, size_t* len) { return mvlm_manifest_class_name(m, i, b, cap, len); }, name)) {
      return nullptr;
    }
    jstring s = new_utf8_string(env, name.data(), name.size());
    if (s == nullptr) return nullptr;
    env->SetObjectArrayElement(out, i, s);
    env->DeleteLocalRef(s);
  }
  return out;
}

MVLM_JNI(jlong, configFromManifest)(JNIEnv* env, jclass, jlong h) {
  auto* m = handle<mvlm_manifest>(env, h, "manifest");
  if (m == nullptr) return 0;
  auto* c = new (std::nothrow) mvlm_config{};
  if (c == nullptr) return ok(env, MVLM_OUT_OF_MEMORY), 0;
  if (!ok(env, mvlm_manifest_config(m, c)) || !ok(env, mvlm_config_check(c))) {
    delete c;
    return 0;
  }
  return to_handle(c);
}

MVLM_JNI(jlong, configWithImageSize)(JNIEnv* env, jclass, jlong h, jint image_size) {
  auto* c = handle<mvlm_config>(env, h, "config");
  if (c == nullptr) return 0;
  if (image_size < 1) return fail(env, "image size " + std::to_string(image_size) + " must be >= 1"), 0;
  auto* copy = new (std::nothrow) mvlm_config(*c);
  if (copy == nullptr) return ok(env, MVLM_OUT_OF_MEMORY), 0;
  // Not re-checked: a preprocessing size need not suit the anchors (strides) of the detector's own size.
  copy->image_size = image_size;
  return to_handle(copy);
}

MVLM_JNI(void, configFree)(JNIEnv*, jclass, jlong c) { delete reinterpret_cast<mvlm_config*>(static_cast<intptr_t>(c)); }

MVLM_JNI(jintArray, configInts)(JNIEnv* env, jclass, jlong h) {
  auto* c = handle<mvlm_config>(env, h, "config");
  if (c == nullptr) return nullptr;
  // Same order as the CFG_* constants of Native.kt.
  const jint values[] = {c->image_size,    c->num_levels,      c->num_ratios,        c->post_nms_top_n,
                         c->num_classes,   c->num_attributes,  c->representation_size, c->max_regions,
                         c->vocab_size,    c->num_layers,      c->num_heads,         c->head_dim,
                         c->max_text_len,  c->max_text_tags_len, c->max_tags_len,    c->region_dim,
                         c->max_caption_tokens, c->region_order};
  const jsize n = static_cast<jsize>(sizeof(values) / sizeof(values[0]));
  jintArray out = env->NewIntArray(n);
  if (out != nullptr) env->SetIntArrayRegion(out, 0, n, values);
  return out;
}

// --- tokenizer -------------------------------------------------------------------------------------------

MVLM_JNI(jlong, tokenizerLoad)(JNIEnv* env, jclass, jstring path) {
  if (path == nullptr) return fail(env, "vocab path is null"), 0;
  const char* p = env->GetStringUTFChars(path, nullptr);
  if (p == nullptr) return 0;
  mvlm_tokenizer* t = nullptr;
  mvlm_status s = mvlm_tokenizer_load(p, &t);
  env->ReleaseStringUTFChars(path, p);
  return ok(env, s) ? to_handle(t) : 0;
}

MVLM_JNI(jlong, tokenizerParse)(JNIEnv* env, jclass, jbyteArray text) {
  std::vector<uint8_t> bytes;
  if (!read(env, text, bytes, "vocab text")) return 0;
  static const char empty = '\0';
  mvlm_tokenizer* t = nullptr;
  mvlm_status s = mvlm_tokenizer_parse(bytes.empty() ? &empty : reinterpret_cast<const char*>(bytes.data()), bytes.size(), &t);
  return ok(env, s) ? to_handle(t) : 0;
}

MVLM_JNI(void, tokenizerFree)(JNIEnv*, jclass, jlong t) {
  mvlm_tokenizer_free(reinterpret_cast<mvlm_tokenizer*>(static_cast<intptr_t>(t)));
}

MVLM_JNI(jint, tokenizerVocabSize)(JNIEnv* env, jclass, jlong h) {
  auto* t = handle<mvlm_tokenizer>(env, h, "tokenizer");
  int32_t size = 0;
  return (t != nullptr && ok(env, mvlm_tokenizer_vocab_size(t, &size))) ? size : 0;
}

MVLM_JNI(jlongArray, tokenizerSpecialIds)(JNIEnv* env, jclass, jlong h) {
  auto* t = handle<mvlm_tokenizer>(env, h, "tokenizer");
  int64_t ids[5] = {0, 0, 0, 0, 0};
  if (t == nullptr || !ok(env, mvlm_tokenizer_special_ids(t, ids))) return nullptr;
  return new_long_array(env, ids, 5);
}

MVLM_JNI(jlongArray, tokenize)(JNIEnv* env, jclass, jlong h, jbyteArray utf8) {
  auto* t = handle<mvlm_tokenizer>(env, h, "tokenizer");
  std::vector<uint8_t> text;
  if (t == nullptr || !read(env, utf8, text, "text")) return nullptr;
  static const char empty = '\0';
  const char* p = text.empty() ? &empty : reinterpret_cast<const char*>(text.data());
  std::vector<int64_t> ids(text.size() + 1);
  size_t count = 0;
  mvlm_status s = mvlm_tokenize(t, p, text.size(), ids.data(), ids.size(), &count);
  if (s == MVLM_BUFFER_TOO_SMALL) {
    ids.resize(count);
    s = mvlm_tokenize(t, p, text.size(), ids.data(), ids.size(), &count);
  }
  if (!ok(env, s)) return nullptr;
  return new_long_array(env, ids.data(), count);
}

MVLM_JNI(jbyteArray, detokenize)(JNIEnv* env, jclass, jlong h, jlongArray ids) {
  auto* t = handle<mvlm_tokenizer>(env, h, "tokenizer");
  std::vector<int64_t> v;
  if (t == nullptr || !read(env, ids, v, "ids")) return nullptr;
  std::string text;
  if (!fetch_string(env, [&](char* b, size_t cap, size_t* len) { return mvlm_detokenize(t, v.data(), v.size(), b, cap, len); }, text)) {
    return nullptr;
  }
  return new_byte_array(env, text.data(), text.size());
}

MVLM_JNI(jbyteArray, tokenText)(JNIEnv* env, jclass, jlong h, jlong id) {
  auto* t = handle<mvlm_tokenizer>(env, h, "tokenizer");
  std::string text;
  if (t == nullptr || !fetch_string(env, [&](char* b, size_t cap, size_t* len) { return mvlm_token_text(t, id, b, cap, len); }, text)) {
    return nullptr;
  }
  return new_byte_array(env, text.data(), text.size());
}

// --- image and boxes -------------------------------------------------------------------------------------

MVLM_JNI(jdoubleArray, preprocess)(JNIEnv* env, jclass, jlong h, jbyteArray pixels, jint width, jint height,
                                   jint row_bytes, jint format, jfloatArray out) {
  auto* c = handle<mvlm_config>(env, h, "config");
  if (c == nullptr) return nullptr;
  const size_t bpp = bytes_per_pixel(format);
  if (bpp == 0) return fail(env, "pixel format " + std::to_string(format) + " is not one of RGB8, RGBA8, BGRA8, BGR8"), nullptr;
  if (width < 0 || height < 0 || row_bytes < 0) {
    return fail(env, "image is " + std::to_string(width) + "x" + std::to_string(height) + " with " +
                         std::to_string(row_bytes) + " bytes per row"), nullptr;
  }
  const int64_t need = static_cast<int64_t>(row_bytes) * height;
  if (static_cast<int64_t>(length(env, pixels)) < need) {
    return fail(env, "pixel buffer has " + std::to_string(length(env, pixels)) + " bytes, a " + std::to_string(width) + "x" +
                         std::to_string(height) + " image with " + std::to_string(row_bytes) + " bytes per row needs " +
                         std::to_string(need)), nullptr;
  }
  const size_t s = static_cast<size_t>(c->image_size);
  if (!check_out(env, out, 3 * s * s, "preprocess output")) return nullptr;
  std::vector<uint8_t> px;
  if (!read(env, pixels, px, "pixels")) return nullptr;
  static const uint8_t empty = 0;
  std::vector<float> result(3 * s * s);
  mvlm_letterbox box{};
  if (!ok(env, mvlm_preprocess(c, px.empty() ? &empty : px.data(), width, height, static_cast<size_t>(row_bytes), format,
                               result.data(), result.size(), &box))) {
    return nullptr;
  }
  write(env, out, result);
  const jdouble lb[5] = {static_cast<double>(box.height), static_cast<double>(box.width), box.scale,
                         static_cast<double>(box.resized_height), static_cast<double>(box.resized_width)};
  jdoubleArray r = env->NewDoubleArray(5);
  if (r != nullptr) env->SetDoubleArrayRegion(r, 0, 5, lb);
  return r;
}

MVLM_JNI(jlongArray, anchorLevelSizes)(JNIEnv* env, jclass, jlong h) {
  auto* c = handle<mvlm_config>(env, h, "config");
  if (c == nullptr) return nullptr;
  size_t count = 0;
  int64_t sizes[MVLM_MAX_LEVELS] = {};
  if (!ok(env, mvlm_anchor_count(c, &count, sizes))) return nullptr;
  return new_long_array(env, sizes, static_cast<size_t>(c->num_levels));
}

MVLM_JNI(jfloatArray, makeAnchors)(JNIEnv* env, jclass, jlong h) {
  auto* c = handle<mvlm_config>(env, h, "config");
  if (c == nullptr) return nullptr;
  size_t count = 0;
  if (!ok(env, mvlm_anchor_count(c, &count, nullptr))) return nullptr;
  std::vector<float> anchors(count * 4);
  if (!ok(env, mvlm_make_anchors(c, anchors.data(), count))) return nullptr;
  jfloatArray out = env->NewFloatArray(static_cast<jsize>(anchors.size()));
  if (out != nullptr) write(env, out, anchors);
  return out;
}

MVLM_JNI(jfloatArray, decodeBoxes)(JNIEnv* env, jclass, jfloatArray deltas, jfloatArray references, jdoubleArray weights) {
  std::vector<float> d, r;
  std::vector<double> w;
  if (!read(env, deltas, d, "deltas") || !read(env, references, r, "references") || !read(env, weights, w, "weights")) return nullptr;
  if (d.size() % 4 != 0) return fail(env, "deltas has " + std::to_string(d.size()) + " values, not a multiple of 4"), nullptr;
  if (!check_size(env, r.size(), d.size(), "references") || !check_size(env, w.size(), 4, "weights")) return nullptr;
  std::vector<float> boxes(d.size());
  static const float none = 0.0f;
  const size_t n = d.size() / 4;
  if (!ok(env, mvlm_decode_boxes(n ? d.data() : &none, n ? r.data() : &none, n, w.data(), n ? boxes.data() : const_cast<float*>(&none)))) {
    return nullptr;
  }
  jfloatArray out = env->NewFloatArray(static_cast<jsize>(boxes.size()));
  if (out != nullptr) write(env, out, boxes);
  return out;
}

MVLM_JNI(jlongArray, nms)(JNIEnv* env, jclass, jfloatArray boxes, jfloatArray scores, jdouble threshold) {
  std::vector<float> b, s;
  if (!read(env, boxes, b, "boxes") || !read(env, scores, s, "scores")) return nullptr;
  if (!check_size(env, b.size(), s.size() * 4, "boxes")) return nullptr;
  std::vector<int64_t> keep(s.size() + 1);
  size_t kept = 0;
  static const float none = 0.0f;
  const bool empty = s.empty();
  if (!ok(env, mvlm_nms(empty ? &none : b.data(), empty ? &none : s.data(), s.size(), threshold, keep.data(), &kept))) return nullptr;
  return new_long_array(env, keep.data(), kept);
}

MVLM_JNI(void, selectProposals)(JNIEnv* env, jclass, jlong h, jfloatArray objectness, jfloatArray deltas,
                                jfloatArray anchors, jfloatArray proposals, jbyteArray valid) {
  auto* c = handle<mvlm_config>(env, h, "config");
  if (c == nullptr) return;
  size_t n = 0;
  if (!ok(env, mvlm_anchor_count(c, &n, nullptr))) return;
  std::vector<float> o, d, a;
  if (!read(env, objectness, o, "objectness") || !read(env, deltas, d, "deltas") || !read(env, anchors, a, "anchors")) return;
  if (!check_size(env, o.size(), n, "objectness") || !check_size(env, d.size(), 4 * n, "deltas") ||
      !check_size(env, a.size(), 4 * n, "anchors")) {
    return;
  }
  const size_t k = static_cast<size_t>(c->post_nms_top_n);
  if (!check_out(env, proposals, 4 * k, "proposals") || !check_out(env, valid, k, "valid")) return;
  std::vector<float> p(4 * k);
  std::vector<uint8_t> v(k);
  if (!ok(env, mvlm_select_proposals(c, o.data(), d.data(), a.data(), n, p.data(), v.data()))) return;
  write(env, proposals, p);
  write(env, valid, v);
}

MVLM_JNI(jint, selectRegions)(JNIEnv* env, jclass, jlong h, jfloatArray proposals, jbyteArray valid,
                              jfloatArray class_logits, jfloatArray box_deltas, jfloatArray boxes, jlongArray labels,
                              jfloatArray scores, jlongArray proposal_indices) {
  auto* c = handle<mvlm_config>(env, h, "config");
  if (c == nullptr) return 0;
  std::vector<float> p, cl, bd;
  std::vector<uint8_t> v;
  if (!read(env, proposals, p, "proposals") || !read(env, valid, v, "valid") ||
      !read(env, class_logits, cl, "class_logits") || !read(env, box_deltas, bd, "box_deltas")) {
    return 0;
  }
  const size_t r = v.size(), classes = static_cast<size_t>(c->num_classes), k = static_cast<size_t>(c->max_regions);
  if (r == 0) return fail(env, "there are no proposals (valid is empty)"), 0;
  if (!check_size(env, p.size(), 4 * r, "proposals") || !check_size(env, cl.size(), r * classes, "class_logits") ||
      !check_size(env, bd.size(), r * classes * 4, "box_deltas")) {
    return 0;
  }
  if (!check_out(env, boxes, 4 * k, "boxes") || !check_out(env, labels, k, "labels") || !check_out(env, scores, k, "scores") ||
      !check_out(env, proposal_indices, k, "proposal_indices")) {
    return 0;
  }
  std::vector<float> ob(4 * k), os(k);
  std::vector<int64_t> ol(k), oi(k);
  mvlm_regions regions{0, ob.data(), ol.data(), os.data(), oi.data()};
  if (!ok(env, mvlm_select_regions(c, p.data(), v.data(), r, cl.data(), bd.data(), &regions))) return 0;
  write(env, boxes, ob);
  write(env, labels, ol);
  write(env, scores, os);
  write(env, proposal_indices, oi);
  return regions.count;
}

MVLM_JNI(void, regionTokens)(JNIEnv* env, jclass, jlong h, jint count, jfloatArray boxes, jlongArray labels,
                             jfloatArray scores, jlongArray proposal_indices, jfloatArray features,
                             jdoubleArray letterbox, jfloatArray tokens, jfloatArray image_boxes) {
  auto* c = handle<mvlm_config>(env, h, "config");
  if (c == nullptr) return;
  const size_t k = static_cast<size_t>(c->max_regions), dim = static_cast<size_t>(c->representation_size);
  if (count < 0 || static_cast<size_t>(count) > k) {
    fail(env, "region count " + std::to_string(count) + " is outside 0.." + std::to_string(k));
    return;
  }
  std::vector<float> b, s, f;
  std::vector<int64_t> l, pi;
  std::vector<double> lb;
  if (!read(env, boxes, b, "boxes") || !read(env, labels, l, "labels") || !read(env, scores, s, "scores") ||
      !read(env, proposal_indices, pi, "proposal_indices") || !read(env, features, f, "features") ||
      !read(env, letterbox, lb, "letterbox")) {
    return;
  }
  if (!check_size(env, b.size(), 4 * k, "boxes") || !check_size(env, l.size(), k, "labels") ||
      !check_size(env, s.size(), k, "scores") || !check_size(env, pi.size(), k, "proposal_indices") ||
      !check_size(env, lb.size(), 5, "letterbox")) {
    return;
  }
  if (dim == 0 || f.empty() || f.size() % dim != 0) {
    fail(env, "features has " + std::to_string(f.size()) + " values, not a positive multiple of " + std::to_string(dim));
    return;
  }
  const size_t n = static_cast<size_t>(count);
  if (!check_out(env, tokens, n * static_cast<size_t>(c->region_dim), "tokens") || !check_out(env, image_boxes, 4 * n, "image_boxes")) {
    return;
  }
  auto as_int = [](double v) {
    return (v >= std::numeric_limits<int32_t>::min() && v <= std::numeric_limits<int32_t>::max()) ? static_cast<int32_t>(v) : -1;
  };
  const mvlm_letterbox box{as_int(lb[0]), as_int(lb[1]), lb[2], as_int(lb[3]), as_int(lb[4])};
  mvlm_regions regions{count, b.data(), l.data(), s.data(), pi.data()};
  std::vector<float> out_tokens(n * static_cast<size_t>(c->region_dim) + 1), out_boxes(4 * n + 1);
  if (!ok(env, mvlm_region_tokens(c, &regions, f.data(), f.size() / dim, &box, out_tokens.data(), out_boxes.data()))) return;
  out_tokens.pop_back();
  out_boxes.pop_back();
  write(env, tokens, out_tokens);
  write(env, image_boxes, out_boxes);
}

// --- fusion ----------------------------------------------------------------------------------------------

MVLM_JNI(void, packInputs)(JNIEnv* env, jclass, jlong th, jlong ch, jbyteArray text, jobjectArray tags,
                           jfloatArray region_tokens, jint num_regions, jboolean require_text, jlongArray input_ids,
                           jlongArray token_type_ids, jfloatArray token_mask, jfloatArray regions,
                           jfloatArray region_mask) {
  auto* t = handle<mvlm_tokenizer>(env, th, "tokenizer");
  auto* c = t == nullptr ? nullptr : handle<mvlm_config>(env, ch, "config");
  if (c == nullptr) return;
  std::vector<uint8_t> text_bytes;
  if (text != nullptr && !read(env, text, text_bytes, "text")) return;
  if (tags == nullptr) {
    fail(env, "tags is null");
    return;
  }
  const jsize num_tags = env->GetArrayLength(tags);
  std::vector<std::string> tag_text(static_cast<size_t>(num_tags));
  for (jsize i = 0; i < num_tags; ++i) {
    auto* tag = static_cast<jbyteArray>(env->GetObjectArrayElement(tags, i));
    std::vector<uint8_t> bytes;
    if (!read(env, tag, bytes, "tag")) return;
    env->DeleteLocalRef(tag);
    if (std::memchr(bytes.data(), 0, bytes.size()) != nullptr) {
      fail(env, "tag " + std::to_string(i) + " contains a NUL byte");
      return;
    }
    tag_text[static_cast<size_t>(i)].assign(bytes.begin(), bytes.end());
  }
  std::vector<const char*> tag_ptrs;
  for (const auto& s : tag_text) tag_ptrs.push_back(s.c_str());
  std::vector<float> tokens;
  if (!read(env, region_tokens, tokens, "region tokens")) return;
  const size_t dim = static_cast<size_t>(c->region_dim);
  if (num_regions < 0 || tokens.size() != static_cast<size_t>(num_regions) * dim) {
    fail(env, "region tokens has " + std::to_string(tokens.size()) + " values, expected " + std::to_string(num_regions) + " x " +
                  std::to_string(dim));
    return;
  }
  const size_t tt = static_cast<size_t>(c->max_text_tags_len), rr = static_cast<size_t>(c->max_regions);
  if (!check_out(env, input_ids, tt, "input_ids") || !check_out(env, token_type_ids, tt, "token_type_ids") ||
      !check_out(env, token_mask, tt, "token_mask") || !check_out(env, regions, rr * dim, "regions") ||
      !check_out(env, region_mask, rr, "region_mask")) {
    return;
  }
  std::vector<int64_t> ids(tt), types(tt);
  std::vector<float> mask(tt), reg(rr * dim), reg_mask(rr);
  mvlm_fusion_inputs out{ids.data(), types.data(), mask.data(), reg.data(), reg_mask.data()};
  static const float none = 0.0f;
  if (!ok(env, mvlm_pack_inputs(t, c, text == nullptr ? nullptr : reinterpret_cast<const char*>(text_bytes.data()),
                                text_bytes.size(), tag_ptrs.empty() ? nullptr : tag_ptrs.data(), tag_ptrs.size(),
                                tokens.empty() ? &none : tokens.data(), static_cast<size_t>(num_regions),
                                require_text ? 1 : 0, &out))) {
    return;
  }
  write(env, input_ids, ids);
  write(env, token_type_ids, types);
  write(env, token_mask, mask);
  write(env, regions, reg);
  write(env, region_mask, reg_mask);
}

MVLM_JNI(jlongArray, captionDecode)(JNIEnv* env, jclass, jlong h, jlongArray input_ids, jlongArray token_type_ids,
                                    jfloatArray token_mask, jfloatArray regions, jfloatArray region_mask,
                                    jfloatArray prefix_keys, jfloatArray prefix_values, jint num_beams,
                                    jdouble length_penalty, jint max_caption_tokens, jobject step,
                                    jdoubleArray result) {
  auto* c = handle<mvlm_config>(env, h, "config");
  if (c == nullptr) return nullptr;
  if (step == nullptr) return fail(env, "step callback is null"), nullptr;
  if (!check_out(env, result, 2, "result")) return nullptr;
  std::vector<int64_t> ids, types;
  std::vector<float> mask, reg, reg_mask, keys, values;
  if (!read(env, input_ids, ids, "input_ids") || !read(env, token_type_ids, types, "token_type_ids") ||
      !read(env, token_mask, mask, "token_mask") || !read(env, regions, reg, "regions") ||
      !read(env, region_mask, reg_mask, "region_mask") || !read(env, prefix_keys, keys, "prefix_keys") ||
      !read(env, prefix_values, values, "prefix_values")) {
    return nullptr;
  }
  const size_t tt = c->max_text_tags_len, rr = c->max_regions, dim = c->region_dim;
  const size_t prefix = static_cast<size_t>(c->num_layers) * c->num_heads * (static_cast<size_t>(c->max_tags_len) + rr) * c->head_dim;
  if (!check_size(env, ids.size(), tt, "input_ids") || !check_size(env, types.size(), tt, "token_type_ids") ||
      !check_size(env, mask.size(), tt, "token_mask") || !check_size(env, reg.size(), rr * dim, "regions") ||
      !check_size(env, reg_mask.size(), rr, "region_mask") || !check_size(env, keys.size(), prefix, "prefix_keys") ||
      !check_size(env, values.size(), prefix, "prefix_values")) {
    return nullptr;
  }
  mvlm_fusion_inputs inputs{ids.data(), types.data(), mask.data(), reg.data(), reg_mask.data()};
  const mvlm_caption_options options{num_beams, length_penalty, max_caption_tokens};
  StepContext ctx{env, step, c};
  auto* caption = new (std::nothrow) mvlm_caption{};
  if (caption == nullptr) return ok(env, MVLM_OUT_OF_MEMORY), nullptr;
  const mvlm_status s = mvlm_caption_decode(c, &inputs, keys.data(), values.data(), &options, run_step, &ctx, caption);
  jlongArray out = nullptr;
  if (ok(env, s)) { // on MVLM_CALLBACK_FAILED the callback's own exception is already pending and is kept
    const jdouble meta[2] = {caption->score, static_cast<double>(caption->finished)};
    env->SetDoubleArrayRegion(result, 0, 2, meta);
    out = new_long_array(env, caption->token_ids, static_cast<size_t>(caption->num_tokens));
  }
  delete caption;
  return out;
}

}  // extern "C"

// =========================================================================================================
// Build checks (minivlm.h "Build checks"): ai.minivlm.Native.build* / planRuntime / decodeSize / compiledCachePath,
// used by ai.minivlm.BuildChecks.
// =========================================================================================================

namespace {

// A Java string as a C string for the duration of a call (nullptr stays nullptr when `nullable`).
class Utf8 {
 public:
  Utf8(JNIEnv* env, jstring s) : env_(env), s_(s), p_(s ? env->GetStringUTFChars(s, nullptr) : nullptr) {}
  ~Utf8() {
    if (p_ != nullptr) env_->ReleaseStringUTFChars(s_, p_);
  }
  Utf8(const Utf8&) = delete;
  Utf8& operator=(const Utf8&) = delete;
  const char* get() const { return p_; }
  // False (with an exception pending) for a null string that must not be, or a failed conversion.
  bool ok(const char* what, bool nullable = false) const {
    if (s_ == nullptr) return nullable || fail(env_, std::string(what) + " is null");
    return p_ != nullptr;
  }

 private:
  JNIEnv* env_;
  jstring s_;
  const char* p_;
};

}  // namespace

extern "C" {

MVLM_JNI(jlong, buildManifestLoad)(JNIEnv* env, jclass, jstring path) {
  const Utf8 p(env, path);
  if (!p.ok("build folder")) return 0;
  mvlm_manifest* m = nullptr;
  return ok(env, mvlm_build_manifest_load(p.get(), &m)) ? to_handle(m) : 0;
}

MVLM_JNI(void, buildVerify)(JNIEnv* env, jclass, jstring folder, jstring runtime, jstring runtime_version) {
  const Utf8 f(env, folder), r(env, runtime), v(env, runtime_version);
  if (!f.ok("build folder") || !r.ok("runtime") || !v.ok("runtime version", /*nullable=*/true)) return;
  ok(env, mvlm_build_verify(f.get(), r.get(), v.get()));
}

// [backend, accelerator, compute_units, note]; threads go to threadsOut[0].
MVLM_JNI(jobjectArray, planRuntime)(JNIEnv* env, jclass, jlong h, jstring platform, jstring accelerator,
                                    jstring compute_units, jint threads, jint available_cores, jintArray threads_out) {
  auto* m = handle<mvlm_manifest>(env, h, "manifest");
  if (m == nullptr) return nullptr;
  const Utf8 p(env, platform), a(env, accelerator), u(env, compute_units);
  if (!p.ok("platform") || !a.ok("accelerator", true) || !u.ok("compute units", true)) return nullptr;
  if (!check_out(env, threads_out, 1, "threadsOut")) return nullptr;
  const mvlm_runtime_request request{p.get(), a.get(), u.get(), threads, available_cores};
  mvlm_runtime_plan plan{};
  if (!ok(env, mvlm_plan_runtime(m, &request, &plan))) return nullptr;
  const jint t = plan.threads;
  env->SetIntArrayRegion(threads_out, 0, 1, &t);
  const char* fields[4] = {plan.backend, plan.accelerator, plan.compute_units, plan.note};
  jobjectArray out = env->NewObjectArray(4, g_string_class, nullptr);
  for (int i = 0; out != nullptr && i < 4; ++i) {
    jstring s = new_utf8_string(env, fields[i], std::strlen(fields[i]));
    if (s == nullptr) return nullptr;
    env->SetObjectArrayElement(out, i, s);
    env->DeleteLocalRef(s);
  }
  return out;
}

// [sample_size, max_side]
MVLM_JNI(jintArray, decodeSize)(JNIEnv* env, jclass, jlong h, jint width, jint height) {
  auto* m = handle<mvlm_manifest>(env, h, "manifest");
  if (m == nullptr) return nullptr;
  int32_t sample = 0, side = 0;
  if (!ok(env, mvlm_decode_size(m, width, height, &sample, &side))) return nullptr;
  jintArray out = env->NewIntArray(2);
  const jint values[2] = {sample, side};
  if (out != nullptr) env->SetIntArrayRegion(out, 0, 2, values);
  return out;
}

MVLM_JNI(jstring, compiledCachePath)(JNIEnv* env, jclass, jlong h, jstring caches_dir, jstring graph) {
  auto* m = handle<mvlm_manifest>(env, h, "manifest");
  if (m == nullptr) return nullptr;
  const Utf8 c(env, caches_dir), g(env, graph);
  if (!c.ok("caches folder") || !g.ok("graph")) return nullptr;
  std::string path;
  if (!fetch_string(env, [&](char* b, size_t cap, size_t* len) { return mvlm_compiled_cache_path(m, c.get(), g.get(), b, cap, len); }, path)) {
    return nullptr;
  }
  return new_utf8_string(env, path.data(), path.size());
}

}  // extern "C"

// =========================================================================================================
// EfficientVLM host steps (mvlm_evlm_*, the header's EfficientVLM section), for ai.minivlm.EfficientVlm.

namespace {

// The integer sizes of an mvlm_evlm_config, in the order of Native.EVLM_* (evlmConfigInts).
constexpr int kEvlmInts = 7;

mvlm_evlm_config* evlm_config(JNIEnv* env, jlong h) { return handle<mvlm_evlm_config>(env, h, "EfficientVLM config"); }

// The pixels of an image, checked against its size and layout (as preprocess does for MiniVLM).
bool evlm_pixels(JNIEnv* env, jbyteArray pixels, jint width, jint height, jint row_bytes, jint format,
                 std::vector<uint8_t>& out) {
  const size_t bpp = bytes_per_pixel(format);
  if (bpp == 0) return fail(env, "pixel format " + std::to_string(format) + " is not one of Native.PIXELS_*");
  if (width < 1 || height < 1) return fail(env, "image is " + std::to_string(height) + "x" + std::to_string(width) + ", expected at least 1x1");
  if (row_bytes < 0 || static_cast<size_t>(row_bytes) < static_cast<size_t>(width) * bpp) {
    return fail(env, "rowBytes " + std::to_string(row_bytes) + " is less than width x " + std::to_string(bpp));
  }
  if (!read(env, pixels, out, "pixels")) return false;
  const size_t need = static_cast<size_t>(row_bytes) * static_cast<size_t>(height - 1) + static_cast<size_t>(width) * bpp;
  if (out.size() < need) {
    return fail(env, "pixels has " + std::to_string(out.size()) + " bytes, a " + std::to_string(width) + "x" +
                         std::to_string(height) + " image with rowBytes " + std::to_string(row_bytes) + " needs " + std::to_string(need));
  }
  return true;
}

struct EvlmStepContext {
  JNIEnv* env;
  jobject callback;
  jmethodID on_step;
  size_t length, vocab;
};

int32_t run_evlm_step(void* user_data, const mvlm_evlm_step_request* r) {
  auto* ctx = static_cast<EvlmStepContext*>(user_data);
  JNIEnv* env = ctx->env;
  const struct { const void* data; size_t bytes; } views[3] = {
      {r->input_ids, ctx->length * 8}, {r->token_mask, ctx->length * 4}, {r->token_logits, ctx->length * ctx->vocab * 4}};
  if (env->PushLocalFrame(8) != 0) return 1;
  jobject b[3] = {nullptr, nullptr, nullptr};
  bool made = true;
  for (int i = 0; made && i < 3; ++i) {
    // The core's arrays in place: Kotlin reads the two inputs and fills token_logits.
    b[i] = env->NewDirectByteBuffer(const_cast<void*>(views[i].data), static_cast<jlong>(views[i].bytes));
    made = b[i] != nullptr;
  }
  if (made && !env->ExceptionCheck()) env->CallVoidMethod(ctx->callback, ctx->on_step, static_cast<jint>(r->step), b[0], b[1], b[2]);
  const bool failed = !made || env->ExceptionCheck();
  env->PopLocalFrame(nullptr);  // keeps a pending exception
  return failed ? 1 : 0;
}

}  // namespace

extern "C" {

// Methods of ai.minivlm.NativeEvlm (Native.kt).
#define MVLM_EVLM_JNI(ret, name) JNIEXPORT ret JNICALL Java_ai_minivlm_NativeEvlm_##name

MVLM_EVLM_JNI(jlong, evlmConfigLoad)(JNIEnv* env, jclass, jstring path) {
  if (path == nullptr) return fail(env, "manifest path is null"), 0;
  const char* p = env->GetStringUTFChars(path, nullptr);
  if (p == nullptr) return 0;
  auto* c = new (std::nothrow) mvlm_evlm_config{};
  mvlm_status s = c == nullptr ? MVLM_OUT_OF_MEMORY : mvlm_evlm_config_load(p, c);
  env->ReleaseStringUTFChars(path, p);
  if (!ok(env, s)) {
    delete c;
    return 0;
  }
  return to_handle(c);
}

MVLM_EVLM_JNI(void, evlmConfigFree)(JNIEnv*, jclass, jlong h) {
  delete reinterpret_cast<mvlm_evlm_config*>(static_cast<intptr_t>(h));
}

MVLM_EVLM_JNI(jintArray, evlmConfigInts)(JNIEnv* env, jclass, jlong h) {
  auto* c = evlm_config(env, h);
  if (c == nullptr) return nullptr;
  const jint values[kEvlmInts] = {c->image_size, c->num_image_tokens, c->vision_width, c->embed_dim, c->max_text_len,
                                  c->vocab_size, c->num_answers};
  jintArray out = env->NewIntArray(kEvlmInts);
  if (out != nullptr) env->SetIntArrayRegion(out, 0, kEvlmInts, values);
  return out;
}

MVLM_EVLM_JNI(jlongArray, evlmConfigSpecialIds)(JNIEnv* env, jclass, jlong h) {
  auto* c = evlm_config(env, h);
  if (c == nullptr) return nullptr;
  const int64_t ids[5] = {c->pad_id, c->unk_id, c->cls_id, c->sep_id, c->mask_id};
  return new_long_array(env, ids, 5);
}

MVLM_EVLM_JNI(jbyteArray, evlmResize)(JNIEnv* env, jclass, jint size, jbyteArray pixels, jint width, jint height,
                                 jint row_bytes, jint format) {
  std::vector<uint8_t> in;
  if (size < 1) return fail(env, "size " + std::to_string(size) + " must be >= 1"), nullptr;
  if (!evlm_pixels(env, pixels, width, height, row_bytes, format, in)) return nullptr;
  std::vector<uint8_t> out(3 * static_cast<size_t>(size) * static_cast<size_t>(size));
  if (!ok(env, mvlm_evlm_resize(size, in.data(), width, height, static_cast<size_t>(row_bytes), format, out.data(), out.size()))) {
    return nullptr;
  }
  return new_byte_array(env, reinterpret_cast<const char*>(out.data()), out.size());
}

MVLM_EVLM_JNI(void, evlmPreprocess)(JNIEnv* env, jclass, jlong h, jbyteArray pixels, jint width, jint height, jint row_bytes,
                               jint format, jfloatArray out) {
  auto* c = evlm_config(env, h);
  if (c == nullptr) return;
  const size_t n = 3 * static_cast<size_t>(c->image_size) * static_cast<size_t>(c->image_size);
  std::vector<uint8_t> in;
  if (!check_out(env, out, n, "out") || !evlm_pixels(env, pixels, width, height, row_bytes, format, in)) return;
  std::vector<float> values(n);
  if (ok(env, mvlm_evlm_preprocess(c, in.data(), width, height, static_cast<size_t>(row_bytes), format, values.data(), n))) {
    write(env, out, values);
  }
}

MVLM_EVLM_JNI(void, evlmPackText)(JNIEnv* env, jclass, jlong tokenizer, jlong h, jbyteArray text, jlongArray input_ids,
                             jfloatArray token_mask) {
  auto* t = handle<mvlm_tokenizer>(env, tokenizer, "tokenizer");
  auto* c = t == nullptr ? nullptr : evlm_config(env, h);
  if (c == nullptr) return;
  const size_t n = static_cast<size_t>(c->max_text_len);
  std::vector<uint8_t> bytes;
  if (!check_out(env, input_ids, n, "input_ids") || !check_out(env, token_mask, n, "token_mask") ||
      !read(env, text, bytes, "text")) {
    return;
  }
  std::vector<int64_t> ids(n);
  std::vector<float> mask(n);
  if (ok(env, mvlm_evlm_pack_text(t, c, reinterpret_cast<const char*>(bytes.data()), bytes.size(), ids.data(), mask.data()))) {
    write(env, input_ids, ids);
    write(env, token_mask, mask);
  }
}

MVLM_EVLM_JNI(jint, evlmCaptionPrompt)(JNIEnv* env, jclass, jlong tokenizer, jlong h, jlongArray input_ids,
                                  jfloatArray token_mask) {
  auto* t = handle<mvlm_tokenizer>(env, tokenizer, "tokenizer");
  auto* c = t == nullptr ? nullptr : evlm_config(env, h);
  if (c == nullptr) return 0;
  const size_t n = static_cast<size_t>(c->max_text_len);
  if (!check_out(env, input_ids, n, "input_ids") || !check_out(env, token_mask, n, "token_mask")) return 0;
  std::vector<int64_t> ids(n);
  std::vector<float> mask(n);
  int32_t length = 0;
  if (!ok(env, mvlm_evlm_caption_prompt(t, c, ids.data(), mask.data(), &length))) return 0;
  write(env, input_ids, ids);
  write(env, token_mask, mask);
  return length;
}

MVLM_EVLM_JNI(jlongArray, evlmCaptionDecode)(JNIEnv* env, jclass, jlong tokenizer, jlong h, jobject step, jintArray result) {
  auto* t = handle<mvlm_tokenizer>(env, tokenizer, "tokenizer");
  auto* c = t == nullptr ? nullptr : evlm_config(env, h);
  if (c == nullptr) return nullptr;
  if (step == nullptr) return fail(env, "step callback is null"), nullptr;
  if (!check_out(env, result, 1, "result")) return nullptr;
  jclass cls = env->GetObjectClass(step);
  jmethodID on_step = env->GetMethodID(cls, "onStep", "(ILjava/nio/ByteBuffer;Ljava/nio/ByteBuffer;Ljava/nio/ByteBuffer;)V");
  env->DeleteLocalRef(cls);
  if (on_step == nullptr) return nullptr;  // NoSuchMethodError pending
  EvlmStepContext ctx{env, step, on_step, static_cast<size_t>(c->max_text_len), static_cast<size_t>(c->vocab_size)};
  auto* caption = new (std::nothrow) mvlm_evlm_caption{};
  if (caption == nullptr) return ok(env, MVLM_OUT_OF_MEMORY), nullptr;
  const mvlm_status s = mvlm_evlm_caption_decode(t, c, run_evlm_step, &ctx, caption);
  jlongArray out = nullptr;
  if (ok(env, s)) {  // on MVLM_CALLBACK_FAILED the callback's own exception is already pending and is kept
    const jint finished = caption->finished;
    env->SetIntArrayRegion(result, 0, 1, &finished);
    out = new_long_array(env, caption->token_ids, static_cast<size_t>(caption->num_tokens));
  }
  delete caption;
  return out;
}

}  // extern "C"
