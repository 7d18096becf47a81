// Helpers of CMiniVLM.h: each calls the core once with a guessed capacity and once more with the size the
// core reported (MVLM_BUFFER_TOO_SMALL), and hands Swift one malloc'd buffer.
#include "CMiniVLM.h"

#include <cstdlib>
#include <cstring>

namespace {

// Calls `fill(buffer, capacity, &needed)` until the buffer is large enough; `extra` elements of slack (1 for
// a string's NUL). Returns NULL with *status set on failure.
template <typename T, typename Fill>
T* grow_and_fill(Fill fill, size_t first_guess, size_t extra, size_t* out_count, mvlm_status* status) {
  size_t capacity = first_guess;
  for (int attempt = 0; attempt < 2; ++attempt) {
    T* buffer = static_cast<T*>(std::malloc((capacity + extra) * sizeof(T)));
    if (buffer == nullptr) {
      *status = MVLM_OUT_OF_MEMORY;
      return nullptr;
    }
    size_t needed = 0;
    const mvlm_status s = fill(buffer, capacity + extra, &needed);
    if (s == MVLM_OK) {
      if (out_count != nullptr) *out_count = needed;
      *status = MVLM_OK;
      return buffer;
    }
    std::free(buffer);
    if (s != MVLM_BUFFER_TOO_SMALL) {
      *status = s;
      return nullptr;
    }
    capacity = needed; // the core reported the size it needs
  }
  *status = MVLM_INTERNAL; // the size changed between two identical calls: a core bug
  return nullptr;
}

}  // namespace

extern "C" {

int64_t* cmvlm_tokenize(const mvlm_tokenizer* tokenizer, const char* text, size_t length, size_t* count,
                        mvlm_status* status) {
  return grow_and_fill<int64_t>(
      [&](int64_t* ids, size_t capacity, size_t* needed) { return mvlm_tokenize(tokenizer, text, length, ids, capacity, needed); },
      length + 1, 0, count, status);
}

char* cmvlm_detokenize(const mvlm_tokenizer* tokenizer, const int64_t* ids, size_t count, mvlm_status* status) {
  return grow_and_fill<char>(
      [&](char* text, size_t capacity, size_t* needed) { return mvlm_detokenize(tokenizer, ids, count, text, capacity, needed); },
      16 * count + 16, 1, nullptr, status);
}

char* cmvlm_manifest_file(const mvlm_manifest* manifest, const char* which, mvlm_status* status) {
  return grow_and_fill<char>(
      [&](char* path, size_t capacity, size_t* needed) { return mvlm_manifest_file(manifest, which, path, capacity, needed); },
      256, 1, nullptr, status);
}

char* cmvlm_manifest_class_name(const mvlm_manifest* manifest, int32_t index, mvlm_status* status) {
  return grow_and_fill<char>(
      [&](char* name, size_t capacity, size_t* needed) {
        return mvlm_manifest_class_name(manifest, index, name, capacity, needed);
      },
      64, 1, nullptr, status);
}

float* cmvlm_make_anchors(const mvlm_config* config, size_t* count, mvlm_status* status) {
  size_t n = 0;
  *status = mvlm_anchor_count(config, &n, nullptr);
  if (*status != MVLM_OK) return nullptr;
  auto* anchors = static_cast<float*>(std::malloc((4 * n + 1) * sizeof(float)));
  if (anchors == nullptr) {
    *status = MVLM_OUT_OF_MEMORY;
    return nullptr;
  }
  *status = mvlm_make_anchors(config, anchors, n);
  if (*status != MVLM_OK) {
    std::free(anchors);
    return nullptr;
  }
  if (count != nullptr) *count = n;
  return anchors;
}

void cmvlm_free(void* pointer) { std::free(pointer); }

}  // extern "C"

// --- Build checks ----------------------------------------------------------------------------------------

extern "C" {

char* cmvlm_compiled_cache_path(const mvlm_manifest* manifest, const char* caches_dir, const char* graph,
                                mvlm_status* status) {
  return grow_and_fill<char>(
      [&](char* path, size_t capacity, size_t* needed) {
        return mvlm_compiled_cache_path(manifest, caches_dir, graph, path, capacity, needed);
      },
      256, 1, nullptr, status);
}

}  // extern "C"
